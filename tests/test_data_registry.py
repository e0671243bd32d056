"""The public contract of load_dataset across every registered dataset."""

from __future__ import annotations

import numpy as np
import pytest
from data_fixtures import write_tiny_cifar, write_tiny_mnist

from zorb.data import DATASETS, Dataset, load_dataset
from zorb.data import registry
from zorb.data.dataset import RawData
from zorb.errors import ConfigError, DataError

EXPECTED_NAMES = {
    "mnist", "fashion_mnist", "cifar10", "cifar100",
    "mnist_5k", "digits", "iris", "boston", "sinc", "sinc_symmetric", "xor", "two_spirals",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_tiny_mnist(root, name="MNIST")
    write_tiny_mnist(root, name="FashionMNIST", gz=True)
    write_tiny_cifar(root, kind="cifar10")
    write_tiny_cifar(root, kind="cifar100")
    return root


def test_registry_names():
    assert set(DATASETS) == EXPECTED_NAMES


def test_unknown_name_lists_known():
    with pytest.raises(ConfigError, match="unknown dataset 'mnits'; choose one of: boston, "):
        load_dataset("mnits")


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_contract(name, data_dir):
    ds = load_dataset(name, data_dir=data_dir)
    assert isinstance(ds, Dataset) and ds.name == name
    for array in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        assert isinstance(array, np.ndarray) and array.dtype == np.float64
        assert array.flags.c_contiguous and np.all(np.isfinite(array))
    assert ds.y_train.ndim == ds.y_test.ndim == 2
    assert ds.x_train.shape[0] == ds.y_train.shape[0]
    assert ds.x_test.shape[0] == ds.y_test.shape[0]
    assert ds.input_shape == ds.x_test.shape[1:] and ds.output_dim == ds.y_test.shape[1]
    if ds.task == "regression":
        assert ds.num_classes is None and ds.labels_train is None and ds.labels_test is None
    else:
        assert ds.labels_train.dtype == ds.labels_test.dtype == np.int64
        assert ds.labels_train.shape == (ds.x_train.shape[0],)
        expected_width = 1 if ds.task == "binary" else ds.num_classes
        assert ds.output_dim == expected_width
    flat = load_dataset(name, data_dir=data_dir, flatten=True)
    assert flat.x_train.ndim == 2 and flat.x_train.flags.c_contiguous
    np.testing.assert_array_equal(flat.x_train, ds.x_train.reshape(ds.x_train.shape[0], -1))


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0"])
def test_bad_seed(seed):
    with pytest.raises(ConfigError, match="seed must be an integer"):
        load_dataset("iris", seed=seed)


def _fake_loader(x_train, target_train, task="regression", num_classes=None):
    def load(data_dir, seed, download):
        return RawData(x_train, target_train, x_train, target_train, task, num_classes, True)
    return load


def test_nan_in_inputs(monkeypatch):
    x = np.ones((4, 2))
    x[1, 1] = np.nan
    monkeypatch.setitem(registry.DATASETS, "fake", _fake_loader(x, np.ones((4, 1))))
    with pytest.raises(DataError, match="1 NaN or infinite value"):
        load_dataset("fake")


def test_nan_in_targets(monkeypatch):
    y = np.ones((4, 1))
    y[2, 0] = np.nan
    monkeypatch.setitem(registry.DATASETS, "fake", _fake_loader(np.ones((4, 2)), y))
    with pytest.raises(DataError, match="training targets"):
        load_dataset("fake")


def test_labels_out_of_range(monkeypatch):
    loader = _fake_loader(np.ones((4, 2)), np.array([0, 1, 2, 3]), "classification", 3)
    monkeypatch.setitem(registry.DATASETS, "fake", loader)
    with pytest.raises(DataError, match="outside 0..2"):
        load_dataset("fake")


def test_constant_inputs_scale_to_zero(monkeypatch):
    loader = _fake_loader(np.full((4, 2), 7.0), np.zeros((4, 1)))
    monkeypatch.setitem(registry.DATASETS, "fake", loader)
    ds = load_dataset("fake")
    np.testing.assert_array_equal(ds.x_train, 0.0)


def test_data_dir_accepts_str(data_dir):
    assert load_dataset("mnist", data_dir=str(data_dir)).x_train.shape == (20, 28, 28, 1)
