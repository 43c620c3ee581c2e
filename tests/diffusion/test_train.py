"""DDPM training on real digits: the loss falls, outputs are complete, and a killed run resumes exactly."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clsp.config import load_config
from clsp.diffusion.cli import resolve_train_preset
from clsp.diffusion.model import check_model_matches, load_model
from clsp.diffusion.train import DiffusionTrainConfig, random_flip, train_diffusion
from clsp.diffusion.unet import make_unet
from clsp.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[2]


def config(out_dir, *overrides):
    return load_config(DiffusionTrainConfig, resolve_train_preset("tiny-digits"),
                       [f"out_dir={out_dir}", "trainer.progress=false", *overrides])


def logged_losses(run_dir) -> list[float]:
    with open(Path(run_dir) / "logs" / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_loss_falls_and_the_run_is_complete(tmp_path):
    cfg = config(tmp_path / "run", "max_steps=40", "sample_every=40", "n_sample_grid=4", "sample_steps=5",
                 "trainer.checkpoint_every=40", "trainer.log_every=1")
    model_dir = train_diffusion(cfg)

    losses = logged_losses(tmp_path / "run")
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:2]) / 2, losses    # epsilon-MSE starts near 1 and falls fast
    unet, scheduler_config = load_model(model_dir)
    check_model_matches(unet, 16, channels=1)                           # digits are grey: a grey model
    assert scheduler_config["beta_schedule"] == "linear" and scheduler_config["num_train_timesteps"] == 1000
    assert (tmp_path / "run" / "samples" / "step00000040.png").is_file()
    assert (tmp_path / "run" / "done.json").is_file() and any((tmp_path / "run" / "tb").iterdir())

    # The saved UNet holds the EMA weights, which the checkpoint carries beside the raw ones.
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    saved = load_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert state["ema.n_averaged"] == 40
    name = "conv_out.weight"
    assert torch.equal(saved[name], state[f"ema.module.{name}"])
    assert not torch.equal(saved[name], state[f"unet.{name}"])
    # The EMA has left the random initialisation: after 40 of the preset's steps (decay 0.99) a constant decay would
    # still hold 0.99^39 = 68% of it; the warm-up leaves under 1e-7 (see ema_decay_at).
    torch.manual_seed(cfg.seed)
    init = make_unet(cfg.model, 16, channels=1).state_dict()
    moved = lambda w: sum((w[k].float() - init[k].float()).norm() ** 2 for k in init) ** 0.5  # noqa: E731
    ema = {k: state[f"ema.module.{k}"] for k in init}
    raw = {k: state[f"unet.{k}"] for k in init}
    assert moved(ema) > 0.8 * moved(raw)

    # Done work is not redone.
    stamp = (model_dir / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert train_diffusion(cfg) == model_dir
    assert (model_dir / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp


def test_ema_decay_warms_up_so_short_runs_forget_the_initialisation():
    from math import prod

    from clsp.diffusion.train import ema_decay_at

    assert [ema_decay_at(0.999, n) for n in (0, 1, 10)] == [0.1, 2 / 11, 11 / 20]
    assert ema_decay_at(0.999, 100_000) == 0.999                      # long runs: the configured decay
    # the share of the initialisation left in the average after N steps (the first update copies the weights)
    assert prod(ema_decay_at(0.999, n) for n in range(1, 1000)) < 1e-3
    assert 0.999 ** 999 > 0.35                                          # what a constant decay would keep


def test_kill_and_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    overrides = ["dataset.size=8", "batch_size=8", "max_steps=30", "trainer.checkpoint_every=5", "sample_every=1000",
                 "n_sample_grid=0", "dropout=0.1"]                          # dropout: its RNG must replay too
    reference = train_diffusion(config(tmp_path / "straight", *overrides))

    command = [sys.executable, "-m", "clsp", "diffusion", "train", "--config", "tiny-digits",
               f"out_dir={tmp_path / 'killed'}", "trainer.progress=false", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CLSP_QUIET": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate()
    assert process.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert not (tmp_path / "killed" / "model").exists()                   # it died mid-run
    step = torch.load(last, weights_only=True)["global_step"]
    assert 0 < step < 30

    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    a = load_file(reference / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "killed" / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_full_disk_while_logging_after_a_checkpoint_loses_no_row(tmp_path, monkeypatch):
    """The disk fills right after the step-4 checkpoint: the next metrics.csv append is cut short (ENOSPC).
    With space again the rerun's metrics.csv and UNet are an uninterrupted run's: no step's row is lost."""
    import builtins
    import errno

    from clsp import training

    overrides = ["dataset.size=8", "batch_size=8", "max_steps=6", "trainer.checkpoint_every=2", "trainer.log_every=1",
                 "n_sample_grid=0"]
    reference = train_diffusion(config(tmp_path / "straight", *overrides))
    run, failed = tmp_path / "run", []

    class CutShort:
        def __init__(self, f) -> None:
            self._f = f

        def write(self, text: str) -> int:
            failed.append(text)
            self._f.write(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def full_after_checkpoint_4(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        full = (run / "checkpoints" / "step00000004.ckpt").exists() and not failed
        return CutShort(f) if full and "a" in mode and str(path).endswith("metrics.csv") else f

    monkeypatch.setattr(training, "open", full_after_checkpoint_4, raising=False)
    with pytest.raises(OSError) as failure:
        train_diffusion(config(run, *overrides))
    assert failure.value.errno == errno.ENOSPC and failed
    monkeypatch.undo()
    train_diffusion(config(run, *overrides))
    assert (run / "logs" / "metrics.csv").read_bytes() == (tmp_path / "straight" / "logs" / "metrics.csv").read_bytes()
    a = load_file(reference / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(run / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_flip_is_per_sample():
    torch.manual_seed(0)
    x = torch.arange(64.0).view(1, 1, 1, 64).expand(64, 3, 8, 64).contiguous()
    y = random_flip(x)
    flipped = (y[:, 0, 0, 0] == 63).float()
    assert 0 < flipped.sum() < 64 and torch.equal(y[flipped.bool()], x[flipped.bool()].flip(3))


def test_bad_configs_fail_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="model"):
        config(tmp_path, "model=huge")
    with pytest.raises(UserError, match="multiple of 4"):
        train_diffusion(config(tmp_path / "r", "dataset.size=10"))
    with pytest.raises(UserError, match="fewer than one global batch"):
        train_diffusion(config(tmp_path / "r", "batch_size=4096"))
    assert not (tmp_path / "r").exists()


def test_fine_tuning_starts_from_the_init_model(tmp_path, saved_tiny_model):
    from clsp.io import hash_directory, read_json

    cfg = config(tmp_path / "ft", f"init_from={saved_tiny_model}", "dataset.size=8", "batch_size=8", "max_steps=2",
                 "lr=1e-9", "warmup_steps=0", "n_sample_grid=0")
    model_dir = train_diffusion(cfg)
    start = load_file(saved_tiny_model / "unet" / "diffusion_pytorch_model.safetensors")
    tuned = load_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.allclose(start[k], tuned[k], atol=1e-6) for k in start)   # lr ~ 0: the init weights survive
    assert read_json(tmp_path / "ft" / "inputs.json")["init_model"] == hash_directory(saved_tiny_model)
    with pytest.raises(UserError, match="16x16"):
        train_diffusion(config(tmp_path / "ft2", f"init_from={saved_tiny_model}", "n_sample_grid=0"))


def test_a_hostile_checkpoint_is_refused_without_running_its_code(tmp_path, monkeypatch):
    from hostile_checkpoint import write_hostile_checkpoint

    """An interrupted run whose last.ckpt was replaced by a malicious pickle (it would `touch` a marker).
    torch < 2.6, which our bounds allow, unpickles anything unless weights_only=True is passed: the
    variable below gives the installed torch that default."""
    overrides = ["dataset.size=8", "batch_size=8", "max_steps=6", "trainer.checkpoint_every=2", "n_sample_grid=0"]

    import lightning as L

    from clsp import training

    class Crash(Exception):
        pass

    class CrashAt(L.Callback):
        def on_train_batch_start(self, trainer, *_):
            if trainer.global_step == 3:
                raise Crash

    make_trainer = training.make_trainer
    monkeypatch.setattr(training, "make_trainer", lambda *a, **k: make_trainer(*a, **k, callbacks=[CrashAt()]))
    with pytest.raises(Crash):
        train_diffusion(config(tmp_path / "run", *overrides))                 # a real interrupted run
    monkeypatch.setattr(training, "make_trainer", make_trainer)

    marker = tmp_path / "marker"
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    write_hostile_checkpoint(last, marker)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UserError, match=r"last\.ckpt asks to run code"):
        train_diffusion(config(tmp_path / "run", *overrides))
    assert not marker.exists()


def test_sample_grids_scale_with_the_run():
    """The grids together cost about 5% of training at most: a paper-scale run keeps 64 images x 100
    DDIM steps, a short run gets a smaller grid (at least 16 images, 10 steps)."""
    from clsp.config import CONFIG_DIR, load_config
    from clsp.diffusion.train import DiffusionTrainConfig, sample_grid_size

    paper = load_config(DiffusionTrainConfig, CONFIG_DIR / "diffusion" / "cifar10.yaml")
    assert sample_grid_size(paper) == (64, 100)
    demo = load_config(DiffusionTrainConfig, CONFIG_DIR / "diffusion" / "demo.yaml")
    assert sample_grid_size(demo) == (demo.n_sample_grid, demo.sample_steps) == (16, 20)
    short = load_config(DiffusionTrainConfig, None, ["batch_size=16", "max_steps=100"])      # defaults: 64 x 100
    images, steps = sample_grid_size(short)
    assert (images, steps) == (24, 10) and images * steps <= 0.05 * 3 * 16 * 100
    assert sample_grid_size(load_config(DiffusionTrainConfig, None, ["n_sample_grid=0"]))[0] == 0
