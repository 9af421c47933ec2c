"""IDX files (the MNIST / Fashion-MNIST format): a fast reader and a small writer.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian
uint32 per dimension, then the data in C order (big-endian for multi-byte
types). Files may be gzip-compressed; that is detected from the content, not
the file name, so a raw file called ``*.gz`` still reads.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..core.errors import DataError
from ..core.io import atomic_write_bytes

# IDX type code -> numpy dtype (big-endian where it matters)
_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_HINT = "the file is damaged or not an IDX file; delete it and fetch it again (or reinstall the package it came from)"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a numpy array in native byte order."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file", hint="check the path, or let edgeslim fetch the dataset") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}", hint="check the file's permissions") from None
    if blob[:2] == _GZIP_MAGIC:
        try:
            blob = gzip.decompress(blob)
        except (EOFError, OSError, zlib.error) as e:  # truncated stream, bad CRC, garbage
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})", hint=_HINT) from None
    return parse_idx(blob, source=str(path))


def parse_idx(blob: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file; ``source`` names it in errors."""
    if len(blob) < 4:
        raise DataError(f"{source}: truncated IDX file ({len(blob)} bytes, no header)", hint=_HINT)
    zero, code, ndim = struct.unpack_from(">HBB", blob)
    if zero != 0 or code not in _DTYPES or ndim == 0:
        raise DataError(
            f"{source}: wrong magic number 0x{blob[:4].hex()} (an IDX file starts with 0x0000, a type code "
            f"in {sorted(hex(c) for c in _DTYPES)} and its number of dimensions)",
            hint=_HINT,
        )
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise DataError(f"{source}: truncated IDX header ({len(blob)} of {header} bytes)", hint=_HINT)
    shape = struct.unpack_from(f">{ndim}I", blob, 4)
    dtype = _DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(blob) != expected:
        what = "truncated" if len(blob) < expected else "has trailing bytes"
        raise DataError(
            f"{source}: IDX file {what}: header says shape {tuple(shape)} ({expected} bytes), file has {len(blob)}",
            hint=_HINT,
        )
    # astype copies: the result is writable, native-endian and does not pin ``blob``
    return np.frombuffer(blob, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz`` (atomic)."""
    array = np.ascontiguousarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"IDX cannot store dtype {array.dtype}", hint=f"use one of {sorted(map(str, _CODES))}")
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    blob = header + array.astype(_DTYPES[code]).tobytes()
    if str(path).endswith(".gz"):
        blob = gzip.compress(blob, mtime=0)
    return atomic_write_bytes(path, blob)
