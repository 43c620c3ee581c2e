"""Synthetic positives at dataset scale: the synthesis job (`synthesize`) and the store it writes
(`PositivesStore`), read by the contrastive learners one uniformly drawn candidate per image."""

from clsp.positives.store import PositivesStore

__all__ = ["PositivesStore"]
