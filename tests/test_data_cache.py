"""Parsed datasets kept as .npy (zorb.data.cache): the same arrays as a fresh parse, read back
without calling the loader, rebuilt when a source file changes or an entry is damaged."""

from __future__ import annotations

import numpy as np
import pytest

from zorb.data import registry
from zorb.data.dataset import RawData

FIELDS = ("x_train", "y_train", "x_test", "y_test", "labels_train", "labels_test")


def same(a, b) -> bool:
    return all((getattr(a, f) is None and getattr(b, f) is None) or np.array_equal(getattr(a, f), getattr(b, f))
               for f in FIELDS) and (a.task, a.num_classes) == (b.task, b.num_classes)


@pytest.fixture
def counted(monkeypatch):
    """Wrap the registry's loaders so that each call is counted by dataset name."""
    calls: dict[str, int] = {}
    for name, loader in list(registry.DATASETS.items()):
        def counting(data_dir, seed, download, loader=loader, name=name):
            calls[name] = calls.get(name, 0) + 1
            return loader(data_dir, seed, download)
        monkeypatch.setitem(registry.DATASETS, name, counting)
    return calls


@pytest.mark.parametrize("name, seed", [("iris", 3), ("two_spirals", 1), ("boston", 0), ("digits", 2)])
def test_cached_load_equals_a_fresh_parse(tmp_path, counted, name, seed):
    fresh = registry.load_dataset(name, seed=seed)
    first = registry.load_dataset(name, seed=seed, cache_dir=tmp_path)
    second = registry.load_dataset(name, seed=seed, train_samples=20, cache_dir=tmp_path)
    assert counted[name] == 2  # the fresh load and the first cached one; the second read the .npy files
    assert same(first, fresh)
    assert same(second, registry.load_dataset(name, seed=seed, train_samples=20))
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}-seed{seed}" if registry.CACHED[name][1] else name]


def test_another_seed_is_another_entry(tmp_path, counted):
    a = registry.load_dataset("iris", seed=0, cache_dir=tmp_path)
    b = registry.load_dataset("iris", seed=1, cache_dir=tmp_path)
    assert counted["iris"] == 2 and not np.array_equal(a.x_train, b.x_train)


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """A dataset ``toy`` parsed from one text file, cached by that file."""
    source = tmp_path / "toy.txt"
    source.write_text("1 2\n3 4\n")
    calls = []

    def load(data_dir, seed, download):
        calls.append(seed)
        x = np.loadtxt(source, ndmin=2)
        return RawData(x, x[:, :1], x, x[:, :1], "regression", None, False)

    monkeypatch.setitem(registry.DATASETS, "toy", load)
    monkeypatch.setitem(registry.CACHED, "toy", (lambda data_dir: [source], False))
    return source, calls


def test_a_changed_source_is_parsed_again(tmp_path, toy):
    source, calls = toy
    cache = tmp_path / "cache"
    assert registry.load_dataset("toy", cache_dir=cache).x_train.tolist() == [[1, 2], [3, 4]]
    assert registry.load_dataset("toy", cache_dir=cache).x_train.tolist() == [[1, 2], [3, 4]]
    assert len(calls) == 1
    source.write_text("1 2\n3 4\n5 6\n")
    assert registry.load_dataset("toy", cache_dir=cache).x_train.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert len(calls) == 2
    assert [p.name for p in cache.iterdir()] == ["toy"]  # the stale entry replaced, no temporary left


def test_a_damaged_entry_is_rebuilt(tmp_path, toy):
    _, calls = toy
    cache = tmp_path / "cache"
    registry.load_dataset("toy", cache_dir=cache)
    (cache / "toy" / "x_train.npy").write_bytes(b"not an array")
    assert registry.load_dataset("toy", cache_dir=cache).x_train.tolist() == [[1, 2], [3, 4]]
    assert len(calls) == 2
    assert np.load(cache / "toy" / "x_train.npy").tolist() == [[1, 2], [3, 4]]
