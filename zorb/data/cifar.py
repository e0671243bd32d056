"""Safe reader for the CIFAR-10/100 "python version" batches.

Those batches are pickles, and unpickling can call any importable function. The reader
therefore resolves only the few names a plain CIFAR batch refers to (numpy's array and
dtype reconstructors) and refuses every other global with DataError, before anything in
the file can run.
"""

from __future__ import annotations

import io
import os
import pickle

import numpy as np

from zorb.errors import DataError

CIFAR_ROW = 3 * 32 * 32  # one image: 1024 red, 1024 green, 1024 blue bytes, rows first

# The functions numpy pickles refer to, taken from numpy itself so that both the old
# (numpy.core) and the new (numpy._core) module names resolve without importing either.
_reconstruct = np.empty(0).__reduce__()[0]
_frombuffer = np.empty(1).__reduce_ex__(5)[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowlist."""


class PlainDataUnpickler(pickle.Unpickler):
    """Unpickler that builds only containers, numbers, strings, bytes and numpy arrays."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def load_plain_pickle(path: str | os.PathLike):
    """Unpickle a file holding plain data only; anything else raises DataError."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        # CIFAR's batches were written by Python 2: its str become bytes, keys included.
        return PlainDataUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise DataError(
            f"{path} holds a pickled {exc} and not only plain data, so it was refused "
            "before running anything; replace it with the original CIFAR file"
        ) from None
    except Exception as exc:  # a damaged pickle fails in many ways; all mean "unreadable"
        raise DataError(
            f"{path} is not a readable CIFAR batch ({type(exc).__name__}: {exc}); "
            "delete it and fetch it again (python scripts/prepare_data.py)"
        ) from None


def _bytes_keys(batch: dict) -> dict:
    """The batch with str keys turned into bytes (batches re-saved by Python 3)."""
    return {k.encode() if isinstance(k, str) else k: v for k, v in batch.items()}


def load_cifar_batch(path: str | os.PathLike, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch.

    Returns:
        images: (n, 32, 32, 3) uint8, NHWC, C-contiguous.
        labels: (n,) int64, read from ``label_key`` (b"labels" or b"fine_labels").
    """
    batch = load_plain_pickle(path)
    if not isinstance(batch, dict):
        raise DataError(
            f"{path} holds a {type(batch).__name__}, not a CIFAR batch dict; "
            "replace it with the original CIFAR file"
        )
    batch = _bytes_keys(batch)
    missing = [k.decode() for k in (b"data", label_key) if k not in batch]
    if missing:
        raise DataError(
            f"{path} has no {' or '.join(missing)} entry; replace it with the original CIFAR file"
        )
    data = batch[b"data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8
            and data.ndim == 2 and data.shape[1] == CIFAR_ROW):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(
            f"{path} has data of shape {shape} and type {dtype}, not (n, {CIFAR_ROW}) uint8; "
            "replace it with the original CIFAR file"
        )
    try:
        labels = np.asarray(batch[label_key])
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{path} has unreadable {label_key.decode()} ({exc}); "
            "replace it with the original CIFAR file"
        ) from None
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or labels.dtype.kind not in "iu":
        raise DataError(
            f"{path} has {labels.shape} {label_key.decode()} of type {labels.dtype} for "
            f"{data.shape[0]} images, not one integer label per image; "
            "replace it with the original CIFAR file"
        )
    # Each row is channel-major (3, 32, 32); the project works in NHWC.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int64)
