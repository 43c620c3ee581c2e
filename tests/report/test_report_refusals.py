"""`clsp report` on what is not a sound pipeline run: one line, exit 2, no report.html written."""

from __future__ import annotations

import pytest
from report_helpers import make_run_dir

from clsp.cli import main
from clsp.layout import RunLayout


def refused(run, capsys) -> str:
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not RunLayout(run).report.exists()
    return err


@pytest.mark.parametrize("damage", [b"methods: [simclr\nvariants: {", b"\xff\xfe\x00garbage"], ids=["yaml", "bytes"])
def test_a_damaged_config_yaml(tmp_path, capsys, damage):
    run = make_run_dir(tmp_path, methods=("simclr",), variants=("base",))
    (run / "config.yaml").write_bytes(damage)
    assert "config.yaml is damaged" in refused(run, capsys)


def test_a_metrics_csv_with_a_value_that_is_not_a_number(tmp_path, capsys):
    run = make_run_dir(tmp_path, methods=("simclr",), variants=("base",))
    csv = RunLayout(run).training_log("simclr")
    lines = csv.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[-1], "lots")
    csv.write_text("\n".join(lines) + "\n")
    err = refused(run, capsys)
    assert f"{csv} line 4" in err and "'lots', not a number" in err


def test_a_stage_directory_is_not_a_pipeline_run(tmp_path, capsys):
    """A stage's run directory has a config.yaml too; the page it made lacked 7 pieces."""
    from clsp.config import to_yaml
    from clsp.methods.pretrain import PretrainConfig

    stage = RunLayout(tmp_path).pretrain("simclr")
    stage.mkdir(parents=True)
    (stage / "config.yaml").write_text(to_yaml(PretrainConfig()))
    assert "is the run directory of a single stage, not of a pipeline" in refused(stage, capsys)
