"""trainer.logger: wandb (offline, with no account) and mlflow (a SQLite store in the run directory) receive what
metrics.csv holds, a resumed run continues their runs instead of starting second ones, and a logger whose package
is missing is one line and exit 2 before any work."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from methods_helpers import TINY, StopAt, tiny_config

from clsp.cli import main
from clsp.config import load_config
from clsp.errors import ConfigError
from clsp.loggers import wandb_mode
from clsp.methods.pretrain import pretrain
from clsp.training import read_history
from clsp.training_config import TrainerConfig


@pytest.fixture
def no_account(tmp_path, monkeypatch):
    """No wandb account, mode or project and no MLflow server in the environment; wandb's own folders in tmp_path."""
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_BASE_URL", "MLFLOW_TRACKING_URI",
                "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb-home" / key.lower()))


def csv_values(run_dir: Path) -> dict[tuple[int, str], float]:
    """(step, column) -> value of every cell of metrics.csv."""
    return {(int(row["step"]), key): float(value) for row in read_history(run_dir / "logs" / "metrics.csv")[1]
            for key, value in row.items() if key != "step"}


def wandb_records(path: Path):
    """The protobuf records of a wandb run file (run-ID.wandb): a 7-byte header, then LevelDB-log records (a
    7-byte header of checksum, length and type each, in 32 KiB blocks) holding wandb_internal_pb2.Record bytes."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pieces = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:                     # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pieces += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):                              # FULL, or LAST of FIRST / MIDDLE ... LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def wandb_values(run_dir: Path, run_id: str) -> tuple[dict[tuple[int, str], float], dict, int]:
    """What the wandb run files of `run_id` under RUN/wandb hold: (step, metric) -> value (a later session's value
    of a re-logged step replaces the earlier), the config, and how many sessions (offline-run folders) logged."""
    values, config = {}, {}
    sessions = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert sessions and all(s.name.endswith(f"-{run_id}") for s in sessions), sessions
    for session in sessions:
        for record in wandb_records(session / f"run-{run_id}.wandb"):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                step = row.pop("trainer/global_step")
                values.update({(step, k): float(v) for k, v in row.items() if not k.startswith("_")})
            elif kind == "config":
                config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    return values, config, len(sessions)


def mlflow_values(uri: str) -> tuple[dict[tuple[int, str], float], dict, int]:
    """The one MLflow run of the store: (step, metric) -> value (the latest logged), its params and status."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    values = {}
    for key in run.data.metrics:
        for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.timestamp):
            values[(m.step, key)] = m.value
    return values, run.data.params, run.info


def test_wandb_and_mlflow_hold_what_metrics_csv_holds_and_a_resumed_run_continues_their_runs(tmp_path, no_account):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    out = tmp_path / "run"
    args = ["dataset.subset=48", "trainer.checkpoint_every=1", "trainer.logger=tensorboard,wandb,mlflow"]
    with pytest.raises(KeyError):
        pretrain(tiny_config(out, *args), callbacks=[StopAt(2)])   # killed at the start of step 2 of 3
    runs = json.loads((out / "loggers.json").read_text())
    pretrain(tiny_config(out, *args))                              # resumed from the checkpoint of step 2
    assert json.loads((out / "loggers.json").read_text()) == runs  # the same wandb and mlflow runs, continued
    assert any((out / "tb").iterdir())                             # TensorBoard as well, as asked

    expected = csv_values(out)
    assert {step for step, _ in expected} == {0, 1, 2} and (2, "test/knn_acc") in expected
    logged, config, sessions = wandb_values(out, runs["wandb"]["id"])
    assert logged == expected and sessions == 2
    assert config["method"] == "simclr" and config["run_dir"] == str(out.resolve())
    assert runs["mlflow"]["tracking_uri"] == f"sqlite:///{out.resolve() / 'mlflow' / 'mlflow.db'}"
    logged, params, info = mlflow_values(runs["mlflow"]["tracking_uri"])
    assert logged == expected and info.run_id == runs["mlflow"]["run_id"] and info.status == "FINISHED"
    assert params["method"] == "simclr" and params["trainer/logger"] == "tensorboard,wandb,mlflow"


def test_wandb_runs_offline_unless_the_user_chose_a_mode_or_can_log_in(tmp_path, no_account, monkeypatch):
    assert wandb_mode() == "offline"
    netrc = tmp_path / "no.netrc"
    netrc.write_text("machine example.org login user password secret\n")
    assert wandb_mode() == "offline"
    netrc.write_text("machine api.wandb.ai login user password 0123456789abcdef\n")
    netrc.chmod(0o600)
    assert wandb_mode() is None                        # `wandb login` was run: wandb decides (online)
    netrc.unlink()
    for key, value in (("WANDB_API_KEY", "0123456789abcdef"), ("WANDB_MODE", "disabled")):
        with monkeypatch.context() as m:
            m.setenv(key, value)
            assert wandb_mode() is None


@pytest.mark.parametrize("logger, module", [("wandb", "wandb"), ("mlflow", "mlflow"), ("tensorboard,mlflow", "alembic")])
def test_a_logger_without_its_package_is_one_line_and_exit_2_before_any_work(tmp_path, no_account, monkeypatch, capsys,
                                                                            logger, module):
    monkeypatch.setitem(sys.modules, module, None)     # `import module` raises ImportError, as when it is not installed
    preset = tmp_path / "empty.yaml"
    preset.write_text("{}\n")
    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(preset), *TINY, f"out_dir={out}", f"trainer.logger={logger}"]) == 2
    err = capsys.readouterr().err
    extra = logger.split(",")[-1]
    assert err.strip().splitlines() == [f"clsp: error: trainer.logger={extra} needs {module}, which is not installed: "
                                        f"pip install 'clsp[{extra}]' (or choose trainer.logger=tensorboard or csv)"]
    assert not (out / "config.yaml").exists()


def test_trainer_logger_names_known_loggers():
    assert TrainerConfig().loggers == ["tensorboard"]
    assert TrainerConfig(logger=" wandb, TensorBoard,wandb").loggers == ["wandb", "tensorboard"]
    with pytest.raises(ConfigError, match=r"trainer.logger': must be one or more of tensorboard, csv, wandb, mlflow"):
        load_config(TrainerConfig, None, ["logger=tensorboard,neptune"])
