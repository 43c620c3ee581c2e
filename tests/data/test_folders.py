"""folder:PATH (ImageFolder, flat folder, split subfolders, in memory or streamed) and ImageNet-100."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_writers import random_images, write_image_folder, write_jpg, write_png

from clsp.data import load_dataset
from clsp.data.folder import read_image
from clsp.data.imagenet100 import CLASSES, IMAGENET100_WNIDS
from clsp.data.sets import ImageSet, StreamingImageSet
from clsp.errors import UserError


def test_image_folder_in_memory(tmp_path):
    pixels = write_image_folder(tmp_path / "pics", {"cat": 3, "dog": 2})
    ds = load_dataset(f"folder:{tmp_path / 'pics'}", split="all")
    assert isinstance(ds, ImageSet) and ds.images.shape == (5, 16, 16, 3)
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_array_equal(ds.images, np.stack(pixels["cat"] + pixels["dog"]))  # PNG is lossless
    assert len(ds.fingerprint) == 16


def test_image_folder_streams_the_same_pixels(tmp_path):
    write_image_folder(tmp_path / "pics", {"a": 2, "b": 3})
    memory = load_dataset(f"folder:{tmp_path / 'pics'}", "all", size=8)
    stream = load_dataset(f"folder:{tmp_path / 'pics'}", "all", size=8, max_memory_mb=0)
    assert isinstance(stream, StreamingImageSet) and len(stream) == 5 and stream.shape == (8, 8, 3)
    batches = list(stream.batches(batch_size=2, num_workers=0))
    assert [tuple(x.shape) for x, _ in batches] == [(2, 8, 8, 3), (2, 8, 8, 3), (1, 8, 8, 3)]
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in batches]), memory.images)
    assert np.concatenate([y.numpy() for _, y in batches]).tolist() == memory.labels.tolist()
    assert stream.fingerprint == load_dataset(f"folder:{tmp_path / 'pics'}", "all", size=8, max_memory_mb=0).fingerprint


def test_both_forms_give_the_images_at_given_indices(tmp_path):
    """The ImageSource contract: in memory or streamed, the same images in the order asked, and `resident` says which."""
    pixels = write_image_folder(tmp_path / "pics", {"a": 2, "b": 3})
    every = np.stack(pixels["a"] + pixels["b"])
    memory = load_dataset(f"folder:{tmp_path / 'pics'}", "all")
    stream = load_dataset(f"folder:{tmp_path / 'pics'}", "all", max_memory_mb=0)
    assert (memory.resident, stream.resident) == (True, False)
    for ds in (memory, stream):
        np.testing.assert_array_equal(ds.images_at(np.array([4, 0, 2])), every[[4, 0, 2]])
        np.testing.assert_array_equal(ds.images_at([1]), every[1:2])
        assert ds.images_at(np.arange(0)).shape == (0, 16, 16, 3) and ds.images_at([]).dtype == np.uint8


def test_corrupt_image_is_an_error_naming_its_path(tmp_path):
    write_image_folder(tmp_path / "pics", {"cat": 2, "dog": 2})
    bad = tmp_path / "pics" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(UserError, match=r"cannot read image .*dog/broken\.jpg.*remove or replace"):
        load_dataset(f"folder:{tmp_path / 'pics'}")
    stream = load_dataset(f"folder:{tmp_path / 'pics'}", max_memory_mb=0)  # streamed: found when it is read
    for workers in (0, 1):
        with pytest.raises(UserError, match=r"^cannot read image .*broken\.jpg[^\n]*$"):  # one line, also from a worker
            list(stream.batches(batch_size=8, num_workers=workers))


def test_a_labelled_folder_without_splits_holds_out_a_seeded_share_of_each_class(tmp_path):
    write_image_folder(tmp_path / "pics", {"a": 10, "b": 5, "c": 1})
    name = f"folder:{tmp_path / 'pics'}"
    everything, train, test = (load_dataset(name, split=s) for s in ("all", "train", "test"))
    assert (len(everything), len(train), len(test)) == (16, 13, 3)
    # 20% of each class: 2 of a, 1 of b; a class of one image stays in train.
    assert np.bincount(test.labels, minlength=3).tolist() == [2, 1, 0]
    assert np.bincount(train.labels, minlength=3).tolist() == [8, 4, 1]
    pixels = {im.tobytes() for im in everything.images}
    held, kept = {im.tobytes() for im in test.images}, {im.tobytes() for im in train.images}
    assert not held & kept and held | kept == pixels                      # disjoint, and together the whole folder
    again = load_dataset(name, split="test")
    np.testing.assert_array_equal(again.images, test.images)              # seeded: the same images every time
    assert len(load_dataset(name, split="test", holdout=0.5)) == 5 + 2   # round(0.5 x 10), round(0.5 x 5) = 2
    assert len(load_dataset(name, split="train", holdout=0.0)) == 16
    with pytest.raises(UserError, match="no test/ subfolder and dataset.holdout=0"):
        load_dataset(name, split="test", holdout=0.0)


def test_flat_folder_is_unlabeled_and_refuses_labels(tmp_path):
    for i in range(3):
        write_png(tmp_path / "flat" / f"{i}.png", random_images(1, 10, i)[0])
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{tmp_path / 'flat'}")
    assert len(ds) == 3 and ds.labels is None and ds.classes == []
    with pytest.raises(UserError, match="has no labels.*one subfolder per class"):
        load_dataset(f"folder:{tmp_path / 'flat'}", require_labels=True)
    with pytest.raises(UserError, match="flat folder .*no test split.*eval.dataset.name"):
        load_dataset(f"folder:{tmp_path / 'flat'}", split="test")
    stream = load_dataset(f"folder:{tmp_path / 'flat'}", stream=True)
    assert stream.labels is None and next(stream.batches(batch_size=3, num_workers=0))[1] is None


def test_split_subfolders(tmp_path):
    write_image_folder(tmp_path / "set" / "train", {"x": 2, "y": 2})
    write_image_folder(tmp_path / "set" / "val", {"x": 1, "y": 1}, seed=50)
    assert len(load_dataset(f"folder:{tmp_path / 'set'}", "train")) == 4
    test = load_dataset(f"folder:{tmp_path / 'set'}", "test")  # test falls back to val/
    assert len(test) == 2 and test.classes == ["x", "y"]
    one = tmp_path / "one"
    write_image_folder(one, {"x": 1})
    with pytest.raises(UserError, match="leaves split test empty.*train/ and test/ subfolders"):
        load_dataset(f"folder:{one}", "test")


def test_bad_layouts(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    write_image_folder(tmp_path / "mixed", {"cat": 1})
    write_png(tmp_path / "mixed" / "stray.png", random_images(1, 16, 0)[0])
    with pytest.raises(UserError, match="mixes images"):
        load_dataset(f"folder:{tmp_path / 'mixed'}")


def test_read_image_resizes_the_shorter_side_and_centre_crops(tmp_path):
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, 15:25] = 200  # a bright centre band, 10 px wide: 5 px after halving, in the middle of the crop
    out = read_image(write_png(tmp_path / "wide.png", image), 10)
    assert out.shape == (10, 10, 3)
    assert out[:, 4:6].min() > 150 and out[:, [0, 9]].max() < 50  # the crop keeps the centre of the wide image
    grey = tmp_path / "grey.png"
    from PIL import Image

    Image.fromarray(np.full((6, 6), 77, dtype=np.uint8), mode="L").save(grey)
    assert (read_image(grey, 6) == 77).all()  # grey replicated to RGB


def test_imagenet100_keeps_only_the_listed_classes(tmp_path):
    assert len(IMAGENET100_WNIDS) == 100 == len(set(IMAGENET100_WNIDS))
    wnids = ["n02869837", "n01749939"]
    for split in ("train", "val"):
        for k, wnid in enumerate(wnids):
            for i in range(2):
                write_jpg(tmp_path / "imagenet" / split / wnid / f"{wnid}_{i}.JPEG", size=(30, 20), seed=10 * k + i)
        write_jpg(tmp_path / "imagenet" / split / "n01440764" / "tench.JPEG")  # one of ImageNet-1k's other classes
    train = load_dataset("imagenet100", "train", root=tmp_path, size=16)
    assert isinstance(train, StreamingImageSet) and len(train) == 4 and len(train.classes) == 100
    assert train.classes == sorted(IMAGENET100_WNIDS)
    assert sorted(set(train.labels.tolist())) == sorted(CLASSES.index(w) for w in wnids)
    x, y = next(train.batches(batch_size=4, num_workers=0))
    assert x.shape == (4, 16, 16, 3) and x.dtype.is_floating_point is False
    val = load_dataset("imagenet100", "test", root=tmp_path / "imagenet", size=16)
    assert val.source.endswith("val") and val.labels.tolist() == train.labels.tolist()
    assert load_dataset("imagenet100", "train", root=tmp_path).image_size == 224


def test_imagenet100_errors(tmp_path):
    with pytest.raises(UserError, match="ImageNet not found.*cannot be downloaded"):
        load_dataset("imagenet100", root=tmp_path)
    write_jpg(tmp_path / "train" / "n01440764" / "tench.JPEG")
    with pytest.raises(UserError, match="none of the 100 ImageNet-100 class folders"):
        load_dataset("imagenet100", "train", root=tmp_path)
    write_jpg(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(UserError, match="sort the validation images"):
        load_dataset("imagenet100", "val", root=tmp_path)


def test_grey_folder_keeps_one_channel_and_a_colour_image_makes_it_rgb(tmp_path):
    """A folder of grey images is grey data (one channel), as Fashion-MNIST is; one colour image makes it RGB."""
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(3)]
    for i, g in enumerate(grey):
        write_png(tmp_path / "grey" / f"{i}.png", np.repeat(g[..., None], 3, axis=-1))   # stored RGB, content grey
    Image.fromarray(grey[0], mode="L").save(tmp_path / "grey" / "3.png")                # stored as L
    ds = load_dataset(f"folder:{tmp_path / 'grey'}")
    assert ds.images.shape == (4, 8, 8, 1)
    np.testing.assert_array_equal(ds.images[:3, ..., 0], np.stack(grey))
    from clsp.config import load_config
    from clsp.data.config import DatasetConfig, load_split

    as_rgb = load_split(load_config(DatasetConfig, None, [f"name=folder:{tmp_path / 'grey'}", "channels=3"]), "all")
    assert as_rgb.images.shape == (4, 8, 8, 3)                                          # dataset.channels=3 keeps RGB
    np.testing.assert_array_equal(as_rgb.images, np.repeat(ds.images, 3, axis=-1))
    assert as_rgb.fingerprint != ds.fingerprint
    colour = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    write_png(tmp_path / "grey" / "4.png", colour)
    ds = load_dataset(f"folder:{tmp_path / 'grey'}")
    assert ds.images.shape == (5, 8, 8, 3)
    np.testing.assert_array_equal(ds.images[4], colour)
