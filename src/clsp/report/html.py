"""report.html: one self-contained page that shows what a pipeline run made and measured.

It reads only the run directory (layout: docs/ARCHITECTURE.md), embeds every figure as a base64 PNG
data URI (the file opens from disk, mailed or archived, with nothing beside it), escapes every text
that comes from data with html.escape, and states each expected piece that is absent as missing
rather than leaving it out: a reader must be able to tell "not run" from "not shown".
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clsp.errors import UserError
from clsp.io import read_json_object, write_bytes_atomic, write_text_atomic
from clsp.layout import (FLOOR, POSITIVES_FIGURE, TRADEOFF_FIGURE, TRAINING_LOG, VARIANT_LABEL, VARIANT_SUFFIX, RunLayout,
                         RunSpec, run_name, runs_from_config, store_name)
from clsp.report import figures, paper, study

EVAL_KINDS = ("knn", "linear", "embed", "hardness", "transfer")


# -- reading the numbers out of the stages' metrics.json ---------------------------------------------

def _get(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def first_number(d: Any, *paths: str) -> float | None:
    """The first of several key paths that holds a number (the schema is docs/metrics.md)."""
    for path in paths:
        value = _get(d, path)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


# -- the run directory ------------------------------------------------------------------------------

@dataclass
class RunDirectory:
    """What the report reads from a pipeline run directory; absent files read as None / empty."""

    path: Path
    config: dict
    env: dict
    timings: dict
    runs: list[str] = field(default_factory=list)       # pretraining run names, in the config's order
    specs: dict = field(default_factory=dict)           # run name -> clsp.layout.RunSpec
    expected_evals: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)            # data.json: the splits the run used, evaluations skipped

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.path)

    @classmethod
    def read(cls, run_dir: str | Path) -> "RunDirectory":
        path = Path(run_dir)
        layout = RunLayout(path)
        if not layout.config.is_file():
            raise UserError(f"{run_dir} is not a pipeline run directory (no config.yaml); "
                            "give the out_dir of `clsp pipeline`")
        config = _read_run_config(layout.config)
        if not {"methods", "variants", "synthesis"} <= set(config):
            raise UserError(f"{run_dir} is a run directory, but not of `clsp pipeline` (its config.yaml has no methods, "
                            "variants and synthesis); give the out_dir of a pipeline run")
        run = cls(path, config, read_json_object(layout.env) or {}, read_json_object(layout.timings) or {})
        run.specs = {spec.name: spec for spec in runs_from_config(config)}
        pretrain = layout.pretrain_root
        found = sorted(p.name for p in pretrain.iterdir() if p.is_dir()) if pretrain.is_dir() else []
        for name in found:                                  # runs the config no longer plans are still shown
            if name not in run.specs:
                run.specs[name] = spec_of_name(name)
        run.runs = list(run.specs)
        evals = config.get("eval") or {}
        run.data = read_json_object(layout.data) or {}
        skipped = run.data.get("skipped") or {}
        run.expected_evals = [k for k in EVAL_KINDS if _eval_enabled(evals, k) and k not in skipped]
        return run

    def pretrain_metrics(self, name: str) -> dict | None:
        return read_json_object(self.layout.pretrain_metrics(name))

    def curves(self, name: str) -> list[dict[str, str]]:
        return figures.read_metrics_csv(self.layout.training_log(name))

    def eval_metrics(self, name: str, kind: str) -> dict | None:
        return read_json_object(self.layout.eval_metrics(name, kind))

    def eval_figure(self, name: str, kind: str) -> Path | None:
        pngs = sorted(self.layout.evaluation(name, kind).glob("*.png"))
        return pngs[0] if pngs else None

    @property
    def paper(self) -> str:
        return str(self.config.get("paper") or "")

    def numbers(self, name: str) -> study.RunNumbers:
        return study.run_numbers(self.specs[name], self.eval_metrics(name, "knn"), self.eval_metrics(name, "linear"),
                                 self.pretrain_metrics(name))

    def positives_metrics(self, store: str = store_name(None)) -> dict | None:
        return read_json_object(self.layout.store_metrics(store))


def spec_of_name(name: str) -> RunSpec:
    """A run the plan does not name (an older config): method and variant read off its name."""
    for variant, suffix in VARIANT_SUFFIX.items():
        if name.endswith(suffix):
            return RunSpec(name[: -len(suffix)], variant)
    return RunSpec(name, "base")


def _read_run_config(path: Path) -> dict:
    """The pipeline's resolved config; a damaged one, or a stage's (pretrain, eval ...), is refused."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is damaged ({str(e).splitlines()[0]}); rerun `clsp pipeline` with the run's config "
                        "to rewrite it (completed stages are skipped)") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} is damaged (not a mapping of keys to values); rerun `clsp pipeline` to rewrite it")
    if "methods" not in config or "variants" not in config:
        raise UserError(f"{path.parent} is the run directory of a single stage, not of a pipeline; give the out_dir "
                        "of `clsp pipeline` (the folder that holds stages/, pretrain/ and eval/)")
    return config


def _eval_enabled(evals: dict, kind: str) -> bool:
    value = evals.get(kind)
    if isinstance(value, dict):
        return bool(value.get("enabled", True))
    if isinstance(value, list):
        return bool(value)
    return bool(value)


# -- HTML pieces -------------------------------------------------------------------------------------

def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def img(png: bytes | Path, alt: str, min_width: int = 360) -> str:
    """An embedded PNG; small pixel grids (32 px tiles) are scaled up by an integer factor, unblurred."""
    data = png.read_bytes() if isinstance(png, Path) else png
    width = png_width(data)
    size = ""
    if width and width < min_width:
        size = f' width="{width * -(-min_width // width)}" class="pixels"'
    return f'<img alt="{e(alt)}"{size} src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def png_width(data: bytes) -> int | None:
    """The width in a PNG's IHDR chunk (bytes 16..20, big-endian), or None for anything else."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big")


def fmt(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return '<span class="na">&mdash;</span>'
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


class Page:
    """Sections appended in reading order; `missing` collects what the run lacks, shown at the top."""

    def __init__(self) -> None:
        self.sections: list[str] = []
        self.missing: list[str] = []

    def section(self, anchor: str, title: str, body: str) -> None:
        self.sections.append(f'<section id="{e(anchor)}"><h2>{e(title)}</h2>\n{body}\n</section>')

    def lack(self, what: str) -> str:
        """Record a missing piece and return the sentence that says so in place."""
        self.missing.append(what)
        return f'<p class="missing">Missing: {e(what)}</p>'


def results_section(run: RunDirectory, page: Page) -> str:
    """A row per method variant (a group of seeds): kNN, linear and online-probe top-1 as mean +- std with the
    number of seeds, failed fits as failures, the difference to the method's baseline with its standard error
    (a finding only beyond two), the untrained encoder's floor first, and the paper's numbers on a paper preset."""
    paper_run = run.paper if run.paper in paper.PAPER_RUNS else ""
    numbers = {name: run.numbers(name) for name in run.runs}
    groups = study.group_summaries(list(numbers.values()))
    specs = {run.specs[name].group: run.specs[name] for name in run.runs}
    headers = ["run", "method", "variant", "seeds", "kNN top-1 (best k)", "kNN top-1 (k=200)", "linear top-1",
               "&Delta; kNN (best k) vs baseline", "&Delta; kNN (k=200) vs baseline", "&Delta; linear vs baseline",
               "online probe"]
    if paper_run:
        headers += ["paper linear", "release linear", "release kNN"]
    fixed_k = {r.spec.group: r.values.get("k200") for r in numbers.values() if r.values.get("k200") is not None}
    collapsed = {group: [n for n, r in numbers.items() if r.spec.group == group and r.collapsed] for group in groups}
    forms = {r.spec.group: r.clsp_form for r in numbers.values() if r.clsp_form}
    floor = floor_summary(groups, specs)
    rows = []
    for group, summary in groups.items():
        spec = specs[group]
        base_group = RunSpec(spec.method, "base").group
        base = groups.get(base_group) if spec.variant not in ("base", "none") else None
        seeds = max(s.n + s.failed for s in summary.values())
        below = below_floor(summary, floor) if spec.method != "none" else set()

        def delta(metric: str) -> str:  # a collapsed run's accuracy is its backbone's: no difference is read off it
            if base is not None and (collapsed[group] or collapsed.get(base_group)):
                return f'<td class="num" title="a collapsed run: no difference is computed">{fmt(None)} <span class="na">collapsed</span></td>'
            return _difference_cell(study.difference(summary[metric], base[metric]) if base else None)

        cells = [f"<td><code>{e(group)}</code></td>", f"<td>{e(spec.method if spec.method != 'none' else '')}</td>",
                 f"<td>{e(_variant_text(spec, forms.get(group)))}</td>", f'<td class="num">{seeds}</td>',
                 _summary_cell(summary["knn"], below="knn" in below),
                 _summary_cell(summary["knn200"], _fixed_k_note(fixed_k.get(group)), below="knn200" in below),
                 _summary_cell(summary["linear"], below="linear" in below),
                 delta("knn"), delta("knn200"), delta("linear"), _summary_cell(summary["probe"])]
        if paper_run:
            cells += [f'<td class="num paper">{fmt(paper.paper_linear(paper_run, group))}</td>',
                      f'<td class="num paper">{fmt(paper.release_linear(paper_run, group))}</td>',
                      f'<td class="num paper">{fmt(paper.release_knn(paper_run, group))}</td>']
        if collapsed[group]:
            cells[0] = (f'<td><code>{e(group)}</code> <span class="failed" title="see the collapse note below">'
                        f'collapsed ({len(collapsed[group])} of {seeds})</span></td>')
        row_class = ' class="floor"' if spec.method == "none" else (' class="below-floor"' if below else "")
        rows.append(f'<tr data-run="{e(group)}"{row_class}>' + "".join(cells) + "</tr>")
    body = ""
    if not run.runs:
        body += page.lack("pretraining runs (no pretrain/<name>/ directory and no methods in the config)")
    for name in run.runs:
        if not run.layout.encoder(name).is_file():
            body += page.lack(f"pretraining run {name}: no encoder ({run.layout.relative(run.layout.encoder(name))})")
        for kind in ("knn", "linear"):
            if kind in run.expected_evals and run.eval_metrics(name, kind) is None:
                body += page.lack(f"{kind} evaluation of {name} ({run.layout.relative(run.layout.eval_metrics(name, kind))})")
    table = ('<table id="results"><thead><tr>' + "".join(f"<th>{h}</th>" for h in headers) + "</tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    n_seeds = sorted({max(s.n + s.failed for s in summary.values()) for summary in groups.values()})
    note = ("<p class=\"note\">Top-1 accuracy (%) on the test split, mean &plusmn; standard deviation over the seeds "
            f"counted in <i>seeds</i> ({', '.join(map(str, n_seeds)) or '0'} here). kNN: weighted, cosine, T = 0.07; best k over "
            "{5, 10, 20, 50, 100, 200} (the release's protocol) and k = 200 (a k beyond the training split is its size, shown "
            "beside the number). Linear: frozen backbone, the paper's protocol "
            "with this run's epochs. <i>no-pretraining</i> is the untrained encoder each run starts from: the floor. "
            "A number below the floor's is marked <i>below floor</i>. "
            "&Delta;: this row minus the same method's baseline, &plusmn; its standard error; it is coloured only when it "
            "exceeds two standard errors, marked <i>n = 1</i> where one seed gives no noise estimate, and not computed "
            "where either run collapsed. A probe that "
            "diverged or stayed at chance is shown as <i>failed</i> and left out of the means.</p>")
    if paper_run:
        note += (f'<p class="note">Paper columns: {e(paper.CITATION)}, ResNet-18, '
                 f'{e("STL-10" if paper_run == "transfer" else paper_run)}; the release columns are its 1000-epoch re-runs. '
                 "They are set beside this run for comparison, not computed from it.</p>")
    else:
        note += ('<p class="note">For scale only (another dataset, another scale): the paper\'s CIFAR-10, ResNet-18, '
                 "1000 epochs, linear top-1: " + "; ".join(
                     f"{m} {paper.LINEAR_TOP1['cifar10'][m]:.2f} &rarr; +CLSP {paper.LINEAR_TOP1['cifar10'][m + '-clsp']:.2f} "
                     f"({paper.LINEAR_TOP1['cifar10'][m + '-clsp'] - paper.LINEAR_TOP1['cifar10'][m]:+.2f})"
                     for m in ("simclr", "moco"))
                 + "; the release's +aug control: simclr-aug 91.88, moco-aug 93.16.</p>")
    failures = [(name, metric, reason) for name, r in numbers.items() for metric, reason in r.failed.items()]
    if failures:
        body += ('<details open><summary>failed fits (left out of the means)</summary><ul>'
                 + "".join(f"<li><code>{e(n)}</code> {e(m)}: {e(reason)}</li>" for n, m, reason in failures) + "</ul></details>")
    collapses = [(name, r.collapsed) for name, r in numbers.items() if r.collapsed]
    if collapses:
        body += ('<details open><summary>collapsed runs (their accuracies are the backbone\'s, not a contrastive '
                 'representation\'s)</summary><ul>'
                 + "".join(f"<li><code>{e(n)}</code>: {e(reason)}</li>" for n, reason in collapses) + "</ul></details>")
    body += per_seed_details(run, numbers)
    body += quality_details(run)
    return table + note + body


def quality_details(run: RunDirectory) -> str:
    """The CLSP term's quality weights (clsp.quality) of each run that used them: their distribution over the run."""
    rows = []
    for name in run.runs:
        quality = (run.pretrain_metrics(name) or {}).get("quality")
        if isinstance(quality, dict):
            cells = [quality.get(k) for k in ("score_mean", "weight_min", "weight_q10", "weight_median", "weight_q90",
                                              "weight_max", "weight_zero")]
            rows.append(f"<tr><td><code>{e(name)}</code></td>" + "".join(f'<td class="num">{fmt(v, 3)}</td>' for v in cells)
                        + "</tr>")
    if not rows:
        return ""
    headers = ["run", "mean score", "weight min", "q10", "median", "q90", "max", "share at 0"]
    return ('<details open><summary>quality weights of the CLSP term (clsp.quality; per step, averaged over the run; '
            'weights = max(cos, 0) / batch mean, so their mean is 1)</summary><table><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in headers) + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></details>")


def _variant_text(spec: RunSpec, clsp_form: str | None = None) -> str:
    """The variant as the table names it; a CLSP term not in the paper's form says which (clsp.form)."""
    text = VARIANT_LABEL.get(spec.variant, spec.variant)
    text += f" ({spec.sweep[0]} = {spec.sweep[1]:g})" if spec.sweep else ""
    return text + (f", {FORM_LABEL.get(clsp_form, clsp_form + ' term')}" if clsp_form else "")


FORM_LABEL = {"contrast": "contrastive term"}


def _summary_cell(summary: study.Summary, note: str = "", below: bool = False) -> str:
    if summary.mean is None:
        if summary.failed:
            return f'<td class="num failed" title="{e("; ".join(summary.reasons))}">failed</td>'
        return f'<td class="num">{fmt(None)}</td>'
    spread = f" &plusmn; {summary.std:.2f}" if summary.std is not None else ""
    failed = f' <span class="failed" title="{e("; ".join(summary.reasons))}">({summary.failed} failed)</span>' if summary.failed else ""
    if below:
        return f'<td class="num below">{summary.mean:.2f}{spread}{note}{failed} <span class="below-tag">below floor</span></td>'
    return f'<td class="num">{summary.mean:.2f}{spread}{note}{failed}</td>'


FLOOR_METRICS = {"knn": "kNN (best k)", "knn200": "kNN (k=200)", "linear": "linear"}


def floor_summary(groups: dict, specs: dict) -> dict[str, study.Summary] | None:
    """The untrained encoder's numbers (the floor every trained run must clear), if the run measured it."""
    return next((summary for group, summary in groups.items() if specs[group].method == "none"), None)


def below_floor(summary: dict[str, study.Summary], floor: dict[str, study.Summary] | None) -> set[str]:
    """The metrics on which a trained group's mean is below the untrained floor's."""
    if floor is None:
        return set()
    return {m for m in FLOOR_METRICS
            if summary[m].mean is not None and floor[m].mean is not None and summary[m].mean < floor[m].mean}


def floor_verdict(run: RunDirectory) -> str:
    """The report's top line: whether the trained encoders beat the untrained floor, metric by metric."""
    numbers = [run.numbers(name) for name in run.runs]
    groups = study.group_summaries(numbers)
    specs = {r.spec.group: r.spec for r in numbers}
    floor = floor_summary(groups, specs)
    trained = [g for g in groups if specs[g].method != "none"]
    if not trained:
        return ""
    if floor is None:
        return ('<p class="verdict" id="verdict">The untrained floor was not measured (<code>floor: false</code>): '
                "this page cannot say whether training beat an untrained encoder.</p>")
    counts = []  # (label, floor mean, groups above it, groups measured)
    for metric, label in FLOOR_METRICS.items():
        measured = [g for g in trained if groups[g][metric].mean is not None]
        if floor[metric].mean is not None and measured:
            counts.append((label, floor[metric].mean, [g for g in measured if groups[g][metric].mean > floor[metric].mean],
                           measured))
    if not counts:
        return ""
    lead = ("No trained encoder beats the untrained floor" if not any(above for _, _, above, _ in counts) else
            "Every trained encoder beats the untrained floor" if all(len(above) == len(measured) for _, _, above, measured in counts)
            else "Not every trained encoder beats the untrained floor")
    parts = [f"{label} {mean:.2f}: {len(above)} of {len(measured)} beat it"
             + (f" ({', '.join(above)})" if 0 < len(above) < len(measured) else "") for label, mean, above, measured in counts]
    return (f'<p class="verdict" id="verdict"><b>{e(lead)}.</b> Untrained encoder, {e("; ".join(parts))}. '
            "Rows below it are marked in the results.</p>")


def _difference_cell(d: study.Difference | None) -> str:
    if d is None or d.delta is None:
        return f'<td class="num">{fmt(None)}</td>'
    verdict = d.verdict
    css = {"up": "pos", "down": "neg"}.get(verdict, "")
    if d.se is None:
        return f'<td class="num" title="one seed: no noise estimate">{d.delta:+.2f} <span class="na">n = 1</span></td>'
    label = "" if verdict in ("up", "down") else ' <span class="na">within noise</span>'
    return f'<td class="num {css}">{d.delta:+.2f} &plusmn; {d.se:.2f}{label}</td>'


def _fixed_k_note(k: Any) -> str:
    """The k actually used when the training split was smaller than 200."""
    return f" (k={e(k)})" if k not in (None, 200) else ""


def per_seed_details(run: RunDirectory, numbers: dict) -> str:
    """Every run's own numbers, seed by seed, for a reader who wants to see what the means hide."""
    if all(not run.specs[n].seeded_name for n in numbers):
        return ""
    rows = "".join(
        f"<tr><td><code>{e(name)}</code></td><td class=\"num\">{fmt(r.values.get('knn'))}</td>"
        f"<td class=\"num\">{fmt(r.values.get('knn200'))}</td><td class=\"num\">"
        f"{'failed' if 'linear' in r.failed else fmt(r.values.get('linear'))}</td>"
        f"<td class=\"num\">{'failed' if 'probe' in r.failed else fmt(r.values.get('probe'))}</td></tr>"
        for name, r in numbers.items())
    return ('<details><summary>every seed</summary><table class="small"><thead><tr><th>run</th><th>kNN (best k)</th>'
            f"<th>kNN (k=200)</th><th>linear</th><th>online probe</th></tr></thead><tbody>{rows}</tbody></table></details>")


def sweep_section(run: RunDirectory, page: Page) -> str | None:
    """The ablation: accuracy of the swept CLSP runs against the swept value, beside their positives' agreement."""
    sweep = run.config.get("sweep") or {}
    setting = sweep.get("setting") or ""
    if not setting:
        return None
    numbers = [run.numbers(name) for name in run.runs]
    groups = study.group_summaries(numbers)
    main_value = {"w": _get(run.config, "synthesis.sampler.w"), "k": _get(run.config, "synthesis.k"),
                  "weight": _get(run.config, "pretrain.clsp.weight"),
                  "start": _get(run.config, "synthesis.sampler.start") or 1.0}.get(setting)
    methods = sweep.get("methods") or run.config.get("methods") or []
    body, figure_lines, refs = "", {}, {}
    for method in methods:
        points = []
        for r in numbers:
            spec = r.spec
            if spec.method != method or spec.variant != "clsp":
                continue
            value = spec.sweep[1] if spec.sweep else main_value
            if spec.sweep is None or spec.sweep[0] == setting:
                points.append((float(value), spec.group))
        seen, rows = set(), []
        for value, group in sorted(points):
            if group in seen:
                continue
            seen.add(group)
            g = groups[group]
            rows.append((value, group, g))
            for metric, label in (("knn", "kNN best k"), ("linear", "linear")):
                if g[metric].mean is not None:
                    figure_lines.setdefault(f"{method} {label}", []).append((value, g[metric].mean, g[metric].std))
        for variant, label in (("base", "baseline"), ("aug", "+ aug")):
            g = groups.get(RunSpec(method, variant).group)
            if g and g["linear"].mean is not None:
                refs[f"{method} {label} (linear)"] = (g["linear"].mean, g["linear"].std)
        agreement = _store_agreement(run, setting, [v for v, _, _ in rows], main_value)
        hardness = _store_agreement(run, setting, [v for v, _, _ in rows], main_value, "results.store.similarity.synthetic")
        table = "".join(f"<tr><td>{value:g}</td><td><code>{e(group)}</code></td><td class=\"num\">{max(s.n + s.failed for s in g.values())}</td>"
                        f"{_summary_cell(g['knn'])}{_summary_cell(g['linear'])}"
                        f'<td class="num">{fmt(agreement.get(value))}</td><td class="num">{fmt(hardness.get(value), 3)}</td></tr>'
                        for value, group, g in rows)
        body += (f'<h3>{e(method)}</h3><table class="small sweep"><thead><tr><th>{e(setting)}</th><th>run</th><th>seeds</th>'
                 "<th>kNN top-1 (best k)</th><th>linear top-1</th><th>class agreement of its positives (%)</th>"
                 "<th>their cosine to the anchor (judge's space; lower = harder)</th></tr></thead>"
                 f"<tbody>{table}</tbody></table>")
    agreement_points = sorted(_store_agreement(run, setting, [p[0] for pts in figure_lines.values() for p in pts], main_value).items())
    pm = run.positives_metrics() or {}
    png = figures.sweep_figure(setting, figure_lines, refs, agreement_points, _num(_get(pm, "results.chance")),
                               _num(_get(pm, "results.ceiling")))
    write_bytes_atomic(run.layout.figure(f"sweep_{setting}"), png)
    body += (f"<figure>{img(png, f'accuracy against {setting}')}<figcaption>Left: top-1 of the CLSP runs at each {e(setting)} "
             "(mean &plusmn; std over seeds), the baseline and +aug means as dashed lines with their &plusmn; std bands. "
             f"Right: the share of each {e(setting)}'s stored candidates that a reference classifier puts in their anchor's "
             "class.</figcaption></figure>")
    return body


def _store_agreement(run: RunDirectory, setting: str, values: list[float], main_value,
                     key: str = "results.store.agreement") -> dict[float, float]:
    """value -> class agreement (or another `key` of its positives evaluation) of the store made with it (the main
    store for the main value)."""
    out = {}
    for value in values:
        main = main_value is not None and float(value) == float(main_value) or setting == "weight"
        store = store_name(None if main else (setting, float(value)))
        agreement = _num(_get(run.positives_metrics(store) or {}, key))
        if agreement is not None:
            out[float(value)] = agreement
    return out


def transfer_section(run: RunDirectory, page: Page) -> str | None:
    if "transfer" not in run.expected_evals and not any(run.eval_metrics(n, "transfer") for n in run.runs):
        return None
    per_run = {name: transfer_rows(run.eval_metrics(name, "transfer")) for name in run.runs}
    listed = list((run.config.get("eval") or {}).get("transfer") or [])  # the config's order first
    sets = listed + sorted({s for rows in per_run.values() for s in rows} - set(listed))
    paper_rows = [m for m in paper.TRANSFER_TOP1] if run.paper == "transfer" else []
    head = "<tr><th>run</th>" + "".join(f"<th>{e(s)}</th>" for s in sets) + "</tr>"
    body = ""
    lacking = ""
    for name, values in per_run.items():
        if not values:
            continue
        cells = ""
        for s in sets:
            value = values.get(s)
            if isinstance(value, str):
                lacking += page.lack(f"transfer set {s} for {name}: {value}")
                value = None
            cells += f'<td class="num">{fmt(value)}</td>'
        body += f'<tr><td><code>{e(name)}</code></td>{cells}</tr>'
    for name in paper_rows:
        body += (f'<tr class="paper"><td>paper: {e(name)}</td>'
                 + "".join(f'<td class="num paper">{fmt(paper.paper_transfer(name, s))}</td>' for s in sets) + "</tr>")
    out = f'<table id="transfer"><thead>{head}</thead><tbody>{body}</tbody></table>'
    out += "<p class=\"note\">Linear evaluation top-1 (%) on each downstream set's test split.</p>" + lacking
    for name, values in per_run.items():
        if not values:
            out += page.lack(f"transfer evaluation of {name} ({run.layout.relative(run.layout.eval_metrics(name, 'transfer'))})")
    return out


def transfer_rows(m: dict | None) -> dict[str, float | str]:
    """{downstream set: top-1, or the reason it is missing} from a transfer metrics.json (a row per set)."""
    out: dict[str, float | str] = {}
    for row in _get(m or {}, "results.sets") or []:
        name = row.get("dataset")
        if row.get("status") == "missing":
            out[name] = str(row.get("reason") or "missing")
        elif isinstance(row.get("top1"), (int, float)):
            out[name] = float(row["top1"])
    return out


def diffusion_figure(run: RunDirectory, page: Page) -> str:
    """The latest grid of unconditional samples from the diffusion model's EMA weights."""
    model_dir = run.config.get("model_dir")
    samples = sorted(run.layout.samples.glob("step*.png"))
    if samples:
        step = samples[-1].stem.removeprefix("step").lstrip("0") or "0"
        return (f"<figure>{img(samples[-1], 'diffusion samples')}<figcaption>Unconditional samples from the diffusion "
                f"model's EMA weights after {e(step)} training steps.</figcaption></figure>")
    if model_dir:
        return f'<p class="note">Diffusion model given (not trained here): <code>{e(model_dir)}</code>.</p>'
    return page.lack(f"diffusion sample grid ({run.layout.relative(run.layout.samples)}/step*.png)")


def positives_section(run: RunDirectory, page: Page) -> str:
    body = diffusion_figure(run, page)
    anchors = run.layout.figure("anchors")
    body += ("<figure>" + img(anchors, "anchors beside their synthetic candidates") +
             "<figcaption>Each row: a training image (left, the anchor) and the K candidates generated from it by "
             "interpolating " + _interpolated(run) + " with the anchor's (w = " + e(_synthesis_w(run)) + ").</figcaption></figure>"
             if anchors.is_file() else page.lack(f"anchors figure ({run.layout.relative(anchors)})"))
    sweep = run.layout.figure("w_sweep")
    body += ("<figure>" + img(sweep, "w sweep") +
             "<figcaption>The same anchors and seeds, one row per interpolation weight w: w = 1 is plain unconditional "
             "sampling; smaller w keeps more of the anchor's content.</figcaption></figure>"
             if sweep.is_file() else page.lack(f"w sweep figure ({run.layout.relative(sweep)})"))
    return body + positives_quality(run, page)


def positives_quality(run: RunDirectory, page: Page) -> str:
    """The verdict of `clsp eval positives` on the main store: a table, and agreement / hardness against w."""
    if not (run.config.get("eval") or {}).get("positives", False):
        return ""
    skipped = (run.data.get("skipped") or {}).get("positives")
    if skipped:
        return f'<p class="note">Positives evaluation not run: {e(skipped)}</p>'
    m = run.positives_metrics()
    if m is None:
        return page.lack(f"positives evaluation ({run.layout.relative(run.layout.store_metrics())})")
    r = m.get("results") or {}
    s, real = r.get("store") or {}, r.get("real") or {}
    sim, px, rpx = s.get("similarity") or {}, s.get("pixels") or {}, real.get("pixels") or {}
    rows = [("class agreement with the anchor (%)", s.get("agreement"), r.get("ceiling"), r.get("chance")),
            ("Frechet distance to real training images (reference features)", s.get("frechet"),
             real.get("frechet_test_vs_train"), None),
            ("pixels at 0 (%)", px.get("at_0"), rpx.get("at_0"), None),
            ("pixels at 255 (%)", px.get("at_255"), rpx.get("at_255"), None),
            ("pixels within 4 levels of 0: looks black (%)", px.get("near_0"), rpx.get("near_0"), None),
            ("flat images (%)", px.get("constant"), rpx.get("constant"), None),
            ("diversity: cosine distance between candidates / between 2 augmentations", s.get("diversity"),
             s.get("augmentation_distance"), None),
            ("cosine to the anchor: candidate / nearest real image / random real image", sim.get("synthetic"),
             sim.get("nearest_real"), sim.get("random_real"))]
    body = "".join(f"<tr><td>{e(label)}</td>" + "".join(f'<td class="num">{fmt(_num(v), 3 if abs(_num(v) or 0) < 10 else 2)}</td>'
                                                         for v in values) + "</tr>" for label, *values in rows)
    ref = r.get("reference") or {}
    caption = (f"{s.get('n_anchors', '?')} anchors x K = {s.get('k', '?')} stored candidates (w = {e(s.get('w'))}), judged by a "
               f"reference classifier trained on {ref.get('train_images', '?')} real training images (test accuracy "
               f"{fmt(_num(ref.get('test_accuracy')))}%, the ceiling of agreement). Second column: the real images' own "
               "value (test split against train for agreement and Frechet distance); third: chance or a random image.")
    out = ('<table id="positives-quality" class="small"><thead><tr><th>measure</th><th>candidates</th><th>real images</th>'
           f"<th>chance / random</th></tr></thead><tbody>{body}</tbody></table><p class=\"note\">{caption}</p>")
    verdict = positives_verdict(r)
    if verdict:
        out += f'<p class="note"><b>Reading:</b> {e(verdict)}</p>'
    figure = run.layout.store_evaluation() / POSITIVES_FIGURE
    if figure.is_file():
        out += ("<figure>" + img(figure, "agreement and hardness against w") + "<figcaption>Fresh candidates at each w of the "
                "w sweep: class agreement (left) is what the anchor's content is worth; cosine similarity to the anchor "
                "(right, lower = harder) and the distance between an anchor's candidates (diversity) are what it costs."
                "</figcaption></figure>")
    tradeoff = run.layout.store_evaluation() / TRADEOFF_FIGURE
    if tradeoff.is_file():
        out += ("<figure>" + img(tradeoff, "class kept against hardness, per generator") + "<figcaption>Each generator's "
                "settings as one curve: how often the candidates keep their anchor's class (up) against their cosine to "
                "the anchor in the judge's space (left = harder). The star is two augmentations of the anchor, the diamond "
                "its nearest real image: a generator worth using sits above and left of the star.</figcaption></figure>")
    return out


def positives_verdict(r: dict) -> str:
    """One sentence the numbers support about the stored candidates."""
    s = r.get("store") or {}
    agreement, chance, ceiling = _num(s.get("agreement")), _num(r.get("chance")), _num(r.get("ceiling"))
    sim = s.get("similarity") or {}
    if agreement is None or chance is None or ceiling is None:
        return ""
    n = (s.get("n_anchors") or 0) * (s.get("k") or 0)
    noise = 300 * ((chance / 100) * (1 - chance / 100) / max(1, n)) ** 0.5
    if agreement <= chance + noise:
        return (f"class agreement {agreement:.1f}% is at chance ({chance:.1f}%): these candidates carry no class of their "
                "anchor and act as random images, not positives.")
    harder = _num(sim.get("synthetic")) is not None and _num(sim.get("nearest_real")) is not None and \
        sim["synthetic"] < sim["nearest_real"]
    above_random = _num(sim.get("synthetic")) is not None and _num(sim.get("random_real")) is not None and \
        sim["synthetic"] > sim["random_real"]
    return (f"{agreement:.1f}% of candidates keep their anchor's class (chance {chance:.1f}%, ceiling {ceiling:.1f}%); "
            + ("they are less similar to their anchor than its nearest real neighbour (harder) " if harder else
               "they are not harder than the anchor's nearest real neighbour ")
            + ("and more similar than a random image." if above_random else "and no more similar than a random image."))


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _interpolated(run: RunDirectory) -> str:
    """What the sampler mixes with the anchor's features, in words (sampler.layers)."""
    synthesis = run.config.get("synthesis") or {}
    layers = _get(synthesis, "sampler.layers") if isinstance(synthesis, dict) else None
    layers = int(layers or 1)
    if layers == 1:
        return "the UNet's mid-block (bottleneck) features"
    return (f"the UNet's mid-block features and its {layers - 1} deepest skip connection{'s' if layers > 2 else ''} "
            "(clsp's extension: the paper and its release mix the bottleneck only)")


def _synthesis_w(run: RunDirectory) -> Any:
    synthesis = run.config.get("synthesis") or {}
    return synthesis.get("w", _get(synthesis, "sampler.w")) if isinstance(synthesis, dict) else "?"


def curves_section(run: RunDirectory, page: Page) -> str:
    by_method: dict[str, dict[str, tuple[str, list]]] = {}
    body = ""
    first_seed = (run.config.get("seeds") or [0])[0]
    for name in run.runs:
        spec = run.specs[name]
        if spec.method == "none" or spec.sweep is not None or spec.seed != first_seed:
            continue                    # one seed of each main run: the curves of more would hide each other
        method, variant = spec.method, spec.variant
        rows = run.curves(name)
        if rows:
            by_method.setdefault(method, {})[name] = (variant, rows)
        else:
            body += page.lack(f"training log of {name} ({run.layout.relative(run.layout.training_log(name))})")
    for method, runs in by_method.items():
        png, missing_panels = figures.curves_figure(method, runs)
        write_bytes_atomic(run.layout.figure(f"curves_{method}"), png)
        body += f"<figure>{img(png, f'training curves of {method}')}</figure>"
        if (run.data.get("train") or {}).get("labelled") is False:
            missing_panels = []  # unlabelled training images: the online probe and kNN monitor do not run
        for panel in missing_panels:
            body += page.lack(f"{panel} for {method} (not in its {TRAINING_LOG})")
    return body


def figure_runs(run: RunDirectory) -> list[str]:
    """The runs the pipeline draws per-run figures for: the first seed of each main (unswept) run."""
    first_seed = (run.config.get("seeds") or [0])[0]
    return [n for n in run.runs if run.specs[n].method != "none" and run.specs[n].sweep is None
            and run.specs[n].seed == first_seed]


def per_run_figures(run: RunDirectory, page: Page, kind: str, caption: str) -> str:
    skipped = (run.data.get("skipped") or {}).get(kind)
    if skipped:
        return f'<p class="note">Not run: {e(skipped)}</p>'
    if kind not in run.expected_evals and not any(run.eval_figure(n, kind) for n in run.runs):
        return page.lack(f"{kind} evaluation (not enabled in this pipeline's eval section)")
    body = '<div class="grid">'
    lacking = ""
    for name in figure_runs(run):
        png = run.eval_figure(name, kind)
        if png is None:
            lacking += page.lack(f"{kind} figure of {name} ({run.layout.relative(run.layout.evaluation(name, kind))}/*.png)")
            continue
        stats = hardness_table(run.eval_metrics(name, kind)) if kind == "hardness" else ""
        body += f"<figure>{img(png, f'{kind} of {name}')}<figcaption><code>{e(name)}</code> &mdash; {caption}</figcaption>{stats}</figure>"
    return body + "</div>" + lacking


def hardness_table(m: dict | None) -> str:
    """Mean and quartiles of each similarity distribution, when the metrics hold them."""
    if not m:
        return ""
    dists = _get(m, "results.similarity")
    if not isinstance(dists, dict):
        return ""
    rows = ""
    for label, d in dists.items():
        mean = first_number(d, "mean")
        q = [first_number(d, key) for key in ("q25", "median", "q75")]
        rows += (f"<tr><td>{e(label)}</td><td class=\"num\">{fmt(mean, 3)}</td>"
                 + "".join(f'<td class="num">{fmt(v, 3)}</td>' for v in q) + "</tr>")
    if not rows:
        return ""
    harder = first_number(m, "results.synthetic_harder_than_nn")
    synthetic, random = first_number(dists, "synthetic.mean"), first_number(dists, "random.mean")
    premise = ""
    if harder is not None:
        premise = (f'<p class="note">Synthetic candidates are less similar to their anchor than its nearest neighbour '
                   f"for {100 * harder:.1f}% of anchors")
        if synthetic is not None and random is not None:
            premise += (f"; their mean similarity {synthetic:.3f} against {random:.3f} for a random image: "
                        + ("harder <i>and</i> closer than a random image, as a hard positive should be." if synthetic > random
                           else "no closer than a random image, so harder only because they are not positives."))
        premise += "</p>"
    return premise + ('<table class="small"><thead><tr><th>cosine similarity to</th><th>mean</th><th>q25</th><th>median</th>'
            f"<th>q75</th></tr></thead><tbody>{rows}</tbody></table>")


def timings_section(run: RunDirectory, page: Page) -> str:
    stages = run.timings.get("stages") or {}
    in_order = sorted((s.get("finished_at") or "", name) for name, s in stages.items() if isinstance(s, dict) and "seconds" in s)
    seconds = {name: float(stages[name]["seconds"]) for _, name in in_order}  # in the order the stages finished
    if not seconds:
        return page.lack("stage timings (timings.json)")
    def cpu(name: str) -> str:
        value = stages[name].get("cpu_seconds")
        return e(figures.format_seconds(float(value))) if isinstance(value, (int, float)) else fmt(None)

    rows = "".join(f"<tr><td>{e(name)}</td><td class=\"num\">{e(figures.format_seconds(s))}</td>"
                   f"<td class=\"num\">{cpu(name)}</td><td>{e(stages[name].get('device') or '')}</td></tr>"
                   for name, s in seconds.items())
    total = sum(seconds.values())
    cpu_total = sum(float(stages[n].get("cpu_seconds") or 0) for n in seconds)
    table = ('<table id="timings" class="small"><thead><tr><th>stage</th><th>wall time</th><th>CPU time</th>'
             f"<th>device</th></tr></thead><tbody>{rows}<tr><th>total</th><th class=\"num\">{e(figures.format_seconds(total))}"
             f"</th><th class=\"num\">{e(figures.format_seconds(cpu_total))}</th><th></th></tr></tbody></table>")
    note = ("<p class=\"note\">Wall time of the invocation that completed each stage (a stage resumed after an "
            "interruption counts only its last part); CPU time summed over threads and child processes.</p>")
    return f'<div class="row"><div>{table}{note}</div><figure>{img(figures.timings_figure(seconds), "stage timings")}</figure></div>'


def provenance_section(run: RunDirectory) -> str:
    versions = run.env.get("versions") or {}
    rows = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in sorted(versions.items()))
    facts = [("git commit", run.env.get("git_commit")), ("host", run.env.get("host")), ("GPU", run.env.get("cuda") or "none"),
             ("started", run.env.get("started_at")), ("command", " ".join(run.env.get("argv") or []))]
    fact_rows = "".join(f"<tr><td>{e(k)}</td><td><code>{e(v)}</code></td></tr>" for k, v in facts if v)
    config_text = run.layout.config.read_text(encoding="utf-8")
    return (f'<div class="row"><table class="small"><tbody>{fact_rows}{rows}</tbody></table></div>'
            f"<details><summary>resolved config (config.yaml)</summary><pre>{e(config_text)}</pre></details>")


STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1250px; padding: 1em 2em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.sub { color: #555; margin-top: 0; } code { font-size: 0.92em; }
table { border-collapse: collapse; margin: 0.6em 0; } th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; }
th { background: #f4f4f4; font-weight: 600; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.pos { color: #11772d; font-weight: 600; } td.neg { color: #b3261e; font-weight: 600; }
.failed { color: #b3261e; } tr.floor { background: #f6f6f6; font-style: italic; }
.paper { background: #f7f3e8; } .na { color: #aaa; } table.small { font-size: 0.92em; }
.missing { color: #8a5a00; background: #fff6e0; border-left: 3px solid #e0a000; padding: 0.2em 0.6em; margin: 0.3em 0; }
.note { color: #555; font-size: 0.92em; } figure { margin: 0.6em 0; } figcaption { color: #444; font-size: 0.92em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; } img.pixels { image-rendering: pixelated; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 1em; } .grid figure { margin: 0; }
td.below { background: #fdecea; } .below-tag { color: #b3261e; font-size: 0.8em; white-space: nowrap; }
.verdict { background: #fdf3e1; border-left: 3px solid #c77700; padding: 0.4em 0.7em; margin: 0.4em 0; }
.row { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
nav a { margin-right: 1em; } pre { background: #f8f8f8; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
#img-status { color: #888; font-size: 0.8em; }
.scope { background: #eef4fb; border-left: 3px solid #4a7fc1; padding: 0.4em 0.7em; }
"""

# Counts the figures that decoded (naturalWidth > 0) into #img-status once the page has loaded:
# a reader sees "5/5 figures loaded", and a headless browser's DOM dump shows it to tests.
IMG_CHECK = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var el = document.getElementById('img-status');
  el.textContent = ok + '/' + imgs.length + ' figures loaded';
  el.setAttribute('data-loaded', ok); el.setAttribute('data-total', imgs.length);
});
"""


def render(run: RunDirectory) -> str:
    page = Page()
    page.section("results", "Results", results_section(run, page))
    page.section("positives", "Synthetic positives", positives_section(run, page))
    sweep = sweep_section(run, page)
    if sweep is not None:
        page.section("sweep", f"Ablation: {(run.config.get('sweep') or {}).get('setting')}", sweep)
    page.section("curves", "Training curves", curves_section(run, page))
    transfer = transfer_section(run, page)
    if transfer is not None:
        page.section("transfer", "Transfer", transfer)
    page.section("hardness", "How hard are the positives?", per_run_figures(
        run, page, "hardness", "cosine similarity of each anchor to another augmentation of itself, its nearest "
        "neighbour, its synthetic candidates and a random image (lower = harder positive)"))
    page.section("tsne", "Embeddings (t-SNE)", per_run_figures(run, page, "embed", "t-SNE of test-set features, by class"))
    page.section("timings", "Stage timings", timings_section(run, page))
    page.section("provenance", "Config, versions, commit", provenance_section(run))

    title = f"CLSP run {run.path.resolve().name}"
    seeds = run.config.get("seeds") or [0]
    facts = [data_fact(run), f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} per run",
             f"methods {', '.join(run.config.get('methods') or [])}", f"variants {', '.join(run.config.get('variants') or [])}"]
    if run.paper:
        facts.append(f"paper preset {run.paper}")
    subtitle = " &middot; ".join(e(f) for f in facts) + data_note(run)
    missing = ("<p class=\"missing\">This run lacks " + str(len(page.missing)) + " piece(s); each is marked below.</p>"
               if page.missing else "<p class=\"note\">Every expected piece is present.</p>")
    if run.config.get("note"):
        missing = f'<p class="scope"><b>What this run can show:</b> {e(run.config["note"])}</p>' + missing
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in [("results", "results"), ("positives", "positives"),
                  ("curves", "curves"), ("hardness", "hardness"), ("tsne", "t-SNE"), ("timings", "timings"), ("provenance", "config")])
    generated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<h1>{e(title)}</h1>
{floor_verdict(run)}
<p class="sub">{subtitle}</p>
<nav>{nav}</nav>
{missing}
{chr(10).join(page.sections)}
<p class="note">Generated {e(generated)} by <code>clsp report</code> from <code>{e(run.path.resolve())}</code>.
<span id="img-status" data-loaded="" data-total=""></span></p>
<script>{IMG_CHECK}</script>
</body></html>
"""


def data_fact(run: RunDirectory) -> str:
    """The dataset and the true number of images the run trained and was tested on (data.json)."""
    dataset = run.config.get("dataset") or {}
    train, evaluated = run.data.get("train"), run.data.get("eval") or {}
    if not train:  # a run made before data.json was written
        return f"dataset {dataset.get('name', '?')}" + (f" (subset of {dataset['subset']})" if dataset.get("subset") else "")
    fact = f"dataset {train['name']}: {train['n']:,} training images"
    test = evaluated.get("test")
    if test:
        fact += f", tested on {test['n']:,}" + (f" of {test['name']}" if test["name"] != train["name"] else "")
    return fact


def data_note(run: RunDirectory) -> str:
    """Where the splits came from (a held-out share of a folder says so) and what was skipped, and why."""
    lines = [f"{role} split: {d['source']}" for role, d in (("training", run.data.get("train")),
                                                              ("test", (run.data.get("eval") or {}).get("test"))) if d]
    skipped = run.data.get("skipped") or {}
    if skipped:
        lines.append(f"{', '.join(skipped)} not run: {next(iter(skipped.values()))}")
    lines += [f"pretraining {name}: {fitted}" for name, fitted in (run.data.get("batches_fitted") or {}).items()]
    return "".join(f'<br><span class="note">{e(line)}</span>' for line in lines)


def build_report(run_dir: str | Path) -> Path:
    """Write run_dir/report.html (atomically) and return its path."""
    run = RunDirectory.read(run_dir)
    out = run.layout.report
    write_text_atomic(out, render(run))
    return out

