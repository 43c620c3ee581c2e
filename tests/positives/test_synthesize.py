"""The synthesis job with the real sampler and a tiny random UNet on 8x8 digits (CPU, K = 2, 3 steps).

One uninterrupted single-process store is the reference; a job killed with SIGKILL and resumed, and a
2-process torchrun job, must write exactly its bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clsp.cli import main, resolve_config
from clsp.config import load_config
from clsp.data.config import load_split
from clsp.errors import ConfigError, UserError
from clsp.io import hash_directory
from clsp.positives import PositivesStore
from clsp.positives.store import CONFIG, MANIFEST, chunk_path
from clsp.positives.synthesize import SynthesizeConfig, chunk_seed, synthesize

SUBSET, CHUNK, K, STEPS = 48, 8, 2, 3   # 6 chunks


@contextlib.contextmanager
def one_thread():
    """The subprocesses run with OMP_NUM_THREADS=1; so does every in-process run they are compared with."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from clsp.diffusion.model import save_model
    from clsp.diffusion.schedulers import TRAINING_SCHEDULE
    from clsp.diffusion.unet import make_unet

    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("model") / "tiny", make_unet("tiny", 8, channels=1), TRAINING_SCHEDULE)


def cli_args(model, out) -> list[str]:
    return ["synthesize", "--model", str(model), "--dataset", "digits", "--subset", str(SUBSET), "--k", str(K),
            "--steps", str(STEPS), "--chunk-size", str(CHUNK), "--out", str(out), "--device", "cpu"]


def config(model, out, *overrides) -> SynthesizeConfig:
    return load_config(SynthesizeConfig, overrides=[
        f"model={model}", f"out_dir={out}", "dataset.name=digits", f"dataset.subset={SUBSET}", f"k={K}",
        f"sampler.steps={STEPS}", f"chunk_size={CHUNK}", "device=cpu", "progress=false", *overrides])


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    """An uninterrupted single-process store."""
    with one_thread():
        return synthesize(config(tiny_model, tmp_path_factory.mktemp("ref") / "store"))


def chunk_bytes(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.glob("chunk_*.npy"))}


def subprocess_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", CLSP_QUIET="1", PYTHONUNBUFFERED="1")


def test_a_complete_run_writes_every_chunk_from_its_own_seed(reference, tiny_model):
    from clsp.diffusion.model import load_model
    from clsp.diffusion.sampler import generate_positives

    cfg = config(tiny_model, reference)
    dataset = load_split(cfg.dataset, "train")
    store = PositivesStore.open(reference, dataset)
    assert (store.n, store.k, store.image_shape) == (SUBSET, K, (8, 8, 1))
    manifest = store.manifest
    assert manifest["complete"] and manifest["complete_chunks"] == list(range(6))
    assert manifest["model_hash"] == hash_directory(tiny_model)
    assert manifest["generation"]["sampler"]["steps"] == STEPS and manifest["generation"]["sampler"]["w"] == 0.1
    saved = load_config(SynthesizeConfig, reference / CONFIG)  # what `clsp synthesize --config` resumes with
    assert (saved.out_dir, saved.model) == (str(reference.resolve()), str(tiny_model.resolve()))
    assert (saved.sampler, saved.dataset, saved.k, saved.chunk_size) == (cfg.sampler, cfg.dataset, K, CHUNK)

    # chunk 3 is exactly the sampler's output for its anchors under hash(seed, 3)
    unet, scheduler_config = load_model(tiny_model)
    anchors = torch.from_numpy(dataset.images[3 * CHUNK:4 * CHUNK])
    with one_thread():
        direct = generate_positives(unet, scheduler_config, anchors, K, cfg.sampler, seed=chunk_seed(cfg.seed, 3))
    assert torch.equal(store.candidates(torch.arange(3 * CHUNK, 4 * CHUNK)), direct)
    assert chunk_seed(0, 3) != chunk_seed(0, 4) and chunk_seed(0, 3) != chunk_seed(1, 3)
    everything = store.candidates(torch.arange(SUBSET))
    assert not torch.equal(everything[:, 0], everything[:, 1])  # the K candidates differ


def test_running_again_on_a_complete_store_redoes_nothing(reference, tiny_model, tmp_path):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(reference, store)
    inodes = {p.name: p.stat().st_ino for p in store.glob("chunk_*.npy")}
    with one_thread():
        synthesize(config(tiny_model, store))
    assert {p.name: p.stat().st_ino for p in store.glob("chunk_*.npy")} == inodes


def job_past_its_first_chunk(tiny_model, store) -> subprocess.Popen:
    """`clsp synthesize` in a process of its own, returned once its manifest lists a complete chunk (or it ended)."""
    job = subprocess.Popen([sys.executable, "-m", "clsp", *cli_args(tiny_model, store)], env=subprocess_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    done: list[int] = []
    while not done and job.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            done = json.loads((store / MANIFEST).read_text())["complete_chunks"]
        time.sleep(0.005)
    return job


def test_killed_job_resumes_to_identical_bytes(reference, tiny_model, tmp_path):
    store = tmp_path / "store"
    job = job_past_its_first_chunk(tiny_model, store)
    job.send_signal(signal.SIGKILL)
    output = job.communicate()[0].decode()
    assert job.returncode == -signal.SIGKILL, f"the job ended before it could be killed:\n{output}"
    manifest = json.loads((store / MANIFEST).read_text())
    assert 1 <= len(manifest["complete_chunks"]) < 6 and not manifest["complete"]
    with pytest.raises(UserError, match=r"incomplete .*resume it with `clsp synthesize --config"):
        PositivesStore.open(store)

    kept = {chunk_path(store, i).name: chunk_path(store, i).stat().st_ino for i in manifest["complete_chunks"]}
    with one_thread():
        synthesize(config(tiny_model, store))
    assert chunk_bytes(store) == chunk_bytes(reference)
    assert {name: (store / name).stat().st_ino for name in kept} == kept  # finished chunks were not redone
    assert not list(store.glob(".*.tmp"))
    assert PositivesStore.open(store).manifest["complete"]


def test_sigterm_ends_the_job_as_an_interrupt(tiny_model, tmp_path):
    """SIGTERM once a chunk is done: "clsp: interrupted" and exit 130, like the training stages."""
    store = tmp_path / "store"
    job = job_past_its_first_chunk(tiny_model, store)
    job.send_signal(signal.SIGTERM)
    output = job.communicate(timeout=60)[0].decode()
    assert job.returncode == 130 and "clsp: interrupted" in output, output[-2000:]
    assert "Traceback" not in output


def test_two_processes_write_the_same_store_as_one(reference, tiny_model, tmp_path):
    store = tmp_path / "store"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "clsp", *cli_args(tiny_model, store)],
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert chunk_bytes(store) == chunk_bytes(reference)
    manifest = json.loads((store / MANIFEST).read_text())
    assert manifest["complete"] and manifest["complete_chunks"] == list(range(6))
    assert not list(store.glob("progress_rank*.json"))
    printed = run.stderr + run.stdout
    assert "UNet evaluations" in printed and "on 2 process(es)" in printed
    assert "rank 0/2: 3 chunks" in printed and "rank 1/2: 3 chunks" in printed  # the work was shared, not repeated


def test_restart_with_other_settings_is_refused_before_any_work(reference, tiny_model, tmp_path):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(reference, store)
    before = chunk_bytes(store)
    with pytest.raises(UserError, match=r"other settings \(generation.sampler.steps: 3 in the store, 4 now\).*new --out"):
        synthesize(config(tiny_model, store, "sampler.steps=4"))
    with pytest.raises(UserError, match=r"dataset.fingerprint.*new --out"):
        synthesize(config(tiny_model, store, "dataset.subset=47"))
    assert chunk_bytes(store) == before


def test_a_model_of_another_size_is_refused_before_the_store_is_made(tiny_model, tmp_path):
    with pytest.raises(UserError, match="8x8 images but the data is 16x16"):
        synthesize(config(tiny_model, tmp_path / "store", "dataset.size=16"))
    assert not (tmp_path / "store").exists()


def test_guidance_with_an_unconditional_model_is_refused_before_the_store_is_made(tiny_model, tmp_path):
    out = tmp_path / "store"
    with pytest.raises(UserError, match="guidance = 1.8 needs a class-conditional diffusion model"):
        synthesize(config(tiny_model, out, "sampler.guidance=1.8"))
    assert not out.exists()                                   # no manifest, no lock, no folder


def test_cli_flags_map_onto_the_config():
    cfg = resolve_config(["synthesize", "--model", "m", "--dataset", "digits", "--split", "test", "--k", "4",
                          "--w", "0.3", "--steps", "7", "--eta", "0", "--sampler", "ddpm", "--batch-size", "16",
                          "--seed", "5", "--chunk-size", "32", "--root", "r", "--size", "16", "--subset", "10",
                          "--out", "o", "sampler.share_anchor=true"])
    assert (cfg.model, cfg.out_dir, cfg.split, cfg.k, cfg.seed, cfg.chunk_size) == ("m", "o", "test", 4, 5, 32)
    assert (cfg.dataset.name, cfg.dataset.root, cfg.dataset.size, cfg.dataset.subset) == ("digits", "r", 16, 10)
    s = cfg.sampler
    assert (s.sampler, s.steps, s.eta, s.w, s.batch_size, s.share_anchor) == ("ddpm", 7, 0.0, 0.3, 16, True)
    defaults = resolve_config(["synthesize", "--model", "m", "--out", "o"])
    assert (defaults.k, defaults.sampler.steps, defaults.sampler.eta, defaults.sampler.w, defaults.sampler.sampler) == (8, 100, 0.1, 0.1, "ddim")


def test_cli_errors_are_one_line_and_exit_2(capsys, tmp_path):
    assert main(["synthesize", "--dataset", "digits", "--out", str(tmp_path / "s")]) == 2
    assert "config key 'model'" in capsys.readouterr().err
    assert main(["synthesize", "--model", "m", "--out", "o", "--k", "0"]) == 2
    assert "config key 'k': must be > 0" in capsys.readouterr().err
    assert main(["synthesize", "--model", str(tmp_path / "missing"), "--dataset", "digits", "--out", str(tmp_path / "s")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"'sampler\.w': must be in"):  # the key in full
        load_config(SynthesizeConfig, overrides=["model=m", "out_dir=o", "sampler.w=2"])


def test_preview_command_finds_the_dataset_from_the_store_or_refuses_another(reference, tmp_path, capsys):
    png = tmp_path / "grid" / "preview.png"
    assert main(["positives", "preview", str(reference), "--out", str(png.parent), "--n", "3"]) == 0
    from PIL import Image

    assert Image.open(png).size[1] == 3 * 66 + 2  # three rows of 8x8 anchors enlarged to 64 px
    assert main(["positives", "preview", str(reference), "--dataset", "digits", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "was made for digits train (N=48" in err  # the full split is not the store's subset
    assert "dataset.subset=48" in err                # and the settings that load the store's images are named
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("preset", ["synthesize/cifar10", "synthesize/fashion-mnist"])
def test_presets_hold_the_paper_settings(preset):
    cfg = load_config(SynthesizeConfig, preset, ["model=m", "out_dir=o"])
    s = cfg.sampler
    assert (cfg.k, s.sampler, s.steps, s.eta, s.w, s.timestep_spacing, s.clip_x0) == (8, "ddim", 100, 0.1, 0.1, "trailing", False)
    assert cfg.dataset.name == preset.split("/")[1]


def test_nan_born_candidates_are_counted_as_degenerate(tiny_model, tmp_path):
    """A NaN inside the UNet spreads to whole images, which the uint8 cast makes constant (black): the
    statistics must count every such candidate."""
    from clsp.diffusion.model import load_model, save_model
    from clsp.positives.stats import store_stats

    unet, scheduler_config = load_model(tiny_model)
    with torch.no_grad():
        unet.mid_block.resnets[0].conv1.weight[0, 0, 0, 0] = float("nan")
    broken = save_model(tmp_path / "broken", unet, scheduler_config)
    with one_thread():
        store = synthesize(config(broken, tmp_path / "store", "dataset.subset=12"))
    stats = store_stats(PositivesStore.open(store))
    assert stats["degenerate"]["constant"] == stats["degenerate"]["all_black"] == 12 * K
    assert all(s["max"] == 0 for s in stats["slots"])


def test_the_per_candidate_rule_picks_the_largest_start_that_stays_near_the_anchor_and_stores_it(tiny_model, tmp_path, capsys):
    import numpy as np

    from clsp.diffusion.model import load_model
    from clsp.diffusion.sampler import SamplerConfig, generate_positives
    from clsp.positives.strength import Features, StrengthConfig, cosine_to_anchor, generate_with_strength
    from clsp.training import step_seed

    unet, schedule = load_model(tiny_model)
    anchors = torch.from_numpy(load_split(config(tiny_model, tmp_path).dataset, "train").images[:CHUNK])
    pixels = Features("pixels")
    sampler = SamplerConfig(steps=STEPS)
    with one_thread():
        full = generate_positives(unet, schedule, anchors, K, sampler, seed=9)                 # s = 1
        low = generate_positives(unet, schedule, anchors, K, SamplerConfig(steps=STEPS, start=0.34), seed=9)
        floor = float((cosine_to_anchor(pixels, anchors, full).mean() + cosine_to_anchor(pixels, anchors, low).mean()) / 2)
        rule = StrengthConfig(grid=[0.34, 1.0, 0.67], floor=floor, space="pixels")
        candidates, start, similarity = generate_with_strength(unet, schedule, anchors, K, sampler, rule, seed=9,
                                                               features=pixels)
        # the first round tries the largest s on every candidate: exactly those that stay near enough keep it
        first = generate_positives(unet, schedule, anchors.repeat_interleave(K, 0), 1, sampler,
                                   seed=step_seed(9, 0, stream="clsp-strength"))[:, 0]
    first_sim = cosine_to_anchor(pixels, anchors.repeat_interleave(K, 0), first[:, None])[:, 0].view(CHUNK, K)
    assert torch.equal(start == 1.0, first_sim >= floor)
    assert torch.equal(candidates[start == 1.0], first.view(CHUNK, K, 8, 8, 1)[start == 1.0])
    grid = set(torch.tensor([1.0, 0.67, 0.34]).tolist())                                     # as float32 holds them
    assert set(start.unique().tolist()) <= grid and len(start.unique()) >= 2                  # per candidate
    assert bool((similarity[start > 0.34] >= floor).all())
    torch.testing.assert_close(similarity, cosine_to_anchor(pixels, anchors, candidates))

    # the store keeps s and the similarity beside every candidate; stats show them
    out = tmp_path / "store"
    with one_thread():
        synthesize(config(tiny_model, out, "strength.grid=[1.0,0.67,0.34]", f"strength.floor={floor}", "strength.space=pixels"))
    store = PositivesStore.open(out)
    recorded = store.strength(np.arange(CHUNK, 2 * CHUNK))
    assert recorded["start"].shape == (CHUNK, K) and set(np.unique(store.strength()["start"]).tolist()) <= grid
    again = cosine_to_anchor(pixels, torch.from_numpy(load_split(config(tiny_model, out).dataset, "train").images[CHUNK:2 * CHUNK]),
                             store.candidates(np.arange(CHUNK, 2 * CHUNK)))
    np.testing.assert_allclose(recorded["similarity"], again.numpy(), atol=1e-5)
    assert main(["positives", "stats", str(out)]) == 0
    assert "partial-noise start per candidate: s = 1" in capsys.readouterr().out


def test_bad_starts_exit_2_before_anything_is_written(tiny_model, tmp_path, capsys):
    out = tmp_path / "store"
    for bad, said in ((["--start", "0"], "'sampler.start': must be in (0, 1]"),
                      (["--start", "0.2"], "leaves 0 steps to run"),
                      (["strength.grid=[0.9,0.1]"], "'strength.grid': [0.1] of 3 steps leave no step")):
        assert main(cli_args(tiny_model, out) + bad) == 2
        assert said in capsys.readouterr().err
        assert not out.exists()
