"""Shared test setup: CPU-sized threads, the gpu marker, and Fashion-MNIST availability."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("CLSP_QUIET", "1")


def pytest_configure(config):
    """Two intra-op threads on the 2-core CI machine; OMP_NUM_THREADS, when set, wins (on a machine shared with
    other jobs, 2 OpenMP threads spin-wait against them and run many times slower than 1)."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1))))


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def fashion_mnist_or_skip(split: str = "train"):
    """Load Fashion-MNIST or skip with the reason printed (never silently)."""
    from clsp.data import load_dataset
    from clsp.errors import UserError

    try:
        return load_dataset("fashion-mnist", split, download=False)
    except UserError as e:
        print(f"SKIP reason: {e}")
        pytest.skip(f"Fashion-MNIST unavailable: {e}")


@pytest.fixture(scope="session")
def fashion_mnist():
    return fashion_mnist_or_skip("train")


@pytest.fixture(scope="session")
def digits():
    from clsp.data import load_dataset

    return load_dataset("digits", "train")


class FullDisk:
    """A folder whose disk can be filled on demand, for the disk-full tests.

    Where the machine allows it (root, a kernel that lets us mount), `root` is a small tmpfs of its own
    and `fill()` leaves 1 MiB free: every writer meets a real ENOSPC. Elsewhere (or with CLSP_TEST_NO_MOUNT
    set) the writes of clsp.io's atomic writers (checkpoints, JSON records, store chunks) fail with ENOSPC
    after 1 MiB once filled.
    """

    SIZE = "256m"
    ROOM = 1 << 20

    def __init__(self, root, monkeypatch) -> None:
        import shutil
        import subprocess

        self.root, self.monkeypatch, self.filler = root, monkeypatch, root / "filler"
        root.mkdir(parents=True, exist_ok=True)
        can_mount = os.geteuid() == 0 and shutil.which("mount") is not None and not os.environ.get("CLSP_TEST_NO_MOUNT")
        self.mounted = can_mount and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.SIZE}", "tmpfs", str(root)], capture_output=True).returncode == 0
        self.full = False
        if not self.mounted:
            self._patch_writes()

    def fill(self) -> None:
        self.full = True
        if self.mounted:
            free = os.statvfs(self.root).f_bavail * os.statvfs(self.root).f_frsize
            with open(self.filler, "wb") as f:
                f.truncate(0)
                f.write(b"\0" * max(0, free - self.ROOM))

    def free(self) -> None:
        self.full = False
        if self.mounted:
            self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        import subprocess

        if self.mounted:
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True)

    def _patch_writes(self) -> None:
        import builtins
        import errno

        import clsp.io

        disk = self

        class FillingFile:
            def __init__(self, f) -> None:
                self._f, self._written = f, 0

            def write(self, data) -> int:
                if disk.full and self._written + len(data) > disk.ROOM:
                    self._f.write(bytes(data)[: max(0, disk.ROOM - self._written)])
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self._written += len(data)
                return self._f.write(data)

            def __getattr__(self, name):
                return getattr(self._f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._f.close()

        self.monkeypatch.setattr(clsp.io, "open", lambda *a, **k: FillingFile(builtins.open(*a, **k)), raising=False)


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """A FullDisk at tmp_path/disk (unmounted at the end)."""
    disk = FullDisk(tmp_path / "disk", monkeypatch)
    yield disk
    disk.close()
