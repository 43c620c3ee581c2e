"""Stage 4: measure an encoder. kNN and linear probes, transfer, t-SNE plots, positive hardness, FID.

Each evaluation is a library function returning its metrics dict and writing `metrics.json`
(schema: docs/metrics.md) into its output directory; `clsp eval ...` and `clsp fid` call them.
This package file stays import-free so that `clsp --help` does not load torch.
"""
