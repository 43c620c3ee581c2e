"""Transfer sets in the layouts torchvision reads: the standard splits, labels, class names and resizing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dataset_writers import write_jpg

from clsp.data import load_dataset
from clsp.data.sets import ImageSet
from clsp.errors import UserError


def write_pets(root):
    base = root / "oxford-iiit-pet"
    ids = {"trainval": ["Abyssinian_1", "Abyssinian_2", "american_bulldog_1"], "test": ["Abyssinian_3", "american_bulldog_2"]}
    (base / "annotations").mkdir(parents=True)
    for split, names in ids.items():
        lines = [f"{n} {1 if n.startswith('Aby') else 2} {1 if n.startswith('Aby') else 2} 1" for n in names]
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for i, n in enumerate(names):
            write_jpg(base / "images" / f"{n}.jpg", size=(24, 18), seed=i)
    return ids


def write_dtd(root):
    base = root / "dtd" / "dtd"
    (base / "labels").mkdir(parents=True)
    files = {"train": ["banded/banded_0001.jpg", "dotted/dotted_0001.jpg"],
             "val": ["banded/banded_0002.jpg", "dotted/dotted_0002.jpg"],
             "test": ["banded/banded_0003.jpg", "dotted/dotted_0003.jpg", "dotted/dotted_0004.jpg"]}
    for split, names in files.items():
        (base / "labels" / f"{split}1.txt").write_text("\n".join(names) + "\n")
        (base / "labels" / f"{split}2.txt").write_text(names[0] + "\n")  # another partition, to see it is not read
        for n in names:
            write_jpg(base / "images" / n, side=20)
    return files


def test_pets_trainval_and_test(tmp_path):
    write_pets(tmp_path)
    train = load_dataset("pets", "train", root=tmp_path, size=16)
    assert isinstance(train, ImageSet) and train.images.shape == (3, 16, 16, 3)
    assert train.classes == ["Abyssinian", "American Bulldog"] and train.labels.tolist() == [0, 0, 1]
    test = load_dataset("pets", "test", root=tmp_path / "oxford-iiit-pet", size=16)  # --root may be the set's folder
    assert test.labels.tolist() == [0, 1] and test.source.endswith("oxford-iiit-pet")
    assert load_dataset("pets", "trainval", root=tmp_path, size=16).fingerprint == train.fingerprint
    assert load_dataset("pets", "test", root=tmp_path).image_size == 64  # the default transfer resolution


def test_dtd_partition_one_train_is_train_plus_val(tmp_path):
    write_dtd(tmp_path)
    train = load_dataset("dtd", "train", root=tmp_path, size=8)
    assert len(train) == 4 and train.classes == ["banded", "dotted"] and train.labels.tolist() == [0, 1, 0, 1]
    assert len(load_dataset("dtd", "train-only", root=tmp_path, size=8)) == 2
    assert load_dataset("dtd", "test", root=tmp_path, size=8).labels.tolist() == [0, 1, 1]
    streamed = load_dataset("dtd", "test", root=tmp_path, size=8, stream=True)
    assert len(streamed) == 3 and streamed.labels.tolist() == [0, 1, 1]


def test_caltech101_seeded_30_per_class_split(tmp_path):
    base = tmp_path / "caltech101" / "101_ObjectCategories"
    counts = {"accordion": 32, "airplanes": 35}
    for c, n in counts.items():
        for i in range(1, n + 1):
            write_jpg(base / c / f"image_{i:04d}.jpg", side=8, seed=i)
    write_jpg(base / "BACKGROUND_Google" / "image_0001.jpg", side=8)
    train = load_dataset("caltech101", "train", root=tmp_path, size=8)
    test = load_dataset("caltech101", "test", root=tmp_path, size=8, stream=True)
    assert train.classes == ["accordion", "airplanes"]  # the background class is not a class
    assert np.bincount(train.labels).tolist() == [30, 30] and np.bincount(test.labels).tolist() == [2, 5]
    test_files = {path for path, _ in test.items}
    assert len(test_files) == 7 and not any("BACKGROUND" in f for f in test_files)
    again = load_dataset("caltech101", "test", root=tmp_path, size=8, stream=True)
    assert [p for p, _ in again.items] == [p for p, _ in test.items]  # the split is fixed
    train_files = {p for p, _ in load_dataset("caltech101", "train", root=tmp_path, size=8, stream=True).items}
    assert train_files.isdisjoint(test_files) and len(train_files | test_files) == 67


def test_flowers102_train_is_train_plus_val(tmp_path, monkeypatch):
    from scipy.io import savemat
    from torchvision.datasets import Flowers102

    base = tmp_path / "flowers-102"
    for i in range(1, 7):
        write_jpg(base / "jpg" / f"image_{i:05d}.jpg", side=10, seed=i)
    savemat(base / "imagelabels.mat", {"labels": np.array([[1, 2, 1, 102, 2, 1]])})
    savemat(base / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[3, 4]]), "tstid": np.array([[5, 6]])})
    monkeypatch.setattr(Flowers102, "_check_integrity", lambda self: True)  # our .mat files are not the real ones
    train = load_dataset("flowers102", "train", root=tmp_path, size=8)
    assert train.labels.tolist() == [0, 1, 0, 101] and len(train.classes) == 102
    assert load_dataset("flowers102", "test", root=tmp_path, size=8).labels.tolist() == [1, 0]


def test_aircraft_variants_and_food101(tmp_path):
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("707-320\nA340-500\n")
    (data / "images_variant_trainval.txt").write_text("0001 707-320\n0002 A340-500\n0003 A340-500\n")
    (data / "images_variant_test.txt").write_text("0004 707-320\n")
    for i in range(1, 5):
        write_jpg(data / "images" / f"{i:04d}.jpg", size=(30, 20), seed=i)
    aircraft = load_dataset("aircraft", "train", root=tmp_path, size=8)
    assert aircraft.classes == ["707-320", "A340-500"] and aircraft.labels.tolist() == [0, 1, 1]

    food = tmp_path / "food-101"
    (food / "meta").mkdir(parents=True)
    split = {"train": {"apple_pie": ["apple_pie/1"], "sushi": ["sushi/2", "sushi/3"]},
             "test": {"apple_pie": ["apple_pie/4"], "sushi": ["sushi/5"]}}
    for name, index in split.items():
        (food / "meta" / f"{name}.json").write_text(json.dumps(index))
        for files in index.values():
            for f in files:
                write_jpg(food / "images" / f"{f}.jpg", side=9)
    assert load_dataset("food101", "train", root=tmp_path, size=8).labels.tolist() == [0, 1, 1]


def test_transfer_errors(tmp_path):
    with pytest.raises(UserError, match="pets not found.*oxford-iiit-pet.*clsp.data.fetch pets"):
        load_dataset("pets", "train", root=tmp_path)
    with pytest.raises(UserError, match="caltech101 not found"):
        load_dataset("caltech101", "train", root=tmp_path)
    (tmp_path / "caltech101").mkdir()
    with pytest.raises(UserError, match="Caltech-101 not found.*101_ObjectCategories is missing"):
        load_dataset("caltech101", "train", root=tmp_path)
    assert list((tmp_path / "caltech101").iterdir()) == []  # torchvision was not let loose on the user's root
    write_pets(tmp_path)
    with pytest.raises(UserError, match="no split 'val'"):
        load_dataset("pets", "val", root=tmp_path)
    (tmp_path / "oxford-iiit-pet" / "images" / "Abyssinian_3.jpg").write_bytes(b"garbage")
    with pytest.raises(UserError, match="Abyssinian_3.jpg"):
        load_dataset("pets", "test", root=tmp_path, size=8)
    (tmp_path / "oxford-iiit-pet" / "annotations" / "test.txt").unlink()
    with pytest.raises(UserError, match="cannot read the dataset.*oxford-iiit-pet"):
        load_dataset("pets", "test", root=tmp_path, size=8)
