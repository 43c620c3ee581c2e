"""Transfer: linear evaluation of one encoder on downstream sets (the paper's Table 4 protocol).

Each set is loaded at the encoder's input resolution (its meta image_size) with the registry's
`train` / `test` splits, which are each set's standard transfer splits (see clsp.data.transfer), and
probed with the same linear protocol as `clsp eval linear`. Every set is checked for presence before
any probe runs, so a missing set fails at once (or, with skip_missing, is reported as missing).
Each set's probe is its own run directory under out/<set>/, so an interrupted transfer resumes
with the sets it had finished.
"""

from __future__ import annotations

from typing import Sequence

from clsp.errors import UserError
from clsp.eval.config import TRANSFER_SETS
from clsp.eval.linear import LinearProbeConfig, evaluate_linear


def transfer_table(rows: list[dict]) -> str:
    from clsp.eval.metrics import format_table

    body = [[r["dataset"], r.get("top1"), r.get("top5"), r.get("n_train"), r.get("n_test"), r["status"]] for r in rows]
    return format_table(["transfer set", "top-1 (%)", "top-5 (%)", "train", "test", "status"], body, "transfer: linear probe")


def load_sets(names: Sequence[str], root, size: int, skip_missing: bool) -> tuple[dict, dict]:
    """(name -> (train, test)) for the sets present, (name -> reason) for the missing ones. With `skip_missing`
    a set that is not on disk is skipped as it is, without trying a download first."""
    from clsp.data import load_dataset
    from clsp.data.catalogue import can_download

    present, missing = {}, {}
    for name in names:
        options = {"download": False} if skip_missing and can_download(name) else {}
        try:
            present[name] = (load_dataset(name, "train", root, size, **options),
                             load_dataset(name, "test", root, size, **options))
        except UserError as e:
            missing[name] = str(e)
    if missing and not skip_missing:
        detail = "; ".join(f"{name}: {why}" for name, why in missing.items())
        raise UserError(f"transfer set(s) {', '.join(missing)} not available ({detail}); "
                        "provide them under --root, or pass --skip-missing to report them as missing")
    return present, missing


def transfer_eval(encoder_path, datasets: Sequence[str] = TRANSFER_SETS, out_dir=None, root=None,
                  probe_cfg: LinearProbeConfig | None = None, skip_missing: bool = False, device=None,
                  progress: bool = True) -> dict:
    """Linear probes on each downstream set; writes out/metrics.json (a row per set) and out/<set>/metrics.json."""
    from clsp.config import to_dict
    from clsp.eval.features import open_encoder
    from clsp.eval.metrics import run_evaluation

    if not datasets:
        raise UserError("no transfer sets given; pass --datasets cifar10,pets,...")
    probe_cfg = probe_cfg or LinearProbeConfig()
    encoder, out = open_encoder(encoder_path, "transfer", out_dir, device)
    present, missing = load_sets(list(datasets), root, encoder.size, skip_missing)
    config = {"kind": "transfer", "encoder": str(encoder.path), "datasets": list(datasets), "root": root,
              "image_size": encoder.size, "probe": to_dict(probe_cfg)}
    inputs = {"encoder": encoder.record()["sha256"]}
    inputs |= {f"{name}/{ds.split}": ds.fingerprint for name, pair in present.items() for ds in pair}

    def compute() -> dict:
        rows = []
        for name in datasets:
            if name in missing:
                rows.append({"dataset": name, "status": "missing", "reason": missing[name]})
                continue
            train, test = present[name]
            result = evaluate_linear(encoder, train, test, out / name, probe_cfg, progress)["results"]
            rows.append({"dataset": name, "status": "ok", "top1": result["top1"], "top5": result["top5"],
                         "n_train": result["n_train"], "n_test": result["n_test"], "num_classes": result["num_classes"],
                         "train_split": train.split, "test_split": test.split,
                         "fingerprints": [train.fingerprint, test.fingerprint]})
        return {"sets": rows, "image_size": encoder.size, "protocol": to_dict(probe_cfg)}

    # Always recomputed: each set's probe is its own run (out/<set>/), skipped there when done.
    return run_evaluation(out, "transfer", config, inputs, compute, lambda results: transfer_table(results["sets"]),
                          encoder.record(), None, reuse=False)
