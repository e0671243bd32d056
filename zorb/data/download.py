"""Fetching the standard files of mnist, fashion_mnist, cifar10 and cifar100 into data_dir.

The default route is pooch: every file is downloaded to a temporary name beside its place,
its md5 checked against STANDARD_FILES, and only then moved into place (a transfer that
fails is retried RETRIES times); CIFAR's archive is then unpacked with pooch's Untar. The
files land in the layout zorb.data.images reads, the one torchvision uses:

    <data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   (read gzipped)
    <data_dir>/FashionMNIST/raw/  (the same four names)
    <data_dir>/cifar-10-python.tar.gz   -> <data_dir>/cifar-10-batches-py/
    <data_dir>/cifar-100-python.tar.gz  -> <data_dir>/cifar-100-python/

A mirror serves the same paths under its base URL (``base_url``, or the environment
variable ZORB_DATA_URL), so a data_dir filled here is itself a mirror for other machines:
``python -m http.server --directory data``. torchvision (the extra ``vision``) remains the
other route.
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pooch
import requests

from zorb.data.images import CIFAR_LAYOUTS, IDX_FILES, dataset_dir
from zorb.errors import DataError

DATA_URL_ENV = "ZORB_DATA_URL"
RETRIES = 2  # further attempts after a failed transfer or a checksum mismatch


@dataclass(frozen=True)
class StandardFile:
    """One published file: ``path`` under data_dir (and under a mirror's base URL), the
    ``url`` its authors publish it at, and ``known_hash`` as pooch reads it ("md5:<hex>")."""

    path: str
    url: str
    known_hash: str


def _idx_files(name: str, base_url: str, md5: dict[str, str]) -> tuple[StandardFile, ...]:
    """The four gzipped IDX files of mnist or fashion_mnist; md5 maps IDX_FILES' roles."""
    folder = dataset_dir(name, Path()).as_posix()
    return tuple(
        StandardFile(f"{folder}/{stem}.gz", f"{base_url}{stem}.gz", f"md5:{md5[role]}")
        for role, stem in IDX_FILES.items()
    )


# The checksums are the ones torchvision's dataset classes check for these exact files.
STANDARD_FILES: dict[str, tuple[StandardFile, ...]] = {
    "mnist": _idx_files("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
        "test_images": "9fb629c4189551a2d022fa330f9573f3",
        "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
    # Zalando's S3 website endpoint, which answers over http only.
    "fashion_mnist": _idx_files(
        "fashion_mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
            "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
            "test_images": "bef4ecab320f06d8554ea6380940ec79",
            "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
        }),
    "cifar10": (StandardFile(
        "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5:c58f30108f718f92721af3b95e74349a"),),
    "cifar100": (StandardFile(
        "cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5:eb9058c3a382ffc7106e4002c42a8d85"),),
}

# pooch's sentence for a checksum mismatch (pooch.hashes.hash_matches).
_MISMATCH = re.compile(r"but got (?P<got>[0-9a-fA-F]+)")


def _unpacker(name: str) -> pooch.Untar | None:
    """pooch's Untar for a CIFAR archive: only the batches zorb reads, into data_dir.

    Listing the batches (not their folder) makes Untar unpack again whenever one of them is
    missing, even when the archive itself needs no download."""
    if name not in CIFAR_LAYOUTS:
        return None
    layout = CIFAR_LAYOUTS[name]
    members = [f"{layout.folder}/{file}" for file in layout.train_files + layout.test_files]
    return pooch.Untar(members=members, extract_dir=".")


def download_with_pooch(name: str, data_dir: Path, base_url: str | None = None) -> None:
    """Fetch the standard files of ``name`` (one of IMAGE_DATASETS) into data_dir.

    base_url: a mirror holding the files at their ``path`` under it (default: the
        environment variable ZORB_DATA_URL, else each file's published ``url``).

    STANDARD_FILES[name] says what to fetch (tests put their own files in it). Files
    already in place with the right checksum are not downloaded again. Raises
    DataError, with nothing of the failed file left in place, when a transfer fails or
    what arrives does not match its checksum.
    """
    files = STANDARD_FILES[name]
    base_url = base_url or os.environ.get(DATA_URL_ENV) or None
    fetcher = pooch.create(
        path=Path(data_dir), base_url=base_url or "",
        registry={file.path: file.known_hash for file in files},
        urls={} if base_url else {file.path: file.url for file in files},
        retry_if_failed=RETRIES,
    )
    where = (f"check that {base_url} serves the original files" if base_url else
             f"check the network connection or set {DATA_URL_ENV} to a mirror")
    for file in files:
        url = fetcher.get_url(file.path)
        try:
            fetcher.fetch(file.path, processor=_unpacker(name), progressbar=sys.stderr.isatty())
        except ValueError as exc:  # pooch raises it for a checksum mismatch
            found = _MISMATCH.search(str(exc))
            algorithm, expected = file.known_hash.split(":")
            got = found["got"] if found else f"? ({exc})"
            raise DataError(
                f"the {file.path} that {url} sent has {algorithm} {got} where {expected} was "
                f"expected, so it was not kept; run the command again (a transfer cut short "
                f"does this), or {where}"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise DataError(
                f"could not download {url} ({exc}); {where}, or put the files under "
                f"{dataset_dir(name, data_dir).absolute()} yourself"
            ) from None
        except (OSError, tarfile.TarError) as exc:
            raise DataError(
                f"could not write or unpack {Path(data_dir) / file.path} ({exc}); "
                f"check that {Path(data_dir).absolute()} is writable and has room"
            ) from None


_TORCHVISION_CLASSES = {
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
}


def download_with_torchvision(name: str, data_dir: Path) -> None:
    """Fetch both splits of ``name`` into data_dir through torchvision's dataset class."""
    try:
        import torchvision.datasets  # optional extra: a multi-GB install, imported late
    except ImportError:
        raise DataError(
            f"downloading {name} with torchvision needs it installed: pip install -e '.[vision]', "
            "or leave out --with torchvision to download with pooch"
        ) from None
    dataset_class = getattr(torchvision.datasets, _TORCHVISION_CLASSES[name])
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        try:
            dataset_class(root=str(data_dir), train=train, download=True)
        except Exception as exc:  # network and archive failures come in many types
            raise DataError(
                f"torchvision could not download {name} into {data_dir} ({exc}); "
                "check the network connection or put the files there yourself"
            ) from exc
