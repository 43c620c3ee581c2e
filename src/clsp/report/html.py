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
from clsp.io import read_json, write_bytes_atomic, write_text_atomic
from clsp.report import figures, paper

VARIANT_SUFFIX = {"clsp": "-clsp", "aug": "-aug"}
VARIANT_LABEL = {"base": "baseline", "clsp": "+ CLSP", "aug": "+ aug (control)"}
EVAL_KINDS = ("knn", "linear", "embed", "hardness", "transfer")


def run_name(method: str, variant: str) -> str:
    """The directory name of one pretraining run: simclr, simclr-clsp, simclr-aug, ..."""
    return method + VARIANT_SUFFIX.get(variant, "")


def split_run_name(name: str) -> tuple[str, str]:
    for variant, suffix in VARIANT_SUFFIX.items():
        if name.endswith(suffix):
            return name[: -len(suffix)], variant
    return name, "base"


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


def knn_best(m: dict) -> tuple[float | None, Any]:
    """(top-1 at the best k, that k): the release's protocol (eval/knn metrics.json, docs/metrics.md)."""
    return first_number(m, "results.best"), _get(m, "results.best_k")


def knn_fixed(m: dict) -> float | None:
    return first_number(m, "results.fixed")


def linear_top1(m: dict) -> float | None:
    return first_number(m, "results.top1")


def probe_top1(m: dict) -> float | None:
    """The online probe's final test top-1 from a pretraining run's metrics.json."""
    return first_number(m, "probe_test_acc")


# -- the run directory ------------------------------------------------------------------------------

@dataclass
class RunDirectory:
    """What the report reads from a pipeline run directory; absent files read as None / empty."""

    path: Path
    config: dict
    env: dict
    timings: dict
    runs: list[str] = field(default_factory=list)       # pretraining run names, in the config's order
    expected_evals: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)            # data.json: the splits the run used, evaluations skipped

    @classmethod
    def read(cls, run_dir: str | Path) -> "RunDirectory":
        path = Path(run_dir)
        if not (path / "config.yaml").is_file():
            raise UserError(f"{run_dir} is not a pipeline run directory (no config.yaml); "
                            "give the out_dir of `clsp pipeline`")
        config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
        if not isinstance(config, dict) or not {"methods", "variants", "synthesis"} <= set(config):
            raise UserError(f"{run_dir} is a run directory, but not of `clsp pipeline` (its config.yaml has no methods, "
                            "variants and synthesis); give the out_dir of a pipeline run")
        run = cls(path, config, _read_json_or_empty(path / "env.json"), _read_json_or_empty(path / "timings.json"))
        expected = [run_name(m, v) for m in config.get("methods") or [] for v in config.get("variants") or []]
        found = sorted(p.name for p in (path / "pretrain").iterdir() if p.is_dir()) if (path / "pretrain").is_dir() else []
        run.runs = expected + [name for name in found if name not in expected]
        evals = config.get("eval") or {}
        run.data = _read_json_or_empty(path / "data.json")
        skipped = run.data.get("skipped") or {}
        run.expected_evals = [k for k in EVAL_KINDS if _eval_enabled(evals, k) and k not in skipped]
        return run

    def pretrain_metrics(self, name: str) -> dict | None:
        return _read_json_or_none(self.path / "pretrain" / name / "metrics.json")

    def curves(self, name: str) -> list[dict[str, str]]:
        return figures.read_metrics_csv(self.path / "pretrain" / name / "logs" / "metrics.csv")

    def eval_dir(self, name: str, kind: str) -> Path:
        return self.path / "eval" / name / kind

    def eval_metrics(self, name: str, kind: str) -> dict | None:
        return _read_json_or_none(self.eval_dir(name, kind) / "metrics.json")

    def eval_figure(self, name: str, kind: str) -> Path | None:
        pngs = sorted(self.eval_dir(name, kind).glob("*.png"))
        return pngs[0] if pngs else None

    @property
    def paper(self) -> str:
        return str(self.config.get("paper") or "")


def _eval_enabled(evals: dict, kind: str) -> bool:
    value = evals.get(kind)
    if isinstance(value, dict):
        return bool(value.get("enabled", True))
    if isinstance(value, list):
        return bool(value)
    return bool(value)


def _read_json_or_none(path: Path) -> dict | None:
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _read_json_or_empty(path: Path) -> dict:
    return _read_json_or_none(path) or {}


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
    """A row per method variant: kNN and linear top-1, the difference to the method's baseline,
    and the paper's numbers beside them on a paper preset."""
    paper_run = run.paper if run.paper in paper.PAPER_RUNS else ""
    headers = ["run", "method", "variant", "kNN top-1 (best k)", "best k", "kNN top-1 (k=200)", "linear top-1",
               "&Delta; kNN vs baseline", "&Delta; linear vs baseline", "online probe"]
    if paper_run:
        headers += ["paper linear", "release linear", "release kNN"]
    numbers: dict[str, dict[str, float | None]] = {}
    for name in run.runs:
        knn = run.eval_metrics(name, "knn") or {}
        lin = run.eval_metrics(name, "linear") or {}
        best, k = knn_best(knn)
        numbers[name] = {"knn": best, "k": k, "knn200": knn_fixed(knn), "k200": _get(knn, "results.fixed_k"),
                         "linear": linear_top1(lin),
                         "probe": probe_top1(run.pretrain_metrics(name) or {})}
    rows = []
    for name in run.runs:
        method, variant = split_run_name(name)
        n = numbers[name]
        base = numbers.get(method) if variant != "base" else None
        d_knn = n["knn"] - base["knn"] if base and n["knn"] is not None and base["knn"] is not None else None
        d_lin = n["linear"] - base["linear"] if base and n["linear"] is not None and base["linear"] is not None else None
        cells = [f"<td><code>{e(name)}</code></td>", f"<td>{e(method)}</td>", f"<td>{e(VARIANT_LABEL.get(variant, variant))}</td>",
                 f'<td class="num">{fmt(n["knn"])}</td>', f'<td class="num">{e(n["k"]) if n["k"] is not None else fmt(None)}</td>',
                 f'<td class="num">{fmt(n["knn200"])}{_fixed_k_note(n["k200"])}</td>',
                 f'<td class="num">{fmt(n["linear"])}</td>',
                 f'<td class="num {_sign_class(d_knn)}">{fmt(d_knn, signed=True)}</td>',
                 f'<td class="num {_sign_class(d_lin)}">{fmt(d_lin, signed=True)}</td>',
                 f'<td class="num">{fmt(n["probe"])}</td>']
        if paper_run:
            cells += [f'<td class="num paper">{fmt(paper.paper_linear(paper_run, name))}</td>',
                      f'<td class="num paper">{fmt(paper.release_linear(paper_run, name))}</td>',
                      f'<td class="num paper">{fmt(paper.release_knn(paper_run, name))}</td>']
        rows.append(f'<tr data-run="{e(name)}">' + "".join(cells) + "</tr>")
    body = ""
    if not run.runs:
        body += page.lack("pretraining runs (no pretrain/<name>/ directory and no methods in the config)")
    for name in run.runs:
        if not (run.path / "pretrain" / name / "encoder.safetensors").is_file():
            body += page.lack(f"pretraining run {name}: no encoder (pretrain/{name}/encoder.safetensors)")
        for kind in ("knn", "linear"):
            if kind in run.expected_evals and run.eval_metrics(name, kind) is None:
                body += page.lack(f"{kind} evaluation of {name} (eval/{name}/{kind}/metrics.json)")
    table = ('<table id="results"><thead><tr>' + "".join(f"<th>{h}</th>" for h in headers) + "</tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    note = ("<p class=\"note\">Top-1 accuracy (%) on the test split. kNN: weighted, cosine, T = 0.07; best k over "
            "{5, 10, 20, 50, 100, 200} (the release's protocol) and k = 200 (a k beyond the training split is its size, "
            "shown beside the number). Linear: frozen backbone, the paper's "
            "protocol with this run's epochs. &Delta;: this row minus the same method's baseline.</p>")
    if paper_run:
        note += (f'<p class="note">Paper columns: {e(paper.CITATION)}, ResNet-18, '
                 f'{e("STL-10" if paper_run == "transfer" else paper_run)}; the release columns are its 1000-epoch re-runs. '
                 "They are set beside this run for comparison, not computed from it.</p>")
    return table + note + body


def _fixed_k_note(k: Any) -> str:
    """The k actually used when the training split was smaller than 200."""
    return f" (k={e(k)})" if k not in (None, 200) else ""


def _sign_class(delta: float | None) -> str:
    if delta is None:
        return ""
    return "pos" if delta > 0 else "neg" if delta < 0 else ""


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
            out += page.lack(f"transfer evaluation of {name} (eval/{name}/transfer/metrics.json)")
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
    samples = sorted((run.path / "diffusion" / "samples").glob("step*.png"))
    if samples:
        step = samples[-1].stem.removeprefix("step").lstrip("0") or "0"
        return (f"<figure>{img(samples[-1], 'diffusion samples')}<figcaption>Unconditional samples from the diffusion "
                f"model's EMA weights after {e(step)} training steps.</figcaption></figure>")
    if model_dir:
        return f'<p class="note">Diffusion model given (not trained here): <code>{e(model_dir)}</code>.</p>'
    return page.lack("diffusion sample grid (diffusion/samples/step*.png)")


def positives_section(run: RunDirectory, page: Page) -> str:
    body = diffusion_figure(run, page)
    anchors = run.path / "figures" / "anchors.png"
    body += ("<figure>" + img(anchors, "anchors beside their synthetic candidates") +
             "<figcaption>Each row: a training image (left, the anchor) and the K candidates generated from it by "
             "interpolating the UNet's mid-block features with the anchor's (w = " + e(_synthesis_w(run)) + ").</figcaption></figure>"
             if anchors.is_file() else page.lack("anchors figure (figures/anchors.png)"))
    sweep = run.path / "figures" / "w_sweep.png"
    body += ("<figure>" + img(sweep, "w sweep") +
             "<figcaption>The same anchors and seeds, one row per interpolation weight w: w = 1 is plain unconditional "
             "sampling; smaller w keeps more of the anchor's content.</figcaption></figure>"
             if sweep.is_file() else page.lack("w sweep figure (figures/w_sweep.png)"))
    return body


def _synthesis_w(run: RunDirectory) -> Any:
    synthesis = run.config.get("synthesis") or {}
    return synthesis.get("w", _get(synthesis, "sampler.w")) if isinstance(synthesis, dict) else "?"


def curves_section(run: RunDirectory, page: Page) -> str:
    by_method: dict[str, dict[str, tuple[str, list]]] = {}
    body = ""
    for name in run.runs:
        method, variant = split_run_name(name)
        rows = run.curves(name)
        if rows:
            by_method.setdefault(method, {})[name] = (variant, rows)
        else:
            body += page.lack(f"training log of {name} (pretrain/{name}/logs/metrics.csv)")
    for method, runs in by_method.items():
        png, missing_panels = figures.curves_figure(method, runs)
        write_bytes_atomic(run.path / "figures" / f"curves_{method}.png", png)
        body += f"<figure>{img(png, f'training curves of {method}')}</figure>"
        if (run.data.get("train") or {}).get("labelled") is False:
            missing_panels = []  # unlabelled training images: the online probe and kNN monitor do not run
        for panel in missing_panels:
            body += page.lack(f"{panel} for {method} (not in its logs/metrics.csv)")
    return body


def per_run_figures(run: RunDirectory, page: Page, kind: str, caption: str) -> str:
    skipped = (run.data.get("skipped") or {}).get(kind)
    if skipped:
        return f'<p class="note">Not run: {e(skipped)}</p>'
    if kind not in run.expected_evals and not any(run.eval_figure(n, kind) for n in run.runs):
        return page.lack(f"{kind} evaluation (not enabled in this pipeline's eval section)")
    body = '<div class="grid">'
    lacking = ""
    for name in run.runs:
        png = run.eval_figure(name, kind)
        if png is None:
            lacking += page.lack(f"{kind} figure of {name} (eval/{name}/{kind}/*.png)")
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
    premise = (f'<p class="note">Synthetic candidates are less similar to their anchor than its nearest neighbour '
               f"for {100 * harder:.1f}% of anchors.</p>" if harder is not None else "")
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
    config_text = (run.path / "config.yaml").read_text(encoding="utf-8")
    return (f'<div class="row"><table class="small"><tbody>{fact_rows}{rows}</tbody></table></div>'
            f"<details><summary>resolved config (config.yaml)</summary><pre>{e(config_text)}</pre></details>")


STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1250px; padding: 1em 2em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.sub { color: #555; margin-top: 0; } code { font-size: 0.92em; }
table { border-collapse: collapse; margin: 0.6em 0; } th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; }
th { background: #f4f4f4; font-weight: 600; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.pos { color: #11772d; font-weight: 600; } td.neg { color: #b3261e; font-weight: 600; }
.paper { background: #f7f3e8; } .na { color: #aaa; } table.small { font-size: 0.92em; }
.missing { color: #8a5a00; background: #fff6e0; border-left: 3px solid #e0a000; padding: 0.2em 0.6em; margin: 0.3em 0; }
.note { color: #555; font-size: 0.92em; } figure { margin: 0.6em 0; } figcaption { color: #444; font-size: 0.92em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; } img.pixels { image-rendering: pixelated; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; } .grid figure { flex: 1 1 360px; max-width: 600px; }
.row { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
nav a { margin-right: 1em; } pre { background: #f8f8f8; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
#img-status { color: #888; font-size: 0.8em; }
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
    facts = [data_fact(run), f"methods {', '.join(run.config.get('methods') or [])}", f"variants {', '.join(run.config.get('variants') or [])}"]
    if run.paper:
        facts.append(f"paper preset {run.paper}")
    subtitle = " &middot; ".join(e(f) for f in facts) + data_note(run)
    missing = ("<p class=\"missing\">This run lacks " + str(len(page.missing)) + " piece(s); each is marked below.</p>"
               if page.missing else "<p class=\"note\">Every expected piece is present.</p>")
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in [("results", "results"), ("positives", "positives"),
                  ("curves", "curves"), ("hardness", "hardness"), ("tsne", "t-SNE"), ("timings", "timings"), ("provenance", "config")])
    generated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<h1>{e(title)}</h1>
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
    return "".join(f'<br><span class="note">{e(line)}</span>' for line in lines)


def build_report(run_dir: str | Path) -> Path:
    """Write run_dir/report.html (atomically) and return its path."""
    run = RunDirectory.read(run_dir)
    out = run.path / "report.html"
    write_text_atomic(out, render(run))
    return out

