"""A wheel built from the checkout carries every preset: installed (not editable) into a fresh directory and
run from elsewhere, `--config NAME` resolves each of them; and the library's public names import from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

RESOLVE_ALL = r"""
import sys
from pathlib import Path
import clsp
from clsp.cli import resolve_config
from clsp.config import CONFIG_DIR

assert Path(clsp.__file__).is_relative_to(Path(sys.argv[1])), clsp.__file__   # the wheel's copy, not the checkout
commands = {"": ["pipeline"], "diffusion": ["diffusion", "train"], "pretrain": ["pretrain"],
            "synthesize": ["synthesize", "--model", "m", "--out", "o"]}
names = []
for path in sorted(CONFIG_DIR.rglob("*.yaml")):
    folder = path.parent.relative_to(CONFIG_DIR).as_posix().replace(".", "")
    cfg = resolve_config([*commands[folder], "--config", path.stem])
    names.append(f"{folder}/{path.stem}".lstrip("/"))
print("\n".join(names))
"""


def test_a_wheel_install_resolves_every_preset_by_name(tmp_path):
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("clsp-*.whl")
    target = tmp_path / "installed"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                              str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr

    elsewhere = tmp_path / "elsewhere"  # no configs/ folder here: the names must come from the package
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", RESOLVE_ALL, str(target)], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    resolved = run.stdout.split()
    shipped = sorted(p.relative_to(REPO / "configs").with_suffix("").as_posix() for p in (REPO / "configs").rglob("*.yaml"))
    assert sorted(resolved) == shipped and "demo" in resolved and "pretrain/demo" in resolved

    demo = subprocess.run([sys.executable, "-m", "clsp", "pipeline", "--config", "demo", "--print-config"], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0 and "methods:" in demo.stdout, demo.stderr

    # The demo's shipped diffusion model and reference classifier travel in the wheel and load from it.
    shipped = subprocess.run([sys.executable, "-c", SHIPPED, str(target)], cwd=elsewhere, env=env, capture_output=True,
                             text=True, timeout=300)
    assert shipped.returncode == 0, shipped.stderr
    assert shipped.stdout.split() == ["fashion-mnist-16", "mini", "1"], shipped.stdout

    # The library's names (issue 28), each from the wheel's own modules, documented and typed.
    public = subprocess.run([sys.executable, "-c", PUBLIC_API, str(target)], cwd=elsewhere, env=env, capture_output=True,
                            text=True, timeout=300)
    assert public.returncode == 0, public.stderr
    assert public.stdout.split() == ["CLSPTerm", "PositivesStore", "UserError", "generate_positives", "load_dataset",
                                     "load_encoder"], public.stdout


SHIPPED = r"""
import sys
from pathlib import Path
from clsp.diffusion.model import load_model, resolve_model_dir, shipped_models
from clsp.eval.reference import SHIPPED_REFERENCES

folder = resolve_model_dir("clsp:fashion-mnist-16")
assert folder.is_relative_to(Path(sys.argv[1])), folder
unet, _ = load_model(folder)
judges = [p for p in SHIPPED_REFERENCES.iterdir() if (p / "model.safetensors").is_file() and (p / "record.json").is_file()]
assert SHIPPED_REFERENCES.is_relative_to(Path(sys.argv[1])) and judges, SHIPPED_REFERENCES
print(" ".join(shipped_models()), "mini" if unet.config.block_out_channels[0] == 32 else "?", unet.config.in_channels)
"""


PUBLIC_API = r"""
import inspect
import sys
import typing
from pathlib import Path

import clsp

assert "torch" not in sys.modules                   # the names load on first use: `clsp --help` stays torch-free
from clsp import CLSPTerm, PositivesStore, UserError, generate_positives, load_dataset, load_encoder

for obj in (CLSPTerm, PositivesStore, UserError, generate_positives, load_dataset, load_encoder):
    assert Path(inspect.getfile(obj)).is_relative_to(Path(sys.argv[1])), obj
    assert obj.__doc__, obj
for function in (generate_positives, load_dataset, load_encoder, PositivesStore.open, PositivesStore.save,
                 CLSPTerm.__init__, CLSPTerm.forward):
    assert "return" in typing.get_type_hints(function), function
print(" ".join(sorted(name for name in clsp.__all__ if not name.startswith("_"))))
"""
