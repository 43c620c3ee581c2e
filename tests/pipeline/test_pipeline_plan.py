"""Planning: the stage configs the pipeline composes, and the checks made before any work."""

from __future__ import annotations

import pytest

from clsp.errors import ConfigError, UserError
from clsp.pipeline import Pipeline, StageRecords, run_pipeline


def test_stage_configs_are_composed_from_the_pipeline_config(micro_config, tmp_path):
    cfg = micro_config("variants=[base,clsp,aug]", "methods=[simclr,moco]", "seeds=[7]",
                       "method_overrides={moco: {lr: 0.05, moco: {queue_size: 64}, clsp: {weight: 0.5}}}")
    plan = Pipeline(cfg)
    run = tmp_path / "run"
    assert plan.diffusion.out_dir == str(run / "diffusion") and plan.diffusion.dataset == cfg.dataset
    assert plan.diffusion.model == "tiny" and plan.diffusion.trainer == cfg.trainer
    assert list(plan.runs) == ["no-pretraining", "simclr", "simclr-clsp", "simclr-aug", "moco", "moco-clsp", "moco-aug"]
    simclr, clsp, aug = plan.runs["simclr"], plan.runs["simclr-clsp"], plan.runs["simclr-aug"]
    assert simclr.clsp.weight == 0 and simclr.third_view is None
    assert clsp.clsp.weight == 1.0 and clsp.third_view == "synthetic" and clsp.clsp.positives == str(run / "positives")
    assert aug.third_view == "augment" and aug.clsp.positives is None
    assert clsp.out_dir == str(run / "pretrain" / "simclr-clsp") and clsp.dataset == cfg.dataset and clsp.seed == 7
    moco = plan.runs["moco-clsp"]
    assert (moco.method, moco.lr, moco.moco.queue_size, moco.clsp.weight) == ("moco", 0.05, 64, 0.5)
    assert simclr.lr == 0.1  # the overrides of one method leave the others alone
    floor = plan.runs["no-pretraining"]                                 # the untrained encoder of the same seed
    assert floor.seed == 7 and floor.backbone == simclr.backbone and floor.out_dir == str(run / "pretrain" / "no-pretraining")
    names = [s.name for s in plan.stages()]
    assert names[:6] == ["diffusion", "synthesis", "figures", "eval/positives", "pretrain/no-pretraining", "pretrain/simclr"]
    assert "eval/moco-aug/hardness" in names and "eval/no-pretraining/hardness" not in names
    assert len(names) == 4 + 7 + 6 * 4 + 2                             # the floor: kNN and linear only


def test_seeds_and_a_w_sweep_plan_one_encoder_per_seed_and_value_and_one_store_per_value(micro_config, tmp_path):
    cfg = micro_config("seeds=[3,4]", "methods=[simclr,moco]", "method_overrides={moco: {moco: {queue_size: 64}}}",
                       "sweep={setting: w, values: [0.0, 0.1, 1.0], methods: [simclr], seeds: [3]}")
    plan = Pipeline(cfg)
    run = tmp_path / "run"
    assert list(plan.runs) == ["no-pretraining-seed3", "no-pretraining-seed4", "simclr-seed3", "simclr-seed4",
                               "simclr-clsp-seed3", "simclr-clsp-seed4", "simclr-clsp-w0-seed3", "simclr-clsp-w1-seed3",
                               "moco-seed3", "moco-seed4", "moco-clsp-seed3", "moco-clsp-seed4"]   # w = 0.1 is the main run
    assert [plan.runs[n].seed for n in ("simclr-seed3", "simclr-seed4", "moco-clsp-seed4")] == [3, 4, 4]
    assert plan.runs["simclr-clsp-w0-seed3"].clsp.positives == str(run / "positives-w0")
    assert plan.runs["simclr-clsp-seed4"].clsp.positives == str(run / "positives")
    stages = {s.name: s for s in plan.stages()}
    assert [n for n in stages if n.startswith("synthesis")] == ["synthesis", "synthesis-w0", "synthesis-w1"]
    assert stages["synthesis-w0"].config.sampler.w == 0.0 and stages["synthesis-w1"].config.sampler.w == 1.0
    assert stages["synthesis"].config.sampler.w == cfg.synthesis.sampler.w == 0.1
    assert [n for n in stages if n.startswith("eval/positives")] == ["eval/positives", "eval/positives-w0", "eval/positives-w1"]
    assert "eval/simclr-seed3/embed" in stages and "eval/simclr-seed4/embed" not in stages   # figures for the first seed


def test_a_weight_sweep_varies_lambda_without_stores_and_a_k_sweep_makes_stores(micro_config):
    plan = Pipeline(micro_config("sweep={setting: weight, values: [0.5, 2.0]}"))
    assert [plan.runs[n].clsp.weight for n in ("simclr-clsp", "simclr-clsp-weight0.5", "simclr-clsp-weight2")] == [1.0, 0.5, 2.0]
    assert [s.name for s in plan.stages() if s.name.startswith("synthesis")] == ["synthesis"]
    plan = Pipeline(micro_config("sweep={setting: k, values: [1, 2]}"))                  # K = 2 is the main store
    stages = {s.name: s for s in plan.stages()}
    assert "synthesis-k1" in stages and stages["synthesis-k1"].config.k == 1 and "synthesis-k2" not in stages


def test_a_start_sweep_makes_a_store_and_a_clsp_run_per_start(micro_config):
    plan = Pipeline(micro_config("sweep={setting: start, values: [1.0, 0.5]}", "synthesis.strength.grid=[1.0,0.5]",
                                 "eval.positives_sweep_start=[1.0,0.5]", "eval.positives_sweep_floor=[0.6]"))
    stages = {s.name: s for s in plan.stages()}
    assert "synthesis-start0.5" in stages and "synthesis-start1" not in stages          # start 1 is the main store
    swept, main = stages["synthesis-start0.5"].config, stages["synthesis"].config
    assert (swept.sampler.start, swept.strength.active) == (0.5, False) and main.strength.grid == [1.0, 0.5]
    assert plan.runs["simclr-clsp-start0.5"].clsp.positives.endswith("positives-start0.5")
    assert stages["eval/positives"].config["sweep_start"] == [1.0, 0.5] and stages["eval/positives-start0.5"].config["sweep_start"] == []


def test_a_given_model_dir_replaces_diffusion_training(micro_config, tmp_path):
    plan = Pipeline(micro_config(f"model_dir={tmp_path}"))
    assert plan.diffusion is None and plan.model_dir == tmp_path.resolve()
    assert [s.name for s in plan.stages()][:3] == ["synthesis", "figures", "eval/positives"]
    with pytest.raises(UserError, match="model_dir .* is not a directory"):
        run_pipeline(micro_config(f"model_dir={tmp_path / 'nothing'}"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, message", [
    (["variants=[clsp]", "pretrain.clsp.weight=0"], "variant 'clsp' of simclr needs a CLSP weight > 0"),
    (["method_overrides={simclr: {lrr: 1}}"], "pretraining simclr .*unknown config key 'lrr'"),
    (["methods=[moco]", "method_overrides={moco: {moco: {queue_size: 50}}}"], "moco.queue_size.*not a multiple"),
    (["methods=[swav]"], "methods"),
    (["variants=[clsp,twice]"], "variants"),
    (["w_sweep=[0.1,1.5]"], "w_sweep"),
    (["method_overrides={swav: {lr: 1}}"], "method_overrides"),
    (["method_overrides={moco: {lrr: 1}}"], "pretraining moco .*unknown config key 'lrr'"),  # not run, still checked
    (["seeds=[1,1]"], "seeds"),
    (["pretrain.seed=3"], "write seeds=\\[3\\] instead"),
    (["sweep={setting: eta, values: [1]}"], "sweep.setting"),
    (["sweep={setting: w, values: [1.5]}"], "sweep.values"),
    (["sweep={setting: k, values: [2.5]}"], "sweep.values"),
    (["sweep={setting: start, values: [0]}"], "sweep.values"),
    (["synthesis.sampler.start=0.2"], "leaves 0 steps"),
    (["sweep={setting: w, values: [0.5]}", "variants=[base]"], "add clsp to variants"),
])
def test_bad_settings_stop_before_any_work(micro_config, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_pipeline(micro_config(*overrides))
    assert not (tmp_path / "run").exists()


def test_stage_records_hold_fingerprints_and_timings(tmp_path):
    records = StageRecords(tmp_path)
    assert not records.is_complete("pretrain/simclr", "abc")
    records.complete("pretrain/simclr", "abc", 12.345, 20.0)
    records.complete("diffusion", "def", 2.0, 1.5)
    assert records.is_complete("pretrain/simclr", "abc")
    assert not records.is_complete("pretrain/simclr", "abd")  # other inputs: run again
    from clsp.io import read_json

    timings = read_json(tmp_path / "timings.json")
    assert timings["stages"]["pretrain/simclr"]["seconds"] == 12.35 and timings["total_seconds"] == 14.35
    assert timings["stages"]["diffusion"]["cpu_seconds"] == 1.5


def test_several_devices_run_each_training_stage_as_its_own_command(micro_config, tmp_path, monkeypatch):
    """Lightning starts one process per device by re-running the command it runs in, so with several
    devices the pipeline runs each training stage as its own `clsp` command (synthesis under torchrun),
    with the stage's resolved config written beside the stage records."""
    import subprocess

    from clsp.config import load_config
    from clsp.diffusion.train import DiffusionTrainConfig
    from clsp.methods.pretrain import PretrainConfig
    from clsp.positives.synthesize import SynthesizeConfig

    plan = Pipeline(micro_config("trainer.devices=2"))
    launched = []
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: launched.append(argv) or subprocess.CompletedProcess(argv, 0))
    stages = {s.name: s for s in plan.stages()}
    for name in ("diffusion", "synthesis", "pretrain/simclr-clsp"):
        stages[name].run()
    diffusion, synthesis, pretrain = launched
    assert diffusion[1:5] == ["-m", "clsp", "diffusion", "train"]
    assert synthesis[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert synthesis[5:8] == ["-m", "clsp", "synthesize"] and pretrain[1:4] == ["-m", "clsp", "pretrain"]
    for argv, schema, expected in ((diffusion, DiffusionTrainConfig, plan.diffusion),
                                   (synthesis, SynthesizeConfig, stages["synthesis"].config),
                                   (pretrain, PretrainConfig, plan.runs["simclr-clsp"])):
        assert argv[-2] == "--config"
        assert load_config(schema, argv[-1]) == expected  # the written config is the stage's, exactly

    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(argv, 1))
    with pytest.raises(UserError, match="stage pretrain/simclr failed .*run the pipeline again to resume"):
        stages["pretrain/simclr"].run()


def test_several_nodes_are_refused_with_the_stage_commands_to_use(micro_config):
    with pytest.raises(ConfigError, match="trainer.num_nodes.*one node"):
        micro_config("trainer.num_nodes=2")


def test_supcon_is_planned_on_labelled_data_and_refused_on_a_flat_folder(micro_config, tmp_path):
    import numpy as np
    from PIL import Image

    plan = Pipeline(micro_config("methods=[supcon]"))
    assert list(plan.runs) == ["no-pretraining", "supcon", "supcon-clsp"]
    assert plan.runs["supcon-clsp"].method == "supcon" and plan.runs["supcon-clsp"].third_view == "synthetic"
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(64):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(flat / f"{i:02d}.png")
    with pytest.raises(UserError, match=r"method supcon learns from the class labels, but folder:.* has none"):
        run_pipeline(micro_config("methods=[supcon]", f"dataset.name=folder:{flat}", "dataset.subset=0"))
    assert not (tmp_path / "run" / "diffusion").exists()


def test_the_oracle_variant_draws_class_mates_and_is_refused_without_labels(micro_config, tmp_path):
    from clsp.layout import RunSpec, VARIANT_LABEL

    plan = Pipeline(micro_config("variants=[base,oracle]", "methods=[simclr]"))
    oracle = plan.runs["simclr-oracle"]
    assert oracle.third_view == "oracle" and oracle.clsp.positives is None and oracle.clsp.weight == 1.0
    assert VARIANT_LABEL[RunSpec("simclr", "oracle").variant] == "+ oracle (labels; upper bound)"
    flat = tmp_path / "flat"
    flat.mkdir()
    from PIL import Image
    for i in range(40):
        Image.new("RGB", (8, 8), (i, i, i)).save(flat / f"{i:02d}.png")
    with pytest.raises(UserError, match="oracle .* no labels"):
        Pipeline(micro_config("variants=[base,oracle]", "methods=[simclr]", f"dataset.name=folder:{flat}")).preflight()
