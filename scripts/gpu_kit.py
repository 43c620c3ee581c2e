"""Build the GPU run kit (`make gpu-kit`): what benchmarks/gpu_check.py needs beside the repository on a lent GPU.

    python scripts/gpu_kit.py [--kit gpu-kit]

The lent machine (benchmarks/results/README.md) has Python 3.12, torch and most of clsp's requirements, reaches
no registry, and takes at most 64 MiB with a call: the repository's files and the carried paths together. So:
  gpu-kit/wheels/          every requirement of clsp (and of the GPU tests) that the machine lacks
                           (benchmarks/gpu_machine_packages.txt), with their own missing requirements, as CPython 3.12
                           manylinux x86_64 wheels (a pure-Python project published only as an sdist is built into a
                           py3-none-any wheel here). Never torch, triton or nvidia-*. Not clsp itself: the call carries
                           the repository, and the check imports clsp from its src/ (a wheel of it would carry the
                           shipped weights a second time, and kit and repository would pass 64 MiB).
  gpu-kit/data/            Fashion-MNIST's four idx files, xz-compressed (22 MB instead of gzip's 30 MB: with gzip
                           the kit and the repository pass 64 MiB); gpu_check.py writes the .gz files clsp reads.
  gpu-kit/manifest.json    what is in it (names, versions, sha256, sizes) and the requirements it leaves to the
                           machine (checked there). It goes stale only when clsp's requirements change.
  gpu-kit/dry-run/cp311/   the platform wheels again for this machine's Python (3.11 here), for the dry run only:
                           it is not carried (pure wheels are shared with wheels/).
Carried to the GPU: gpu-kit/wheels, gpu-kit/data and gpu-kit/manifest.json. The build fails when they pass 60 MiB,
or when they and the repository's files pass the call's 64 MiB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.parser
import hashlib
import json
import lzma
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks")]

from clsp.data.mnist import FASHION_FILES, find_fashion_mnist  # noqa: E402
from clsp.rundir import git_commit  # noqa: E402

MACHINE_LIST = REPO / "benchmarks" / "gpu_machine_packages.txt"
MIB = 1 << 20
KIT_LIMIT = 60 * MIB            # the bound on the carried kit
CALL_LIMIT = 64 * MIB           # what one call may carry: the repository's files and the carried paths
# The GPU tests need pytest and pytest-timeout (both on the machine); lightly, the test extra's other entry, is an
# oracle of CPU-only loss tests and is not carried.
TEST_REQUIREMENTS = ["pytest>=8.0", "pytest-timeout>=2.3"]
NEVER = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def machine_packages() -> set[str]:
    lines = MACHINE_LIST.read_text().splitlines()
    return {canonicalize_name(s) for line in lines if (s := line.split("#")[0].strip())}


def marker_env(python: str) -> dict[str, str]:
    return {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def applies(req: Requirement, python: str) -> bool:
    """A requirement that applies on the machine: no extra, and its marker true for CPython `python` on Linux."""
    return req.marker is None or Marker(str(req.marker)).evaluate(marker_env(python))


def installed_version(name: str) -> str | None:
    """The version in the environment building the kit: the one the project is tested with here."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def wheel_metadata(path: Path):
    with zipfile.ZipFile(path) as z:
        [meta] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(z.read(meta).decode())


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)


def fetch_wheel(spec: str, dest: Path, python: str) -> Path:
    """The wheel of `spec` for CPython `python` on manylinux x86_64, downloaded (binary only); a project that
    publishes only an sdist is built here, and must give a pure-Python wheel."""
    with tempfile.TemporaryDirectory() as tmp:
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        got = pip("download", "--no-deps", "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
                  *platforms, "-d", tmp, spec)
        if got.returncode != 0:
            built = pip("wheel", "--no-deps", "-w", tmp, spec)
            if built.returncode != 0:
                sys.exit(f"gpu-kit: no wheel of {spec} for CPython {python} manylinux x86_64:\n{got.stderr}\n{built.stderr}")
        [wheel] = Path(tmp).glob("*.whl")
        if got.returncode != 0 and not wheel.name.endswith("-none-any.whl"):
            sys.exit(f"gpu-kit: {spec} has no binary wheel for CPython {python}, and building it here gave {wheel.name}, "
                     "which is not pure Python")
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + TEST_REQUIREMENTS]


def collect_wheels(wheels: Path, python: str, on_machine: set[str]) -> tuple[list[dict], list[str]]:
    """The closure of clsp's requirements that the machine lacks, as wheels in `wheels`; returns (carried, left to
    the machine: the requirement strings whose distribution the machine has)."""
    queue = [r for r in project_requirements() if applies(r, python)]
    carried: dict[str, dict] = {}
    machine_reqs: set[str] = set()
    while queue:
        req = queue.pop(0)
        name = canonicalize_name(req.name)
        if name in on_machine:
            machine_reqs.add(str(Requirement(f"{name}{req.specifier}")))
            continue
        if NEVER.match(name):
            sys.exit(f"gpu-kit: {req} is needed but the kit never carries torch, triton or nvidia-* packages: "
                     f"add {name} to {MACHINE_LIST.name} if the machine has it")
        if name in carried:
            continue
        pinned = installed_version(name)
        spec = f"{name}=={pinned}" if pinned else str(Requirement(f"{name}{req.specifier}"))
        path = fetch_wheel(spec, wheels, python)
        meta = wheel_metadata(path)
        carried[name] = {"name": name, "version": meta["Version"], "file": path.name}
        print(f"gpu-kit: {path.name}  ({path.stat().st_size / MIB:.1f} MiB; needed as {req})")
        queue += [r for r in map(Requirement, meta.get_all("Requires-Dist") or []) if applies(r, python)]
    return list(carried.values()), sorted(machine_reqs)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pack_data(data: Path, previous: list[dict]) -> list[dict]:
    """Fashion-MNIST's idx files as .xz (the decompressed idx bytes); an .xz of the last build is reused when its
    source and its own bytes are those the last manifest names."""
    import gzip

    source = find_fashion_mnist(None)
    names = [n for pair in FASHION_FILES.values() for n in pair]
    if source is None or not all((source / n).is_file() for n in names):
        sys.exit("gpu-kit: Fashion-MNIST's four idx .gz files are not here (/usr/share/datasets/fashion-mnist or the "
                 "clsp data cache): run `make data` (or `clsp data fetch fashion-mnist`) first")
    out = data / "fashion-mnist"
    out.mkdir(parents=True, exist_ok=True)
    known = {(row["gz_name"], row["source_sha256"], row["sha256"]) for row in previous}
    rows = []
    for name in names:
        gz, xz = source / name, out / (name.removesuffix(".gz") + ".xz")
        digest = sha256(gz)
        if not (xz.is_file() and (name, digest, sha256(xz)) in known):
            xz.write_bytes(lzma.compress(gzip.decompress(gz.read_bytes()), preset=9))
        rows.append({"file": f"fashion-mnist/{xz.name}", "gz_name": name, "source": str(gz), "source_sha256": digest,
                     "sha256": sha256(xz), "bytes": xz.stat().st_size})
        print(f"gpu-kit: data {xz.name}  ({xz.stat().st_size / MIB:.1f} MiB)")
    return rows


def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of the repository's files that travel with a call: tracked, and untracked but not ignored."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.split(b"\0")
    return sum((repo / p.decode()).stat().st_size for p in listed if p and (repo / p.decode()).is_file())


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kit", default=str(REPO / "gpu-kit"), help="the kit's folder (default gpu-kit/, ignored by git)")
    args = parser.parse_args(argv)
    kit = Path(args.kit)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"              # the dry run's Python
    wheels, data, dry = kit / "wheels", kit / "data", kit / "dry-run" / f"cp{here.replace('.', '')}"
    on_machine = machine_packages()

    for stale in wheels.glob("*.whl"):          # one version of each: two stop pip's install on the machine
        stale.unlink()
    carried, machine_reqs = collect_wheels(wheels, "3.12", on_machine)
    # The dry run's Python (3.11 here): the platform wheels again; pure wheels are shared with wheels/.
    for stale in dry.glob("*.whl"):
        stale.unlink()
    for row in carried:
        if not row["file"].endswith("-none-any.whl"):
            fetch_wheel(f"{row['name']}=={row['version']}", dry, here)
    manifest_path = kit / "manifest.json"
    previous = json.loads(manifest_path.read_text()).get("data", []) if manifest_path.is_file() else []
    data_rows = pack_data(data, previous)

    manifest = {
        "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": "3.12", "platform": "manylinux x86_64",
        "wheels": [{**row, "sha256": sha256(wheels / row["file"])} for row in carried],
        "machine_requirements": machine_reqs,
        "git_commit": git_commit(),             # the commit the kit was built at (the machine's copy has no .git)
        "data": data_rows,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")

    carried_bytes = folder_bytes(wheels) + folder_bytes(data) + manifest_path.stat().st_size
    repo_bytes = tree_bytes()
    print(f"gpu-kit: {carried_bytes / MIB:.1f} MiB carried (wheels {folder_bytes(wheels) / MIB:.1f}, data "
          f"{folder_bytes(data) / MIB:.1f}; limit {KIT_LIMIT // MIB}); with the repository's {repo_bytes / MIB:.1f} MiB: "
          f"{(carried_bytes + repo_bytes) / MIB:.1f} MiB of the call's {CALL_LIMIT // MIB}; "
          f"not carried: dry-run wheels {folder_bytes(dry) / MIB:.1f} MiB")
    if carried_bytes > KIT_LIMIT:
        print(f"gpu-kit: FAILED: the kit is {carried_bytes / MIB:.1f} MiB, over its {KIT_LIMIT // MIB} MiB", file=sys.stderr)
        return 1
    if carried_bytes + repo_bytes > CALL_LIMIT:
        print(f"gpu-kit: FAILED: the kit and the repository's files are {(carried_bytes + repo_bytes) / MIB:.1f} MiB, "
              f"over the {CALL_LIMIT // MIB} MiB one call carries", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
