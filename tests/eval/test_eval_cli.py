"""The eval commands through `clsp.cli.main` (in-process: the behaviour under test is parsing, output and exit codes)."""

import json

from clsp.cli import main

COMMON = {"schema", "kind", "encoder", "dataset", "created_at", "results"}


def test_eval_knn_prints_a_table_and_writes_metrics(encoder_file, tmp_path, capsys):
    code = main(["eval", "knn", "--ckpt", str(encoder_file.parent), "--dataset", "digits", "--subset", "60",
                 "--out", str(tmp_path / "knn"), "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    # 60 training images: k = 100 and 200 would be every image, so they are reported as k = 60
    assert "fewer than k = 100, 200: those are k = 60 (every training image)" in out
    assert "k=50" in out and "k=100" not in out and "best (k=" in out and "fixed (k=60)" in out
    metrics = json.loads((tmp_path / "knn" / "metrics.json").read_text())
    assert COMMON <= set(metrics) and metrics["kind"] == "knn"
    assert metrics["encoder"]["sha256"] and metrics["dataset"]["fingerprint"] and metrics["dataset"]["n"] == 60
    assert sorted(map(int, metrics["results"]["accuracy"])) == [5, 10, 20, 50, 60] and metrics["results"]["fixed_k"] == 60


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["eval", "knn", "--ckpt", str(tmp_path / "nowhere"), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clsp: error: no encoder at") and "\n" not in err
    assert main(["eval", "linear", "--ckpt", str(tmp_path), "--dataset", "digits", "--epochs", "0"]) == 2
    assert "epochs" in capsys.readouterr().err
