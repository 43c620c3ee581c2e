"""The store on its own: chunk files and manifest, completeness, dataset checks, uniform draws.

Stores here are written through the real StoreWriter with planted contents (each candidate's first
pixel names its slot and index), so reads can be checked exactly; the synthesis job's own tests
(test_synthesize.py) write stores with the real sampler.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from clsp.errors import UserError
from clsp.positives import PositivesStore
from clsp.positives.store import MANIFEST, StoreWriter, chunk_path, npy_nbytes, rank_progress_path

from positives_helpers import make_manifest, planted_candidates, write_store


def test_store_reads_back_every_candidate_across_chunks(tmp_path, digits_small):
    cands = planted_candidates(len(digits_small), 3)
    write_store(tmp_path / "s", digits_small, cands, chunk_size=8)

    manifest = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert manifest["complete"] and manifest["complete_chunks"] == list(range(6))  # 45 = 5 x 8 + 5
    assert manifest["dataset"]["fingerprint"] == digits_small.fingerprint and manifest["dataset"]["n"] == 45
    assert np.load(chunk_path(tmp_path / "s", 5)).shape == (5, 3, 8, 8, 1)
    assert chunk_path(tmp_path / "s", 5).stat().st_size == npy_nbytes((5, 3, 8, 8, 1))

    store = PositivesStore.open(tmp_path / "s", digits_small)
    assert (store.n, store.k, store.image_shape, len(store)) == (45, 3, (8, 8, 1), 45)
    order = torch.tensor([44, 0, 7, 8, 8, 39, 40])
    got = store.candidates(order)
    assert got.dtype == torch.uint8 and got.shape == (7, 3, 8, 8, 1)
    assert torch.equal(got, torch.from_numpy(cands[order.numpy()]))
    resident = store.to("cpu")
    assert torch.equal(resident.candidates(order), got)


def test_sample_draws_each_slot_uniformly_and_reproducibly(tmp_path, digits_small):
    k = 4
    cands = planted_candidates(len(digits_small), k)
    store = PositivesStore.open(write_store(tmp_path / "s", digits_small, cands, chunk_size=8).path, digits_small)
    indices = torch.arange(len(digits_small)).repeat(200)  # 9000 draws over every image

    for view in (store, store.to("cpu")):  # memory-mapped and resident
        drawn = view.sample(indices, generator=torch.Generator().manual_seed(0))
        assert drawn.shape == (len(indices), 8, 8, 1) and drawn.dtype == torch.uint8
        slots = drawn[:, 0, 0, 0].long()
        # each drawn image is exactly candidate (index, slot) of the store
        assert torch.equal(drawn, torch.from_numpy(cands[indices.numpy(), slots.numpy()]))
        counts = torch.bincount(slots, minlength=k).numpy()
        assert chisquare(counts).pvalue > 1e-3, counts
        again = view.sample(indices, generator=torch.Generator().manual_seed(0))
        assert torch.equal(again, drawn)
    other = store.sample(indices, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other, drawn)


def test_sample_gives_every_slot_of_one_image(tmp_path, digits_small):
    """Per-image uniformity: the draws for a single index cover all K slots in equal measure."""
    k = 3
    store = PositivesStore.open(write_store(tmp_path / "s", digits_small, planted_candidates(45, k)).path, digits_small)
    slots = store.sample(torch.full((3000,), 17), generator=torch.Generator().manual_seed(3))[:, 0, 0, 0].long()
    counts = torch.bincount(slots, minlength=k).numpy()
    assert chisquare(counts).pvalue > 1e-3, counts


def test_open_with_the_wrong_dataset_says_what_to_do(tmp_path, digits, digits_small):
    write_store(tmp_path / "s", digits_small, planted_candidates(45, 2))
    other_images = digits.subset(np.arange(1, 46))  # same N and shape, other images
    with pytest.raises(UserError, match=r"made for digits train \(N=45.*not for the dataset given.*clsp synthesize --dataset digits"):
        PositivesStore.open(tmp_path / "s", other_images)
    with pytest.raises(UserError, match="N=45"):
        PositivesStore.open(tmp_path / "s", digits)


def test_incomplete_store_says_how_to_resume(tmp_path, digits_small):
    write_store(tmp_path / "s", digits_small, planted_candidates(45, 2), chunks=[0, 2])
    with pytest.raises(UserError, match=r"incomplete \(2 of 6 chunks\).*clsp synthesize --config .*synthesize.yaml"):
        PositivesStore.open(tmp_path / "s", digits_small)


def test_missing_or_truncated_chunk_is_not_counted_and_is_redone(tmp_path, digits_small):
    cands = planted_candidates(45, 2)
    write_store(tmp_path / "s", digits_small, cands)
    chunk_path(tmp_path / "s", 1).unlink()
    with open(chunk_path(tmp_path / "s", 4), "r+b") as f:
        f.truncate(100)
    with pytest.raises(UserError, match=r"incomplete \(4 of 6"):
        PositivesStore.open(tmp_path / "s", digits_small)

    writer = StoreWriter(tmp_path / "s", make_manifest(digits_small, k=2))
    assert writer.remaining() == [1, 4]
    write_store(tmp_path / "s", digits_small, cands)  # a resumed writer fills in exactly those
    assert torch.equal(PositivesStore.open(tmp_path / "s", digits_small).candidates(torch.arange(45)), torch.from_numpy(cands))


def test_restart_with_other_settings_is_refused(tmp_path, digits_small):
    write_store(tmp_path / "s", digits_small, planted_candidates(45, 2), chunks=[0])
    with pytest.raises(UserError, match=r"other settings \(generation.sampler.steps: 2 in the store, 3 now\).*new --out"):
        StoreWriter(tmp_path / "s", make_manifest(digits_small, k=2, steps=3))
    with pytest.raises(UserError, match="generation.chunk_size"):
        StoreWriter(tmp_path / "s", make_manifest(digits_small, k=2, chunk_size=16))


def test_a_directory_that_is_not_a_store_is_refused(tmp_path, digits_small):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a positives store"):
        StoreWriter(tmp_path / "s", make_manifest(digits_small))
    with pytest.raises(UserError, match="not a positives store"):
        PositivesStore.open(tmp_path / "s")


def test_ranks_record_their_chunks_and_rank0_merges_them(tmp_path, digits_small):
    """Two writers as two ranks would run them: rank 1 records in its progress file, rank 0 folds it in."""
    cands = planted_candidates(45, 2)
    path = tmp_path / "s"
    rank0 = StoreWriter(path, make_manifest(digits_small, k=2), rank=0, world=2)
    rank1 = StoreWriter(path, make_manifest(digits_small, k=2), rank=1, world=2)
    assert rank0.my_chunks() == [0, 2, 4] and rank1.my_chunks() == [1, 3, 5]
    rank0.start()
    for writer in (rank1, rank0):
        for i in writer.my_chunks():
            writer.write_chunk(i, cands[i * 8:(i + 1) * 8])
    assert json.loads(rank_progress_path(path, 1).read_text())["complete_chunks"] == [1, 3, 5]
    assert rank0.finish()["complete"]
    assert not rank_progress_path(path, 1).exists()
    assert torch.equal(PositivesStore.open(path, digits_small).candidates(torch.arange(45)), torch.from_numpy(cands))


def test_write_chunk_rejects_a_wrong_shape(tmp_path, digits_small):
    writer = StoreWriter(tmp_path / "s", make_manifest(digits_small, k=2))
    writer.start()
    with pytest.raises(ValueError, match="expected uint8"):
        writer.write_chunk(0, np.zeros((8, 3, 8, 8, 1), np.uint8))
    assert not chunk_path(tmp_path / "s", 0).exists()


@pytest.mark.gpu
def test_gpu_resident_store_samples_on_the_gpu(tmp_path, digits_small):
    cands = planted_candidates(45, 3)
    store = PositivesStore.open(write_store(tmp_path / "s", digits_small, cands).path, digits_small).to("cuda")
    indices = torch.arange(45, device="cuda").repeat(10)
    drawn = store.sample(indices, generator=torch.Generator("cuda").manual_seed(0))
    assert drawn.device.type == "cuda" and drawn.shape == (450, 8, 8, 1)
    slots = drawn[:, 0, 0, 0].long().cpu()
    assert torch.equal(drawn.cpu(), torch.from_numpy(cands[indices.cpu().numpy(), slots.numpy()]))


def test_indices_outside_the_store_are_refused(tmp_path, digits_small):
    store = PositivesStore.open(write_store(tmp_path / "s", digits_small, planted_candidates(45, 2)).path, digits_small)
    for bad in ([45], [-1]):  # the memory-mapped reader checks (numpy would wrap -1 silently)
        with pytest.raises(IndexError):
            store.sample(torch.tensor(bad))
    with pytest.raises(IndexError):  # the resident tensor is indexed by torch, which checks without a host sync
        store.to("cpu").candidates(torch.tensor([45]))


def test_strength_records_read_back_per_candidate_and_a_missing_one_is_refused(tmp_path, digits_small):
    from clsp.positives.store import StoreWriter, chunk_bounds, strength_path

    n, k = len(digits_small), 2
    cands = planted_candidates(n, k)
    record = np.random.default_rng(1).random((n, k, 2)).astype(np.float32)       # (start, similarity) per candidate
    manifest = make_manifest(digits_small, k)
    manifest["generation"]["strength"] = {"grid": [], "floor": 0.5, "space": "pixels"}
    writer = StoreWriter(tmp_path / "s", manifest)
    writer.start()
    for i in writer.my_chunks():
        start, stop = chunk_bounds(i, n, 8)
        writer.write_chunk(i, cands[start:stop], record[start:stop])
    writer.finish()
    store = PositivesStore.open(tmp_path / "s", digits_small)
    got = store.strength([44, 0, 9])
    np.testing.assert_array_equal(got["start"], record[[44, 0, 9], :, 0])
    np.testing.assert_array_equal(got["similarity"], record[[44, 0, 9], :, 1])
    np.testing.assert_array_equal(store.to("cpu").strength()["similarity"], record[..., 1])
    with pytest.raises(IndexError):
        store.strength([45])
    strength_path(tmp_path / "s", 2).unlink()
    with pytest.raises(UserError, match=r"strength_00002.npy: missing"):
        PositivesStore.open(tmp_path / "s", digits_small)

    write_store(tmp_path / "old", digits_small, cands)                       # a store made before issue 23
    old = PositivesStore.open(tmp_path / "old", digits_small)
    assert not old.has_strength and old.strength([0]) is None
