"""The experiment loggers of a training run (trainer.logger), beside its own RUN/logs/metrics.csv.

Lightning's own TensorBoardLogger, WandbLogger and MLFlowLogger, set up so that each works with no server
and no account, writing under the run directory:
- tensorboard: RUN/tb/ (the default).
- wandb: RUN/wandb/. Offline (`wandb sync RUN/wandb/offline-run-*` uploads it later) unless the user has
  chosen (WANDB_MODE) or can log in (WANDB_API_KEY, or the ~/.netrc entry `wandb login` writes): then wandb
  decides, online by default. Project: WANDB_PROJECT, else "clsp".
- mlflow: MLFLOW_TRACKING_URI when set, else a SQLite store RUN/mlflow/mlflow.db (MLflow 3 refuses its
  file store unless told otherwise; `mlflow ui --backend-store-uri sqlite:///RUN/mlflow/mlflow.db` opens it).
  Experiment: MLFLOW_EXPERIMENT_NAME, else "clsp".
A wandb or mlflow run is named after the run directory and given its config.yaml as hyperparameters. Its id
is kept in RUN/loggers.json, so that a resumed run (one with a checkpoint) continues the same wandb or
mlflow run instead of starting a second one; the steps between the checkpoint and the interruption are
logged to it twice (metrics.csv keeps each step once).

metrics.csv is always written whatever trainer.logger says: the reports, the collapse check and resume
read it. Torch-free at import (Lightning is imported when the loggers are built).
"""

from __future__ import annotations

import importlib
import logging
import netrc
import os
import uuid
from pathlib import Path
from urllib.parse import urlparse

from clsp.errors import UserError
from clsp.training_config import TrainerConfig

log = logging.getLogger("clsp")

RECORD_FILE = "loggers.json"   # RUN/loggers.json: {"wandb": {...}, "mlflow": {...}}, the runs to continue on resume

# logger -> the modules it imports; the extra of the same name (pyproject.toml) installs them
PACKAGES = {"wandb": ("wandb",), "mlflow": ("mlflow",)}
LOCAL_MLFLOW_STORE = ("sqlalchemy", "alembic")   # MLflow's SQLite store (not in mlflow-skinny)


def require_packages(cfg: TrainerConfig) -> None:
    """Refuse, before any work, a logger whose package is not installed: one line naming the extra to install."""
    for name in cfg.loggers:
        modules = PACKAGES.get(name, ())
        if name == "mlflow" and not os.environ.get("MLFLOW_TRACKING_URI"):
            modules += LOCAL_MLFLOW_STORE
        missing = [m for m in modules if not _importable(m)]
        if missing:
            raise UserError(f"trainer.logger={name} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                            f"not installed: pip install 'clsp[{name}]' (or choose trainer.logger=tensorboard or csv)")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def make_loggers(cfg: TrainerConfig, run_dir: str | Path) -> list:
    """The Lightning loggers trainer.logger asks for (besides the history CSV logger, which make_trainer adds)."""
    require_packages(cfg)
    run_dir = Path(run_dir)
    resumed = _recorded(run_dir) if any((run_dir / "checkpoints").glob("*.ckpt")) else {}
    loggers = []
    for name in cfg.loggers:
        if name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(str(run_dir), name="tb", version=""))
        elif name == "wandb":
            loggers.append(_wandb_logger(run_dir, resumed.get("wandb") or {}))
        elif name == "mlflow":
            loggers.append(_mlflow_logger(run_dir, resumed.get("mlflow") or {}))
    return loggers


def run_name(run_dir: Path) -> str:
    """The run directory's last three parts (runs/demo/diffusion, demo/pretrain/simclr-clsp): where it is on disk."""
    return "/".join(run_dir.resolve().parts[-3:])


# -- wandb -----------------------------------------------------------------------------------------

def wandb_mode() -> str | None:
    """None (wandb decides: WANDB_MODE, else online) when the user has chosen a mode or can log in; else "offline"."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return None
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        logged_in = netrc.netrc(os.environ.get("NETRC") or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    return None if logged_in else "offline"


def _wandb_logger(run_dir: Path, resumed: dict):
    from lightning.pytorch.loggers import WandbLogger

    class FinishingWandbLogger(WandbLogger):
        """Lightning's WandbLogger, ending its wandb run when training ends: Lightning leaves it open until the
        process exits, and the next training in the same process (the pipeline's next stage) would log into it."""

        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.own_id = kwargs["id"]                # not a run that was open already (Lightning would log into it)
            self._wandb_init.pop("anonymous", None)   # Lightning always passes it; wandb warns that it does nothing

        def finalize(self, status: str) -> None:
            super().finalize(status)
            if self._experiment is not None and self._experiment.id == self.own_id:
                self._experiment.finish(exit_code=0 if status in ("success", "finished") else 1)
                self._experiment = None

    mode = wandb_mode()
    project = os.environ.get("WANDB_PROJECT") or "clsp"
    same = resumed.get("project") == project and resumed.get("id")
    run_id = resumed["id"] if same else uuid.uuid4().hex[:8]   # wandb's own ids are 8 such characters
    return FinishingWandbLogger(name=run_name(run_dir), save_dir=str(run_dir), project=project, id=run_id,
                                **({"mode": mode} if mode else {}))


# -- mlflow ----------------------------------------------------------------------------------------

def mlflow_store(run_dir: Path) -> str:
    """The tracking URI: MLFLOW_TRACKING_URI, else the run directory's own SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / 'mlflow' / 'mlflow.db').resolve()}"


def _mlflow_logger(run_dir: Path, resumed: dict):
    from lightning.pytorch.loggers import MLFlowLogger

    for name in ("mlflow", "alembic"):   # their info lines (creating the tables of a new store) say nothing a user needs
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = mlflow_store(run_dir)
    local = not os.environ.get("MLFLOW_TRACKING_URI")
    if local:
        (run_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    run_id = resumed.get("run_id") if resumed.get("tracking_uri") == uri and _mlflow_run_exists(uri, resumed) else None
    return MLFlowLogger(experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME") or "clsp", run_name=run_name(run_dir),
                        tracking_uri=uri, run_id=run_id,
                        artifact_location=(run_dir / "mlflow" / "artifacts").resolve().as_uri() if local else None)


def _mlflow_run_exists(uri: str, resumed: dict) -> bool:
    if not resumed.get("run_id"):
        return False
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(uri).get_run(resumed["run_id"])
    except MlflowException as e:
        log.warning(f"mlflow: the run {resumed['run_id']} this run directory logged to is not in {uri} "
                    f"({str(e).splitlines()[0][:200]}); logging to a new run")
        return False
    return True


# -- the record of the runs ------------------------------------------------------------------------

def _recorded(run_dir: Path) -> dict:
    from clsp.io import read_json_object

    return read_json_object(run_dir / RECORD_FILE) or {}


def record_runs():
    """A callback that, once training starts (the loggers' runs exist), records the wandb and mlflow runs in
    RUN/loggers.json (for resume) and gives a run not recorded there the run's config.yaml as its hyperparameters
    (once: MLflow refuses to change a parameter, and a resumed run may change the trainer section)."""
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import MLFlowLogger, WandbLogger

    class RecordRuns(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            if not trainer.is_global_zero:
                return
            run_dir = Path(trainer.default_root_dir)
            before, record = _recorded(run_dir), {}
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    name, record["wandb"] = "wandb", {"id": logger.experiment.id, "project": logger.experiment.project}
                elif isinstance(logger, MLFlowLogger):
                    name, record["mlflow"] = "mlflow", {"run_id": logger.run_id, "tracking_uri": mlflow_store(run_dir)}
                else:
                    continue
                if before.get(name) != record[name]:
                    logger.log_hyperparams(_config(run_dir))
            if record:
                from clsp.io import write_json_atomic

                write_json_atomic(run_dir / RECORD_FILE, {**before, **record})

    return RecordRuns()


def _config(run_dir: Path) -> dict:
    """The run's config.yaml (rundir.start wrote it), with where the run is on disk."""
    import yaml

    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        config = None
    return {**(config if isinstance(config, dict) else {}), "run_dir": str(run_dir.resolve())}
