"""Datasets as objects: ``zorb.datasets.MNIST()`` and one function per dataset ``zorb.data``
knows, each returning a ``Data`` with ``train_x``, ``train_y``, ``test_x``, ``test_y`` and
``dimensions``. The loading is ``zorb.data.load_dataset``'s (files, subsets, scaling, one-hot).

    data = zorb.datasets.MNIST(data_dir="data")
    data.dimensions   # {"train": {"input": (28, 28, 1), "output": (10,)}, "test": {...}}
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, eq=False)
class Data:
    """Both splits of a dataset; ``dataset`` is the ``zorb.data.Dataset`` they come from."""

    dataset: Any

    @property
    def train_x(self):
        return self.dataset.x_train

    @property
    def train_y(self):
        return self.dataset.y_train

    @property
    def test_x(self):
        return self.dataset.x_test

    @property
    def test_y(self):
        return self.dataset.y_test

    @property
    def task(self) -> str:
        return self.dataset.task

    @property
    def dimensions(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """Input and output shape (no sample axis) of each split."""
        return {split: {"input": tuple(getattr(self, f"{split}_x").shape[1:]),
                        "output": tuple(getattr(self, f"{split}_y").shape[1:])} for split in ("train", "test")}


def load(name: str, *, data_dir: str = "data", seed: int = 0, **options) -> Data:
    """The dataset ``name`` (``zorb.data.DATASETS``) with ``zorb.data.load_dataset``'s options."""
    from zorb.data import load_dataset

    return Data(load_dataset(name, data_dir=data_dir, seed=seed, **options))


def _loader(function: str, name: str):
    def loader(*, data_dir: str = "data", seed: int = 0, **options) -> Data:
        return load(name, data_dir=data_dir, seed=seed, **options)

    loader.__name__ = loader.__qualname__ = function
    loader.__doc__ = (f"The ``{name}`` dataset (docs/datasets.md); options as ``zorb.data.load_dataset`` "
                      f"(train_samples, test_samples, balanced, replace, flatten, download).")
    return loader


MNIST = _loader("MNIST", "mnist")
FashionMNIST = _loader("FashionMNIST", "fashion_mnist")
CIFAR10 = _loader("CIFAR10", "cifar10")
CIFAR100 = _loader("CIFAR100", "cifar100")
MNIST5k = _loader("MNIST5k", "mnist_5k")
Digits = _loader("Digits", "digits")
Iris = _loader("Iris", "iris")
Boston = _loader("Boston", "boston")
Sinc = _loader("Sinc", "sinc")
XOR = _loader("XOR", "xor")
TwoSpirals = _loader("TwoSpirals", "two_spirals")

__all__ = ["Data", "load", "MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "MNIST5k", "Digits", "Iris", "Boston",
           "Sinc", "XOR", "TwoSpirals"]
