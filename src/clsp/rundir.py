"""Run directories: every command that produces something records what it was made from.

A run directory holds config.yaml (the resolved config), env.json (package versions, git commit,
command line, host), inputs.json (fingerprints of the inputs), log.txt, the outputs, and, once the
work is complete, done.json. A later stage, or a re-run of the pipeline, trusts an output only
when done.json's fingerprint equals the fingerprint of the config and inputs it would use now.

`Stage` is the one sequence every stage function follows around its work: skip when complete, check
what an interrupted run was started with before resuming it, start, mark done.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import yaml

from clsp.config import hashed_dict, to_yaml
from clsp.io import hash_json, read_json, read_json_object, write_json_atomic, write_text_atomic

PACKAGES = ("clsp", "torch", "torchvision", "lightning", "diffusers", "kornia", "numpy", "omegaconf", "scikit-learn")
log = logging.getLogger("clsp")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The commit of the clsp source tree, with '+dirty' when it has uncommitted changes."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src, capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def fingerprint(config: Any, inputs: dict[str, str]) -> str:
    """What a stage's output depends on: its resolved config and its inputs' fingerprints."""
    cfg = config if isinstance(config, dict) else hashed_dict(config)   # keys that change nothing left out
    return hash_json({"config": cfg, "inputs": inputs})


def start(run_dir: str | Path, config: Any, inputs: dict[str, str] | None = None) -> Path:
    """Create the run directory and write its records; log to log.txt as well as the console."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    inputs = dict(inputs or {})
    write_text_atomic(run / "config.yaml", config if isinstance(config, str) else to_yaml(config))
    write_json_atomic(run / "inputs.json", inputs)
    write_json_atomic(run / "env.json", {
        "versions": package_versions(),
        "git_commit": git_commit(),
        "argv": sys.argv,
        "host": platform.node(),
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cuda": _cuda_device(),
    })
    _attach_log_file(run / "log.txt")
    return run


def finish(run_dir: str | Path, config: Any, inputs: dict[str, str] | None = None, outputs: dict[str, Any] | None = None) -> None:
    """Mark the run complete for exactly this config and these inputs, and stop logging into it."""
    _detach_log_file(Path(run_dir) / "log.txt")
    write_json_atomic(Path(run_dir) / "done.json", {
        "fingerprint": fingerprint(config, dict(inputs or {})),
        "outputs": outputs or {},
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })


def is_complete(run_dir: str | Path, config: Any, inputs: dict[str, str] | None = None) -> bool:
    return record_matches(Path(run_dir) / "done.json", fingerprint(config, dict(inputs or {})))


def record_matches(record: Path, key: str, outputs: Sequence[Path] = ()) -> bool:
    """What counts as complete, for a stage's done.json and for the pipeline's stage records alike: the
    record holds this fingerprint and every output is still there (a deleted output is made again)."""
    return all(Path(p).exists() for p in outputs) and (read_json_object(record) or {}).get("fingerprint") == key


class Stage:
    """A stage's run directory for one config and the fingerprints of its inputs.

        stage = Stage(out, cfg, inputs, outputs=["model"])
        if stage.complete:               # done.json holds this fingerprint and the outputs are there
            return ...                   # what the finished run made
        ...                              # a resumed run checks stage.recorded_config() / _inputs()
        stage.start()                    # config.yaml, inputs.json, env.json; log into log.txt
        ...                              # the work
        stage.done({...})                # done.json (with what was made); stop logging into log.txt

    An interrupted stage has no done.json, so the next call resumes it: nothing here undoes a start."""

    def __init__(self, out: str | Path, config: Any, inputs: dict[str, str] | None = None,
                 outputs: Sequence[str] = ()) -> None:
        self.out, self.config, self.inputs = Path(out), config, dict(inputs or {})
        self.outputs = tuple(outputs)              # files or folders (relative to out) a complete run leaves

    @property
    def complete(self) -> bool:
        return record_matches(self.out / "done.json", fingerprint(self.config, self.inputs),
                              [self.out / name for name in self.outputs])

    def recorded_config(self) -> dict:
        """The config an earlier start recorded (OSError or yaml.YAMLError when absent or unreadable)."""
        config = yaml.safe_load((self.out / "config.yaml").read_text())
        return config if isinstance(config, dict) else {}

    def recorded_inputs(self) -> dict:
        """The inputs an earlier start recorded (OSError or ValueError when absent or unreadable)."""
        return read_json(self.out / "inputs.json")

    def start(self) -> Path:
        return start(self.out, self.config, self.inputs)

    def done(self, outputs: dict[str, Any] | None = None) -> None:
        finish(self.out, self.config, self.inputs, outputs)


def outputs(run_dir: str | Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / "done.json").get("outputs", {})


def _cuda_device() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a record, never a reason to fail
        return None


def _detach_log_file(path: Path) -> None:
    root = logging.getLogger("clsp")
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve():
            root.removeHandler(h)
            h.close()


def _attach_log_file(path: Path) -> None:
    root = logging.getLogger("clsp")
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve():
            return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # A console handler only when nobody prints yet: the CLI's basicConfig already does (on the root logger).
    has_console = any(type(h) is logging.StreamHandler for h in root.handlers + logging.getLogger().handlers)
    if os.environ.get("CLSP_QUIET") is None and not has_console:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(console)
