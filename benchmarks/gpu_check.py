"""The lent GPU's one command: install the kit offline, run the GPU tests, every benchmark and a short study, and
return what finished within the deadline (benchmarks/results/README.md says how a lent GPU calls it).

    benchmarks/gpu_check.sh                   # on the lent GPU machine: results in $OUT
    benchmarks/gpu_check.sh --dry-run         # on this CPU: a fresh venv, the kit alone, every step at micro sizes

Steps, each under its own time limit and skipped, saying so, when the deadline leaves it too little time:
  install     pip installs gpu-kit/wheels with --no-index into a target folder put on PYTHONPATH (the machine's
              torch untouched), checks every requirement of what it installed, prints the versions; unpacks
              Fashion-MNIST from gpu-kit/data
  peak        the bf16 matmul peak (TFLOP/s), the denominator of every fraction of peak below
  tests       the GPU-marked tests, pass/fail per test
  bench:*     benchmarks/*.py --record at sizes that take under a minute each
  study       the Fashion-MNIST study of benchmarks/gpu_study.yaml, cut at the deadline
After every step the results are packed into the output folder ($OUT, at most 8 files come back): summary.json
(every step, every figure beside its goal), gpu_check.log, and results.tar.gz (the benchmarks' JSON files, the
tests' junit XML, the study's metrics, curves, figures and report). A run cut off by the call's limit returns
what the last finished step packed.

This file uses the standard library only: on the GPU machine it runs before the kit is installed.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as dt
import gzip
import hashlib
import json
import lzma
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
MACHINE_LIST = BENCH / "gpu_machine_packages.txt"
PACK_RESERVE_S = 10              # kept back from the deadline for the last packing
RESULTS_LIMIT = 15 << 20         # bytes of results.tar.gz (a returned file may have 16 MiB)
CIFAR10_TRAIN = 50_000
GOALS = {                        # issue 25; each figure in summary.json stands beside its goal
    "synthesis_fraction_of_peak": 0.35,
    "ddpm_train_fraction_of_peak": 0.30,
    "pretrain_cifar10_epoch_s": 4.0,
    "augment_share_of_step": 0.15,
    "synthesis_vs_authors_sampler": 5.0,
}
# Printed beside the figures (the packages the kit carries come first).
VERSIONS_OF = ["clsp", "diffusers", "kornia", "kornia_rs", "omegaconf", "torch_fidelity", "torch", "torchvision",
               "lightning", "numpy", "scipy", "scikit-learn", "safetensors", "huggingface_hub", "pytest"]


def paper_gflop() -> dict:
    """benchmarks/diffusion.py's FLOP counts of the ddpm-cifar10 UNet, read from its source (no torch import here)."""
    tree = ast.parse((BENCH / "diffusion.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "PAPER_GFLOP" \
                or isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "PAPER_GFLOP" for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("benchmarks/diffusion.py has no PAPER_GFLOP")


# -- sizes ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Profile:
    """The sizes of one kind of run: on the lent GPU, or the CPU dry run (micro sizes, same code paths)."""

    device: str
    deadline_s: float
    study_reserve_s: float                        # kept for the study while the steps before it run
    limit_scale: float                            # x each step's limit (LIMITS): a shared CPU is slow and noisy
    matmul: int                                   # side of the square matmul for the peak
    bench_args: dict[str, list[str]]              # step name -> arguments of its benchmark script
    bench_skip: dict[str, str]                    # step name -> why this profile does not run it
    study_overrides: list[str]


BENCH_SCRIPTS = {"augment": "augment.py", "diffusion": "diffusion.py", "synthesize": "synthesize.py",
                 "pretrain-eager": "pretrain.py", "pretrain-compiled": "pretrain.py", "step-overhead": "step_overhead.py"}
HOST_ONLY = {"paired.py", "step_floor.py"}   # CPU questions of this machine (before/after pairs, a bare step's floor)
# Seconds a step may run (its limit) and at least needs (below it the step is skipped), on the GPU.
LIMITS = {"install": (120, 5), "peak": (45, 5), "tests": (120, 20), "augment": (45, 10), "diffusion": (60, 20),
          "synthesize": (75, 25), "pretrain-eager": (60, 20), "pretrain-compiled": (120, 60), "step-overhead": (45, 15),
          "study": (600, 60)}

PROFILES = {
    "gpu": Profile(
        device="cuda", deadline_s=500, study_reserve_s=150, limit_scale=1.0, matmul=8192,
        bench_args={
            "augment": ["--batch", "1024", "--steps", "20"],                       # 3 views, with the ResNet-18 step
            "diffusion": ["--preset", "ddpm-cifar10", "--train-batch", "128", "--train-steps", "30",
                          "--anchors", "128", "--k", "8", "--sample-steps", "20"],  # bf16 autocast on CUDA
            # 128 anchors x K = 8 = one UNet batch of 1024, 100 steps: ~100k UNet evaluations per setting
            "synthesize": ["--images", "128", "--k", "8", "--steps", "100", "--batch-size", "1024"],
            "pretrain-eager": ["--batch", "512", "--images", "20480", "--epochs", "2", "--compile", "false"],
            "pretrain-compiled": ["--batch", "512", "--images", "20480", "--epochs", "2", "--compile", "true"],
            "step-overhead": ["--methods", "simclr", "--backbone", "narrow", "--compile", "false", "--steps", "10",
                              "--warmup", "3", "--label", "gpu-machine"],
        },
        bench_skip={},
        study_overrides=[],
    ),
    "dry": Profile(
        device="cpu", deadline_s=170, study_reserve_s=50, limit_scale=3.0, matmul=256,
        bench_args={
            "augment": ["--quick"], "diffusion": ["--quick"], "synthesize": ["--quick"],
            # pretrain.py's --quick is 4 steps at batch 32: this is 2 steps at batch 16, the same code path
            "pretrain-eager": ["--batch", "16", "--images", "32", "--epochs", "1", "--compile", "false"],
            "step-overhead": ["--methods", "simclr", "--backbone", "narrow", "--compile", "false", "--steps", "1",
                              "--warmup", "1", "--label", "dry-run"],
        },
        bench_skip={"pretrain-compiled": "torch.compile of the training step takes minutes on a CPU: the compiled "
                                         "step is measured on the GPU only (the eager step runs the same script)"},
        # 16 px: the judge of `clsp eval positives` ships with clsp at 16 px; at 32 px it is trained first, on the
        # CPU, on all 60,000 images (minutes on this machine; on the GPU machine's 16 cores well under a minute)
        study_overrides=[
            "dataset.subset=64", "dataset.size=16", "diffusion.model=tiny", "diffusion.batch_size=16", "diffusion.max_steps=4",
            "diffusion.warmup_steps=2", "diffusion.sample_every=4", "diffusion.n_sample_grid=4",
            "diffusion.sample_steps=2", "synthesis.chunk_size=32", "synthesis.sampler.steps=2",
            "synthesis.sampler.batch_size=128", "w_sweep=[0.0,1.0]", "figure_anchors=4",
            "pretrain.batch_size=32", "pretrain.epochs=1", "pretrain.warmup_epochs=0",
            "pretrain.knn.every_n_epochs=1", "pretrain.knn.batch_size=64",
            "pretrain.projector.hidden_dim=64", "pretrain.projector.out_dim=32",
            "eval.linear_probe.epochs=2", "eval.linear_probe.batch_size=32", "eval.linear_probe.milestones=[1]",
            "eval.embed_n=40", "eval.hardness_n=16", "eval.positives_n=32", "eval.positives_sweep_n=8",
            "floor=false", "trainer.accelerator=cpu", "trainer.checkpoint_every=100", "trainer.log_every=1"],
    ),
}


# -- the run: steps, their limits, the log and the packing ---------------------------------------------

@dataclasses.dataclass
class StepResult:
    name: str
    status: str                                   # ok | failed | cut off | skipped
    seconds: float = 0.0
    limit_s: float = 0.0
    detail: str = ""

    def line(self) -> str:
        timing = f" in {self.seconds:.1f} s (limit {self.limit_s:.0f} s)" if self.status != "skipped" else ""
        return f"[{self.name}] {self.status}{timing}{': ' + self.detail if self.detail else ''}"


class Check:
    """One run of the check: its clock, its folders, its log and summary, and the packing of its results."""

    def __init__(self, profile: Profile, out: Path, work: Path, deadline_s: float, dry_run: bool) -> None:
        self.profile, self.out, self.work, self.dry_run = profile, out, work, dry_run
        self.started = time.monotonic()
        self.deadline_s = deadline_s
        self.reserve_s = profile.study_reserve_s        # kept by the steps before the study (0: no study)
        self.results = work / "results"                     # what results.tar.gz holds
        for folder in (out, self.results):
            folder.mkdir(parents=True, exist_ok=True)
        self.log_file = open(out / "gpu_check.log", "a", buffering=1)
        self.summary: dict = {
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "dry_run": dry_run, "device": profile.device, "deadline_s": deadline_s, "goals": GOALS,
            "load_average_1min": {"start": os.getloadavg()[0]}, "cpus": os.cpu_count(),
            "steps": [], "versions": {}, "peak": None, "tests": None, "benchmarks": {}, "study": None, "notes": []}
        self.python = sys.executable                        # the interpreter of every step (the dry run's venv's)
        self.env = dict(os.environ)
        self.data_root: Optional[Path] = None               # Fashion-MNIST from the kit, once unpacked

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.deadline_s - PACK_RESERVE_S - self.elapsed()

    def say(self, text: str) -> None:
        line = f"gpu-check {self.elapsed():6.1f}s  {text}"
        print(line, flush=True)
        self.log_file.write(line + "\n")

    def note(self, text: str) -> None:
        self.summary["notes"].append(text)
        self.say(text)

    def step(self, name: str, body: Callable[[float], str], skip: Optional[str] = None) -> StepResult:
        """Run body(limit) unless `skip` says why not or the deadline leaves less than the step needs; record it."""
        limit, needs = LIMITS[name.removeprefix("bench:")]
        limit *= self.profile.limit_scale
        reserve = 0.0 if name == "study" else self.reserve_s
        left = self.left() - reserve
        if skip is None and left < needs:
            before = f"the {reserve:.0f} s kept for the study" if reserve else "the deadline"
            skip = f"{left:.0f} s left before {before}, the step needs at least {needs} s"
        if skip is not None:
            result = StepResult(name, "skipped", detail=skip)
        else:
            limit = min(limit, left)
            self.say(f"[{name}] start (limit {limit:.0f} s)")
            started = time.monotonic()
            try:
                detail, status = body(limit), "ok"
            except StepFailed as e:
                detail, status = str(e), ("cut off" if e.cut_off else "failed")
            except Exception as e:                        # a bug in one step must not cost the others their turn
                import traceback

                self.log_file.write(traceback.format_exc())
                detail, status = f"{type(e).__name__}: {e}", "failed"
            result = StepResult(name, status, time.monotonic() - started, limit, detail)
        self.summary["steps"].append(dataclasses.asdict(result))
        self.say(result.line())
        self.pack()
        return result

    def command(self, argv: list[str], limit: float, log_name: str) -> None:
        """Run argv (output to the log and to <results>/logs/<log_name>.log), killed with its children at `limit`."""
        logs = self.results / "logs"
        logs.mkdir(exist_ok=True)
        self.say("$ " + " ".join(argv))
        with open(logs / f"{log_name}.log", "w") as own:
            proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            deadline = time.monotonic() + limit
            try:
                for text in _output_until(proc, deadline):
                    own.write(text)
                    self.log_file.write(text)
                    print(text, end="", flush=True)
            finally:
                try:                                        # its output closed: it ends now, or by the deadline
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                    cut = False
                except subprocess.TimeoutExpired:
                    cut = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if cut:
            raise StepFailed(f"cut off at its {limit:.0f} s limit", cut_off=True)
        if proc.returncode != 0:
            raise StepFailed(f"exit status {proc.returncode} (see logs/{log_name}.log)")

    def pack(self) -> None:
        """summary.json and results.tar.gz into the output folder, each replaced whole (a kill leaves the last)."""
        self.summary["elapsed_s"] = round(self.elapsed(), 1)
        self.summary["load_average_1min"]["last"] = os.getloadavg()[0]
        _write_atomic(self.out / "summary.json", json.dumps(self.summary, indent=2, default=str).encode())
        shutil.copy2(self.out / "summary.json", self.results / "summary.json")
        tmp = self.out / ".results.tar.gz.tmp"
        for lean in (False, True):               # a file over 16 MiB does not come back: then no figures or report
            with tarfile.open(tmp, "w:gz") as tar:
                tar.add(self.results, arcname="results",
                        filter=lambda info: None if lean and info.name.endswith((".png", ".html")) else info)
            if tmp.stat().st_size <= RESULTS_LIMIT:
                break
            self.summary["notes"].append("results.tar.gz without the study's figures and report (over "
                                         f"{RESULTS_LIMIT >> 20} MiB with them)")
        os.replace(tmp, self.out / "results.tar.gz")


class StepFailed(Exception):
    def __init__(self, message: str, cut_off: bool = False) -> None:
        super().__init__(message)
        self.cut_off = cut_off


def _output_until(proc: subprocess.Popen, deadline: float):
    """The process's output, as it comes, until it closes or the deadline passes: chunks, not lines, so that a
    progress bar without a newline or a silent process cannot hold the check past its deadline."""
    import codecs
    import selectors

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")    # a character split between two reads
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if sel.select(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            yield decoder.decode(chunk)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- install -------------------------------------------------------------------------------------------

def machine_packages() -> set[str]:
    return {_canonical(s) for line in MACHINE_LIST.read_text().splitlines() if (s := line.split("#")[0].strip())}


def _canonical(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def dry_run_environment(check: Check, kit_names: set[str]) -> str:
    """A fresh venv that holds, of this machine's packages, only those the GPU machine has (gpu_machine_packages.txt),
    linked from the running interpreter's site-packages, so that a requirement the kit forgets is missing here as
    it would be there. Also linked: what the local versions of those packages need beside them (huggingface_hub 2.x
    here needs httpx2; the machine's 1.x needs httpx, which it has), unless the kit carries it. Returns the venv's
    python."""
    import importlib.metadata as md
    import sysconfig
    import venv

    from packaging.requirements import Requirement

    venv_dir, stand_in = check.work / "venv", check.work / "machine-site"
    venv.create(venv_dir, with_pip=False, clear=True)  # the running pip installs into it (pip --python)
    python = venv_dir / "bin" / "python"
    site = Path(sysconfig.get_paths()["purelib"])
    local = {_canonical(d.metadata["Name"]): d for d in md.distributions(path=[str(site)])}
    on_machine = {n for n in machine_packages() if n in local}
    todo, pulled = list(on_machine), set()
    while todo:                                   # the local closure of the machine's packages, the kit's left out
        for r in local[todo.pop()].requires or []:
            req = Requirement(r)
            name = _canonical(req.name)
            if (req.marker is None or req.marker.evaluate({"extra": ""})) and name in local \
                    and name not in on_machine | pulled | kit_names:
                pulled.add(name)
                todo.append(name)
    stand_in.mkdir()
    for name in on_machine | pulled:
        dist = local[name]
        tops = {Path(str(f)).parts[0] for f in (dist.files or []) if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            if (site / top).exists() and not (stand_in / top).exists() and not top.endswith(".pth"):
                (stand_in / top).symlink_to(site / top)
    venv_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    (venv_site / "gpu-machine-stand-in.pth").write_text(f"{stand_in}\n")
    left = sorted(set(local) - on_machine - pulled)
    check.note(f"dry run: fresh venv {venv_dir} (Python {sys.version.split()[0]}); linked from {site}: the GPU "
               f"machine's {len(on_machine)} distributions found there, and what their local versions need beside "
               f"them: {', '.join(sorted(pulled)) or 'nothing'}; left out, for the kit to bring: {', '.join(left)}")
    return str(python)


def install(check: Check, kit: Path, limit: float) -> str:
    manifest = json.loads((kit / "manifest.json").read_text())
    site = check.work / "site"
    shutil.rmtree(site, ignore_errors=True)
    links = ["--find-links", str(kit / "wheels")]
    if check.dry_run:
        links += ["--find-links", str(kit / "dry-run" / f"cp{sys.version_info.major}{sys.version_info.minor}")]
    pins = [f"{w['name']}=={w['version']}" for w in manifest["wheels"]]
    pip = [sys.executable, "-m", "pip"] + (["--python", check.python] if check.python != sys.executable else [])
    check.command([*pip, "install", "--no-index", "--no-deps", "--no-cache-dir", "--no-compile",
                   "--disable-pip-version-check", "-q", "--target", str(site), *links, *pins], limit, "install")
    check.env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(site)])   # clsp: the carried repository's
    check.env.update(PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1", CLSP_QUIET="1",
                     CLSP_DATA_ROOT=str(check.work / "data"), MPLBACKEND="Agg")
    unpack_data(kit, manifest, check.work / "data")
    check.data_root = check.work / "data"
    report = json.loads(_run_python(check, VERSIONS_SCRIPT, manifest["machine_requirements"], site, limit))
    check.summary["versions"] = report
    check.summary["kit"] = {"built": manifest["built"], "git_commit": manifest.get("git_commit"),
                            "clsp": "src/ of the carried repository", "wheels": [w["file"] for w in manifest["wheels"]]}
    for name, version in report["versions"].items():
        check.say(f"  {name:16s} {version}")
    check.say(f"  python {report['python']}; device {report['device']}")
    if report["problems"]:            # the steps still run (a mismatch may not matter); the check's status says it
        check.note("install: requirements NOT met: " + "; ".join(report["problems"]))
        return f"{len(pins)} wheels into {site}; {len(report['problems'])} requirements not met (see notes)"
    return f"{len(pins)} wheels into {site}; every requirement met"


def unpack_data(kit: Path, manifest: dict, data: Path) -> None:
    """gpu-kit/data's .xz idx files -> <data>/fashion-mnist/*.gz, the files clsp reads (checked against the kit)."""
    out = data / "fashion-mnist"
    out.mkdir(parents=True, exist_ok=True)
    for row in manifest["data"]:
        packed = (kit / "data" / row["file"]).read_bytes()
        if hashlib.sha256(packed).hexdigest() != row["sha256"]:
            raise StepFailed(f"gpu-kit/data/{row['file']} differs from the manifest's: rebuild with `make gpu-kit`")
        with gzip.open(out / row["gz_name"], "wb", compresslevel=1) as f:
            f.write(lzma.decompress(packed))


VERSIONS_SCRIPT = r"""
import json, sys
import importlib.metadata as md
from packaging.requirements import Requirement
wanted, machine_reqs, target = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
problems = []
reqs = [Requirement(r) for r in machine_reqs]
for dist in md.distributions(path=[target]):   # every requirement of every installed wheel, and what clsp needs
    reqs += [Requirement(r) for r in dist.requires or []]
env = {"extra": ""}
for req in reqs:
    if req.marker is not None and not req.marker.evaluate(env):
        continue
    found = version(req.name)
    if found is None:
        problems.append(f"{req} is missing")
    elif req.specifier and not req.specifier.contains(found, prereleases=True):
        problems.append(f"{req} is not met by {req.name} {found}")
import torch
import clsp                                    # from the repository's src/, which carries no distribution record
versions = {n: version(n) for n in wanted}
versions["clsp"] = f"{clsp.__version__} ({clsp.__file__.rsplit('/', 2)[0]})"
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no CUDA)"
print(json.dumps({"python": sys.version.split()[0], "device": device, "cuda": torch.version.cuda,
                  "versions": versions, "problems": sorted(set(problems))}))
"""


def _run_python(check: Check, script: str, machine_reqs: list[str], target: Path, limit: float) -> str:
    got = subprocess.run([check.python, "-c", script, json.dumps(VERSIONS_OF), json.dumps(machine_reqs), str(target)],
                         cwd=REPO, env=check.env, capture_output=True, text=True, timeout=limit)
    if got.returncode != 0:
        raise StepFailed(f"the installed environment does not import: {got.stderr.strip()[-2000:]}")
    return got.stdout.strip().splitlines()[-1]


# -- peak, tests, benchmarks, study -------------------------------------------------------------------

PEAK_SCRIPT = r"""
import json, sys, torch
from clsp.benchmark import device_name, matmul_peak_tflops
device, n = torch.device(sys.argv[1]), int(sys.argv[2])
dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
print(json.dumps({"device": device_name(device), "dtype": str(dtype).removeprefix("torch."), "n": n,
                  "tflops": matmul_peak_tflops(device, n, dtype)}))
"""


def measure_peak(check: Check, limit: float) -> str:
    path = check.results / "peak.json"
    check.command([check.python, "-c", PEAK_SCRIPT, check.profile.device, str(check.profile.matmul)], limit, "peak")
    peak = json.loads((check.results / "logs" / "peak.log").read_text().strip().splitlines()[-1])
    _write_atomic(path, json.dumps(peak, indent=2).encode())
    check.summary["peak"] = peak
    return f"{peak['tflops']:.4g} TFLOP/s ({peak['dtype']} matmul {peak['n']}^3 on {peak['device']})"


def gpu_test_files() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text())


def run_tests(check: Check, limit: float) -> str:
    xml = check.results / "tests-gpu.xml"
    try:
        check.command([check.python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra",
                       f"--junitxml={xml}", *gpu_test_files()], limit, "tests")
        failure = None
    except StepFailed as e:
        failure = e
    tests = junit_summary(xml) if xml.is_file() else None
    check.summary["tests"] = tests
    if failure is not None and not (tests and failure.args[0].startswith("exit status 1")):
        raise failure
    text = f"{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped"
    if tests["failed"]:
        raise StepFailed(text + ": " + ", ".join(tests["failures"]))
    return text


def junit_summary(path: Path) -> dict:
    rows = {"passed": 0, "failed": 0, "skipped": 0, "failures": [], "cases": []}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        state = "failed" if case.find("failure") is not None or case.find("error") is not None else \
            "skipped" if case.find("skipped") is not None else "passed"
        rows[state] += 1
        rows["cases"].append({"test": name, "result": state, "seconds": float(case.get("time") or 0)})
        if state == "failed":
            rows["failures"].append(name)
    return rows


def run_benchmark(check: Check, name: str, limit: float) -> str:
    folder = check.results / "bench" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    args = check.profile.bench_args[name]
    check.command([check.python, str(BENCH / BENCH_SCRIPTS[name]), *args, "--record", "--results", str(folder)],
                  limit, f"bench-{name}")
    [recorded] = folder.glob("*.json")
    figures = summarise_benchmark(name, json.loads(recorded.read_text()), check.summary["peak"], args)
    check.summary["benchmarks"][name] = figures
    return "; ".join(f"{k} {_fmt(v)}" for k, v in figures.items() if k not in ("file", "notes"))


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summarise_benchmark(name: str, r: dict, peak: Optional[dict], args: list[str]) -> dict:
    """The figures of one benchmark's JSON beside their goals: images/s, and the fraction of the measured peak
    (this run's peak step; each script's own peak, measured the same way, is in its JSON)."""
    peak_tflops = peak["tflops"] if peak else None

    def share(tflops):
        return tflops / peak_tflops if peak_tflops and tflops is not None else None

    if name == "augment":
        out = {"augment_images_per_s": r["augment_images_per_s"], "augment_share_of_step": r.get("augment_share"),
               "goal_share_below": GOALS["augment_share_of_step"],
               "notes": "augmentation is elementwise work: no fraction of matmul peak is meaningful"}
        if "train_ms_per_step" in r:
            out["resnet18_step_images_per_s"] = r["batch"] * r["views"] / (r["train_ms_per_step"] / 1000)
        return out
    if name == "diffusion":
        out = {"train_images_per_s": r["train"]["images_per_s"],
               "train_fraction_of_peak": share(r["train"]["tflops"]),
               "goal_train_fraction": GOALS["ddpm_train_fraction_of_peak"]}
        for key in ("sample", "sample_share_anchor"):
            out[f"{key}_image_steps_per_s"] = r[key]["image_steps_per_s"]
            out[f"{key}_fraction_of_peak"] = share(r[key]["tflops"])
        out["goal_sample_fraction"] = GOALS["synthesis_fraction_of_peak"]
        return out
    if name == "synthesize":
        setting = r["setting"]
        gflop = paper_gflop().get((setting["unet"], setting["image_size"]))
        out = {"k": setting["k"], "steps": setting["sampler"]["steps"]}
        for row in r["results"]:
            key = "shared_anchor" if row["share_anchor"] else "unshared"
            out[f"{key}_images_per_s"] = row["images_per_s"]
            if gflop:
                full, down_mid = gflop
                per_eval = full + (down_mid / setting["k"] if row["share_anchor"] else down_mid)
                out[f"{key}_fraction_of_peak"] = share(row["unet_evals_per_s"] * per_eval / 1e3)
            out[f"{key}_cifar10_hours"] = row["cifar10_hours"]
        out["goal_fraction"] = GOALS["synthesis_fraction_of_peak"]
        out["goal_vs_authors_sampler"] = GOALS["synthesis_vs_authors_sampler"]
        out["notes"] = ("the authors' sampler is not in the kit (it needs the release's code and its environment): "
                        "the 5x goal is judged against its figure timed on the same GPU, not here")
        return out
    if name.startswith("pretrain"):
        steps = math.ceil(CIFAR10_TRAIN / r["batch"])
        return {"compile": r["compile"], "batch": r["batch"], "images_per_s": r["images_per_second"],
                "fraction_of_peak": share(r["achieved_tflops"]), "step_s": r["step_seconds"],
                "augmentation_share": r["augmentation_share"],
                "projected_cifar10_epoch_s": r["step_seconds"] * steps,
                "goal_cifar10_epoch_s": GOALS["pretrain_cifar10_epoch_s"],
                "notes": f"projected: the measured step x {steps} steps (50,000 images at batch {r['batch']})"}
    if name == "step-overhead":
        [row] = [x for x in r["results"] if x["method"] == "simclr"][:1] or [r["results"][0]]
        return {"method": row["method"], "backbone": row["backbone"], "ms_per_step_median": row["ms_per_step_median"],
                "aten_calls_per_step": row["aten_calls_per_step"], "goal": r["goal"]}
    raise KeyError(name)


def pipeline_variants(check: Check, wanted: list[str]) -> list[str]:
    """The wanted variants the installed clsp knows; the others are left out, saying so."""
    got = subprocess.run([check.python, "-c", "from clsp.pipeline import VARIANTS; print(' '.join(VARIANTS))"],
                         cwd=REPO, env=check.env, capture_output=True, text=True, timeout=60)
    if got.returncode != 0:
        raise StepFailed(f"clsp does not import: {got.stderr.strip()[-1000:]}")
    known = got.stdout.split()
    for v in wanted:
        if v not in known:
            check.note(f"study: variant {v!r} skipped: the installed clsp knows only {', '.join(known)}")
    return [v for v in wanted if v in known]


STUDY_KEEP = (".json", ".csv", ".png", ".yaml", ".html", ".md", ".txt")


def run_study(check: Check, variants: list[str], limit: float) -> str:
    run = check.work / "study"
    variants = pipeline_variants(check, variants)
    root = [f"dataset.root={check.data_root}"] if check.data_root else []      # --in-place: the local copy
    overrides = [f"out_dir={run}", *root, f"variants=[{','.join(variants)}]", *check.profile.study_overrides]
    try:
        check.command([check.python, "-m", "clsp", "pipeline", "--config", str(BENCH / "gpu_study.yaml"), *overrides],
                      limit, "study")
        failure = None
    except StepFailed as e:
        failure = e
    kept = keep_study_files(run, check.results / "study")
    check.summary["study"] = {"variants": variants, "overrides": overrides, "files": kept, **study_figures(run)}
    if failure is not None:
        raise StepFailed(f"{failure}; {kept} result files kept", cut_off=failure.cut_off)
    return f"variants {', '.join(variants)}; {kept} result files kept"


def keep_study_files(run: Path, dest: Path, max_bytes: int = 4 << 20) -> int:
    """The run's small result files (metrics, curves, figures, records, report): not its checkpoints or stores."""
    shutil.rmtree(dest, ignore_errors=True)
    n = 0
    for path in sorted(run.rglob("*")) if run.is_dir() else []:
        if path.is_file() and path.suffix in STUDY_KEEP and path.stat().st_size <= max_bytes \
                and "checkpoints" not in path.parts:
            target = dest / path.relative_to(run)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            n += 1
    return n


def study_figures(run: Path) -> dict:
    """kNN and linear top-1 of each encoder, and each store's positives evaluation, where they were written."""
    found: dict = {"encoders": {}, "positives": {}, "stage_seconds": {}}
    for path in sorted(run.glob("eval/*/*/metrics.json")):
        kind, encoder = path.parent.name, path.parent.parent.name
        found["encoders"].setdefault(encoder, {})[kind] = _headline(json.loads(path.read_text()))
    for path in sorted(run.glob("eval/*/metrics.json")):
        found["positives"][path.parent.name] = _headline(json.loads(path.read_text()))
    timings = run / "timings.json"
    if timings.is_file():
        found["stage_seconds"] = json.loads(timings.read_text())
    return found


def _headline(metrics: dict) -> dict:
    """The scalar results of a metrics file (kNN best and fixed-k top-1, linear top-1, the positives' class
    agreement ...); the nested tables are in results.tar.gz."""
    def scalar(v) -> bool:
        return isinstance(v, (int, float, str, bool))

    found = {}
    for key, value in metrics.get("results", {}).items():     # one level down too: store.agreement, fit.status
        if scalar(value):
            found[key] = value
        elif isinstance(value, dict):
            found |= {f"{key}.{k}": v for k, v in value.items() if scalar(v)}
    return found


# -- main ----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true",
                        help="on this CPU: a fresh venv, the kit alone (--no-index), every step at micro sizes")
    parser.add_argument("--kit", default=str(REPO / "gpu-kit"), help="the kit's folder (make gpu-kit)")
    parser.add_argument("--out", default=None, help="where the (at most 8) result files go (default $OUT, else "
                                                     "runs/gpu-check[-dry-run]/out)")
    parser.add_argument("--work", default=None, help="scratch folder (default /tmp/gpu-check[-dry-run])")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds for the whole check (default 500 on the GPU, 170 for the dry run)")
    parser.add_argument("--variants", default="base,clsp,oracle", help="the study's pipeline variants, comma-separated")
    parser.add_argument("--steps", default=None,
                        help="only these steps, comma-separated (install always runs): peak,tests,bench:NAME,study")
    parser.add_argument("--in-place", action="store_true",
                        help="skip the install: run the steps with this interpreter and its packages (tests of this "
                             "script; proves nothing about the kit)")
    args = parser.parse_args(argv)

    profile = PROFILES["dry" if args.dry_run else "gpu"]
    tag = "gpu-check-dry-run" if args.dry_run else "gpu-check"
    out = Path(args.out or os.environ.get("OUT") or REPO / "runs" / tag / "out")
    work = Path(args.work or f"/tmp/{tag}")
    shutil.rmtree(work, ignore_errors=True)
    for stale in ("summary.json", "results.tar.gz", "gpu_check.log"):
        (out / stale).unlink(missing_ok=True)
    check = Check(profile, out, work, args.deadline or profile.deadline_s, args.dry_run)
    kit = Path(args.kit)
    wanted = set(args.steps.split(",")) if args.steps else None
    if wanted is not None and "study" not in wanted:
        check.reserve_s = 0.0

    def chosen(name: str) -> Optional[str]:
        return None if wanted is None or name in wanted else "not among --steps"

    check.say(f"{'dry run on the CPU' if args.dry_run else 'GPU check'}: deadline {check.deadline_s:.0f} s, "
              f"results in {out}")
    unknown = sorted(set(p.name for p in BENCH.glob("*.py")) - set(BENCH_SCRIPTS.values()) - HOST_ONLY - {Path(__file__).name})
    if unknown:
        check.note(f"benchmarks not in this check's plan (add them to BENCH_SCRIPTS): {', '.join(unknown)}")

    if args.in_place:
        check.env.update(PYTHONPATH=str(REPO / "src"), CLSP_QUIET="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
        check.note("--in-place: no install; the steps run with this interpreter and src/ (the kit is not used)")
        installed = check.step("install", lambda limit: "", skip="--in-place")
    else:
        if not (kit / "manifest.json").is_file():
            check.note(f"no kit at {kit}: run `make gpu-kit` first")
            return 2

        def do_install(limit: float) -> str:
            if args.dry_run:
                kit_names = {_canonical(w["name"]) for w in json.loads((kit / "manifest.json").read_text())["wheels"]}
                check.python = dry_run_environment(check, kit_names)
            return install(check, kit, limit)

        installed = check.step("install", do_install)
    nothing = "the install failed" if installed.status not in ("ok", "skipped") else None

    peak = check.step("peak", lambda limit: measure_peak(check, limit), skip=nothing or chosen("peak"))
    check.step("tests", lambda limit: run_tests(check, limit), skip=nothing or chosen("tests"))
    no_peak = None if peak.status == "ok" else "no measured peak: every fraction of peak needs it"
    for name in BENCH_SCRIPTS:
        why = nothing or chosen(f"bench:{name}") or profile.bench_skip.get(name) or no_peak
        check.step(f"bench:{name}", lambda limit, name=name: run_benchmark(check, name, limit), skip=why)
    variants = [v for v in args.variants.split(",") if v]
    check.step("study", lambda limit: run_study(check, variants, limit), skip=nothing or chosen("study"))

    failed = [s["name"] for s in check.summary["steps"] if s["status"] in ("failed", "cut off")]
    if check.summary["versions"].get("problems"):
        failed.append("install (requirements not met)")
    if args.dry_run:                  # the dry run is a proof: a step the deadline skipped is not proven
        failed += [s["name"] for s in check.summary["steps"] if "left before" in s["detail"]]
        if failed:
            check.note("the dry run did not prove every step within its deadline (a loaded machine? "
                       "--deadline gives it more)")
    check.summary["failed_steps"] = failed
    check.say(f"done in {check.elapsed():.0f} s; {'failed or cut off: ' + ', '.join(failed) if failed else 'no step failed'}")
    check.pack()
    check.log_file.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
