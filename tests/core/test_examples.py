"""Every example a user is shown (each command's --help, the README, the Makefile, the presets' comments)
resolves and validates its config, as `--print-config` does: most need data or a GPU this machine does not
have, so they are not run here. The README's own-images recipes run for real at micro size in
tests/pipeline/test_own_images.py; the README's facts (preset table, files it names) are checked below."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from clsp.cli import all_commands_parser, resolve_config
from clsp.config import CONFIG_DIR, preset_names

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def clsp_words(line: str) -> list[str] | None:
    """The arguments after `clsp` (or `-m clsp`) of a command line; None when the line runs no clsp command."""
    line = line.split(" #")[0].replace("$(BIN)/", "").strip()
    if not re.match(r"^(\w+=\S+\s+)*clsp\s|.*\s-m clsp\s", line):
        return None
    words = shlex.split(line)
    for i, word in enumerate(words):
        if word == "clsp" and (i == 0 or words[i - 1] == "-m" or all("=" in w for w in words[:i])):
            return words[i + 1:]
    return None


def readme_examples() -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        lines += [line for line in block.replace("\\\n", " ").splitlines() if clsp_words(line) is not None]
    return lines


def help_examples() -> list[str]:
    from test_commands import subcommand_parsers

    found = []
    for _, parser in subcommand_parsers(all_commands_parser()):
        epilog = parser.epilog or ""
        found += [line.strip() for line in epilog.splitlines() if line.strip().startswith("clsp ")]
    return found


def preset_examples() -> list[str]:
    found = []
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        found += [line.lstrip("# ").strip() for line in path.read_text().splitlines()
                  if line.startswith("#") and clsp_words(line.lstrip("# ")) is not None]
    return found


def makefile_examples() -> list[str]:
    return [line.strip() for line in (REPO / "Makefile").read_text().splitlines() if "$(BIN)/clsp " in line]


EXAMPLES = {"readme": readme_examples(), "help": help_examples(), "presets": preset_examples(), "make": makefile_examples()}


def test_every_place_has_examples():
    assert all(EXAMPLES.values()), {k: len(v) for k, v in EXAMPLES.items()}
    assert len(EXAMPLES["help"]) >= 15  # every command shows at least one


@pytest.mark.parametrize("line", [line for lines in EXAMPLES.values() for line in lines])
def test_example_resolves_and_validates(line, monkeypatch):
    monkeypatch.chdir(REPO)  # the checkout's relative paths (configs/demo.yaml) are as a user there types them
    cfg = resolve_config(clsp_words(line))
    assert cfg is not None


def test_the_preset_table_lists_the_shipped_presets():
    table = README.split("## Presets", 1)[1].split("Stage presets", 1)[0]
    listed = set(re.findall(r"`configs/([\w-]+)\.yaml`", table))
    assert listed == set(preset_names())
    for folder in ("diffusion", "synthesize"):
        line = re.search(rf"`configs/{folder}/` \(([^)]*)\)", README).group(1)
        assert sorted(n.strip() for n in line.split(",")) == preset_names(folder)


def test_the_readme_names_only_files_that_exist():
    named = set(re.findall(r"\b((?:docs|scripts|benchmarks|configs|src)/[\w./-]+\.(?:md|sh|py|yaml))", README))
    named |= {f"benchmarks/{name}" for name in re.findall(r"`(\w+\.py)`", README.split("## Tests and benchmarks")[1])}
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert named and not missing, missing


def demo_outputs() -> tuple[object, set[str]]:
    """The demo's resolved config and the paths a `clsp pipeline --config demo` run leaves under runs/demo."""
    from clsp.layout import RunLayout, runs_from_config
    from clsp.config import load_config, to_dict
    from clsp.pipeline import PipelineConfig

    demo = load_config(PipelineConfig, CONFIG_DIR / "demo.yaml")
    at = RunLayout(Path(demo.out_dir))
    runs = [spec.name for spec in runs_from_config(to_dict(demo))]
    paths = {at.root, at.store(), at.report}
    paths |= {at.pretrain(name) for name in runs} | {at.encoder(name) for name in runs}
    if not demo.model_dir:
        paths.add(at.model)
    return demo, {str(p) for p in paths}


@pytest.mark.parametrize("line", [line for line in EXAMPLES["help"] if "runs/demo" in line])
def test_help_examples_fit_what_the_demo_leaves_behind(line):
    """An example that reads runs/demo names only what the demo makes, and loads the data as the demo made it
    (a store is checked against the exact images it was made from)."""
    demo, made = demo_outputs()
    words = clsp_words(line)
    cfg = resolve_config(words)
    for word in words:
        if word == "runs/demo" or word.startswith("runs/demo/"):                # what it reads (not an --out)
            assert word.rstrip("/") in made, (word, sorted(made))
    if "runs/demo/positives" in words and getattr(cfg, "dataset", None) is not None:
        for key in ("name", "size", "subset"):
            assert getattr(cfg.dataset, key) == getattr(demo.dataset, key), (line, key)
    model = getattr(cfg, "model", None)
    if isinstance(model, str) and model.startswith("clsp:"):
        from clsp.diffusion.model import shipped_models

        assert model[len("clsp:"):] in shipped_models()
