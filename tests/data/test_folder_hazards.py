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


def test_names_that_are_not_utf8_are_shown_escaped_and_work(tmp_path):
    """A class folder b'caf\\xe9' and files b'img\\xff0.png' (Latin-1 names on a UTF-8 system): `data info`
    (text and --json) shows 'caf\\xe9', and kNN and the embedding run on the folder."""
    import json
    import os
    import subprocess
    import sys

    import torch

    from clsp.data.config import DatasetConfig
    from clsp.eval.embed import embed_plot
    from clsp.eval.knn import knn_eval
    from clsp.models.backbones import make_backbone
    from clsp.models.encoder import save_encoder

    root = os.fsencode(tmp_path / "pics")
    rng = np.random.default_rng(0)
    from PIL import Image

    for split in (b"train", b"test"):
        for name in (b"caf\xe9", b"tea"):
            os.makedirs(os.path.join(root, split, name))
            for i in range(4):
                path = os.path.join(root, split, name, b"img\xff%d.png" % i)
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(os.fsdecode(path))
    folder = f"folder:{os.fsdecode(root)}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), PYTHONIOENCODING="utf-8:strict", CLSP_QUIET="1")
    for extra in ([], ["--json"]):
        run = subprocess.run([sys.executable, "-m", "clsp", "data", "info", folder, *extra], capture_output=True,
                             env=env, timeout=120)
        assert run.returncode == 0 and b"Traceback" not in run.stderr, run.stderr.decode()[-2000:]
        out = run.stdout.decode("utf-8")
        if extra:
            assert json.loads(out)["classes"] == ["caf\\xe9", "tea"]
        else:
            assert "caf\\xe9, tea" in out, out

    torch.manual_seed(0)
    backbone, feat_dim = make_backbone("resnet18", "cifar")
    encoder = tmp_path / "encoder.safetensors"
    save_encoder(encoder, backbone, {"arch": "resnet18", "stem": "cifar", "feat_dim": feat_dim, "image_size": 8,
                                     "mean": [0.5] * 3, "std": [0.25] * 3, "dataset": "pics", "method": "random",
                                     "clsp_lambda": 0.0})
    data = DatasetConfig(name=folder)
    knn = knn_eval(encoder, data, tmp_path / "knn", ks=(3,), fixed_k=3, device="cpu")
    assert knn["results"]["n_train"] == 8 and json.loads((tmp_path / "knn" / "metrics.json").read_text())
    embed = embed_plot(encoder, data, tmp_path / "embed", n=8, figure=tmp_path / "embed" / "tsne.png", perplexity=2)
    assert embed["results"]["n"] == 8
