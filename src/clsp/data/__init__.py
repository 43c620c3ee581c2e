"""Datasets as uint8 image arrays (N, H, W, C) with labels, class names and a content fingerprint."""

from clsp.data.catalogue import dataset_names, load_dataset
from clsp.data.sets import ImageSet, ImageSource, StreamingImageSet

__all__ = ["ImageSet", "ImageSource", "StreamingImageSet", "dataset_names", "load_dataset"]
