"""Importing this module fills the registry: one module per on-disk format family."""

from clsp.data import mnist  # noqa: F401  fashion-mnist (idx .gz), digits (scikit-learn)
