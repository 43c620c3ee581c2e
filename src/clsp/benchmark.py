"""Plumbing shared by the scripts in benchmarks/: device sync, timing, the matmul peak, and result files.

Each script measures something different, but they must time, name devices and record results the
same way, so that their figures and files can be compared; that common part lives here.
"""

from __future__ import annotations

import datetime as dt
import platform
import re
import time
from pathlib import Path
from typing import Any, Callable

import torch

from clsp.io import write_json_atomic
from clsp.rundir import git_commit, package_versions

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device | str, repeats: int = 1, warmup: int = 1) -> float:
    """Seconds per call of fn over `repeats` calls, after `warmup` untimed calls; synchronised around the loop only."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def matmul_peak_tflops(device: torch.device | str, n: int = 8192, dtype: torch.dtype | None = None,
                       repeats: int | None = None) -> float:
    """Measured TFLOP/s of an n x n matmul: bf16 on CUDA, fp32 on CPU unless dtype is given."""
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if on_gpu else torch.float32)
    repeats = repeats or (20 if on_gpu else 2)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device, repeats, warmup=5 if on_gpu else 1)
    return 2 * n ** 3 / seconds / 1e12


def device_name(device: torch.device | str) -> str:
    """The GPU's name, or 'cpu (<processor>, <threads> threads)'."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def slug(name: str) -> str:
    """A file-name-safe form of a device name, without its parenthesised details: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.split(" (")[0].lower()).strip("-")


def device_slug(device: torch.device | str) -> str:
    return slug(device_name(device))


def stamp(result: dict, device: torch.device | str | None = None) -> dict:
    """result with device, date, commit and versions added in front where missing (a new dict)."""
    added: dict[str, Any] = {}
    if "device" not in result:
        added["device"] = device_name(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if "date" not in result:
        added["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if "commit" not in result:
        added["commit"] = git_commit()
    if "versions" not in result:
        added["versions"] = package_versions()
    return {**added, **result}


def record(name: str, result: dict, results_dir: str | Path | None = None,
           device: torch.device | str | None = None) -> Path:
    """Write stamp(result) atomically to <results_dir>/<name>-<device slug>-<YYYY-MM-DD>.json; returns the path."""
    result = stamp(result, device)
    path = Path(results_dir or RESULTS) / f"{name}-{slug(str(result['device']))}-{str(result['date'])[:10]}.json"
    write_json_atomic(path, result)
    return path
