"""The positives store: K synthetic candidates for every image of a dataset split, on disk.

Layout of a store directory::

    manifest.json       what the store is (dataset, model hash, generation settings) and which chunks are done
    synthesize.yaml     the resolved config that made it (`clsp synthesize --config` it to resume)
    chunk_00000.npy     uint8 [n, K, H, W, C] for images [0, chunk_size), in dataset order
    chunk_00001.npy     ...
    strength_00000.npy  float32 [n, K, 2] beside chunk 0: per candidate, the partial-noise start s it was made with and
                        its label-free cosine to its anchor (`clsp.positives.strength`); read with `PositivesStore.strength`
    progress_rank1.json completion records of rank 1 while a multi-process job runs (merged at the end)
    stats.json          written by `clsp positives stats`

Why numpy chunks and a JSON manifest rather than zarr: zarr (3.x) writes each chunk atomically too,
but it keeps no record of which chunks were written (an unwritten chunk reads back as the fill
value), so the completion record would be ours either way; its chunks cannot be memory-mapped (every
read decodes a whole chunk into a new buffer), and it would be one more dependency. A `.npy` file per
chunk, renamed into place only when complete, plus a manifest rewritten atomically after each chunk,
gives exact resume, byte-identical output and `np.load(mmap_mode="r")` reads with numpy alone.

A chunk counts as complete only when the manifest (or a rank's progress record) lists it AND its
file is present with exactly the expected size AND its bytes have the SHA-256 recorded when it was
written; anything else is regenerated. Each process verifies a chunk's checksum on its first use (then
trusts it while size and mtime hold, within that process only): bit rot keeps mtimes, so no verification
is carried over between processes. It reads the whole store once per process, at about 250 MiB/s on one
core (a CIFAR-10 store with K = 8 is 1.2 GiB: about 5 s, one training step of the CPU demo; a few dozen
steps of a GPU run that takes many thousands). Opening a store also checks each chunk's header (uint8,
the expected shape, never a pickle).
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
from clsp.io import atomic_path, atomic_write, file_sha256, read_json, write_json_atomic

FORMAT = "clsp-positives/1"
MANIFEST = "manifest.json"
CONFIG = "synthesize.yaml"
IDENTITY_KEYS = ("format", "dataset", "model_hash", "generation")
log = logging.getLogger("clsp")
_verified: dict[str, list] = {}   # absolute chunk path -> [size, mtime_ns, sha256] as verified by this process


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


def chunk_problem(store: str | os.PathLike, manifest: dict, index: int) -> str | None:
    """Why chunk `index` is not intact (missing, wrong size, bytes that differ from its checksum), or None.
    Hashed on its first check in this process; later checks in the process cost a stat."""
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
    seen, key = [stat.st_size, stat.st_mtime_ns, expected], str(path.resolve())
    if _verified.get(key) == seen:
        return None
    if file_sha256(path) != expected:
        return "its bytes do not match the checksum recorded when it was written"
    _verified[key] = seen
    return None


def chunk_is_valid(store: str | os.PathLike, manifest: dict, index: int) -> bool:
    return chunk_problem(store, manifest, index) is None


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
    return {i for i in candidates if 0 <= i < manifest["chunks_total"] and chunk_is_valid(store, manifest, i)}


def new_manifest(dataset: dict, model_hash: str, generation: dict, sources: dict, versions: dict,
                 anchors: dict | None = None) -> dict:
    """A fresh manifest. `dataset` is `dataset_record(...)`; `generation` holds k, seed, chunk_size and
    the sampler settings; `sources` (model dir, dataset config) and `versions` are for the record only;
    `anchors` (`anchor_record`) lets a store opened over any map-style dataset check the dataset's order."""
    return {"format": FORMAT, "dataset": dataset, "model_hash": model_hash, "generation": generation,
            "chunks_total": chunk_count(dataset["n"], generation["chunk_size"]),
            "sources": sources, "versions": versions, "anchors": anchors}


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
            self.manifest = dict(existing, sources=new_manifest["sources"], versions=new_manifest["versions"],
                                 anchors=new_manifest.get("anchors"))
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

    It is also a map-style dataset, for anyone's DataLoader: `store[i]` is `(image i, its positives)` (see
    `__getitem__`), the images those of the dataset it was opened over (any map-style dataset in the order the
    store was made from), or of the dataset its manifest records (a store `clsp synthesize` made).
    """

    def __init__(self, path: Path, manifest: dict, chunks: list[np.ndarray], resident=None,
                 strength: list[np.ndarray] | None = None, dataset=None, positive_transform=None) -> None:
        self.path, self.manifest = path, manifest
        self._chunks = chunks          # memory-mapped chunk arrays (CPU)
        self._resident = resident      # one tensor [N, K, H, W, C] (any device)
        self._strength = strength      # memory-mapped strength arrays [n, K, 2] (CPU), or None
        self.dataset = dataset         # what `store[i]` pairs the candidates with (None: the recorded dataset, on use)
        self.positive_transform = positive_transform

    @classmethod
    def open(cls, path: str | os.PathLike, dataset=None, positive_transform=None) -> "PositivesStore":
        """Open a complete store made for `dataset`, and check that the dataset holds its images in its order.

        `dataset` is an ImageSet or StreamingImageSet (`clsp.load_dataset`: checked by content fingerprint), any
        map-style dataset (`__len__`, `__getitem__`; checked by length, and at a dozen recorded indices by label
        and by pixels where its items give the image itself rather than a random augmentation of it; see
        `check_order`), or None (no check: tools that only read the candidates; `store[i]` then loads the
        dataset the manifest records). A dataset that does not match is a UserError. `positive_transform`: see
        `__getitem__`."""
        path = Path(path)
        manifest = read_manifest(path)
        if manifest is None:
            raise UserError(f"{path} is not a positives store (no {MANIFEST}); make one with "
                            f"`clsp synthesize --model DIR --dataset NAME --out {path}`")
        if dataset is not None:
            if is_image_source(dataset):
                check_dataset(path, manifest, dataset)
            else:
                check_order(path, manifest, dataset)
        regenerate = (f"resume it with `clsp synthesize --config {path / CONFIG}` (the command that made it continues "
                      f"where it stopped and regenerates damaged chunks), or delete {path} and regenerate it")
        recorded = set(manifest.get("complete_chunks", []))
        if len(recorded) != manifest["chunks_total"]:
            raise UserError(f"positives store {path} is incomplete ({len(recorded)} of {manifest['chunks_total']} chunks); "
                            f"{regenerate}")
        if "chunk_sha256" not in manifest:
            log.warning(f"positives store {path} records no chunk checksums (made by an older clsp): its chunks are "
                        "checked by size and header only")
        problems, chunks = {}, []
        for i in range(manifest["chunks_total"]):
            chunk, problem = None, chunk_problem(path, manifest, i)
            if problem is None:
                chunk, problem = _map_chunk(chunk_path(path, i), chunk_shape(manifest, i))
            if problem is not None:
                problems[chunk_path(path, i).name] = problem
            chunks.append(chunk)
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
        return cls(path, manifest, chunks, strength=strength or None, dataset=dataset,
                   positive_transform=positive_transform)

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

    # -- a map-style dataset of (image, positives) -------------------------------------------------

    def __getitem__(self, i: int):
        """(item, positives) of image i.

        item: the wrapped dataset's item i as that dataset gives it (e.g. an ImageFolder's (image, label), its own
        transform applied); for an ImageSet / StreamingImageSet, or the dataset the manifest records, the image
        as uint8 (C, H, W).
        positives: all K candidates, uint8 (K, C, H, W); or, with a `positive_transform`, that transform applied
        to one candidate drawn uniformly (torch's RNG, which a DataLoader seeds per worker) and given as an RGB
        PIL image, as torchvision's ImageFolder loads its images: e.g. one view of the augmentation recipe of
        the real views, as `clsp pretrain` augments its synthetic positives.
        """
        import torch

        i = int(i)
        if not 0 <= i < self.n:
            raise IndexError(f"positives store has {self.n} images; got index {i}")
        if self.dataset is None:
            self.dataset = self._recorded_dataset()
        item = torch.from_numpy(self.dataset.images_at([i])[0]).permute(2, 0, 1) if is_image_source(self.dataset) \
            else self.dataset[i]
        candidates = self.candidates([i])[0].cpu()                                  # (K, H, W, C)
        if self.positive_transform is None:
            return item, candidates.permute(0, 3, 1, 2).contiguous()
        return item, self.positive_transform(_rgb_image(candidates[int(torch.randint(self.k, ()))].numpy()))

    def _recorded_dataset(self):
        """The dataset split the store's manifest records (a store `clsp synthesize` made), loaded and checked."""
        recorded = (self.manifest.get("sources") or {}).get("dataset_config")
        if not recorded:
            raise UserError(f"positives store {self.path} records no dataset to load (made from images in memory); "
                            f"open it over the dataset it was made from: PositivesStore.open(path, dataset)")
        from clsp.data.config import DatasetConfig, load_split

        try:
            config = DatasetConfig(**recorded)
        except TypeError as e:
            raise UserError(f"positives store {self.path} records a dataset this clsp cannot read ({e}); open it over "
                            f"the dataset it was made from: PositivesStore.open(path, dataset)") from None
        dataset = load_split(config, self.manifest["sources"]["split"])
        check_dataset(self.path, self.manifest, dataset)
        return dataset

    @classmethod
    def save(cls, path: str | os.PathLike, candidates, images, labels=None, files=None, name: str = "images",
             chunk_size: int = 512) -> "PositivesStore":
        """Write `candidates` made for `images` as a store at `path` (a new directory, complete or absent), and open it.

        candidates (N, K, C, H, W) and images (N, C, H, W), each uint8 or float in [0, 1] (as
        `clsp.generate_positives` takes and returns them); `labels` (N,) ints or None; `files` (N,) the images'
        paths or None (an ImageFolder's: `[path for path, _ in folder.samples]`). The manifest records the images'
        content fingerprint and, for a dozen indices, the image's hash, its label and its file (class folder and
        name): what `open` checks a dataset against; the file also where the dataset's items are random views.
        """
        import shutil
        import tempfile

        from clsp.data.sets import content_fingerprint
        from clsp.positives.generate import to_store_layout
        from clsp.rundir import package_versions

        anchors = to_store_layout(images, "images").numpy()
        pixels = to_store_layout(candidates, "candidates", "N, K, C, H, W").numpy()
        if pixels.shape[0] != anchors.shape[0] or pixels.shape[2:] != anchors.shape[1:]:
            raise UserError(f"candidates {tuple(candidates.shape)} were not made for images {tuple(images.shape)}: "
                            f"expected (N, K, C, H, W) = ({images.shape[0]}, K, {', '.join(map(str, images.shape[1:]))})")
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64).reshape(-1)
            if len(labels) != len(anchors):
                raise UserError(f"{len(labels)} labels for {len(anchors)} images")
        if files is not None and len(files) != len(anchors):
            raise UserError(f"{len(files)} files for {len(anchors)} images")
        path = Path(path)
        if path.exists():
            raise UserError(f"{path} already exists; save the positives to a new directory (or delete {path})")
        n, k = pixels.shape[:2]
        dataset = {"name": name, "split": "all", "n": n, "fingerprint": content_fingerprint(anchors, labels),
                   "image_shape": [int(x) for x in anchors.shape[1:]]}
        generation = {"k": int(k), "chunk_size": int(chunk_size), "made_by": "PositivesStore.save"}
        manifest = new_manifest(dataset, "unrecorded", generation, {}, package_versions(),
                                anchor_record(n, lambda rows: anchors[rows], labels, files))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            writer = StoreWriter(tmp, manifest)
            writer.start()
            for index in range(writer.total):
                start, stop = chunk_bounds(index, n, chunk_size)
                writer.write_chunk(index, pixels[start:stop])
            writer.finish()
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(path)

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
                PositivesStore(self.path, self.manifest, self._chunks, self._resident.to(device), self._strength,
                               self.dataset, self.positive_transform)
        resident = torch.empty((self.n, self.k, *self.image_shape), dtype=torch.uint8, device=device)
        for i, chunk in enumerate(self._chunks):
            start = i * self.chunk_size
            resident[start:start + len(chunk)] = torch.from_numpy(np.array(chunk)).to(device)  # a copy: the map is read-only
        return PositivesStore(self.path, self.manifest, self._chunks, resident, self._strength, self.dataset,
                              self.positive_transform)

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
            f"pass the dataset the store was made from{_recorded_settings(manifest)}, or make a store for this one with "
            f"`clsp synthesize --dataset {given['name']} --split {given['split']} --out NEW_STORE ...`")


def is_image_source(dataset) -> bool:
    """Whether `dataset` is one of clsp's dataset splits (ImageSet, StreamingImageSet), with a content fingerprint."""
    return hasattr(dataset, "fingerprint") and hasattr(dataset, "images_at")


def probe_indices(n: int) -> list[int]:
    """The images a manifest keeps a hash of: the first four and eight spread evenly over the split."""
    spread = np.linspace(0, n - 1, 8).round().astype(int) if n else []
    return sorted(set(range(min(n, 4))) | {int(i) for i in spread})


def anchor_hash(image: np.ndarray) -> str:
    """A short hash of one uint8 (H, W, C) image: its shape and bytes."""
    h = hashlib.sha256(repr(tuple(image.shape)).encode())
    h.update(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
    return h.hexdigest()[:16]


def anchor_record(n: int, images_at, labels, files=None) -> dict:
    """What a manifest keeps of the images a store was made from, beyond their fingerprint: at `probe_indices`,
    each image's hash, label and file (`file_key`), so that a store opened over a dataset clsp did not load can
    check its order. `images_at(indices)` gives uint8 (len, H, W, C); `labels` (N,) or None; `files` (N,) or None."""
    indices = probe_indices(n)
    images = images_at(np.asarray(indices, dtype=np.int64))
    return {"indices": indices, "sha256": [anchor_hash(image) for image in images],
            "labels": None if labels is None else [int(labels[i]) for i in indices],
            "files": None if files is None else [file_key(files[i]) for i in indices]}


def file_key(path) -> str:
    """An image file as the order check compares it: its folder's name and its own (an ImageFolder's class/image)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


def check_order(path: Path, manifest: dict, dataset, reads: int = 3) -> None:
    """A map-style dataset holds the images the store was made from, in the same order: the same length, and at
    each recorded index (`anchor_record`) the same file where both have one (a torchvision ImageFolder's `samples`),
    the same label where its items are (image, label), and the same pixels where its items give images of the
    store's shape reproducibly (each index is read `reads` times: a dataset whose items differ between reads draws
    random augmentations, whose pixels say nothing of the order). A store made before anchors were recorded is
    checked by length only."""
    n = int(manifest["dataset"]["n"])
    try:
        length = len(dataset)
    except TypeError:
        raise UserError(f"a positives store wraps a map-style dataset (with __len__ and __getitem__), "
                        f"not a {type(dataset).__name__}") from None
    if length != n:
        raise UserError(f"positives store {path} holds the positives of {n} images but the dataset has {length}; "
                        f"wrap the dataset the store was made from, in the same order (shuffle in the DataLoader)")
    record = manifest.get("anchors")
    if not record:
        return
    shape = tuple(manifest["dataset"]["image_shape"])
    labels = record.get("labels") or [None] * len(record["indices"])
    files = record.get("files") or [None] * len(record["indices"])
    samples = getattr(dataset, "samples", None)                     # torchvision's ImageFolder: (path, class) per item
    mismatched, reproducible = [], True
    for i, digest, label, file in zip(record["indices"], record["sha256"], labels, files):
        if file is not None and isinstance(samples, (list, tuple)) and file_key(samples[i][0]) != file:
            raise _order_error(path, i, f"the file {file_key(samples[i][0])}, not the store's {file}")
        image, item_label = _image_and_label(dataset[i])
        if label is not None and item_label is not None and item_label != label:
            raise _order_error(path, i, f"label {item_label}, not the store's {label}")
        pixels = [_as_anchor(image, shape)] + [_as_anchor(_image_and_label(dataset[i])[0], shape) for _ in range(reads - 1)]
        if any(p is None for p in pixels):
            reproducible = False                                    # not an image of the store's shape: no pixel check
            continue
        reproducible &= all(np.array_equal(pixels[0], p) for p in pixels[1:])
        if all(anchor_hash(p) != digest for p in pixels):
            mismatched.append(i)
    if reproducible and mismatched:
        raise _order_error(path, mismatched[0], "other pixels than the image the store's candidates were made from")


def _order_error(path: Path, i: int, what: str) -> UserError:
    return UserError(f"positives store {path} was made from other images, or from these in another order: the "
                     f"dataset's item {i} has {what}; wrap the dataset the store was made from, unshuffled "
                     f"(shuffle in the DataLoader)")


def _image_and_label(item) -> tuple[Any, int | None]:
    """(image, int label) of an (image, label) item, as torchvision's datasets give them; (item, None) otherwise."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        label = item[1]
        if isinstance(label, (int, np.integer)) or (hasattr(label, "ndim") and label.ndim == 0 and not
                                                    getattr(label, "is_floating_point", lambda: False)()):
            return item[0], int(label)
    return item, None


def _as_anchor(image, shape: tuple[int, ...]) -> np.ndarray | None:
    """`image` (a PIL image, uint8 HWC array, or CHW tensor: uint8, or float in [0, 1]) as uint8 of `shape`
    (H, W, C), a grey image's three equal channels taken as one; None when it is not an image of that shape."""
    array = None
    if hasattr(image, "getbands"):                                   # PIL
        array = np.asarray(image)
    elif isinstance(image, np.ndarray) and image.dtype == np.uint8:
        array = image
    elif hasattr(image, "detach") and image.ndim == 3 and image.shape[0] in (1, 3):   # a torch CHW tensor
        import torch

        t = image.detach().cpu()
        if t.is_floating_point():
            if float(t.min()) < 0.0 or float(t.max()) > 1.0:
                return None                                         # normalised: its bytes are not comparable
            t = (t * 255.0).round()
        array = t.to(torch.uint8).permute(1, 2, 0).numpy()
    if array is None or array.dtype != np.uint8:
        return None
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim == 3 and array.shape[-1] == 3 and shape[-1] == 1 and \
            np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2]):
        array = array[..., :1]
    return array if tuple(array.shape) == shape else None


def _rgb_image(candidate: np.ndarray):
    """One uint8 (H, W, C) candidate as an RGB PIL image."""
    from PIL import Image

    return Image.fromarray(candidate[..., 0] if candidate.shape[-1] == 1 else candidate).convert("RGB")


def _recorded_settings(manifest: dict) -> str:
    """The dataset settings the store records, as the keys that load the same images again."""
    recorded = (manifest.get("sources") or {}).get("dataset_config") or {}
    keys = [f"dataset.{key}={recorded[key]}" for key in ("name", "root", "size", "subset", "channels")
            if recorded.get(key) not in (None, 0, "")]
    return f" ({' '.join(keys)})" if keys else ""


def dataset_record(dataset) -> dict:
    """What the manifest records about the images it was made from."""
    return {"name": dataset.name, "split": dataset.split, "n": len(dataset), "fingerprint": dataset.fingerprint,
            "image_shape": [int(s) for s in dataset.shape]}


def _describe(d: dict) -> str:
    h, w, c = d["image_shape"]
    return f"{d['name']} {d['split']} (N={d['n']}, {h}x{w}x{c}, fingerprint {d['fingerprint']})"
