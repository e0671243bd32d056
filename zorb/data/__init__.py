"""Datasets of the ZORB paper, loaded with its preprocessing.

    from zorb.data import load_dataset
    ds = load_dataset("mnist", data_dir="data", flatten=True)

See docs/datasets.md for every name, its source, sizes and the on-disk layout.
"""

from zorb.data.dataset import Dataset
from zorb.data.registry import DATASETS, load_dataset

__all__ = ["DATASETS", "Dataset", "load_dataset"]
