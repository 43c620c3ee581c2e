"""The `clsp` command as a user meets it: fast help, one way to drive every command (--config, key=value,
named flags read from the config dataclass, --print-config), trimming presets, and config errors that
name the key in full."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys

import pytest
import yaml

from clsp.cli import COMMANDS, all_commands_parser, main, resolve_config
from clsp.config import load_config
from clsp.errors import ConfigError

HEAVY = ("torch", "lightning", "diffusers", "kornia", "torchvision", "timm")


def subcommand_parsers(parser=None, prefix=()):
    """(command words, parser) of every command that runs something, e.g. (("eval", "knn"), parser)."""
    parser = parser or all_commands_parser()
    actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    if not actions:
        yield prefix, parser
        return
    for name, sub in actions[0].choices.items():
        yield from subcommand_parsers(sub, prefix + (name,))


def loaded_after(code: str) -> tuple[list[str], str]:
    """The torch-family and clsp modules a fresh interpreter holds after running `code`, and what it printed."""
    code += "\nprint('MODULES', sorted(m for m in sys.modules if m.split('.')[0] in %r or m.startswith('clsp.')))" % (HEAVY,)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return eval(proc.stdout.rsplit("MODULES", 1)[1]), proc.stdout


@pytest.mark.parametrize("argv", [["--help"], ["--version"]])
def test_help_and_version_import_no_heavy_module(argv):
    loaded, out = loaded_after("import sys\nfrom clsp.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass" % (argv,))
    command_modules = {module for module, _ in COMMANDS.values()}
    assert "clsp.cli" in loaded and not command_modules & set(loaded), loaded  # no command module is imported,
    assert not [m for m in loaded if m.split(".")[0] in HEAVY], loaded          # so no torch, lightning, diffusers
    assert ("COMMAND" in out and "pipeline" in out) if argv == ["--help"] else "clsp 0.1.0" in out


def test_every_commands_help_imports_no_heavy_module():
    """`clsp COMMAND [SUBCOMMAND] --help` for every command: the parsers are built from torch-free config modules
    (clsp.methods.config, clsp.diffusion.config, clsp.eval.config, ...), so help never waits for torch."""
    code = ("import sys\nfrom clsp.cli import COMMANDS, all_commands_parser, main\n"
            "for argv in [[c, '--help'] for c in COMMANDS] + [['eval', 'knn', '--help'], ['diffusion', 'sample', '--help']]:\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "def helps(parser):\n"
            "    subs = [a for a in parser._actions if a.__class__.__name__ == '_SubParsersAction']\n"
            "    return [h for p in subs[0].choices.values() for h in helps(p)] if subs else [parser.format_help()]\n"
            "print('HELPS', len(helps(all_commands_parser())))")
    loaded, out = loaded_after(code)
    assert all(module in loaded for module, _ in COMMANDS.values()), loaded     # every command module was built
    assert not [m for m in loaded if m.split(".")[0] in HEAVY], loaded
    assert "clsp pretrain" in out and "clsp eval knn" in out and int(out.split("HELPS")[1].split()[0]) >= len(COMMANDS)


def test_every_command_has_help_and_a_config(capsys):
    commands = dict(subcommand_parsers())
    assert {c[0] for c in commands} == set(COMMANDS)
    for words, parser in commands.items():
        text = parser.format_help()
        assert "--print-config" in text and "--config PRESET" in text and "key=value" in text, words


def test_top_level_help_names_every_method_and_every_evaluation():
    from clsp.methods import METHODS

    listing = " ".join(text for _, text in COMMANDS.values()).lower()
    assert all(method in listing for method in METHODS), listing
    evals = dict(subcommand_parsers())
    assert all(words[1] in listing for words in evals if words[0] == "eval"), listing  # knn ... positives


def test_flags_are_aliases_of_keys_with_the_schemas_defaults(capsys):
    from clsp.eval.cli import LinearEval
    from clsp.eval.linear import LinearProbeConfig

    cfg = resolve_config(["eval", "linear", "--ckpt", "enc", "--dataset", "digits", "--epochs", "5", "--milestones", "2,4"])
    assert isinstance(cfg, LinearEval) and cfg.dataset.name == "digits" and cfg.device == "auto"
    assert (cfg.probe.epochs, cfg.probe.milestones) == (5, [2, 4])
    assert (cfg.probe.lr, cfg.probe.batch_size) == (LinearProbeConfig.lr, LinearProbeConfig.batch_size)  # written once
    same = resolve_config(["eval", "linear", "--ckpt", "enc", "--dataset", "digits", "probe.epochs=5", "probe.milestones=[2,4]"])
    assert same == cfg  # a flag and key=value are the same setting
    with pytest.raises(SystemExit):
        main(["eval", "linear", "--help"])
    assert "[probe.lr, default 1.0]" in capsys.readouterr().out  # the help shows the key and the dataclass's default

    from clsp.diffusion.sampler import SamplerConfig

    sample = resolve_config(["diffusion", "sample", "--model", "m", "--out", "o", "--anchors", "digits", "--k", "3"])
    assert sample.sampler == SamplerConfig() and sample.anchors.name == "digits" and sample.k == 3


def test_section_flags_are_generated_from_their_dataclasses():
    """Every field of the probe and sampler sections is a flag of the commands that take them, described by
    the comment beside the field; a flag the old tables lacked (--guidance) sets its key like the others."""
    import dataclasses

    from clsp.cli import field_comments
    from clsp.diffusion.sampler import SamplerConfig
    from clsp.eval.linear import LinearProbeConfig

    commands = dict(subcommand_parsers())
    for words, section, prefix in [(("eval", "linear"), LinearProbeConfig, "probe"),
                                   (("eval", "transfer"), LinearProbeConfig, "probe"),
                                   (("diffusion", "sample"), SamplerConfig, "sampler")]:
        options = {a.option_strings[0]: a for a in commands[words]._actions if a.option_strings}
        comments = field_comments(section)
        for f in dataclasses.fields(section):
            action = options["--" + f.name.replace("_", "-")]
            assert action.dest == f"_flag_{prefix}__{f.name}" and action.help.startswith(comments[f.name]), (words, f.name)
    assert field_comments(SamplerConfig)["layers"].endswith("the last n - 1 skip connections of the down path "
                                                             "(clsp's own extension)")   # continued on the next line
    cfg = resolve_config(["diffusion", "sample", "--model", "m", "--out", "o", "--guidance", "1.5", "--no-clip-final"])
    assert cfg.sampler.guidance == 1.5 and cfg.sampler.clip_final is False


def test_print_config_prints_the_resolved_config_without_running(tmp_path, capsys):
    assert main(["pipeline", "--config", "demo", "methods=[simclr]", "--out", str(tmp_path / "run"), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["methods"] == ["simclr"] and printed["out_dir"] == str(tmp_path / "run")
    assert printed["method_overrides"]["moco"]["clsp"]["weight"] == 0.5  # kept, not run
    assert not (tmp_path / "run").exists()
    from clsp.pipeline import PipelineConfig

    assert load_config(PipelineConfig, extra=printed) == resolve_config(
        ["pipeline", "--config", "demo", "methods=[simclr]", "--out", str(tmp_path / "run")])


@pytest.mark.parametrize("words", [["synthesize"], ["diffusion", "sample"], ["eval", "knn"], ["eval", "positives"], ["fid"]])
def test_print_config_works_before_the_keys_a_run_needs(words, capsys):
    assert main([*words, "--print-config"]) == 0              # errors send users here, before --model / --out
    out, err = capsys.readouterr()
    assert isinstance(yaml.safe_load(out), dict) and "to run, also set:" in err
    with pytest.raises(ConfigError, match="must name"):       # running still needs them
        resolve_config(words)


def test_a_command_resolves_only_its_own_presets(capsys):
    from clsp.methods.pretrain import PretrainConfig

    cfg = resolve_config(["pretrain", "--config", "demo"])  # configs/pretrain/demo.yaml, not the pipeline's demo
    assert cfg == load_config(PretrainConfig, "pretrain/demo")
    assert resolve_config(["diffusion", "train", "--config", "tiny-digits"]).model == "tiny"
    # a name only another command has: refused, naming that preset and the command that runs it
    with pytest.raises(ConfigError, match=r"configs/fashion-mnist.yaml is a preset of `clsp pipeline`.*fashion-mnist-simclr"):
        resolve_config(["pretrain", "--config", "fashion-mnist"])
    with pytest.raises(ConfigError, match=r"configs/pretrain/fashion-mnist-simclr.yaml is a preset of `clsp pretrain`"):
        resolve_config(["pipeline", "--config", "fashion-mnist-simclr"])
    with pytest.raises(ConfigError, match=r"configs/demo.yaml is a preset of `clsp pipeline`.*has no presets"):
        resolve_config(["eval", "knn", "--config", "demo"])


def test_a_preset_can_be_trimmed_and_a_key_removed():
    from clsp.pipeline import Pipeline

    plan = Pipeline(resolve_config(["pipeline", "--config", "demo", "methods=[simclr]"]))
    assert list(plan.runs) == ["no-pretraining", "simclr", "simclr-clsp", "simclr-clsp-start0.5"]
    with pytest.raises(ConfigError, match=r"pretraining moco .*unknown config key 'lrr'"):  # not run, still checked
        Pipeline(resolve_config(["pipeline", "--config", "demo", "methods=[simclr]", "method_overrides.moco.lrr=1"]))
    cfg = resolve_config(["pipeline", "--config", "demo", "methods=[simclr]", "~method_overrides.moco", "~eval.linear_probe",
                          "model_dir=null"])
    assert "moco" not in cfg.method_overrides and cfg.model_dir is None
    assert cfg.eval.linear_probe.epochs == 100  # the default again, not the preset's
    with pytest.raises(ConfigError, match=r"unknown config key 'eval\.lin' .*did you mean eval\.linear"):
        resolve_config(["pipeline", "--config", "demo", "~eval.lin"])


@pytest.mark.parametrize("argv, message", [
    (["pipeline", "--config", "demo", "synthesis.sampler.w=2"], "config key 'synthesis.sampler.w': must be in [0.0, 1.0]"),
    (["pipeline", "--config", "demo", "eval.linear_probe.epochs=0"], "config key 'eval.linear_probe.epochs': must be > 0"),
    (["pipeline", "--config", "demo", "pretrain.clsp.weight=-1"], "config key 'pretrain.clsp.weight': must be >= 0"),
    (["pretrain", "--config", "demo", "train.max_steps=100"], "unknown config key 'train.max_steps' (from override"),
    (["synthesize", "--model", "m", "--out", "o", "--w", "2"], "config key 'sampler.w': must be in"),
    (["eval", "knn", "--ckpt", "x", "--dataset", "digits", "--device", "tpu"], "config key 'device': must be auto, cpu"),
    (["eval", "linear", "--ckpt", "x", "--dataset", "digits", "--epochs", "many"], "--epochs must be an integer"),
    (["data", "info", "digits", "--holdout", "1.5"], "config key 'dataset.holdout': must be in [0, 1)"),
])
def test_config_errors_name_the_key_in_full_on_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clsp: error: ") and "\n" not in err and message in err, err


def test_an_encoder_path_that_is_a_checkpoint_says_what_to_pass(tmp_path, capsys):
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not an encoder")
    assert main(["eval", "knn", "--ckpt", str(ckpt), "--dataset", "digits", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is not an encoder file but a training checkpoint" in err
    assert f"give {tmp_path / 'run' / 'encoder.safetensors'}" in err and f"the run directory {tmp_path / 'run'}" in err


def test_report_refuses_a_folder_that_is_no_pipeline_run(tmp_path, capsys):
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "config.yaml").write_text(yaml.safe_dump({"method": "simclr", "epochs": 2}))
    assert main(["report", str(tmp_path / "pre")]) == 2
    err = capsys.readouterr().err
    assert ("not of a pipeline" in err or "not of `clsp pipeline`" in err) and not (tmp_path / "pre" / "report.html").exists()


def test_a_subset_larger_than_the_split_says_so(caplog):
    from clsp.data.config import DatasetConfig, load_split

    with caplog.at_level("WARNING", logger="clsp"):
        ds = load_split(DatasetConfig(name="digits", subset=5000), "test")
    assert len(ds) < 5000 and f"dataset.subset=5000, but digits split 'test' has {len(ds)} images: using all" in caplog.text


def test_time_estimate_line():
    from clsp.training import estimate_line, format_duration

    assert format_duration(3725) == "1 h 02 min" and format_duration(250) == "4 min 10 s"
    line = estimate_line("training", 3, 57.0, 7997, "cpu")
    assert line.startswith("training: 3 steps took 57.0 s (19.00 s a step); the remaining 7,997 steps will take about 42 h 12 min")
    assert "a GPU preset on a CPU?" in line and "a GPU preset" not in estimate_line("training", 3, 3.0, 10, "cpu")


def test_json_output_of_data_info_is_one_object(capsys):
    assert main(["data", "info", "digits", "--json", "dataset.subset=10"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 10


def test_a_training_run_prints_stage_result_and_where_it_went_without_library_noise(tmp_path):
    """No Lightning info lines (printed twice), tips, library deprecations or unrounded scores."""
    argv = [sys.executable, "-m", "clsp", "pretrain", "--device", "cpu", "--out", str(tmp_path / "run"),
            "dataset.name=digits", "dataset.subset=64", "batch_size=32", "epochs=2", "warmup_epochs=0",
            "backbone.arch=resnet10", "projector.hidden_dim=32", "projector.out_dim=16", "knn.every_n_epochs=1",
            "knn.batch_size=64", "trainer.progress=false"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout + proc.stderr
    for noise in ("GPU available", "TPU available", "Tip:", "LeafSpec", "weights_only", "Trainer.fit` stopped"):
        assert noise not in text, noise
    lines = [line for line in proc.stderr.splitlines() if line.strip()]  # the log; stdout has the result's path
    assert lines[0].startswith("pretrain: simclr on digits (64 images, 2 steps/epoch x 2 epochs, global batch 32)")
    done = next(line for line in lines if line.startswith("pretrain: done in"))
    assert done.endswith(f"-> {tmp_path / 'run' / 'encoder.safetensors'}")
    assert all(len(score.split(".")[1]) == 3 for score in re.findall(r"\d+\.\d+%", done))  # two decimals and %
    assert proc.stdout.strip() == str(tmp_path / "run" / "encoder.safetensors")


def test_a_text_value_with_a_colon_says_how_to_quote_it(capsys):
    """`note=a: b` is YAML for a mapping: the message says so and how to pass text; the quoted form works."""
    assert main(["pipeline", "--config", "demo", "note=what it shows: positives", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "config key 'note'" in err and "quote it" in err and "note='\"...\"'" in err
    assert main(["pipeline", "--config", "demo", 'note="what it shows: positives"', "--print-config"]) == 0
    assert "note: 'what it shows: positives'" in capsys.readouterr().out
