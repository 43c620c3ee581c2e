"""Folders that would trap a naive reader: a symlink cycle, several links to one image, and an image
whose header claims 40000 x 40000 pixels (a decompression bomb)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from dataset_writers import write_image_folder

from clsp.data import load_dataset
from clsp.data.folder import read_image
from clsp.errors import UserError


def test_a_symlink_cycle_and_duplicate_links_count_each_image_once(tmp_path):
    pixels = write_image_folder(tmp_path / "pics", {"cat": 3, "dog": 2})
    (tmp_path / "pics" / "cat" / "loop").symlink_to(tmp_path / "pics")          # cat/loop/cat/loop/...
    (tmp_path / "pics" / "dog" / "back").symlink_to(tmp_path / "pics" / "dog")  # dog/back/back/...
    cat_image = sorted((tmp_path / "pics" / "cat").glob("*.png"))[0]
    (tmp_path / "pics" / "dog" / "again.png").symlink_to(cat_image)            # a second link to a cat
    ds = load_dataset(f"folder:{tmp_path / 'pics'}", split="all")                 # every image, none held out
    assert len(ds) == 5 and ds.labels.tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_array_equal(ds.images, np.stack(pixels["cat"] + pixels["dog"]))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, with (almost) no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path):
    write_image_folder(tmp_path / "pics", {"cat": 2, "dog": 2})
    bomb = tmp_path / "pics" / "cat" / "huge.png"
    bomb.write_bytes(png_header_only(40000, 40000))
    for size in (None, 16):                                       # the header read for the size, then the decode
        with pytest.raises(UserError, match=rf"^image {bomb} is too large to decode .*decompression bombs: remove"):
            load_dataset(f"folder:{tmp_path / 'pics'}", size=size) if size else read_image(bomb, 16)
