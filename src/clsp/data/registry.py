"""The dataset registry: each loader module registers its datasets here by name (`@register`), and
clsp.data.catalogue loads them by name. A leaf: it imports no other data module, so the loaders and the
catalogue both import it without a circle. What a dataset is (its files, splits, classes, normalisation)
stays beside its loader.
"""

from __future__ import annotations

from typing import Any, Callable

from clsp.errors import UserError

Loader = Callable[..., Any]  # (split, root, size, **options) -> an ImageSource (clsp.data.sets)
LOADERS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        LOADERS[name] = fn
        return fn
    return deco


def check_split(name: str, split: str, splits: tuple[str, ...]) -> None:
    if split not in splits:
        raise UserError(f"dataset '{name}' has no split '{split}'; choose one of {', '.join(splits)}")
