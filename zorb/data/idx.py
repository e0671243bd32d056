"""Reader for the IDX files MNIST and Fashion-MNIST ship in (plain or gzipped).

Format (big-endian): a 4-byte magic number ``0x000008DD`` (0x08 = unsigned byte data,
DD = number of dimensions), one 4-byte size per dimension, then the bytes, row-major.
"""

from __future__ import annotations

import gzip
import os
import zlib
from math import prod

import numpy as np

from zorb.errors import DataError

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions: (N, rows, cols)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension: (N,)
_GZIP_SIGNATURE = b"\x1f\x8b"
_HINT = "delete it and fetch it again (python scripts/prepare_data.py)"


def read_file_bytes(path: str | os.PathLike) -> bytes:
    """The file's content, decompressed when it is gzip (recognised by its signature)."""
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(_GZIP_SIGNATURE):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path} is a damaged gzip file ({exc}); {_HINT}") from exc


def parse_idx(raw: bytes, expected_magic: int, path: str | os.PathLike) -> np.ndarray:
    """Parse IDX bytes into a read-only uint8 array shaped as its header says.

    Raises DataError on a wrong magic number, a truncated file or trailing bytes.
    """
    kind = "images" if expected_magic == IMAGES_MAGIC else "labels"
    if len(raw) < 4:
        raise DataError(f"{path} is truncated ({len(raw)} bytes, no IDX header); {_HINT}")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"{path} has magic number 0x{magic:08x}, not 0x{expected_magic:08x}, so it is "
            f"not an IDX {kind} file; replace it with the original file"
        )
    ndim = expected_magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its IDX header; {_HINT}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected_len = header + prod(dims)
    if len(raw) != expected_len:
        problem = "is truncated" if len(raw) < expected_len else "has trailing bytes"
        raise DataError(
            f"{path} {problem}: its header announces {dims} = {expected_len} bytes in all "
            f"but it holds {len(raw)}; {_HINT}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: str | os.PathLike, expected_magic: int) -> np.ndarray:
    """Read an IDX file (plain or .gz); see parse_idx for the checks and result."""
    return parse_idx(read_file_bytes(path), expected_magic, path)


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """IDX image file -> (N, rows, cols) uint8."""
    return read_idx(path, IMAGES_MAGIC)


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """IDX label file -> (N,) uint8."""
    return read_idx(path, LABELS_MAGIC)
