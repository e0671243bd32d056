"""Image datasets read from their standard files: MNIST IDX and CIFAR python batches."""

from __future__ import annotations

import gzip
import os
import pickle
import re
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import idx_bytes, py2_pickle, write_bytes, write_tiny_cifar, write_tiny_mnist

from zorb.data import load_dataset
from zorb.data import images as images_module
from zorb.data.cifar import load_cifar_batch
from zorb.data.idx import IMAGES_MAGIC, read_idx
from zorb.errors import DataError

INSTALLED_DEBIAN_DIR = images_module.DEBIAN_FASHION_MNIST_DIR  # before any test patches it


@pytest.fixture(autouse=True)
def no_debian_fallback(monkeypatch, tmp_path_factory):
    """Keep a Debian-installed Fashion-MNIST out of these tests."""
    empty = tmp_path_factory.mktemp("no-debian")
    monkeypatch.setattr(images_module, "DEBIAN_FASHION_MNIST_DIR", str(empty))


def assert_scaled_images(x, raw_uint8, shape):
    assert x.dtype == np.float64 and x.flags.c_contiguous
    assert x.shape == shape
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(x, raw_uint8.astype(np.float64) / 255.0)


def assert_one_hot(y, labels, num_classes):
    assert y.dtype == np.float64 and y.shape == (labels.shape[0], num_classes)
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    np.testing.assert_array_equal(y.argmax(axis=1), labels)


# --- MNIST / Fashion-MNIST ------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_layout_loads(tmp_path, gz, name, folder):
    written = write_tiny_mnist(tmp_path, n_train=20, n_test=10, gz=gz, name=folder)
    ds = load_dataset(name, data_dir=tmp_path)
    assert ds.name == name and ds.task == "classification" and ds.num_classes == 10
    assert_scaled_images(ds.x_train, written["x_train"][..., None], (20, 28, 28, 1))
    assert_scaled_images(ds.x_test, written["x_test"][..., None], (10, 28, 28, 1))
    assert ds.labels_train.dtype == np.int64
    np.testing.assert_array_equal(ds.labels_train, written["labels_train"])
    np.testing.assert_array_equal(ds.labels_test, written["labels_test"])
    assert_one_hot(ds.y_train, written["labels_train"], 10)
    assert_one_hot(ds.y_test, written["labels_test"], 10)
    assert ds.input_shape == (28, 28, 1) and ds.output_dim == 10


def test_mnist_flatten(tmp_path):
    written = write_tiny_mnist(tmp_path, n_train=12, n_test=10)
    ds = load_dataset("mnist", data_dir=tmp_path, flatten=True)
    assert ds.x_train.shape == (12, 784) and ds.input_shape == (784,)
    assert ds.x_train.flags.c_contiguous
    np.testing.assert_array_equal(ds.x_train, written["x_train"].reshape(12, 784) / 255.0)


def test_plain_file_preferred_to_gz(tmp_path):
    """torchvision leaves both the .gz and the extracted file; either works."""
    write_tiny_mnist(tmp_path, gz=True, seed=0)
    plain = write_tiny_mnist(tmp_path, gz=False, seed=1)
    ds = load_dataset("mnist", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.x_train[..., 0] * 255.0, plain["x_train"])


def test_truncated_idx(tmp_path):
    written = write_tiny_mnist(tmp_path)
    path = written["paths"]["train_images"]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated") as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(err.value) and "prepare_data.py" in str(err.value)


def test_truncated_idx_header(tmp_path):
    path = write_bytes(tmp_path / "x", struct.pack(">I", IMAGES_MAGIC) + b"\0\0")
    with pytest.raises(DataError, match="truncated"):
        read_idx(path, IMAGES_MAGIC)


def test_trailing_bytes_idx(tmp_path):
    written = write_tiny_mnist(tmp_path)
    path = written["paths"]["test_labels"]
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match="trailing bytes"):
        load_dataset("mnist", data_dir=tmp_path)


def test_truncated_gzip(tmp_path):
    written = write_tiny_mnist(tmp_path, gz=True)
    path = written["paths"]["train_images"]
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="damaged gzip"):
        load_dataset("mnist", data_dir=tmp_path)


def test_wrong_magic(tmp_path):
    """A labels file where the images file should be."""
    written = write_tiny_mnist(tmp_path)
    labels = written["paths"]["train_labels"].read_bytes()
    written["paths"]["train_images"].write_bytes(labels)
    with pytest.raises(DataError, match=r"magic number 0x00000801, not 0x00000803"):
        load_dataset("mnist", data_dir=tmp_path)


def test_wrong_magic_gz(tmp_path):
    written = write_tiny_mnist(tmp_path, gz=True)
    path = written["paths"]["test_labels"]
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 20))
    with pytest.raises(DataError, match="not an IDX labels file"):
        load_dataset("mnist", data_dir=tmp_path)


def test_wrong_image_size(tmp_path):
    written = write_tiny_mnist(tmp_path)
    path = written["paths"]["test_images"]
    path.write_bytes(idx_bytes(np.zeros((10, 27, 28), np.uint8)))
    with pytest.raises(DataError, match="27x28 pixels, not 28x28"):
        load_dataset("mnist", data_dir=tmp_path)


def test_label_count_mismatch(tmp_path):
    written = write_tiny_mnist(tmp_path, n_train=20)
    written["paths"]["train_labels"].write_bytes(idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(DataError, match="19 labels for the 20 images"):
        load_dataset("mnist", data_dir=tmp_path)


def test_label_out_of_range(tmp_path):
    written = write_tiny_mnist(tmp_path, n_test=10)
    written["paths"]["test_labels"].write_bytes(idx_bytes(np.full(10, 10, np.uint8)))
    with pytest.raises(DataError, match="outside 0..9"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_missing_idx_files(tmp_path, name, folder):
    with pytest.raises(DataError) as err:
        load_dataset(name, data_dir=tmp_path)
    message = str(err.value)
    expected = tmp_path.absolute() / folder / "raw" / "train-images-idx3-ubyte"
    assert str(expected) in message
    assert f"python scripts/prepare_data.py {name} --data-dir {tmp_path}" in message
    assert "download=true" in message


def test_missing_one_idx_file(tmp_path):
    written = write_tiny_mnist(tmp_path)
    written["paths"]["test_labels"].unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", data_dir=tmp_path)


def test_fashion_mnist_debian_fallback(tmp_path, monkeypatch, caplog):
    """With <data_dir>/FashionMNIST/raw absent, the Debian package folder is read (and said
    once, where the files are read, not at each of a run's look-ups: its check and digest)."""
    written = write_tiny_mnist(tmp_path / "debian-root", gz=True, name="pkg")
    monkeypatch.setattr(images_module, "DEBIAN_FASHION_MNIST_DIR", str(written["dir"]))
    with caplog.at_level("INFO", logger="zorb.data.images"):
        images_module.check_image_files("fashion_mnist", tmp_path / "data")
        ds = load_dataset("fashion_mnist", data_dir=tmp_path / "data")
        images_module.image_files("fashion_mnist", tmp_path / "data")
    np.testing.assert_array_equal(ds.labels_train, written["labels_train"])
    said = [r.getMessage() for r in caplog.records if "reading the files" in r.getMessage()]
    assert said == [f"fashion_mnist: reading the files in {written['dir']}"], said
    with pytest.raises(DataError, match="Debian package dataset-fashion-mnist"):
        monkeypatch.setattr(images_module, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "none"))
        load_dataset("fashion_mnist", data_dir=tmp_path / "data")


def test_data_dir_layout_wins_over_debian(tmp_path, monkeypatch):
    debian = write_tiny_mnist(tmp_path / "debian-root", gz=True, name="pkg", seed=5)
    monkeypatch.setattr(images_module, "DEBIAN_FASHION_MNIST_DIR", str(debian["dir"]))
    local = write_tiny_mnist(tmp_path, name="FashionMNIST", seed=6)
    ds = load_dataset("fashion_mnist", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.labels_train, local["labels_train"])


def test_download_from_an_unreachable_mirror(tmp_path, monkeypatch):
    """download=true goes through pooch; a mirror nobody answers at is one sentence."""
    with socket.socket() as probe:  # a port on 127.0.0.1 that nothing listens on
        probe.bind(("127.0.0.1", 0))
        mirror = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    monkeypatch.setenv("ZORB_DATA_URL", mirror)
    with pytest.raises(DataError, match=re.escape(
            f"could not download {mirror}MNIST/raw/train-images-idx3-ubyte.gz (")) as error:
        load_dataset("mnist", data_dir=tmp_path, download=True)
    assert f"check that {mirror} serves the original files" in str(error.value)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing partial left


def test_download_skipped_when_files_present(tmp_path):
    """download=true with the files there reads them and downloads nothing."""
    write_tiny_mnist(tmp_path)
    assert load_dataset("mnist", data_dir=tmp_path, download=True).x_train.shape[0] == 20


# --- CIFAR -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_layout_loads(tmp_path, kind, classes):
    written = write_tiny_cifar(tmp_path, kind=kind, n_train=23, n_test=7)
    ds = load_dataset(kind, data_dir=tmp_path)
    assert ds.num_classes == classes and ds.task == "classification"
    assert_scaled_images(ds.x_train, written["x_train"], (23, 32, 32, 3))
    assert_scaled_images(ds.x_test, written["x_test"], (7, 32, 32, 3))
    np.testing.assert_array_equal(ds.labels_train, written["labels_train"])
    np.testing.assert_array_equal(ds.labels_test, written["labels_test"])
    assert_one_hot(ds.y_train, written["labels_train"], classes)
    assert_one_hot(ds.y_test, written["labels_test"], classes)


def test_cifar_rows_are_channel_major(tmp_path):
    """Row layout: 1024 red, then green, then blue bytes; NHWC after loading."""
    red = np.zeros((1, 32, 32, 3), np.uint8)
    red[..., 0] = 255
    data = np.concatenate([np.full(1024, 255), np.zeros(2048)]).astype(np.uint8)[None]
    path = write_bytes(tmp_path / "batch", py2_pickle({b"data": data, b"labels": [3]}))
    images, labels = load_cifar_batch(path, b"labels")
    np.testing.assert_array_equal(images, red)
    assert images.flags.c_contiguous and labels.tolist() == [3]


def test_cifar_flatten(tmp_path):
    written = write_tiny_cifar(tmp_path, n_train=10, n_test=5)
    ds = load_dataset("cifar10", data_dir=tmp_path, flatten=True)
    assert ds.x_test.shape == (5, 3072)
    np.testing.assert_array_equal(ds.x_test, written["x_test"].reshape(5, -1) / 255.0)


def test_cifar_python3_pickle_accepted(tmp_path):
    """A batch re-saved by Python 3 (any protocol, str keys) holds plain data too."""
    written = write_tiny_cifar(tmp_path, n_train=10, n_test=5)
    for protocol in (2, 4, 5):
        data = written["x_test"].transpose(0, 3, 1, 2).reshape(5, -1)
        batch = {"data": data, "labels": written["labels_test"].tolist()}
        path = write_bytes(tmp_path / f"p{protocol}", pickle.dumps(batch, protocol=protocol))
        if protocol == 2:
            # Python 3 writes protocol 2 bytes through _codecs.encode, which is refused.
            with pytest.raises(DataError, match="_codecs.encode"):
                load_cifar_batch(path, b"labels")
            continue
        images, labels = load_cifar_batch(path, b"labels")
        np.testing.assert_array_equal(images, written["x_test"])


def test_cifar_wrong_shape(tmp_path):
    written = write_tiny_cifar(tmp_path)
    path = written["dir"] / "test_batch"
    path.write_bytes(py2_pickle({b"data": np.zeros((10, 3000), np.uint8), b"labels": [0] * 10}))
    with pytest.raises(DataError, match=r"shape \(10, 3000\).*not \(n, 3072\) uint8"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_wrong_dtype(tmp_path):
    written = write_tiny_cifar(tmp_path, kind="cifar100")
    path = written["dir"] / "test"
    batch = {b"data": np.zeros((10, 3072), np.int32), b"fine_labels": [0] * 10}
    path.write_bytes(py2_pickle(batch))
    with pytest.raises(DataError, match="int32"):
        load_dataset("cifar100", data_dir=tmp_path)


def test_cifar_label_count_mismatch(tmp_path):
    written = write_tiny_cifar(tmp_path)
    path = written["dir"] / "test_batch"
    path.write_bytes(py2_pickle({b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9}))
    with pytest.raises(DataError, match="for 10 images"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar100_needs_fine_labels(tmp_path):
    written = write_tiny_cifar(tmp_path, kind="cifar100")
    path = written["dir"] / "train"
    path.write_bytes(py2_pickle({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DataError, match="no fine_labels entry"):
        load_dataset("cifar100", data_dir=tmp_path)


def test_cifar_truncated(tmp_path):
    written = write_tiny_cifar(tmp_path)
    path = written["dir"] / "data_batch_3"
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(DataError, match="not a readable CIFAR batch") as err:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_cifar_not_a_dict(tmp_path):
    written = write_tiny_cifar(tmp_path)
    (written["dir"] / "test_batch").write_bytes(py2_pickle([1, 2, 3]))
    with pytest.raises(DataError, match="holds a list, not a CIFAR batch"):
        load_dataset("cifar10", data_dir=tmp_path)


@pytest.mark.parametrize("kind, folder, first", [
    ("cifar10", "cifar-10-batches-py", "data_batch_1"),
    ("cifar100", "cifar-100-python", "train"),
])
def test_missing_cifar_files(tmp_path, kind, folder, first):
    with pytest.raises(DataError) as err:
        load_dataset(kind, data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path.absolute() / folder / first) in message
    assert f"scripts/prepare_data.py {kind} --data-dir" in message


def test_cifar_missing_one_batch(tmp_path):
    written = write_tiny_cifar(tmp_path)
    (written["dir"] / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4"):
        load_dataset("cifar10", data_dir=tmp_path)


# --- a CIFAR batch that would run code -----------------------------------------------

class _RunsExec:
    """Unpickling calls builtins.exec with code that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


class _RunsSystem:
    """Unpickling calls os.system to create a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize("payload", [_RunsExec, _RunsSystem])
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_cifar_batch_refused(tmp_path, payload, protocol):
    written = write_tiny_cifar(tmp_path, n_train=10, n_test=5)
    marker = tmp_path / "marker"
    # str keys: Python 3 pickles bytes at protocol 2 through _codecs.encode, refused first.
    batch = {"data": payload(marker), "labels": [0] * 5}
    path = written["dir"] / "test_batch"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    # The refused name: builtins.exec (__builtin__.exec at protocol 2) or posix.system.
    with pytest.raises(DataError, match=r"pickled \S+\.(exec|system) and not only plain data"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()


def test_malicious_payload_is_live(tmp_path):
    """The crafted pickle does run its code under a plain unpickler: the test is real."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps({b"data": _RunsExec(marker)}))
    assert marker.exists()


def test_other_globals_refused(tmp_path):
    """Even a harmless class outside the allowlist is refused."""
    from collections import OrderedDict

    path = write_bytes(tmp_path / "b", pickle.dumps(OrderedDict(data=1), protocol=2))
    with pytest.raises(DataError, match="collections.OrderedDict"):
        load_cifar_batch(path, b"labels")


@pytest.mark.slow
def test_debian_fashion_mnist_full_size(monkeypatch, tmp_path):
    """The real files of Debian's dataset-fashion-mnist, where that package is installed."""
    monkeypatch.setattr(images_module, "DEBIAN_FASHION_MNIST_DIR", INSTALLED_DEBIAN_DIR)
    if images_module.find_idx_files(Path(images_module.DEBIAN_FASHION_MNIST_DIR)) is None:
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    ds = load_dataset("fashion_mnist", data_dir=tmp_path, flatten=True)
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert np.bincount(ds.labels_train).tolist() == [6000] * 10
    assert np.bincount(ds.labels_test).tolist() == [1000] * 10
