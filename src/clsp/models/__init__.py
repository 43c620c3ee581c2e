"""Backbones, heads and the encoder file that pretraining writes and evaluation reads."""
