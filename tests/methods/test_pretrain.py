"""pretrain() end to end on digits: every method with the CLSP term off, on and "+aug"; the loss falls;
the CLSP term takes the query branch; kill and resume equals an uninterrupted run; NaN stops the run."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from methods_helpers import StopAt, read_log, tiny_config

from clsp.errors import UserError
from clsp.methods import METHODS
from clsp.methods.pretrain import pretrain
from clsp.models.encoder import load_encoder

VARIANTS = {
    "off": lambda store: ["clsp.weight=0"],
    "clsp": lambda store: ["clsp.weight=1.0", f"clsp.positives={store}"],
    "aug": lambda store: ["clsp.weight=1.0", "clsp.third_view=augment"],
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_and_variant_trains(tmp_path, digits_store, method, variant):
    cfg = tiny_config(tmp_path / "run", f"method={method}", "dataset.subset=16", "batch_size=8", *VARIANTS[variant](digits_store(16)))
    out = pretrain(cfg)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["views_per_image"] == (2 if variant == "off" else 3)
    assert 0 <= metrics["probe_test_acc"] <= 100 and 0 <= metrics["knn_acc"] <= 100
    log = read_log(out)
    assert len(log["train/loss"]) == 2 and all(torch.isfinite(torch.tensor(log["train/loss"])))
    assert ("train/loss_clsp" in log) == (variant != "off")
    backbone, meta = load_encoder(out)
    assert (meta["method"], meta["clsp_lambda"], meta["image_size"]) == (method, cfg.clsp.weight, 8)
    assert backbone(torch.zeros(2, 3, 8, 8)).shape == (2, 512)
    assert (out / "done.json").is_file() and (out / "checkpoints" / "last.ckpt").is_file()


# method -> (overrides, first step compared): 15 steps each. Queue-based losses start against a random
# queue (easy negatives), so the comparison starts once the queue (64) holds real projections.
FALLS = {
    "simclr": (["dataset.subset=240", "batch_size=16", "clsp.weight=1.0"], 2),
    "nnclr": (["dataset.subset=240", "batch_size=16", "clsp.weight=1.0"], 4),
    "all4one": (["dataset.subset=240", "batch_size=16", "clsp.weight=1.0"], 4),
    # MoCo's loss first rises while the queue fills with keys of a near-random key encoder; within 15
    # steps it falls only with a key encoder that follows quickly and batch 32, and with the CLSP term
    # at these sizes it drifts towards log(K+1) instead: so the short run is plain MoCo.
    "moco": (["dataset.subset=480", "batch_size=32", "clsp.weight=0", "moco.momentum_start=0.9",
              "moco.momentum_end=0.9"], 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", FALLS)
def test_loss_falls_over_a_short_run(tmp_path, digits_store, method):
    """15 steps on digits with flip-only views (at 8 px the full recipe needs far longer to leave the
    plateau where every image looks alike)."""
    overrides, start = FALLS[method]
    subset = int(overrides[0].split("=")[1])
    cfg = tiny_config(tmp_path / "run", f"method={method}", "lr=0.1", "augment=flip", "knn.every_n_epochs=0",
                      f"clsp.positives={digits_store(subset)}", *overrides)
    log = read_log(pretrain(cfg))
    ssl = log["train/loss_ssl"]
    assert len(ssl) == 15
    first, last = sum(ssl[start:start + 3]) / 3, sum(ssl[-3:]) / 3
    assert last < first, f"{method}: loss did not fall ({first:.3f} -> {last:.3f}; {ssl})"
    if cfg.clsp.weight > 0:
        clsp = log["train/loss_clsp"]
        assert sum(clsp[-3:]) < sum(clsp[:3]), f"{method}: CLSP term did not fall ({clsp})"


class Recorder(L.Callback):
    """Records what the online and key encoders saw in the last training step."""

    def __init__(self) -> None:
        self.seen: dict[str, list] = {}

    def on_train_start(self, trainer, module) -> None:
        def record(name):
            return lambda mod, args, output: self.seen.setdefault(name, []).append((args[0].shape[0], output.detach()))
        module.backbone.register_forward_hook(record("backbone"))
        module.projector.register_forward_hook(record("projector"))
        module.key_backbone.register_forward_hook(record("key_backbone"))


def test_clsp_term_uses_the_query_branch_for_moco(tmp_path, digits_store):
    from clsp.methods.losses import clsp_term

    recorder = Recorder()
    cfg = tiny_config(tmp_path / "run", "method=moco", "dataset.subset=32", "knn.every_n_epochs=0", "clsp.weight=0.5",
                      f"clsp.positives={digits_store(32)}")
    out = pretrain(cfg, callbacks=[recorder])
    log = read_log(out)
    assert [n for n, _ in recorder.seen["projector"]] == [48] * 2                # 2 steps x 3 views in one forward
    assert [n for n, _ in recorder.seen["key_backbone"]] == [32] * 2             # keys: views 1, 2 only
    for (_, z), logged in zip(recorder.seen["projector"], log["train/loss_clsp"]):
        z1, _, z3 = z.chunk(3)                                                   # the views' order: x1, x2, x3
        assert clsp_term(z1, z3).item() == pytest.approx(logged, rel=1e-5)
    for total, ssl, term in zip(log["train/loss"], log["train/loss_ssl"], log["train/loss_clsp"]):
        assert total > ssl + 0.5 * term - 1e-4                                 # + the probe's cross-entropy


def test_kill_and_resume_equals_uninterrupted(tmp_path, digits_store):
    """MoCo + CLSP, 2 epochs of 3 steps; the crash is mid-epoch 2, after the checkpoint at step 4."""
    args = ["method=moco", "dataset.subset=48", "epochs=2", "knn.every_n_epochs=0", "trainer.checkpoint_every=2",
            "clsp.weight=0.5", f"clsp.positives={digits_store(48)}"]
    whole = pretrain(tiny_config(tmp_path / "whole", *args))
    with pytest.raises(KeyError):
        pretrain(tiny_config(tmp_path / "resumed", *args), callbacks=[StopAt(5)])
    crashed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert crashed["global_step"] == 4 and not (tmp_path / "resumed" / "done.json").exists()
    with pytest.raises(UserError, match=r"other settings \(lr differ\)"):
        pretrain(tiny_config(tmp_path / "resumed", *args, "lr=0.01"))  # not silently resumed with new settings
    resumed = pretrain(tiny_config(tmp_path / "resumed", *args))

    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and "queue" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["queue"], crashed["state_dict"]["queue"])      # the queue moved after the crash
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (whole, resumed))
    assert ma["steps"] == mb["steps"] == 6 and ma["probe_test_acc"] == mb["probe_test_acc"]

    # a finished run is not redone
    mtime = (whole / "encoder.safetensors").stat().st_mtime_ns
    pretrain(tiny_config(tmp_path / "whole", *args))
    assert (whole / "encoder.safetensors").stat().st_mtime_ns == mtime


class PoisonAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                module.backbone.conv1.weight.fill_(float("nan"))


def test_nan_loss_stops_naming_the_step_and_keeps_a_finite_checkpoint(tmp_path):
    from clsp.methods.base import NonFiniteLossError

    cfg = tiny_config(tmp_path / "run", "dataset.subset=48", "epochs=2", "knn.every_n_epochs=0",
                      "trainer.checkpoint_every=2", "trainer.log_every=2")
    with pytest.raises(NonFiniteLossError, match="step 3;"):
        pretrain(cfg, callbacks=[PoisonAt(3)])
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] <= 3
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())
    assert not (tmp_path / "run" / "encoder.safetensors").exists()


def test_streaming_path_trains_exactly_like_the_resident_path(tmp_path, monkeypatch):
    """The same images as an ImageFolder, once decoded into memory (GPU-resident path) and once streamed
    through the DataLoader: step-derived batches and per-step seeds give identical weights."""
    import numpy as np
    from PIL import Image

    import clsp.data.config
    from clsp.data import load_dataset
    from clsp.data.folder import load_folder
    from clsp.data.sets import StreamingImageSet

    digits = {split: load_dataset("digits", split) for split in ("train", "test")}
    for split, ds in digits.items():
        for i in range(32):
            folder = tmp_path / "images" / split / str(ds.labels[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ds.images[i][..., 0]).save(folder / f"{i:03d}.png")     # grey digits as grey PNGs

    def run(stream: bool):
        monkeypatch.setattr(clsp.data.config, "load_split",
                            lambda cfg, split: load_folder(str(tmp_path / "images"), split, size=8, stream=stream))
        out = pretrain(tiny_config(tmp_path / f"stream{stream}", f"dataset.name=folder:{tmp_path / 'images'}",
                                   "dataset.size=8", "workers=0", "clsp.weight=1", "clsp.third_view=augment"))
        return torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)

    assert isinstance(load_folder(str(tmp_path / "images"), "train", size=8, stream=True), StreamingImageSet)
    resident, streamed = run(False), run(True)
    assert resident["global_step"] == streamed["global_step"] == 2
    for key, value in resident["state_dict"].items():
        assert torch.equal(value, streamed["state_dict"][key]), key
    assert np.isfinite(json.loads((tmp_path / "streamTrue" / "metrics.json").read_text())["probe_test_acc"])


@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, digits_store):
    """`clsp pretrain` killed with SIGKILL after its first checkpoint; the same command again resumes and
    ends with the weights and queues of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from methods_helpers import TINY

    args = [*TINY, "method=moco", "dataset.subset=48", "epochs=3", "knn.every_n_epochs=0",
            "trainer.checkpoint_every=2", "clsp.weight=0.5", f"clsp.positives={digits_store(48)}"]
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "clsp", "pretrain", "--config", str(tmp_path / "empty.yaml"), *args,
               f"out_dir={killed}"]
    (tmp_path / "empty.yaml").write_text("{}\n")
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), CLSP_QUIET="1")
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "last.ckpt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    assert not (killed / "done.json").exists()

    rerun = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    whole = pretrain(tiny_config(tmp_path / "whole", *args[len(TINY):]))
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 9
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


@pytest.mark.slow
def test_two_process_ddp_run_on_cpu(tmp_path):
    """`clsp pretrain trainer.devices=2` on CPU: Lightning starts 2 gloo processes; the global batch is
    2 x batch_size, queues take the gathered keys, and only rank 0 writes the outputs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from methods_helpers import TINY

    (tmp_path / "empty.yaml").write_text("{}\n")
    args = [*TINY, "method=moco", "dataset.subset=64", "batch_size=8", "moco.queue_size=32", "trainer.devices=2",
            "clsp.weight=1", "clsp.third_view=augment", f"out_dir={tmp_path / 'run'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", CLSP_QUIET="1")
    result = subprocess.run([sys.executable, "-m", "clsp", "pretrain", "--config", str(tmp_path / "empty.yaml"), *args],
                            cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines() == [str(tmp_path / "run" / "encoder.safetensors")]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["global_batch"], metrics["steps"]) == (16, 4)
    queue = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]["queue"]
    assert queue.shape == (2, 32, 32) and torch.allclose(queue.norm(dim=2), torch.ones(2, 32))


def test_the_progress_bar_is_drawn_once_per_update_over_the_whole_run(tmp_path, capsys):
    """One bar for the run (global step / max steps): no '0/?' bar before it, no redraw of a state already drawn
    (Lightning draws its bar at creation, at each reset to the epoch's total and at each epoch's end)."""
    pretrain(tiny_config(tmp_path, "epochs=2", "trainer.progress=true", "trainer.log_every=50"))
    draws = [d.strip() for d in capsys.readouterr().out.replace("\r", "\n").splitlines() if "it/s" in d]
    states = [d.split("[")[0] for d in draws]                    # "epoch 1: 100%|...| 16/16 " without times
    total = int(states[0].split("/")[-1])
    assert states[0].startswith("epoch 0:") and states[0].rstrip().endswith(f"0/{total}") and "?" not in states[0]
    assert len(states) == len(set(states)), draws                 # no state drawn twice
    assert states[-1].startswith("epoch 1:") and states[-1].rstrip().endswith(f"{total}/{total}")
