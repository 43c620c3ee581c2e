"""The paper's reported numbers (PAPER.md, "Reported numbers"), as data the report sets beside a run.

Keys are this project's run names (`simclr`, `moco`, `simclr-clsp`, ...), so a paper preset's
results table can show, row by row, what the paper reports for the same method and variant.
All values are top-1 accuracy in percent, ResNet-18, linear evaluation.
"""

from __future__ import annotations

CITATION = "Zeng et al., Contrastive Learning with Synthetic Positives, ECCV 2024 (arXiv 2408.16965)"

# Linear evaluation top-1 (paper, ResNet-18), per pretraining dataset.
LINEAR_TOP1: dict[str, dict[str, float]] = {
    "cifar10": {"simclr": 91.47, "moco": 92.94, "nnclr": 91.88, "all4one": 93.24, "simclr-clsp": 94.37, "moco-clsp": 94.41},
    "cifar100": {"simclr": 65.78, "moco": 69.89, "nnclr": 69.62, "all4one": 72.17, "simclr-clsp": 72.01, "moco-clsp": 71.76},
    "stl10": {"simclr": 90.63, "moco": 92.20, "nnclr": 90.78, "all4one": 92.21, "simclr-clsp": 93.74, "moco-clsp": 93.69},
    "imagenet100": {"simclr": 75.75, "moco": 78.00, "nnclr": 77.43, "all4one": 79.09, "simclr-clsp": 79.62, "moco-clsp": 79.11},
}

# The release's re-runs (code README, 1000 epochs, ResNet-18): offline linear top-1 and best-k kNN top-1
# (SupCon: its "Supervised Contrastive learning" table, linear only).
RELEASE_LINEAR_TOP1: dict[str, dict[str, float]] = {
    "cifar10": {"simclr": 91.54, "moco": 92.29, "simclr-clsp": 94.45, "moco-clsp": 94.62, "simclr-aug": 91.88, "moco-aug": 93.16,
                "supcon": 94.61},
    "cifar100": {"simclr": 68.10, "moco": 68.91, "simclr-clsp": 72.41, "moco-clsp": 72.33, "supcon": 73.89},
}
RELEASE_KNN_TOP1: dict[str, dict[str, float]] = {
    "cifar10": {"simclr": 91.05, "moco": 91.74, "simclr-clsp": 94.10, "moco-clsp": 94.01},
    "cifar100": {"simclr": 66.24, "moco": 68.11, "simclr-clsp": 70.88, "moco-clsp": 70.13},
}

# Transfer: pretrained on STL-10, linear evaluation on each downstream set (6 of the paper's 8 sets).
TRANSFER_TOP1: dict[str, dict[str, float]] = {
    "nnclr": {"cifar10": 81.60, "cifar100": 53.94, "pets": 56.31, "flowers102": 61.93, "dtd": 43.51, "caltech101": 78.24},
    "all4one": {"cifar10": 83.33, "cifar100": 55.49, "pets": 56.65, "flowers102": 57.52, "dtd": 46.13, "caltech101": 76.62},
    "simclr-clsp": {"cifar10": 84.98, "cifar100": 56.83, "pets": 56.75, "flowers102": 57.52, "dtd": 46.76, "caltech101": 80.01},
    "moco-clsp": {"cifar10": 86.58, "cifar100": 57.97, "pets": 55.82, "flowers102": 50.20, "dtd": 44.68, "caltech101": 79.42},
}

PAPER_RUNS = ("cifar10", "cifar100", "stl10", "imagenet100", "transfer")


def paper_linear(paper: str, run_name: str) -> float | None:
    """The paper's linear top-1 for a run name on a paper preset, or None when it reports none.
    The transfer preset pretrains on STL-10, so its own linear numbers are STL-10's."""
    dataset = "stl10" if paper == "transfer" else paper
    return LINEAR_TOP1.get(dataset, {}).get(run_name)


def release_linear(paper: str, run_name: str) -> float | None:
    return RELEASE_LINEAR_TOP1.get(paper, {}).get(run_name)


def release_knn(paper: str, run_name: str) -> float | None:
    return RELEASE_KNN_TOP1.get(paper, {}).get(run_name)


def paper_transfer(run_name: str, dataset: str) -> float | None:
    return TRANSFER_TOP1.get(run_name, {}).get(dataset)
