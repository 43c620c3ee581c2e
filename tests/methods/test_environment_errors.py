"""What the machine or a damaged file causes ends in one line and exit code 2, with nothing half-written;
Ctrl-C ends with 130, also inside Lightning's fit. Run through the `clsp` entry point, in process."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from methods_helpers import TINY

from clsp.cli import main


def pretrain_argv(tmp_path, out_dir, *extra):
    preset = tmp_path / "empty.yaml"
    preset.write_text("{}\n")
    return ["pretrain", "--config", str(preset), *TINY, "dataset.subset=48", f"out_dir={out_dir}", *extra]


def one_error_line(capsys) -> str:
    """The one error line, last on stderr (after progress and Lightning's notices), and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("clsp: error: ") == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("clsp: error: ")
    return last


def files_below(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_full_disk(tmp_path, full_disk, capsys):
    full_disk.fill()
    out = full_disk.root / "run"
    assert main(pretrain_argv(tmp_path, out)) == 2
    line = one_error_line(capsys)
    assert "no space left on the device (writing " in line and "last.ckpt" in line
    written = files_below(out)
    assert "config.yaml" in written and not any(f.endswith((".tmp", ".ckpt")) for f in written), written
    assert "done.json" not in written and "metrics.json" not in written


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write in: a read-only tmpfs for root (who ignores permission bits), else mode 555."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("running as root where no read-only filesystem can be mounted")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_read_only_output_folder(tmp_path, read_only_folder, capsys):
    assert main(pretrain_argv(tmp_path, read_only_folder / "run")) == 2
    line = one_error_line(capsys)
    assert "read-only" in line or "permission denied" in line
    assert files_below(read_only_folder) == []


@pytest.mark.parametrize("below", [False, True], ids=["the-path", "a-parent"])
def test_an_output_path_that_is_a_file(tmp_path, capsys, below):
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder\n")
    assert main(pretrain_argv(tmp_path, a_file / "run" if below else a_file)) == 2
    assert "is a file, not a folder" in one_error_line(capsys)
    assert a_file.read_text() == "not a folder\n"


def test_a_preset_that_is_not_utf8(tmp_path, capsys):
    preset = tmp_path / "latin1.yaml"
    preset.write_bytes("lr: 0.1  # réglage\n".encode("latin-1"))
    assert main(["pretrain", "--config", str(preset), f"out_dir={tmp_path / 'run'}"]) == 2
    assert "is not UTF-8 text" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_hostile_checkpoint(tmp_path, capsys):
    from hostile_checkpoint import write_hostile_checkpoint

    out = tmp_path / "run"
    assert main(pretrain_argv(tmp_path, out, "epochs=2", "trainer.checkpoint_every=2")) == 0
    (out / "done.json").unlink()
    write_hostile_checkpoint(out / "checkpoints" / "last.ckpt", tmp_path / "marker")
    assert main(pretrain_argv(tmp_path, out, "epochs=2", "trainer.checkpoint_every=2")) == 2
    assert "last.ckpt asks to run code" in one_error_line(capsys)
    assert not (tmp_path / "marker").exists()


def test_ctrl_c_inside_training_exits_130(tmp_path, monkeypatch, capsys):
    from clsp.methods.base import ContrastiveMethod

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(ContrastiveMethod, "training_step", interrupted)
    assert main(pretrain_argv(tmp_path, tmp_path / "run")) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "clsp: interrupted"


def test_a_batch_larger_than_memory_is_refused_before_the_first_step(tmp_path, monkeypatch, capsys):
    """With 2 MiB available (CLSP_MEMORY_LIMIT_MB), a batch of 16: one line naming batch_size, no checkpoint."""
    from clsp.memory import LIMIT_VARIABLE

    monkeypatch.setenv(LIMIT_VARIABLE, "2")
    run = tmp_path / "run"
    assert main(pretrain_argv(tmp_path, run, "batch_size=16")) == 2
    line = one_error_line(capsys)
    assert "batch_size=16 needs at least" in line and "lower batch_size" in line
    assert not (run / "checkpoints").exists()
