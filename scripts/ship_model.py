"""Copy a trained diffusion model into the package (src/clsp/pretrained/NAME) with the record of how it was made.

    python scripts/ship_model.py RUN_DIR NAME [--positives EVAL_DIR]

RUN_DIR is the out_dir of a finished `clsp diffusion train` run; EVAL_DIR, optionally, the output of
`clsp eval positives` on a store the model made (its quality figures go into the record). The weights are
stored in half precision (they load as float32; sampling is unchanged to within the uint8 rounding) so
the package stays small. record.json holds the command, config, commit, steps, wall time, final loss,
versions and the quality figures: what a user needs to trust the shipped model or to retrain it.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from clsp.diffusion.model import RECOMMENDED_SAMPLER, RECORD, SHIPPED_DIR, load_model, save_model  # noqa: E402
from clsp.io import read_json, write_json_atomic  # noqa: E402


def final_loss(run: Path, last: int = 10) -> float:
    """Mean of the last logged training losses (logs/metrics.csv)."""
    with open(run / "logs" / "metrics.csv", newline="") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    return sum(losses[-last:]) / len(losses[-last:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--positives", type=Path, default=None, help="a `clsp eval positives` output directory")
    parser.add_argument("--code-commit", default=None,
                        help="the commit holding the code the model was trained with, when the run recorded a dirty tree")
    args = parser.parse_args()
    run = args.run.resolve()
    done, env = read_json(run / "done.json"), read_json(run / "env.json")
    unet, scheduler_config = load_model(run / "model")
    target = SHIPPED_DIR / args.name
    save_model(target, unet.half(), scheduler_config)
    started = dt.datetime.fromisoformat(env["started_at"])
    finished = dt.datetime.fromisoformat(done["finished_at"])
    record = {
        "name": args.name,
        "command": " ".join(["clsp", *env["argv"][1:]]),
        "config": yaml.safe_load((run / "config.yaml").read_text()),
        "git_commit": env.get("git_commit"),
        **({"code_commit": args.code_commit} if args.code_commit else {}),
        "host": env.get("host"), "device": env.get("cuda") or "cpu", "versions": env.get("versions"),
        "started_at": env["started_at"], "finished_at": done["finished_at"],
        "wall_seconds": (finished - started).total_seconds(),
        "steps": done["outputs"]["steps"],
        "final_loss": final_loss(run),
        "parameters": sum(p.numel() for p in unet.parameters()),
        "weights_dtype": "float16",
    }
    if args.positives is not None:
        metrics = read_json(args.positives / "metrics.json")
        r = metrics["results"]
        record["quality"] = {
            "store_w": r["store"]["w"], "sampler": r["store"].get("sampler"),
            "agreement": r["store"]["agreement"], "ceiling": r["ceiling"], "chance": r["chance"],
            "frechet": r["store"]["frechet"], "frechet_real_test_vs_train": r["real"]["frechet_test_vs_train"],
            "pixels": r["store"]["pixels"], "real_pixels": r["real"]["pixels"],
            "diversity": r["store"]["diversity"], "similarity": r["store"]["similarity"],
            "sweep": [{"w": row["w"], "agreement": row["agreement"], "cos_to_anchor": row["similarity"]["synthetic"]}
                      for row in r["sweep"]],
            "layers_sweep": [{"layers": row["layers"], "agreement": row["agreement"]} for row in r.get("layers_sweep", [])],
            "reference_classifier": r["reference"],
            "command": " ".join(["clsp", *read_json(args.positives / "env.json")["argv"][1:]]),
            "store": read_json(args.positives / "inputs.json") if (args.positives / "inputs.json").is_file() else None,
            "evaluated_at": metrics["created_at"],
            "weights_evaluated": "float32 (the run's model; the shipped float16 copy samples the same to within uint8 rounding)",
        }
        # what the commands sample with by default (clsp.diffusion.model.recommended_sampler): the judged settings
        judged = r["store"].get("sampler") or {}
        record[RECOMMENDED_SAMPLER] = {key: judged[key] for key in ("layers", "w", "start") if key in judged}
    write_json_atomic(target / RECORD, record)
    print(f"{target}  ({record['parameters'] / 1e6:.2f}M parameters, {record['steps']} steps, "
          f"{record['wall_seconds'] / 3600:.1f} h, final loss {record['final_loss']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
