"""CPU threads are chosen on purpose: the setting, then CLSP_THREADS / OMP_NUM_THREADS, then the CPUs this
process may use; the choice is said once; the `clsp` command makes it, a config's trainer.threads overrides it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from clsp import threads as threads_module
from clsp.errors import UserError
from clsp.threads import available_cpus, choose_threads, set_threads


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("CLSP_THREADS", "OMP_NUM_THREADS", "CLSP_QUIET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads_module, "_said", None)
    before = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(before)


def test_the_setting_then_the_environment_then_the_affinity_mask(clean_env):
    assert available_cpus() == len(os.sched_getaffinity(0))
    assert choose_threads()[0] == available_cpus() and "may use" in choose_threads()[1]
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads() == (3, "OMP_NUM_THREADS")
    clean_env.setenv("CLSP_THREADS", "2")
    assert choose_threads() == (2, "CLSP_THREADS")
    assert choose_threads(1) == (1, "trainer.threads")
    clean_env.setenv("CLSP_THREADS", "two")
    with pytest.raises(UserError, match="CLSP_THREADS must be a whole number"):
        choose_threads()


def test_the_choice_is_applied_and_said_once(clean_env, capsys):
    assert set_threads(1) == 1 and torch.get_num_threads() == 1
    set_threads(1)
    assert capsys.readouterr().err.count("clsp: 1 CPU thread (trainer.threads") == 1
    clean_env.setenv("CLSP_THREADS", "2")
    set_threads()
    assert torch.get_num_threads() == 2 and "clsp: 2 CPU threads (CLSP_THREADS" in capsys.readouterr().err


@pytest.mark.parametrize("argv, said", [(["data", "info", "digits"], False),        # threads do not matter there
                                        (["eval", "knn", "--ckpt", "nope", "--dataset", "digits"], True)])
def test_the_clsp_command_chooses_and_says_it_where_threads_matter(tmp_path, argv, said):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "CLSP_QUIET")}
    script = (f"import sys, torch; from clsp.cli import main; sys.argv = ['clsp', *{argv!r}]; "
              "code = main(); print('threads', torch.get_num_threads()); sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", script], env=dict(env, CLSP_THREADS="1"), capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == (0 if argv[0] == "data" else 2), out.stderr
    assert ("clsp: 1 CPU thread (CLSP_THREADS" in out.stderr) == said and "threads 1" in out.stdout


def test_a_config_sets_threads_and_null_leaves_the_choice_alone(clean_env):
    from clsp.config import CONFIG_DIR, load_config
    from clsp.pipeline import PipelineConfig
    from clsp.training import TrainerConfig, apply_threads

    torch.set_num_threads(2)
    apply_threads(TrainerConfig())
    assert torch.get_num_threads() == 2
    apply_threads(TrainerConfig(threads=1))
    assert torch.get_num_threads() == 1
    demo = load_config(PipelineConfig, CONFIG_DIR / "demo.yaml")
    from clsp.jobs import thread_share

    # what the demo's timing was measured with: two stages at a time, one thread each
    assert demo.jobs == 2 and demo.trainer.threads == 2 and thread_share(demo.trainer, demo.jobs)[0] == 1


def test_trainer_threads_is_validated():
    from clsp.config import load_config
    from clsp.errors import ConfigError
    from clsp.training import TrainerConfig

    assert load_config(TrainerConfig, None, ["threads=1"]).threads == 1
    with pytest.raises(ConfigError, match="trainer.threads"):
        load_config(TrainerConfig, None, ["threads=0"])
