"""The ``.esz`` container: one file holding a Deep-Compressed model.

Layout (all integers little-endian; the full description is docs/esz-format.md):

    0    4   magic b"ESZ\\0"
    4    2   format version (u16), currently 1
    6    2   flags (u16), 0 (reserved)
    8    4   M = length of the metadata block (u32)
    12   8   B = length of the body (u64)
    20   M   metadata: zlib-compressed UTF-8 JSON (tensor directory, architecture, sidecar)
    20+M B   body: the binary blobs the directory points to (codebooks, Huffman tables,
             Huffman bit streams, raw tensors), as [offset, length] relative to the body
    end  4   CRC-32 (zlib.crc32) of every byte before it

The reader checks, in order: magic (foreign file), sizes (truncated file), CRC (altered
file), version (newer format), then every offset and count while decoding, and raises
EszError with a message saying which. The first 20 bytes keep this layout in every future
version, so an old reader can always say "newer version" rather than "corrupt".
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
import sys
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import CheckpointError, UsageError
from ..core.io import atomic_write_bytes
from . import huffman, sparse
from ..quantization.sharing import MAX_CENTROIDS

MAGIC = b"ESZ\0"
VERSION = 1
_HEAD = struct.Struct("<4sHHIQ")  # magic, version, flags, meta_len, body_len
_CRC = struct.Struct("<I")

_DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8,
    "uint8": torch.uint8, "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}

if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for is little-endian
    raise ImportError("edgeslim.codec assumes a little-endian machine")


class EszError(CheckpointError):
    """An .esz file is foreign, truncated, altered, or from a newer edgeslim."""


@dataclasses.dataclass
class EszContents:
    meta: dict[str, Any]                      # spec, sidecar, tensor directory, extra
    state_dict: "OrderedDict[str, torch.Tensor]"
    shared: dict[str, dict[str, torch.Tensor]]  # tensor name -> codebook / index / mask
    stats: dict[str, dict[str, Any]]          # tensor name -> byte counts per part


# -- encoding -------------------------------------------------------------------------

class _Body:
    def __init__(self):
        self.buf = bytearray()

    def put(self, blob: bytes) -> list[int]:
        off = len(self.buf)
        self.buf += blob
        return [off, len(blob)]


def _raw_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous().reshape(-1)
    if t.numel() == 0:
        return b""
    return t.view(torch.uint8).numpy().tobytes()


def encode_shared(codebook: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, index_bits: int,
                  body: _Body) -> tuple[dict, dict]:
    """Directory record and byte statistics of one weight-shared, pruned tensor."""
    codebook = codebook.detach().cpu().float().reshape(-1)
    k = codebook.numel()
    if k > MAX_CENTROIDS:
        raise UsageError(f"a codebook of {k} entries is larger than {MAX_CENTROIDS}", hint="use bits <= 8")
    if k < 1:
        raise UsageError("a codebook needs at least one entry")
    sparse._check_bits(index_bits)
    mask = mask.detach().cpu().bool().reshape(-1)
    index = index.detach().cpu().long().reshape(-1)
    if index.numel() != mask.numel():
        raise UsageError("index and mask of a shared tensor differ in size")
    pos = torch.nonzero(mask).reshape(-1).numpy()
    values = index[mask].numpy()
    if len(values) and (values.min() < 0 or values.max() >= k):
        raise UsageError("a weight index points outside its codebook")
    dense = len(pos) == mask.numel()
    rec: dict[str, Any] = {"kind": "shared", "k": k, "index_bits": int(index_bits), "n": int(len(pos)),
                           "dense": dense, "codebook": body.put(_raw_bytes(codebook))}
    vt, vs, vbits = huffman.compress(values, k)
    rec["values"] = {"table": body.put(vt), "stream": body.put(vs), "nbits": vbits}
    stats = {"codebook_bytes": 4 * k, "value_table_bytes": len(vt), "value_bytes": len(vs), "value_bits": vbits,
             "kept": int(len(pos)), "entries": int(len(pos)), "fillers": 0,
             "index_table_bytes": 0, "index_bytes": 0, "index_bits_total": 0}
    if not dense:
        gaps = sparse.encode_positions(pos, index_bits)
        it, ist, ibits = huffman.compress(gaps, 1 << index_bits)
        rec["index"] = {"table": body.put(it), "stream": body.put(ist), "nbits": ibits, "count": int(len(gaps))}
        stats.update(entries=int(len(gaps)), fillers=int(len(gaps) - len(pos)), index_table_bytes=len(it),
                     index_bytes=len(ist), index_bits_total=ibits)
    return rec, stats


def encode(state_dict: dict[str, torch.Tensor], shared: dict[str, dict[str, Any]] | None = None, *,
           meta: dict[str, Any] | None = None) -> tuple[bytes, dict[str, dict[str, Any]]]:
    """Bytes of an .esz file and per-tensor byte statistics.

    ``shared`` maps a state_dict key (``fc1.weight``) to {"codebook", "index", "mask",
    "index_bits"}; those tensors are stored as codebook + Huffman-coded sparse indices and
    must equal where(mask, codebook[index], 0). Every other entry is stored raw.
    """
    shared = shared or {}
    unknown = sorted(set(shared) - set(state_dict))
    if unknown:
        raise UsageError(f"shared tensor {unknown[0]!r} is not in the state dict")
    body = _Body()
    directory, stats = [], {}
    for name, t in state_dict.items():
        t = t.detach().cpu()
        if t.dtype not in _DTYPE_NAMES:
            raise UsageError(f"tensor {name!r} has unsupported dtype {t.dtype}")
        entry: dict[str, Any] = {"name": name, "shape": list(t.shape), "dtype": _DTYPE_NAMES[t.dtype]}
        if name in shared:
            s = shared[name]
            if t.dtype != torch.float32:
                raise UsageError(f"shared tensor {name!r} must be float32, not {t.dtype}")
            rec, st = encode_shared(s["codebook"], s["index"], s["mask"], s.get("index_bits", 5), body)
            entry.update(rec)
        else:
            raw = _raw_bytes(t)
            entry.update(kind="raw", data=body.put(raw))
            st = {"raw_bytes": len(raw)}
        directory.append(entry)
        stats[name] = st
    m = dict(meta or {})
    m["tensors"] = directory
    meta_blob = zlib.compress(json.dumps(m, separators=(",", ":"), sort_keys=True).encode("utf-8"), 9)
    head = _HEAD.pack(MAGIC, VERSION, 0, len(meta_blob), len(body.buf))
    data = head + meta_blob + bytes(body.buf)
    return data + _CRC.pack(zlib.crc32(data)), stats


def write(path: str | os.PathLike, state_dict, shared=None, *, meta=None) -> tuple[int, dict]:
    """Encode and write atomically; returns (file size in bytes, per-tensor stats)."""
    data, stats = encode(state_dict, shared, meta=meta)
    atomic_write_bytes(path, data)
    return len(data), stats


# -- decoding -------------------------------------------------------------------------

def _fail(msg: str, hint: str | None = None) -> EszError:
    return EszError(msg, hint=hint or "the file is damaged: re-create it with `edgeslim deepcompress`")


def read_header(data: bytes, source: str = "data") -> tuple[dict[str, Any], memoryview]:
    """Check framing and checksum; return (metadata, body view)."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise EszError(f"{source} is not an .esz file (bad magic number)",
                       hint="an .esz file is written by `edgeslim deepcompress`; pass that file")
    if len(data) < _HEAD.size + _CRC.size:
        raise _fail(f"{source} is truncated ({len(data)} bytes, shorter than the header)")
    _, version, flags, meta_len, body_len = _HEAD.unpack_from(data)
    expected = _HEAD.size + meta_len + body_len + _CRC.size
    if len(data) < expected:
        raise _fail(f"{source} is truncated or its header is corrupt ({len(data)} bytes, header says {expected})")
    if len(data) > expected:
        raise _fail(f"{source} is corrupt: {len(data) - expected} bytes more than its header says")
    (crc,) = _CRC.unpack_from(data, expected - _CRC.size)
    if zlib.crc32(memoryview(data)[: expected - _CRC.size]) != crc:
        raise _fail(f"{source} is corrupt (checksum mismatch): it was altered or damaged after it was written")
    if version != VERSION:
        raise EszError(f"{source} is .esz format version {version}; this edgeslim reads version {VERSION}",
                       hint="upgrade edgeslim to read it")
    if flags != 0:
        raise _fail(f"{source} sets unknown flags {flags:#x}")
    try:
        meta = json.loads(zlib.decompress(data[_HEAD.size: _HEAD.size + meta_len]).decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(f"{source} has unreadable metadata ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("tensors"), list):
        raise _fail(f"{source} has no tensor directory")
    body = memoryview(data)[_HEAD.size + meta_len: expected - _CRC.size]
    return meta, body


def _blob(body: memoryview, ref: Any, what: str) -> bytes:
    if (not isinstance(ref, list) or len(ref) != 2 or not all(isinstance(x, int) for x in ref)
            or ref[0] < 0 or ref[1] < 0 or ref[0] + ref[1] > len(body)):
        raise _fail(f"{what}: blob reference {ref!r} is outside the file")
    return bytes(body[ref[0]: ref[0] + ref[1]])


def _decode_entry(e: dict, body: memoryview) -> tuple[torch.Tensor, dict | None]:
    name = e["name"]
    dtype = _DTYPES.get(e["dtype"])
    if dtype is None:
        raise _fail(f"tensor {name!r} has unknown dtype {e['dtype']!r}")
    shape = [int(s) for s in e["shape"]]
    if any(s < 0 for s in shape):
        raise _fail(f"tensor {name!r} has a negative dimension")
    numel = int(np.prod(shape)) if shape else 1
    if e["kind"] == "raw":
        raw = _blob(body, e["data"], name)
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if len(raw) != numel * itemsize:
            raise _fail(f"tensor {name!r}: {len(raw)} bytes for {numel} values of {e['dtype']}")
        if numel == 0:
            return torch.zeros(shape, dtype=dtype), None
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape).clone(), None
    if e["kind"] != "shared":
        raise _fail(f"tensor {name!r} has unknown kind {e['kind']!r}")
    k, n, b = int(e["k"]), int(e["n"]), int(e["index_bits"])
    if not 1 <= k <= MAX_CENTROIDS:
        raise _fail(f"tensor {name!r}: codebook of {k} entries (at most {MAX_CENTROIDS})")
    if not 1 <= b <= 8 or not 0 <= n <= numel:
        raise _fail(f"tensor {name!r}: bad index bits or weight count")
    cb_raw = _blob(body, e["codebook"], name)
    if len(cb_raw) != 4 * k:
        raise _fail(f"tensor {name!r}: codebook size mismatch")
    codebook = torch.frombuffer(bytearray(cb_raw), dtype=torch.float32).clone()
    v = e["values"]
    table = _blob(body, v["table"], name)
    lengths, end = huffman.parse_table(table, k)
    if end != len(table):
        raise _fail(f"tensor {name!r}: value table has trailing bytes")
    values = huffman.decode(_blob(body, v["stream"], name), int(v["nbits"]), n, lengths)
    if e["dense"]:
        if n != numel:
            raise _fail(f"tensor {name!r}: dense layer with {n} of {numel} weights")
        pos = np.arange(numel, dtype=np.int64)
    else:
        ix = e["index"]
        table = _blob(body, ix["table"], name)
        lengths, end = huffman.parse_table(table, 1 << b)
        if end != len(table):
            raise _fail(f"tensor {name!r}: index table has trailing bytes")
        gaps = huffman.decode(_blob(body, ix["stream"], name), int(ix["nbits"]), int(ix["count"]), lengths)
        pos = sparse.decode_positions(gaps, b, numel)
        if len(pos) != n:
            raise _fail(f"tensor {name!r}: {len(pos)} positions for {n} weights")
    pos_t = torch.from_numpy(pos)
    idx_t = torch.from_numpy(values.astype(np.int64))
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[pos_t] = True
    index = torch.zeros(numel, dtype=torch.long)
    index[pos_t] = idx_t
    weight = torch.zeros(numel, dtype=torch.float32)
    weight[pos_t] = codebook[idx_t]
    return weight.reshape(shape), {"codebook": codebook, "index": index.reshape(shape), "mask": mask.reshape(shape),
                                   "index_bits": b}


def decode(data: bytes, source: str = "data") -> EszContents:
    meta, body = read_header(data, source)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    shared, stats = {}, {}
    try:
        for e in meta["tensors"]:
            t, s = _decode_entry(e, body)
            state[e["name"]] = t
            if s is not None:
                shared[e["name"]] = s
            stats[e["name"]] = {"kind": e["kind"]}
    except EszError:
        raise
    except CheckpointError as e:  # Huffman / sparse errors: name the file
        raise _fail(f"{source} is corrupt: {e}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise _fail(f"{source} has a malformed tensor directory ({type(e).__name__}: {e})") from None
    return EszContents(meta=meta, state_dict=state, shared=shared, stats=stats)


def read(path: str | os.PathLike) -> EszContents:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise EszError(f"no such file: {p}") from None
    except IsADirectoryError:
        if (p / "model.esz").is_file():
            return read(p / "model.esz")
        raise EszError(f"{p} is a directory without model.esz") from None
    return decode(data, source=str(p))
