"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 from their standard files.

The files live under ``data_dir`` in the layout torchvision's dataset classes use, so a
directory torchvision filled works as is; ``download=True`` fills it with pooch
(zorb.data.download):

    <data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    <data_dir>/FashionMNIST/raw/  (same four names)
    <data_dir>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
    <data_dir>/cifar-100-python/train, test
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zorb.data.cifar import load_cifar_batch
from zorb.data.dataset import RawData
from zorb.data.idx import read_idx_images, read_idx_labels
from zorb.errors import DataError

log = logging.getLogger(__name__)

IMAGE_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")

# Where Debian's package dataset-fashion-mnist installs the four gzipped IDX files: the
# one machine path the project knows, searched only when <data_dir>/FashionMNIST/raw is
# incomplete.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
IDX_IMAGE_SIZE = (28, 28)
IDX_NUM_CLASSES = 10


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and which labels it uses."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    num_classes: int


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        b"labels",
        10,
    ),
    "cifar100": CifarLayout("cifar-100-python", ("train",), ("test",), b"fine_labels", 100),
}

class MissingDataFiles(DataError):
    """The standard files of an image dataset are not (all) in data_dir."""


def fetch_command(name: str, data_dir: Path) -> str:
    """The shell command that fetches dataset ``name`` into ``data_dir``."""
    return f"python scripts/prepare_data.py {name} --data-dir {data_dir}"


def dataset_dir(name: str, data_dir: Path) -> Path:
    """The folder under data_dir that holds dataset ``name``'s files (torchvision layout)."""
    if name in IDX_FOLDERS:
        return Path(data_dir) / IDX_FOLDERS[name] / "raw"
    return Path(data_dir) / CIFAR_LAYOUTS[name].folder


def _missing(name: str, data_dir: Path, shown_path: str) -> MissingDataFiles:
    debian = (
        f", or install the Debian package {DEBIAN_FASHION_MNIST_PACKAGE}"
        if name == "fashion_mnist"
        else ""
    )
    return MissingDataFiles(
        f"{name} needs {shown_path}, which does not exist; fetch it with "
        f"`{fetch_command(name, data_dir)}` or set download=true{debian}"
    )


def idx_search_dirs(name: str, data_dir: Path, fallback: bool = True) -> list[Path]:
    """Folders searched, in order, for the four IDX files of mnist or fashion_mnist.

    fallback: also search the Debian package's folder (fashion_mnist only).
    """
    dirs = [dataset_dir(name, data_dir)]
    if fallback and name == "fashion_mnist":
        dirs.append(Path(DEBIAN_FASHION_MNIST_DIR))
    return dirs


def find_idx_files(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in ``directory`` (plain preferred to .gz), or None if any lacks."""
    found = {}
    for role, stem in IDX_FILES.items():
        candidates = [directory / stem, directory / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found[role] = path
    return found


def locate_idx_files(name: str, data_dir: Path, fallback: bool = True) -> dict[str, Path]:
    """The four IDX files of ``name`` from the first folder that has all of them."""
    for directory in idx_search_dirs(name, data_dir, fallback):
        found = find_idx_files(directory)
        if found is not None:
            return found
    primary = dataset_dir(name, data_dir).absolute()
    first_missing = next(
        stem for stem in IDX_FILES.values()
        if not ((primary / stem).is_file() or (primary / f"{stem}.gz").is_file())
    )
    raise _missing(name, data_dir, f"{primary / first_missing}[.gz]")


def _idx_split(name: str, images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check one split: (n, 28, 28, 1) uint8 images, (n,) int64 labels."""
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if images.shape[1:] != IDX_IMAGE_SIZE:
        raise DataError(
            f"{images_path} holds images of {images.shape[1]}x{images.shape[2]} pixels, "
            f"not 28x28, so it is not a {name} file; replace it with the original file"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{labels_path} has {labels.shape[0]} labels for the {images.shape[0]} images of "
            f"{images_path}; replace both with matching original files"
        )
    if labels.size and labels.max() >= IDX_NUM_CLASSES:
        raise DataError(
            f"{labels_path} has label {int(labels.max())}, outside 0..9; "
            "replace it with the original file"
        )
    return images[..., np.newaxis], labels.astype(np.int64)


def read_idx_dataset(name: str, data_dir: Path, fallback: bool = True) -> RawData:
    """mnist or fashion_mnist from data_dir (or, for fashion_mnist, the Debian package)."""
    files = locate_idx_files(name, data_dir, fallback)
    folder = files["train_images"].parent
    if folder != dataset_dir(name, data_dir):  # said where the files are read, not where looked up
        log.info("%s: reading the files in %s", name, folder)
    x_train, t_train = _idx_split(name, files["train_images"], files["train_labels"])
    x_test, t_test = _idx_split(name, files["test_images"], files["test_labels"])
    return RawData(x_train, t_train, x_test, t_test, "classification", IDX_NUM_CLASSES, True)


def _cifar_split(layout: CifarLayout, folder: Path, names: tuple[str, ...]):
    """Concatenate batches: (n, 32, 32, 3) uint8 images and (n,) int64 labels."""
    parts = [load_cifar_batch(folder / file, layout.label_key) for file in names]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise DataError(
            f"{folder} holds labels {int(labels.min())}..{int(labels.max())}, outside "
            f"0..{layout.num_classes - 1}; replace it with the original CIFAR files"
        )
    return images, labels


def check_cifar_files(name: str, data_dir: Path) -> None:
    """MissingDataFiles naming the first of cifar10's or cifar100's batches absent from data_dir."""
    layout = CIFAR_LAYOUTS[name]
    folder = dataset_dir(name, data_dir)
    for file in layout.train_files + layout.test_files:
        if not (folder / file).is_file():
            raise _missing(name, data_dir, str((folder / file).absolute()))


def check_image_files(name: str, data_dir: Path, fallback: bool = True) -> None:
    """MissingDataFiles, with the sentence a run would give, unless every standard file of
    ``name`` (one of IMAGE_DATASETS) is present; reads nothing."""
    if name in IDX_FOLDERS:
        locate_idx_files(name, data_dir, fallback)
    else:
        check_cifar_files(name, data_dir)


def image_files(name: str, data_dir: Path, fallback: bool = True) -> list[Path]:
    """The standard files ``name`` is read from, and the modules that read them;
    MissingDataFiles if any is absent."""
    check_image_files(name, data_dir, fallback)
    if name in IDX_FOLDERS:
        files = list(locate_idx_files(name, data_dir, fallback).values())
    else:
        layout = CIFAR_LAYOUTS[name]
        files = [dataset_dir(name, data_dir) / file for file in layout.train_files + layout.test_files]
    return files + [Path(__file__), Path(read_idx_images.__code__.co_filename),
                    Path(load_cifar_batch.__code__.co_filename)]


def read_cifar_dataset(name: str, data_dir: Path) -> RawData:
    """cifar10 or cifar100 from the python batches under data_dir."""
    layout = CIFAR_LAYOUTS[name]
    folder = dataset_dir(name, data_dir)
    check_cifar_files(name, data_dir)
    x_train, t_train = _cifar_split(layout, folder, layout.train_files)
    x_test, t_test = _cifar_split(layout, folder, layout.test_files)
    return RawData(x_train, t_train, x_test, t_test, "classification", layout.num_classes, True)


def read_image_dataset(name: str, data_dir: Path, fallback: bool = True) -> RawData:
    """Read one of IMAGE_DATASETS from its standard files; MissingDataFiles if absent.

    fallback: let fashion_mnist come from the Debian package when data_dir lacks it.
    """
    if name in IDX_FOLDERS:
        return read_idx_dataset(name, data_dir, fallback)
    return read_cifar_dataset(name, data_dir)


def copy_debian_fashion_mnist(data_dir: Path) -> list[Path]:
    """Copy the Debian package's Fashion-MNIST files into <data_dir>/FashionMNIST/raw."""
    sources = [Path(DEBIAN_FASHION_MNIST_DIR) / f"{stem}.gz" for stem in IDX_FILES.values()]
    absent = next((src for src in sources if not src.is_file()), None)
    if absent is not None:
        raise DataError(
            f"{absent} does not exist; install it with "
            f"`apt-get install {DEBIAN_FASHION_MNIST_PACKAGE}` or fetch fashion_mnist "
            "without --from-debian"
        )
    target = dataset_dir("fashion_mnist", data_dir)
    target.mkdir(parents=True, exist_ok=True)
    copied = [Path(shutil.copy2(src, target / src.name)) for src in sources]
    return copied


def image_loader(name: str):
    """The registry loader of one image dataset: (data_dir, seed, download) -> RawData.

    The seed plays no part: these datasets come with a fixed train/test split.
    """

    def load(data_dir: Path, seed: int, download: bool) -> RawData:
        try:
            return read_image_dataset(name, data_dir)
        except MissingDataFiles:
            if not download:
                raise
        # Imported here: zorb.data.download builds on this module's layout.
        from zorb.data.download import download_with_pooch

        download_with_pooch(name, data_dir)
        return read_image_dataset(name, data_dir)

    load.__name__ = f"load_{name}"
    load.__doc__ = f"{name} from its standard files under data_dir (seed unused)."
    return load
