"""Nothing lost, nothing half-written, on real pretraining runs (digits, ResNet-10, CPU):
a disk that fills while a checkpoint is written, a checkpoint that does not load, a hostile one,
a run killed right after its final checkpoint, a history that must survive resumes, Ctrl-C."""

from __future__ import annotations

import errno
import json
import logging
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from hostile_checkpoint import write_hostile_checkpoint
from methods_helpers import tiny_config

from clsp.errors import UserError
from clsp.methods.pretrain import pretrain

# 2 epochs of 3 steps, a checkpoint every 2 steps; no CLSP term, so no store is needed.
ARGS = ["method=moco", "dataset.subset=48", "epochs=2", "trainer.checkpoint_every=2", "knn.every_n_epochs=1"]


class At(L.Callback):
    """Calls `action(trainer)` when the global step reaches `step` (before that step trains)."""

    def __init__(self, step: int, action) -> None:
        self.step, self.action = step, action

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.action(trainer)


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def crash(_trainer):
    raise KeyError("simulated crash")


def same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run every interrupted one must end up equal to."""
    return pretrain(tiny_config(tmp_path_factory.mktemp("whole") / "run", *ARGS))


def checkpoint_files(run):
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_the_rerun_finishes(tmp_path, full_disk, whole):
    run = full_disk.root / "run"
    with pytest.raises(OSError) as failure:
        pretrain(tiny_config(run, *ARGS), callbacks=[At(3, lambda _: full_disk.fill())])  # checkpoint 4 cannot fit
    assert failure.value.errno == errno.ENOSPC
    # No partial checkpoint under a final name, no temporary left: the step-2 checkpoint is intact.
    assert checkpoint_files(run) == ["last.ckpt", "step00000002.ckpt"]
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert load_checkpoint(run / "checkpoints" / "step00000002.ckpt")["global_step"] == 2

    full_disk.free()
    pretrain(tiny_config(run, *ARGS))
    assert checkpoint_files(run) == ["last.ckpt", "step00000006.ckpt"]
    same_weights(load_checkpoint(whole / "checkpoints" / "last.ckpt")["state_dict"],
                 load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"])
    assert (run / "logs" / "metrics.csv").read_bytes() == (whole / "logs" / "metrics.csv").read_bytes()


def test_resume_skips_a_checkpoint_that_does_not_load_and_says_so(tmp_path, whole, caplog):
    run = tmp_path / "run"
    with pytest.raises(KeyError):
        pretrain(tiny_config(run, *ARGS), callbacks=[At(5, crash)])
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])          # cut short, as by a full disk
    with caplog.at_level(logging.WARNING, logger="clsp"):
        pretrain(tiny_config(run, *ARGS))
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"{last} does not load" in said and "resuming from step00000004.ckpt (step 4) instead" in said
    same_weights(load_checkpoint(whole / "checkpoints" / "last.ckpt")["state_dict"],
                 load_checkpoint(last)["state_dict"])


def test_the_hostile_pickle_runs_code_when_loaded_the_unsafe_way(tmp_path):
    """The test's payload is real: torch.load without weights_only creates the marker."""
    marker = tmp_path / "marker"
    write_hostile_checkpoint(tmp_path / "hostile.ckpt", marker)
    torch.load(tmp_path / "hostile.ckpt", weights_only=False)
    assert marker.exists()


def test_a_hostile_checkpoint_in_the_run_directory_runs_no_code(tmp_path, monkeypatch):
    # torch < 2.6 (allowed by our bounds) unpickles everything unless weights_only=True is passed; this
    # variable gives that default to the torch installed here.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    run, marker = tmp_path / "run", tmp_path / "marker"
    with pytest.raises(KeyError):
        pretrain(tiny_config(run, *ARGS), callbacks=[At(3, crash)])          # a real interrupted run ...
    write_hostile_checkpoint(run / "checkpoints" / "last.ckpt", marker)       # ... whose last.ckpt was replaced
    with pytest.raises(UserError, match=r"last\.ckpt asks to run code .* delete it"):
        pretrain(tiny_config(run, *ARGS))
    assert not marker.exists()


def test_a_run_killed_right_after_its_final_checkpoint_keeps_its_metrics(tmp_path, whole):
    """The final checkpoint is written, then the process dies before metrics.json: the rerun trains
    0 steps and must still report the probe, the kNN score and the throughput of the run."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(whole, run)
    for name in ("metrics.json", "done.json", "encoder.safetensors"):
        (run / name).unlink()
    pretrain(tiny_config(run, *ARGS))
    before, after = (json.loads((d / "metrics.json").read_text()) for d in (whole, run))
    assert after["steps"] == 6
    assert after["probe_test_acc"] == before["probe_test_acc"] is not None
    assert after["knn_acc"] == before["knn_acc"] is not None
    assert after["wall_seconds"] == pytest.approx(before["wall_seconds"], rel=0.05)
    assert after["images_per_second"] == pytest.approx(before["images_per_second"], rel=0.05)


def test_a_kill_right_after_the_last_steps_checkpoint_keeps_the_final_validation(tmp_path, whole, monkeypatch):
    """The process dies the moment the last step's last.ckpt is on disk: the rerun resumes at the end and its
    metrics.json and metrics.csv are the uninterrupted run's (the final probe, kNN and epoch row included)."""
    from clsp import training

    run, make_io, killed = tmp_path / "run", training.atomic_checkpoint_io, []

    def io_that_dies_after_the_last_checkpoint():
        io = make_io()
        save = io.save_checkpoint

        def save_then_die(checkpoint, path, storage_options=None):
            save(checkpoint, path, storage_options)
            if not killed and checkpoint["global_step"] == 6 and Path(path).name == "last.ckpt":
                killed.append(path)
                raise KeyError("killed after the last step's checkpoint")

        io.save_checkpoint = save_then_die
        return io

    monkeypatch.setattr(training, "atomic_checkpoint_io", io_that_dies_after_the_last_checkpoint)
    with pytest.raises(KeyError, match="killed"):
        pretrain(tiny_config(run, *ARGS))
    monkeypatch.setattr(training, "atomic_checkpoint_io", make_io)
    pretrain(tiny_config(run, *ARGS))
    before, after = (json.loads((d / "metrics.json").read_text()) for d in (whole, run))
    for timing in ("wall_seconds", "images_per_second"):
        before.pop(timing), after.pop(timing)
    assert after == before
    assert (run / "logs" / "metrics.csv").read_bytes() == (whole / "logs" / "metrics.csv").read_bytes()


@pytest.mark.parametrize("every, crashes", [(2, (3, 5)), (3, (4, 7))], ids=["mid-epoch", "at-epoch-ends"])
def test_the_training_history_survives_any_number_of_resumes(tmp_path, every, crashes):
    """Crashes after a checkpoint mid-epoch (every 2 steps) or at an epoch's last step (every 3 steps, the
    epoch's length), then finished: metrics.csv is byte for byte the uninterrupted run's (every step once,
    in order), the epoch means of the online probe's train accuracy included."""
    args = ["method=moco", "dataset.subset=48", "epochs=3", f"trainer.checkpoint_every={every}", "knn.every_n_epochs=1"]
    whole = pretrain(tiny_config(tmp_path / "whole", *args))
    run = tmp_path / "run"
    for step in crashes:
        with pytest.raises(KeyError):
            pretrain(tiny_config(run, *args), callbacks=[At(step, crash)])
    pretrain(tiny_config(run, *args))
    resumed, uninterrupted = ((d / "logs" / "metrics.csv").read_text() for d in (run, whole))
    assert resumed == uninterrupted
    assert len(uninterrupted.splitlines()) == 1 + 2 * 9 + 3   # header, a loss and an lr row per step, an epoch-end row per epoch
    same_weights(load_checkpoint(whole / "checkpoints" / "last.ckpt")["state_dict"],
                 load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"])


def test_ctrl_c_inside_training_is_a_keyboard_interrupt_and_sigint_works_after(tmp_path):
    def interrupt(_trainer):
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGINT)   # Python's default handler, or SIG_IGN under a shell's background job
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_config(tmp_path / "run", *ARGS), callbacks=[At(1, interrupt)])
    assert signal.getsignal(signal.SIGINT) is before
