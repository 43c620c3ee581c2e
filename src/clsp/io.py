"""Atomic writes and content hashes: nothing half-written is ever left under its final name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

TEMPORARY_SUFFIX = ".tmp"   # temporaries are named .<final name>.<random>.tmp, beside the final file


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same folder, so the same filesystem: the rename cannot turn
    into a copy); on success it is renamed onto `path`, else removed. (The directory is not fsynced: after
    a power cut the name holds the old complete file or the new one, and a directory fsync can take long
    enough to widen the moment between a checkpoint and the log rows Lightning writes after it.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    except OSError as e:  # name the file the user asked for, not our temporary
        raise type(e)(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():              # mkstemp makes 0600; a result file gets what open() would give it
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)            # a failed write() names no file: say which one it was
        raise


def _read_umask() -> int:
    """The process's umask, read once at import (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file whose bytes appear under `path` only once all are written and on disk."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries a killed writer left in `folder` (not below it). Only for a folder nobody
    else writes in now: its owner, holding the run lock (clsp.lock)."""
    removed = []
    for tmp in Path(folder).glob(f".*{TEMPORARY_SUFFIX}"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_json_object(path: str | os.PathLike) -> dict | None:
    """The JSON object in `path`, or None when the file is absent, unreadable or holds something else: for
    records that are only a hint (a cache, a stage's record, a figure's numbers), whose loss means redoing
    or showing less, never failing."""
    try:
        found = read_json(path)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def hash_json(obj: Any) -> str:
    """A stable hash of a JSON-able object (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in blocks."""
    h = hashlib.sha256()
    _hash_file_into(h, path)
    return h.hexdigest()


def _hash_file_into(h, path: str | os.PathLike) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)


def hash_directory(path: str | os.PathLike, suffixes: tuple[str, ...] = (".json", ".safetensors", ".bin", ".pt", ".ckpt"),
                   exclude: tuple[str, ...] = ("record.json",)) -> str:
    """Content hash of the files in a directory tree that define a model (names and bytes). A shipped model's
    record.json (how it was made, how good it is) is not part of the model: updating it keeps every store valid."""
    root = Path(path)
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in suffixes and p.name not in exclude):
        h.update(str(file.relative_to(root)).encode())
        _hash_file_into(h, file)
    return h.hexdigest()[:16]
