"""Tiny MNIST and CIFAR files in their real on-disk formats, for tests.

``write_tiny_mnist`` writes the four IDX files and ``write_tiny_cifar`` the python
batches, both in the layout torchvision uses under a data_dir, so tests (including
end-to-end runner tests) read them through the real loading code. The CIFAR batches are
byte-for-byte the kind of pickle the real files are: protocol 2 as written by Python 2,
whose strings are byte strings.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

MNIST_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file's bytes for a uint8 array of 1 to 3 dimensions."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_bytes(path: Path, content: bytes, gz: bool = False) -> Path:
    """Write content to path (path + '.gz', gzipped, when gz); returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        content = gzip.compress(content)
    path.write_bytes(content)
    return path


def tiny_images(n: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """(n, *shape) random uint8 images that contain both 0 and 255 (so min-max is /255)."""
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[0, 0], flat[0, 1] = 0, 255
    return images


def tiny_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) int64 labels covering classes 0.. in turn, shuffled."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def write_tiny_mnist(data_dir, n_train: int = 20, n_test: int = 10, gz: bool = False,
                     name: str = "MNIST", seed: int = 0) -> dict:
    """Write <data_dir>/<name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].

    name: "MNIST" or "FashionMNIST" (torchvision's folder names).

    Returns a dict: x_train (n_train, 28, 28) uint8, labels_train (n_train,) int64,
    x_test, labels_test, dir (the raw folder) and paths (role -> Path written).
    """
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": tiny_images(n_train, (28, 28), rng),
        "train_labels": tiny_labels(n_train, 10, rng),
        "test_images": tiny_images(n_test, (28, 28), rng),
        "test_labels": tiny_labels(n_test, 10, rng),
    }
    raw_dir = Path(data_dir) / name / "raw"
    paths = {
        role: write_bytes(raw_dir / MNIST_STEMS[role], idx_bytes(arrays[role]), gz)
        for role in MNIST_STEMS
    }
    return {
        "x_train": arrays["train_images"], "labels_train": arrays["train_labels"],
        "x_test": arrays["test_images"], "labels_test": arrays["test_labels"],
        "dir": raw_dir, "paths": paths,
    }


# --- Python 2 style pickles (protocol 2, byte strings), as the CIFAR batches are ----------

def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])  # BININT1
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)  # BININT2
    return b"J" + struct.pack("<i", value)  # BININT


def _py2_string(value: bytes) -> bytes:
    if len(value) < 256:
        return b"U" + bytes([len(value)]) + value  # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(value)) + value  # BINSTRING


def _py2_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def _py2_ndarray(array: np.ndarray) -> bytes:
    """What numpy 1.x under Python 2 writes for an array: _reconstruct, then BUILD."""
    array = np.ascontiguousarray(array)
    byteorder = "|" if array.dtype.itemsize == 1 else "<"
    dtype = (
        _py2_global("numpy", "dtype")
        + b"(" + _py2_string(array.dtype.str[1:].encode()) + _py2_int(0) + _py2_int(1) + b"tR"
        + b"(" + _py2_int(3) + _py2_string(byteorder.encode()) + b"NNN"
        + b"J\xff\xff\xff\xffJ\xff\xff\xff\xff" + _py2_int(0) + b"tb"
    )
    shape = b"(" + b"".join(_py2_int(d) for d in array.shape) + b"t"
    return (
        _py2_global("numpy.core.multiarray", "_reconstruct")
        + _py2_global("numpy", "ndarray") + b"(" + _py2_int(0) + b"t" + _py2_string(b"b")
        + b"\x87R"  # TUPLE3, REDUCE
        + b"(" + _py2_int(1) + shape + dtype + b"\x89" + _py2_string(array.tobytes()) + b"tb"
    )


def _py2_value(obj) -> bytes:
    if isinstance(obj, np.ndarray):
        return _py2_ndarray(obj)
    if isinstance(obj, (bool, np.bool_)):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, (int, np.integer)):
        return _py2_int(int(obj))
    if isinstance(obj, str):
        return _py2_string(obj.encode())
    if isinstance(obj, bytes):
        return _py2_string(obj)
    if isinstance(obj, list):
        return b"](" + b"".join(_py2_value(v) for v in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2_value(k) + _py2_value(v) for k, v in obj.items()) + b"u"
    raise TypeError(f"py2_pickle does not write {type(obj).__name__}")


def py2_pickle(obj) -> bytes:
    """Pickle dicts, lists, ints, byte strings and numpy arrays as Python 2's cPickle
    (protocol 2) does, so that loading needs ``encoding="bytes"`` like real CIFAR."""
    return b"\x80\x02" + _py2_value(obj) + b"."


def cifar_batch(images: np.ndarray, labels: np.ndarray, kind: str, batch_label: str) -> dict:
    """A CIFAR batch dict (bytes keys) for (n, 32, 32, 3) uint8 NHWC images."""
    rows = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), -1)
    batch = {
        b"batch_label": batch_label.encode(),
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(images))],
        b"data": rows,
    }
    if kind == "cifar10":
        batch[b"labels"] = [int(v) for v in labels]
    else:
        batch[b"fine_labels"] = [int(v) for v in labels]
        batch[b"coarse_labels"] = [int(v) // 5 for v in labels]
    return batch


def write_tiny_cifar(data_dir, kind: str = "cifar10", n_train: int = 20, n_test: int = 10,
                     seed: int = 0) -> dict:
    """Write tiny CIFAR python batches in torchvision's layout under data_dir.

    cifar10: <data_dir>/cifar-10-batches-py/data_batch_1..5 (n_train split over the five)
    and test_batch; cifar100: <data_dir>/cifar-100-python/train and test.

    Returns a dict: x_train (n_train, 32, 32, 3) uint8 NHWC, labels_train (n_train,) int64,
    x_test, labels_test, dir (the folder), paths (list of files written).
    """
    if kind not in CIFAR_FOLDERS:
        raise ValueError(f"kind must be one of {sorted(CIFAR_FOLDERS)}, not {kind!r}")
    rng = np.random.default_rng(seed)
    num_classes = 10 if kind == "cifar10" else 100
    x_train = tiny_images(n_train, (32, 32, 3), rng)
    labels_train = tiny_labels(n_train, num_classes, rng)
    x_test = tiny_images(n_test, (32, 32, 3), rng)
    labels_test = tiny_labels(n_test, num_classes, rng)
    folder = Path(data_dir) / CIFAR_FOLDERS[kind]
    if kind == "cifar10":
        parts = np.array_split(np.arange(n_train), 5)
        files = {f"data_batch_{i + 1}": (part, f"training batch {i + 1} of 5")
                 for i, part in enumerate(parts)}
        train_batches = {
            file: cifar_batch(x_train[rows], labels_train[rows], kind, label)
            for file, (rows, label) in files.items()
        }
        test_batch = cifar_batch(x_test, labels_test, kind, "testing batch 1 of 1")
        test_batches = {"test_batch": test_batch}
    else:
        train_batches = {"train": cifar_batch(x_train, labels_train, kind, "training")}
        test_batches = {"test": cifar_batch(x_test, labels_test, kind, "testing")}
    paths = [write_bytes(folder / file, py2_pickle(batch))
             for file, batch in {**train_batches, **test_batches}.items()]
    return {
        "x_train": x_train, "labels_train": labels_train,
        "x_test": x_test, "labels_test": labels_test,
        "dir": folder, "paths": paths,
    }

PREPARE_DATA = Path(__file__).resolve().parents[1] / "scripts" / "prepare_data.py"
