"""The positives store: K synthetic candidates for every image of a dataset split, on disk.

Layout of a store directory::

    manifest.json       what the store is (dataset, model hash, generation settings) and which chunks are done
    synthesize.yaml     the resolved config that made it (`clsp synthesize --config` it to resume)
    chunk_00000.npy     uint8 [n, K, H, W, C] for images [0, chunk_size), in dataset order
    chunk_00001.npy     ...
    strength_00000.npy  float32 [n, K, 2] beside chunk 0: per candidate, the partial-noise start s it was made with and
                        its label-free cosine to its anchor (`clsp.positives.strength`); read with `PositivesStore.strength`
    progress_rank1.json completion records of rank 1 while a multi-process job runs (merged at the end)
    verified.json       size, mtime and checksum of each chunk as last verified (a cache)
    stats.json          written by `clsp positives stats`

Why numpy chunks and a JSON manifest rather than zarr: zarr (3.x) writes each chunk atomically too,
but it keeps no record of which chunks were written (an unwritten chunk reads back as the fill
value), so the completion record would be ours either way; its chunks cannot be memory-mapped (every
read decodes a whole chunk into a new buffer), and it would be one more dependency. A `.npy` file per
chunk, renamed into place only when complete, plus a manifest rewritten atomically after each chunk,
gives exact resume, byte-identical output and `np.load(mmap_mode="r")` reads with numpy alone.

A chunk counts as complete only when the manifest (or a rank's progress record) lists it AND its
file is present with exactly the expected size AND its bytes have the SHA-256 recorded when it was
written; anything else is regenerated. A checksum is verified on a chunk's first use and cached in
verified.json by size and mtime, so that opening a large store again costs a stat per chunk. Opening
a store also checks each chunk's header (uint8, the expected shape, never a pickle).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from clsp.errors import UserError
from clsp.io import atomic_path, atomic_write, file_sha256, read_json, read_json_object, write_json_atomic

FORMAT = "clsp-positives/1"
MANIFEST = "manifest.json"
CONFIG = "synthesize.yaml"
IDENTITY_KEYS = ("format", "dataset", "model_hash", "generation")
VERIFIED = "verified.json"
log = logging.getLogger("clsp")


def chunk_path(store: str | os.PathLike, index: int) -> Path:
    return Path(store) / f"chunk_{index:05d}.npy"


def strength_path(store: str | os.PathLike, index: int) -> Path:
    return Path(store) / f"strength_{index:05d}.npy"


STRENGTH_FIELDS = ("start", "similarity")       # the last axis of a strength file


def rank_progress_path(store: str | os.PathLike, rank: int) -> Path:
    return Path(store) / f"progress_rank{rank}.json"


def chunk_bounds(index: int, n: int, chunk_size: int) -> tuple[int, int]:
    """Dataset rows [start, stop) held by chunk `index`."""
    start = index * chunk_size
    return start, min(n, start + chunk_size)


def chunk_count(n: int, chunk_size: int) -> int:
    return -(-n // chunk_size)


def npy_nbytes(shape: tuple[int, ...]) -> int:
    """Size of the .npy file np.save writes for a C-ordered uint8 array of this shape."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": tuple(int(s) for s in shape)})
    return len(header.getvalue()) + int(np.prod(shape))


def read_manifest(store: str | os.PathLike) -> dict | None:
    path = Path(store) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}); delete the store {store} and regenerate it") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path} is not a clsp positives manifest (format {FORMAT}); use another --out")
    return manifest


def identity(manifest: dict) -> dict:
    """The part of a manifest that fixes the store's bytes: dataset, model, generation settings."""
    return {key: manifest[key] for key in IDENTITY_KEYS}


def chunk_shape(manifest: dict, index: int) -> tuple[int, ...]:
    n, chunk_size = manifest["dataset"]["n"], manifest["generation"]["chunk_size"]
    start, stop = chunk_bounds(index, n, chunk_size)
    return (stop - start, manifest["generation"]["k"], *manifest["dataset"]["image_shape"])


def chunk_problem(store: str | os.PathLike, manifest: dict, index: int, verified: dict | None = None) -> str | None:
    """Why chunk `index` is not intact (missing, wrong size, bytes that differ from its checksum), or None.
    `verified` is the cache of earlier verifications (read_verified); a chunk hashed here is added to it."""
    path = chunk_path(store, index)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "missing"
    if stat.st_size != npy_nbytes(chunk_shape(manifest, index)):
        return f"{stat.st_size} bytes instead of {npy_nbytes(chunk_shape(manifest, index))}"
    expected = manifest.get("chunk_sha256", {}).get(str(index))
    if expected is None:
        return None  # a chunk recorded before checksums were: checked by size (and by header on opening)
    seen = [stat.st_size, stat.st_mtime_ns, expected]
    if verified is not None and verified.get(path.name) == seen:
        return None
    if file_sha256(path) != expected:
        return "its bytes do not match the checksum recorded when it was written"
    if verified is not None:
        verified[path.name] = seen
    return None


def chunk_is_valid(store: str | os.PathLike, manifest: dict, index: int, verified: dict | None = None) -> bool:
    return chunk_problem(store, manifest, index, verified) is None


def read_verified(store: str | os.PathLike) -> dict:
    """The verification cache: chunk file name -> [size, mtime_ns, sha256] when last found intact."""
    return read_json_object(Path(store) / VERIFIED) or {}


def write_verified(store: str | os.PathLike, cache: dict) -> None:
    try:
        write_json_atomic(Path(store) / VERIFIED, cache)
    except OSError:
        pass  # a read-only store is verified again next time


def rank_records(store: str | os.PathLike) -> set[int]:
    """Chunks listed as done by the ranks' progress records."""
    return set(_rank_progress(store)[0])


def _rank_progress(store: str | os.PathLike) -> tuple[list[int], dict[str, str]]:
    """(chunks, their checksums) from the ranks' progress records."""
    done: list[int] = []
    checksums: dict[str, str] = {}
    for record in Path(store).glob("progress_rank*.json"):
        try:
            data = read_json(record)
            done += list(data.get("complete_chunks", []))
            checksums.update(data.get("chunk_sha256", {}))
        except (OSError, ValueError, AttributeError, TypeError):
            pass  # records are written atomically, so this one is not ours: its chunks are redone
    return done, checksums


def complete_chunks(store: str | os.PathLike, manifest: dict, recorded: Iterable[int] | None = None) -> set[int]:
    """Chunks recorded as done (by the manifest, a rank's record, or `recorded`) whose files are intact."""
    candidates = set(manifest.get("complete_chunks", [])) | rank_records(store) | set(recorded or ())
    verified = read_verified(store)
    done = {i for i in candidates if 0 <= i < manifest["chunks_total"] and chunk_is_valid(store, manifest, i, verified)}
    if verified != read_verified(store):
        write_verified(store, verified)
    return done


def new_manifest(dataset: dict, model_hash: str, generation: dict, sources: dict, versions: dict) -> dict:
    """A fresh manifest. `dataset` is `dataset_record(...)`; `generation` holds k, seed, chunk_size and
    the sampler settings; `sources` (model dir, dataset config) and `versions` are for the record only."""
    return {"format": FORMAT, "dataset": dataset, "model_hash": model_hash, "generation": generation,
            "chunks_total": chunk_count(dataset["n"], generation["chunk_size"]),
            "sources": sources, "versions": versions}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def describe_differences(old: dict, new: dict) -> str:
    a, b = _flatten(old), _flatten(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return "; ".join(f"{k}: {a.get(k)!r} in the store, {b.get(k)!r} now" for k in keys)


class StoreWriter:
    """Creates a store, or resumes one made with the same settings, and records chunks as they land.

    In a multi-process job rank 0 owns manifest.json; the other ranks record their chunks in
    progress_rank<r>.json. Rank 0 merges those records into the manifest whenever it writes it, and
    `finish` (after all ranks are done) folds them in for good and removes them.
    """

    def __init__(self, path: str | os.PathLike, new_manifest: dict, rank: int = 0, world: int = 1) -> None:
        self.path, self.rank, self.world = Path(path), rank, world
        existing = read_manifest(self.path)
        if existing is not None and rank == 0:
            # temporary files of a killed run; no rank writes before the start barrier, so none is live
            for stale in self.path.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        if existing is None:
            if self.path.exists() and any(not p.name.startswith(".") for p in self.path.iterdir()):
                raise UserError(f"{self.path} exists, is not empty and holds no {MANIFEST}: it is not a positives store; "
                                f"choose a new --out")
            self.manifest = dict(new_manifest, complete_chunks=[], complete=False, created=_now())
            self.done: set[int] = set()
            self.checksums: dict[str, str] = {}
        else:
            if identity(existing) != identity(new_manifest):
                raise UserError(f"positives store {self.path} was made with other settings "
                                f"({describe_differences(identity(existing), identity(new_manifest))}); "
                                f"use a new --out, or delete {self.path} to regenerate it")
            self.manifest = dict(existing, sources=new_manifest["sources"], versions=new_manifest["versions"])
            self.done = complete_chunks(self.path, existing)
            self.checksums = {str(i): c for i, c in existing.get("chunk_sha256", {}).items() if int(i) in self.done}
        self.todo_at_open = self.remaining()

    @property
    def total(self) -> int:
        return self.manifest["chunks_total"]

    def remaining(self) -> list[int]:
        return [i for i in range(self.total) if i not in self.done]

    def my_chunks(self) -> list[int]:
        """This rank's share of the chunks that remained when the store was opened, dealt round-robin:
        every rank computes the same deal, since all open the store before any of them writes."""
        return self.todo_at_open[self.rank::self.world]

    def start(self, config_yaml: str | None = None) -> None:
        """Rank 0 writes the manifest (and the config that resumes the job) before any chunk lands."""
        if self.rank == 0:
            self.path.mkdir(parents=True, exist_ok=True)
            self._write_manifest()
            if config_yaml is not None:
                with atomic_path(self.path / CONFIG) as tmp:
                    tmp.write_text(config_yaml)

    def write_chunk(self, index: int, candidates: np.ndarray, strength: np.ndarray | None = None) -> None:
        """Write one chunk atomically, then record it as complete with the checksum of its bytes. `strength`
        (float32 [n, K, 2]: start, similarity per candidate) lands first, so a complete chunk always has it."""
        expected = chunk_shape(self.manifest, index)
        if candidates.shape != expected or candidates.dtype != np.uint8:
            raise ValueError(f"chunk {index}: expected uint8 {expected}, got {candidates.dtype} {candidates.shape}")
        if strength is not None:
            if strength.shape != (*expected[:2], len(STRENGTH_FIELDS)):
                raise ValueError(f"chunk {index}: strength must be {(*expected[:2], len(STRENGTH_FIELDS))}, got {strength.shape}")
            with atomic_write(strength_path(self.path, index)) as f:
                np.save(f, np.ascontiguousarray(strength, dtype=np.float32))
        with atomic_write(chunk_path(self.path, index)) as f:
            hashing = _HashingWriter(f)
            np.save(hashing, np.ascontiguousarray(candidates))
        self.done.add(index)
        self.checksums[str(index)] = hashing.sha256.hexdigest()
        if self.rank == 0:
            self._write_manifest()
        else:
            write_json_atomic(rank_progress_path(self.path, self.rank),
                              {"complete_chunks": sorted(self.done), "chunk_sha256": self.checksums})

    def finish(self) -> dict:
        """Rank 0, once every rank is done: fold the progress records into the manifest for good."""
        assert self.rank == 0
        manifest = self._write_manifest()
        for record in self.path.glob("progress_rank*.json"):
            record.unlink(missing_ok=True)
        return manifest

    def _write_manifest(self) -> dict:
        self.checksums.update(_rank_progress(self.path)[1])
        self.manifest["chunk_sha256"] = dict(sorted(self.checksums.items(), key=lambda kv: int(kv[0])))
        self.done = complete_chunks(self.path, self.manifest, recorded=self.done)
        self.manifest.update(complete_chunks=sorted(self.done), complete=len(self.done) == self.total, updated=_now())
        write_json_atomic(self.path / MANIFEST, self.manifest)
        return self.manifest


class PositivesStore:
    """Read access to a complete store: one uniformly drawn candidate per index, as uint8 tensors.

    `open` memory-maps the chunk files (CPU); `.to("cuda")` makes it GPU-resident as one uint8 tensor
    [N, K, H, W, C], so a training step gathers its positives without leaving the GPU.
    """

    def __init__(self, path: Path, manifest: dict, chunks: list[np.ndarray], resident=None,
                 strength: list[np.ndarray] | None = None) -> None:
        self.path, self.manifest = path, manifest
        self._chunks = chunks          # memory-mapped chunk arrays (CPU)
        self._resident = resident      # one tensor [N, K, H, W, C] (any device)
        self._strength = strength      # memory-mapped strength arrays [n, K, 2] (CPU), or None

    @classmethod
    def open(cls, path: str | os.PathLike, dataset=None) -> "PositivesStore":
        """Open a complete store made for `dataset` (an ImageSet or StreamingImageSet; None skips
        the dataset check, for tools that only read the candidates)."""
        path = Path(path)
        manifest = read_manifest(path)
        if manifest is None:
            raise UserError(f"{path} is not a positives store (no {MANIFEST}); make one with "
                            f"`clsp synthesize --model DIR --dataset NAME --out {path}`")
        if dataset is not None:
            check_dataset(path, manifest, dataset)
        regenerate = (f"resume it with `clsp synthesize --config {path / CONFIG}` (the command that made it continues "
                      f"where it stopped and regenerates damaged chunks), or delete {path} and regenerate it")
        recorded = set(manifest.get("complete_chunks", []))
        if len(recorded) != manifest["chunks_total"]:
            raise UserError(f"positives store {path} is incomplete ({len(recorded)} of {manifest['chunks_total']} chunks); "
                            f"{regenerate}")
        if "chunk_sha256" not in manifest:
            log.warning(f"positives store {path} records no chunk checksums (made by an older clsp): its chunks are "
                        "checked by size and header only")
        verified = read_verified(path)
        problems, chunks = {}, []
        for i in range(manifest["chunks_total"]):
            chunk, problem = None, chunk_problem(path, manifest, i, verified)
            if problem is None:
                chunk, problem = _map_chunk(chunk_path(path, i), chunk_shape(manifest, i))
            if problem is not None:
                problems[chunk_path(path, i).name] = problem
            chunks.append(chunk)
        write_verified(path, verified)
        strength = []
        if manifest["generation"].get("strength") is not None:       # stores made before issue 23 have none
            for i in range(manifest["chunks_total"]):
                n, k = chunk_shape(manifest, i)[:2]
                array, problem = _map_array(strength_path(path, i), (n, k, len(STRENGTH_FIELDS)), np.float32)
                if problem is not None:
                    problems[strength_path(path, i).name] = problem
                strength.append(array)
        if problems:
            listed = "; ".join(f"{name}: {problem}" for name, problem in list(problems.items())[:5])
            more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise UserError(f"positives store {path} is incomplete ({len(chunks) - len(problems)} of {len(chunks)} chunks "
                            f"intact; {listed}{more}); {regenerate}")
        return cls(path, manifest, chunks, strength=strength or None)

    # -- what it holds -----------------------------------------------------------------------------

    @property
    def n(self) -> int:
        return int(self.manifest["dataset"]["n"])

    @property
    def k(self) -> int:
        return int(self.manifest["generation"]["k"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["dataset"]["image_shape"])  # type: ignore[return-value]

    @property
    def chunk_size(self) -> int:
        return int(self.manifest["generation"]["chunk_size"])

    @property
    def device(self):
        import torch

        return self._resident.device if self._resident is not None else torch.device("cpu")

    def __len__(self) -> int:
        return self.n

    def chunk_arrays(self) -> list[np.ndarray]:
        """The chunks in order, memory-mapped (statistics walk them without loading the whole store)."""
        return list(self._chunks)

    def to(self, device) -> "PositivesStore":
        """The store resident on `device` as one uint8 tensor [N, K, H, W, C] (GPU memory, or RAM for
        "cpu"); `open` gives the memory-mapped store, which reads only the rows a batch needs."""
        import torch

        device = torch.device(device)
        if self._resident is not None:
            return self if self._resident.device == device else \
                PositivesStore(self.path, self.manifest, self._chunks, self._resident.to(device), self._strength)
        resident = torch.empty((self.n, self.k, *self.image_shape), dtype=torch.uint8, device=device)
        for i, chunk in enumerate(self._chunks):
            start = i * self.chunk_size
            resident[start:start + len(chunk)] = torch.from_numpy(np.array(chunk)).to(device)  # a copy: the map is read-only
        return PositivesStore(self.path, self.manifest, self._chunks, resident, self._strength)

    # -- reading -----------------------------------------------------------------------------------

    @property
    def has_strength(self) -> bool:
        return self._strength is not None

    def strength(self, indices=None) -> dict[str, np.ndarray] | None:
        """Per candidate of each index (all when None): `start`, the partial-noise start s it was made with, and
        `similarity`, its label-free cosine to its anchor in the space `manifest["generation"]["strength"]["space"]`
        names; float32 (B, K) each (CPU). None for a store made before they were recorded."""
        if self._strength is None:
            return None
        every = np.concatenate([np.asarray(a) for a in self._strength]) if indices is None else None
        if every is None:
            rows = np.asarray(indices, dtype=np.int64).ravel()
            if len(rows) and (rows.min() < 0 or rows.max() >= self.n):
                raise IndexError(f"positives store has {self.n} images; got indices outside [0, {self.n})")
            every = np.stack([self._strength[r // self.chunk_size][r % self.chunk_size] for r in rows]) if len(rows) \
                else np.zeros((0, self.k, len(STRENGTH_FIELDS)), np.float32)
        return {name: np.ascontiguousarray(every[..., i]) for i, name in enumerate(STRENGTH_FIELDS)}

    def candidates(self, indices) -> "torch.Tensor":
        """All K candidates of each index: uint8 (B, K, H, W, C) on the store's device."""
        return self._gather(indices, slots=None)

    def sample(self, indices, generator=None) -> "torch.Tensor":
        """One candidate per index, its slot drawn uniformly from the K: uint8 (B, H, W, C).

        The draw uses `generator` (on the store's device) or torch's global RNG, so a training step
        that seeds its RNG from (seed, step, rank) draws the same positives on resume.
        """
        import torch

        indices = torch.as_tensor(indices, device=self.device).long()
        slots = torch.randint(0, self.k, indices.shape, device=self.device, generator=generator)
        return self._gather(indices, slots)

    def _gather(self, indices, slots):
        import torch

        indices = torch.as_tensor(indices, device=self.device).long()
        if self._resident is not None:  # torch checks the bounds; no host sync here, it runs every step
            return self._resident[indices] if slots is None else self._resident[indices, slots]
        rows = indices.numpy()
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n):  # numpy would wrap negative indices
            raise IndexError(f"positives store has {self.n} images; got indices outside [0, {self.n})")
        slot_rows = None if slots is None else slots.numpy()
        out = np.empty((len(rows), *(() if slots is not None else (self.k,)), *self.image_shape), dtype=np.uint8)
        which = rows // self.chunk_size
        for c in np.unique(which):
            sel = np.nonzero(which == c)[0]
            within = rows[sel] - c * self.chunk_size
            out[sel] = self._chunks[c][within] if slot_rows is None else self._chunks[c][within, slot_rows[sel]]
        return torch.from_numpy(out)


def _map_chunk(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str | None]:
    """The chunk memory-mapped, or why its header is not that of uint8 candidates of `shape`."""
    return _map_array(path, shape, np.uint8)


def _map_array(path: Path, shape: tuple[int, ...], dtype) -> tuple[np.ndarray | None, str | None]:
    """The .npy file memory-mapped, or why it is missing or its header is not that of `dtype` `shape`."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        return None, "missing"
    except (ValueError, OSError) as e:
        return None, f"unreadable header: {e}"
    if array.dtype != np.dtype(dtype) or array.shape != shape:
        return None, f"its header says {array.dtype} {array.shape}, not {np.dtype(dtype)} {shape}"
    return array, None


class _HashingWriter:
    """A file for np.save that hashes what passes through it."""

    def __init__(self, f) -> None:
        self.f, self.sha256 = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.f.write(data)


def check_dataset(path: Path, manifest: dict, dataset) -> None:
    """The store was made from exactly these images: fingerprint, N and image shape all agree."""
    made = manifest["dataset"]
    given = dataset_record(dataset)
    if (made["fingerprint"], made["n"], list(made["image_shape"])) != (given["fingerprint"], given["n"], given["image_shape"]):
        raise UserError(
            f"positives store {path} was made for {_describe(made)}, not for the dataset given ({_describe(given)}); "
            f"pass the dataset the store was made from, or make a store for this one with "
            f"`clsp synthesize --dataset {given['name']} --split {given['split']} --out NEW_STORE ...`")


def dataset_record(dataset) -> dict:
    """What the manifest records about the images it was made from."""
    return {"name": dataset.name, "split": dataset.split, "n": len(dataset), "fingerprint": dataset.fingerprint,
            "image_shape": [int(s) for s in dataset.shape]}


def _describe(d: dict) -> str:
    h, w, c = d["image_shape"]
    return f"{d['name']} {d['split']} (N={d['n']}, {h}x{w}x{c}, fingerprint {d['fingerprint']})"
