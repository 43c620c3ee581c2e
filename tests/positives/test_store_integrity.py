"""Chunks are checked by content, not size alone: a chunk zeroed at its size, an edited header and an
object-dtype chunk are refused naming the chunk and the command that regenerates it; each process
verifies the checksums on first use (a flipped byte with its mtime restored is caught)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import clsp.positives.store as store_module
from clsp.errors import UserError
from clsp.positives import PositivesStore
from clsp.positives.store import MANIFEST, StoreWriter, chunk_path

from positives_helpers import make_manifest, planted_candidates, write_store

REGENERATE = r"resume it with `clsp synthesize --config .*synthesize.yaml`"


def test_the_manifest_records_the_sha256_of_each_chunk_file(tmp_path, digits_small):
    import hashlib

    write_store(tmp_path / "s", digits_small, planted_candidates(45, 2))
    recorded = json.loads((tmp_path / "s" / MANIFEST).read_text())["chunk_sha256"]
    assert sorted(recorded, key=int) == [str(i) for i in range(6)]
    for i in range(6):
        assert recorded[str(i)] == hashlib.sha256(chunk_path(tmp_path / "s", i).read_bytes()).hexdigest()


def test_a_chunk_zeroed_at_its_size_is_refused_and_regenerated(tmp_path, digits_small):
    cands = planted_candidates(45, 2)
    write_store(tmp_path / "s", digits_small, cands)
    PositivesStore.open(tmp_path / "s", digits_small)                      # verified once, cached
    path = chunk_path(tmp_path / "s", 3)
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:128] + bytes(size - 128))          # header kept, data zeroed
    with pytest.raises(UserError, match=rf"chunk_00003\.npy: its bytes do not match the checksum.*{REGENERATE}"):
        PositivesStore.open(tmp_path / "s", digits_small)

    assert StoreWriter(tmp_path / "s", make_manifest(digits_small, k=2)).remaining() == [3]
    write_store(tmp_path / "s", digits_small, cands)                       # what the named command does
    store = PositivesStore.open(tmp_path / "s", digits_small)
    assert torch.equal(store.candidates(torch.arange(45)), torch.from_numpy(cands))


def edit_header(path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def test_an_edited_header_is_refused(tmp_path, digits_small):
    write_store(tmp_path / "s", digits_small, planted_candidates(45, 2))
    edit_header(chunk_path(tmp_path / "s", 0), b"(8, 2, 8, 8, 1)", b"(2, 8, 8, 8, 1)")  # same size, other shape
    with pytest.raises(UserError, match=r"chunk_00000\.npy: its bytes do not match"):
        PositivesStore.open(tmp_path / "s", digits_small)


def test_without_checksums_the_header_is_still_checked(tmp_path, digits_small, caplog):
    """A store from before checksums: the header is read before any training step would."""
    write_store(tmp_path / "s", digits_small, planted_candidates(45, 2))
    manifest = json.loads((tmp_path / "s" / MANIFEST).read_text())
    del manifest["chunk_sha256"]
    (tmp_path / "s" / MANIFEST).write_text(json.dumps(manifest))
    PositivesStore.open(tmp_path / "s", digits_small)
    assert "records no chunk checksums" in caplog.text
    edit_header(chunk_path(tmp_path / "s", 0), b"(8, 2, 8, 8, 1)", b"(2, 8, 8, 8, 1)")
    with pytest.raises(UserError, match=r"chunk_00000\.npy: its header says uint8 \(2, 8, 8, 8, 1\), not uint8 \(8, 2, 8, 8, 1\)"):
        PositivesStore.open(tmp_path / "s", digits_small)


def test_an_object_dtype_chunk_is_refused_without_unpickling_it(tmp_path, digits_small):
    write_store(tmp_path / "s", digits_small, planted_candidates(45, 2))
    with open(chunk_path(tmp_path / "s", 2), "wb") as f:
        np.save(f, np.array([{"not": "pixels"}] * 8, dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match=rf"chunk_00002\.npy: .* bytes instead of .*{REGENERATE}"):
        PositivesStore.open(tmp_path / "s", digits_small)


def test_checksums_are_verified_once_per_process(tmp_path, digits_small, monkeypatch):
    hashed = []
    real = store_module.file_sha256
    monkeypatch.setattr(store_module, "file_sha256", lambda path: hashed.append(path.name) or real(path))
    monkeypatch.setattr(store_module, "_verified", {})                       # a fresh process
    write_store(tmp_path / "s", digits_small, planted_candidates(45, 2))
    assert sorted(hashed) == [f"chunk_{i:05d}.npy" for i in range(6)]   # each verified once, as it landed

    for _ in range(3):
        PositivesStore.open(tmp_path / "s", digits_small)
    assert len(hashed) == 6                                                # then a stat per chunk in this process
    path = chunk_path(tmp_path / "s", 5)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    PositivesStore.open(tmp_path / "s", digits_small)
    assert hashed[6:] == ["chunk_00005.npy"]                               # a touched chunk is hashed again
    monkeypatch.setattr(store_module, "_verified", {})                       # the next process
    PositivesStore.open(tmp_path / "s", digits_small)
    assert len(hashed) == 13                                               # every chunk again


def test_a_flipped_byte_with_its_mtime_restored_is_caught_by_the_next_process(tmp_path, digits_small, monkeypatch):
    """Bit rot keeps mtimes: `touch -r` after flipping a byte must not pass."""
    write_store(tmp_path / "s", digits_small, planted_candidates(45, 2))
    PositivesStore.open(tmp_path / "s", digits_small)                      # verified by this process
    path = chunk_path(tmp_path / "s", 2)
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size
    monkeypatch.setattr(store_module, "_verified", {})                       # the next process (pretrain, stats)
    with pytest.raises(UserError, match=rf"chunk_00002\.npy: its bytes do not match the checksum.*{REGENERATE}"):
        PositivesStore.open(tmp_path / "s", digits_small)
