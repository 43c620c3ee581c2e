"""metrics.json, the one output format of every evaluation (schema: docs/metrics.md), and its printed table.

Common fields: `kind`, `encoder` (path, sha256, method, ...), `dataset` (name, split, fingerprint, ...),
`created_at`; the per-kind results sit under `results`. The pipeline and the report read these files.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Callable, Sequence

from clsp.io import file_sha256, read_json, write_json_atomic
from clsp.layout import METRICS_FILE

SCHEMA_VERSION = 1


def encoder_record(path: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """What identifies the evaluated encoder: its file, content hash and how it was trained."""
    keys = ("method", "arch", "stem", "feat_dim", "image_size", "dataset", "clsp_lambda", "third_view", "epochs")
    return {"path": str(Path(path).resolve()), "sha256": file_sha256(path)[:16], **{k: meta.get(k) for k in keys}}


def dataset_record(ds, split: str | None = None) -> dict[str, Any]:
    """Name, split, size and content fingerprint of an ImageSet / StreamingImageSet."""
    return {"name": ds.name, "split": split or ds.split, "n": len(ds), "image_size": int(ds.shape[0]),
            "fingerprint": ds.fingerprint, "classes": len(ds.classes)}


def require_labels(*datasets) -> None:
    """Probes need class labels; an unlabelled split is the user's to replace."""
    from clsp.errors import UserError

    for ds in datasets:
        if ds.labels is None or not ds.classes:
            raise UserError(f"{ds.name} {ds.split} has no class labels; evaluate on a labelled split "
                            "(e.g. dataset train_split/test_split, or a folder with one subfolder per class)")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_metrics(out_dir: str | Path, kind: str, encoder: dict | None, dataset: dict | None,
                  results: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Assemble the common fields and the results, write out_dir/metrics.json atomically, return the dict."""
    metrics = {"schema": SCHEMA_VERSION, "kind": kind, "encoder": encoder, "dataset": dataset,
               "created_at": now(), "results": results, **extra}
    write_json_atomic(Path(out_dir) / METRICS_FILE, metrics)
    return metrics


def read_metrics(out_dir: str | Path) -> dict[str, Any]:
    return read_json(Path(out_dir) / METRICS_FILE)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None, digits: int = 2) -> str:
    """A plain fixed-width table: the first column left-aligned, the others right-aligned, floats rounded."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return "-" if v is None else str(v)

    cells = [[cell(v) for v in header]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for j, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(([title] if title else []) + lines)


def default_out_dir(encoder_path: str | Path, kind: str) -> Path:
    """Beside the encoder: <encoder dir>/eval/<kind>/."""
    return Path(encoder_path).resolve().parent / "eval" / kind


def run_evaluation(out_dir: str | Path, kind: str, config: dict, inputs: dict[str, str], compute: Callable[[], dict],
                   table: Callable[[dict], str], encoder: dict | None, dataset: dict | None, files: Sequence[str] = (),
                   reuse: bool = True, **extra: Any) -> dict:
    """What every evaluation does around its computation, once its inputs are loaded and fingerprinted:

    a finished run of exactly this config and these inputs is reused (its table printed again; `reuse=False`
    always recomputes); else the run directory is started, `compute()` gives the results (and writes the
    `files` it names, relative to out_dir), metrics.json gets the common fields (`encoder`, `dataset`, `extra`),
    the table is printed and the run is marked done. Returns the metrics dict."""
    from clsp import rundir

    out = Path(out_dir)
    stage = rundir.Stage(out, config, inputs, outputs=[METRICS_FILE, *files])
    if reuse and stage.complete:
        print(f"{out / METRICS_FILE} is up to date for this encoder, data and settings (delete done.json to recompute)")
        metrics = read_metrics(out)
        print(table(metrics["results"]), flush=True)
        return metrics
    stage.start()
    results = compute()
    metrics = write_metrics(out, kind, encoder, dataset, results, **extra)
    print(table(results), flush=True)
    stage.done({"files": [METRICS_FILE, *files]})
    print(f"wrote {', '.join(str(out / name) for name in [METRICS_FILE, *files])}", flush=True)
    return metrics
