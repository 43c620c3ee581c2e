"""Importing this module fills the registry: one module per on-disk format family."""

from clsp.data import mnist  # noqa: F401  fashion-mnist (idx .gz), digits (scikit-learn)
from clsp.data import cifar  # noqa: F401  cifar10, cifar100 (python pickle batches)
from clsp.data import stl  # noqa: F401  stl10 (binary)
from clsp.data import folder  # noqa: F401  folder:PATH (ImageFolder or flat folder)
from clsp.data import imagenet100  # noqa: F401  imagenet100 (ImageNet ImageFolder, 100 classes)
from clsp.data import transfer  # noqa: F401  pets, flowers102, dtd, food101, aircraft, caltech101
