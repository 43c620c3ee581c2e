"""CIFAR pickles, STL-10 binaries and idx .gz files, written in their real formats and loaded by the registry."""

from __future__ import annotations

import gzip
import json
import os
import pickle

import numpy as np
import pytest

from clsp.data import load_dataset
from clsp.data.sets import ImageSet
from clsp.errors import UserError

from dataset_writers import idx_bytes, write_cifar10, write_cifar100, write_fashion_mnist, write_stl10


def test_cifar10_pixels_labels_and_classes(tmp_path):
    ref = write_cifar10(tmp_path)
    train = load_dataset("cifar10", "train", root=tmp_path)
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert isinstance(train, ImageSet) and train.images.shape == (15, 32, 32, 3) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images, ref["train"][0])  # all five batches, in order, planes -> HWC
    np.testing.assert_array_equal(train.labels, ref["train"][1])
    np.testing.assert_array_equal(test.images, ref["test"][0])
    assert train.classes == ref["names"] and train.source == str(ref["folder"])
    assert train.mean != (0.485, 0.456, 0.406)  # CIFAR-10's own statistics, not ImageNet's


def test_cifar100_fine_labels_and_root_pointing_at_the_batch_folder(tmp_path):
    ref = write_cifar100(tmp_path)
    ds = load_dataset("cifar100", "test", root=ref["folder"])
    np.testing.assert_array_equal(ds.images, ref["test"][0])
    np.testing.assert_array_equal(ds.labels, ref["test"][1])
    assert len(ds.classes) == 100 and ds.classes[17] == "fine17"


def test_cifar_resize(tmp_path):
    write_cifar10(tmp_path)
    assert load_dataset("cifar10", "test", root=tmp_path, size=16).images.shape == (4, 16, 16, 3)


def test_fingerprint_stable_and_sensitive_to_one_pixel(tmp_path):
    ref = write_cifar10(tmp_path / "a")
    first = load_dataset("cifar10", "test", root=tmp_path / "a").fingerprint
    assert load_dataset("cifar10", "test", root=tmp_path / "a").fingerprint == first
    x, y = ref["test"]
    x = x.copy()
    x[2, 5, 7, 1] ^= 1
    from dataset_writers import cifar_rows

    batch = ref["folder"] / "test_batch"
    batch.write_bytes(pickle.dumps({"data": cifar_rows(x), "labels": y.tolist()}, protocol=2))
    assert load_dataset("cifar10", "test", root=tmp_path / "a").fingerprint != first


def test_fingerprint_cache_is_used_and_invalidated_by_a_changed_file(tmp_path, isolated_cache):
    ref = write_cifar10(tmp_path)
    real = load_dataset("cifar10", "train", root=tmp_path).fingerprint
    table_path = isolated_cache / "fingerprints.json"
    table = json.loads(table_path.read_text())
    assert [e["fingerprint"] for e in table.values()] == [real]
    # A planted entry is returned as is: proof that a second load does not rehash the pixels.
    key = next(iter(table))
    table[key]["fingerprint"] = "planted"
    table_path.write_text(json.dumps(table))
    assert load_dataset("cifar10", "train", root=tmp_path).fingerprint == "planted"
    # Touching one source file changes the key, so the content is hashed again.
    st = os.stat(ref["folder"] / "data_batch_3")
    os.utime(ref["folder"] / "data_batch_3", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_dataset("cifar10", "train", root=tmp_path).fingerprint == real
    # Another size is another key.
    assert load_dataset("cifar10", "train", root=tmp_path, size=16).fingerprint not in (real, "planted")


def test_cifar_errors_name_the_path(tmp_path):
    with pytest.raises(UserError, match="cifar10 not found.*nonexistent"):
        load_dataset("cifar10", "train", root=tmp_path / "nonexistent")
    ref = write_cifar10(tmp_path)
    (ref["folder"] / "data_batch_2").write_bytes(b"\x80\x02}q\x00(U")  # a truncated pickle
    with pytest.raises(UserError, match="data_batch_2.*corrupt"):
        load_dataset("cifar10", "train", root=tmp_path)
    (ref["folder"] / "test_batch").unlink()
    with pytest.raises(UserError, match="test_batch is missing"):
        load_dataset("cifar10", "test", root=tmp_path)
    with pytest.raises(UserError, match="no split 'val'"):
        load_dataset("cifar10", "val", root=tmp_path)


def test_cifar_pickle_cannot_run_code(tmp_path):
    ref = write_cifar10(tmp_path)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (ref["folder"] / "batches.meta").write_bytes(pickle.dumps({"label_names": Exploit()}, protocol=2))
    with pytest.raises(UserError, match="refusing to load"):
        load_dataset("cifar10", "test", root=tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_stl10_column_major_layout_and_splits(tmp_path):
    ref = write_stl10(tmp_path)
    train = load_dataset("stl10", "train", root=tmp_path, size=96)
    np.testing.assert_array_equal(train.images, ref["train"][0])
    assert (train.images[:, 0, :, 0] == 255).all() and (train.images[:, :, 0, 1] == 0).all()
    np.testing.assert_array_equal(train.labels, ref["train"][1])
    assert train.classes == ref["names"]
    unlabeled = load_dataset("stl10", "unlabeled", root=tmp_path, size=96)
    assert len(unlabeled) == 4 and unlabeled.labels is None
    both = load_dataset("stl10", "train+unlabeled", root=tmp_path, size=96)
    assert len(both) == 7 and both.labels is None
    np.testing.assert_array_equal(both.images[3:], ref["unlabeled"][0])


def test_stl10_defaults_to_64_px(tmp_path):
    write_stl10(tmp_path)
    ds = load_dataset("stl10", "test", root=tmp_path)
    assert ds.images.shape == (2, 64, 64, 3)
    assert ds.images[:, 0, :, 0].mean() > 200  # the bright top row survives the antialiased resize


def test_stl10_errors(tmp_path):
    with pytest.raises(UserError, match="STL-10 not found"):
        load_dataset("stl10", "train", root=tmp_path)
    ref = write_stl10(tmp_path)
    data = (ref["folder"] / "test_X.bin").read_bytes()
    (ref["folder"] / "test_X.bin").write_bytes(data[:-100])
    with pytest.raises(UserError, match="test_X.bin is truncated"):
        load_dataset("stl10", "test", root=tmp_path)
    (ref["folder"] / "train_y.bin").write_bytes(bytes([1, 2]))  # 2 labels for 3 images
    with pytest.raises(UserError, match="train_y.bin: expected 3 labels"):
        load_dataset("stl10", "train", root=tmp_path)
    with pytest.raises(UserError, match="no split 'labeled'"):
        load_dataset("stl10", "labeled", root=tmp_path)


def test_fashion_mnist_idx_gz_pad_and_truncation(tmp_path):
    ref = write_fashion_mnist(tmp_path / "fm")
    ds = load_dataset("fashion-mnist", "test", root=tmp_path / "fm")
    assert ds.images.shape == (3, 32, 32, 1) and len(ds.classes) == 10              # grey stays one channel
    np.testing.assert_array_equal(ds.images[:, 2:30, 2:30, 0], ref["test"][0])  # 28 -> 32, zero-padded
    assert (ds.images[:, :2] == 0).all()
    x = np.zeros((3, 28, 28), dtype=np.uint8)
    (tmp_path / "fm" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)[:-10]))
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz is truncated"):
        load_dataset("fashion-mnist", "test", root=tmp_path / "fm")
    (tmp_path / "fm" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x))[:-8])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_dataset("fashion-mnist", "test", root=tmp_path / "fm")


def test_fashion_mnist_real_data_when_installed(fashion_mnist):
    assert fashion_mnist.images.shape == (60000, 32, 32, 1) and len(fashion_mnist.classes) == 10
    assert np.bincount(fashion_mnist.labels).tolist() == [6000] * 10


def test_unknown_dataset_and_required_labels(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'cifar11'.*cifar10"):
        load_dataset("cifar11")
    write_stl10(tmp_path)
    with pytest.raises(UserError, match="stl10 split 'unlabeled'.*has no labels"):
        load_dataset("stl10", "unlabeled", root=tmp_path, size=32, require_labels=True)
    assert load_dataset("stl10", "train", root=tmp_path, size=32, require_labels=True).labels is not None


# The release's normalisation constants (PAPER.md, "Training settings"), mean then std.
RELEASE_NORMALISATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4914, 0.4823, 0.4466), (0.2471, 0.2435, 0.2616)),
}


@pytest.mark.parametrize("name, writer", [("cifar10", write_cifar10), ("cifar100", write_cifar100), ("stl10", write_stl10)])
def test_loaders_normalise_with_the_releases_constants(tmp_path, name, writer):
    writer(tmp_path)
    ds = load_dataset(name, "test", root=tmp_path)
    assert (tuple(ds.mean), tuple(ds.std)) == RELEASE_NORMALISATION[name]
