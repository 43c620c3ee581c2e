"""Datasets as uint8 image arrays (N, H, W, 3) with labels, class names and a content fingerprint."""

from clsp.data.registry import ImageSet, StreamingImageSet, dataset_names, load_dataset

__all__ = ["ImageSet", "StreamingImageSet", "dataset_names", "load_dataset"]
