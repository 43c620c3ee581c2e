"""Choosing the checkpoint to resume from, and the CSV history writer, on files made by hand."""

from __future__ import annotations

import logging

import torch

from clsp.training import history_csv_logger, last_checkpoint


def save(path, step):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.full((3,), float(step))}}, path)


def test_the_newest_checkpoint_that_loads_and_no_orphan_temporaries(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    assert last_checkpoint(tmp_path) is None
    save(folder / "step00000002.ckpt", 2)
    save(folder / "step00000010.ckpt", 10)
    save(folder / "last.ckpt", 10)
    orphan = folder / ".last.ckpt.k3j2h1.tmp"                       # a writer killed mid-write
    orphan.write_bytes(b"PK\x03\x04 half a checkpoint")
    assert last_checkpoint(tmp_path) == folder / "last.ckpt"
    assert not orphan.exists()

    (folder / "last.ckpt").write_bytes(b"")                          # a full disk, an old-style move cut short
    (folder / "step00000010.ckpt").write_bytes((folder / "step00000002.ckpt").read_bytes()[:200])
    with caplog.at_level(logging.WARNING, logger="clsp"):
        assert last_checkpoint(tmp_path) == folder / "step00000002.ckpt"
    assert "last.ckpt does not load" in caplog.text and "step00000010.ckpt does not load" in caplog.text
    assert "resuming from step00000002.ckpt (step 2) instead" in caplog.text


def test_the_csv_history_keeps_earlier_rows_drops_a_torn_line_and_replaces_replayed_rows(tmp_path):
    csv = tmp_path / "logs" / "metrics.csv"
    csv.parent.mkdir()
    csv.write_bytes(b"epoch,step,train/loss\r\n0,0,1.5\r\n0,1,1.25\r\n0,2,1.")   # killed mid-row
    writer = history_csv_logger(tmp_path).experiment
    writer.log_metrics({"train/loss": 1.0, "epoch": 0}, step=2)      # the resumed run replays step 2 ...
    writer.log_metrics({"train/loss": 0.5, "epoch": 0}, step=3)
    writer.save()
    assert csv.read_bytes() == b"epoch,step,train/loss\r\n0,0,1.5\r\n0,1,1.25\r\n0,2,1.0\r\n0,3,0.5\r\n"
    again = history_csv_logger(tmp_path).experiment                  # killed again; resumed from step 1
    for step, loss in ((1, 1.25), (2, 1.0), (3, 0.5)):
        again.log_metrics({"train/loss": loss, "epoch": 0}, step=step)
        again.save()
    again.log_metrics({"test/acc": 50.0}, step=3)                     # a new column: rewritten with its header
    again.save()
    assert csv.read_bytes() == (b"epoch,step,test/acc,train/loss\r\n0,0,,1.5\r\n0,1,,1.25\r\n0,2,,1.0\r\n0,3,,0.5\r\n"
                                b",3,50.0,\r\n")
