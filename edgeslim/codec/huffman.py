"""Canonical Huffman coding of small-alphabet symbol streams (at most 65536 symbols).

Deep Compression codes two streams per layer with it: the codebook index of every kept
weight and the relative position (gap) of every kept weight. Both alphabets hold at most
256 symbols, and their distributions are far from uniform, which is where the last
20-30% of the paper's ratio comes from.

Codes are canonical (assigned from the code lengths alone, shorter codes first, ties by
symbol value), so a table is stored as its code lengths only. Code lengths are limited to
``MAX_CODE_LEN`` bits so that decoding can use one lookup table of 2**max_len entries.
Bits are packed most-significant first; the last byte is padded with zero bits.
"""
from __future__ import annotations

import heapq
import itertools

import numpy as np

from ..core.errors import CheckpointError, UsageError

MAX_CODE_LEN = 16


class HuffmanError(CheckpointError):
    """A Huffman table or bit stream cannot be decoded (corrupt data)."""


# -- code construction ---------------------------------------------------------

def code_lengths(freqs, *, max_len: int = MAX_CODE_LEN) -> np.ndarray:
    """Huffman code length per symbol (0 for a symbol that never occurs).

    A stream of one distinct symbol gets a 1-bit code, so every stream has at least one
    bit per symbol and the decoder never has to special-case it. When the optimal code is
    deeper than ``max_len`` the frequencies are flattened (halved, rounding up) until it
    fits: a simple, slightly sub-optimal length limit that only triggers on extreme skew.
    """
    freqs = np.asarray(freqs, dtype=np.int64)
    if freqs.ndim != 1 or (freqs < 0).any():
        raise UsageError("Huffman frequencies must be a 1-D array of counts >= 0")
    if max_len < 1 or (1 << max_len) < np.count_nonzero(freqs):
        raise UsageError(f"max_len={max_len} cannot code {np.count_nonzero(freqs)} symbols")
    lengths = np.zeros(len(freqs), dtype=np.int64)
    present = np.flatnonzero(freqs)
    if len(present) == 0:
        return lengths
    if len(present) == 1:
        lengths[present[0]] = 1
        return lengths
    f = freqs[present].copy()
    while True:
        lens = _tree_depths(f)
        if lens.max() <= max_len:
            lengths[present] = lens
            return lengths
        f = (f + 1) // 2


def _tree_depths(f: np.ndarray) -> np.ndarray:
    """Depth of each leaf in a Huffman tree over weights ``f`` (all > 0, len >= 2)."""
    depth = np.zeros(len(f), dtype=np.int64)
    tie = itertools.count()  # deterministic tie-breaking: equal weights merge oldest first
    heap = [(int(w), next(tie), [i]) for i, w in enumerate(f)]
    heapq.heapify(heap)
    while len(heap) > 1:
        w1, _, a = heapq.heappop(heap)
        w2, _, b = heapq.heappop(heap)
        merged = a + b
        depth[merged] += 1
        heapq.heappush(heap, (w1 + w2, next(tie), merged))
    return depth


def canonical_codes(lengths) -> np.ndarray:
    """Canonical code value per symbol (meaningful where length > 0)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (lengths[s], s))
    code, prev = 0, 0
    for s in order:
        code <<= int(lengths[s]) - prev
        prev = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def _check_kraft(lengths: np.ndarray) -> None:
    present = lengths[lengths > 0]
    if len(present) and (present.max() > MAX_CODE_LEN or (2.0 ** -present.astype(np.float64)).sum() > 1.0):
        raise HuffmanError("invalid Huffman table (code lengths over-subscribe the code space)")


# -- encode / decode -------------------------------------------------------------

def encode(symbols, lengths) -> tuple[bytes, int]:
    """Code ``symbols`` with the canonical code of ``lengths``; returns (bytes, number of bits)."""
    symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(symbols) == 0:
        return b"", 0
    if symbols.min() < 0 or symbols.max() >= len(lengths) or (lengths[symbols] == 0).any():
        raise UsageError("a symbol has no code in this Huffman table")
    codes = canonical_codes(lengths)
    parts = []
    for a in range(0, len(symbols), _CHUNK):  # chunks bound the int64 temporaries
        sl = lengths[symbols[a: a + _CHUNK]]
        sc = codes[symbols[a: a + _CHUNK]]
        starts = np.cumsum(sl) - sl
        owner = np.repeat(np.arange(len(sl)), sl)
        j = np.arange(int(sl.sum())) - starts[owner]  # bit position inside its own code
        parts.append(((sc[owner] >> (sl[owner] - 1 - j)) & 1).astype(np.uint8))
    bits = np.concatenate(parts)
    return np.packbits(bits).tobytes(), int(len(bits))


_CHUNK = 1 << 20


def decode(data: bytes, nbits: int, count: int, lengths) -> np.ndarray:
    """Decode ``count`` symbols from the first ``nbits`` bits of ``data``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if count == 0:
        if nbits != 0:
            raise HuffmanError("bit stream has bits but no symbols")
        return np.zeros(0, dtype=np.int64)
    if nbits > len(data) * 8 or nbits < count:
        raise HuffmanError("bit stream is shorter than its header says")
    _check_kraft(lengths)
    if not (lengths > 0).any():
        raise HuffmanError("empty Huffman table for a non-empty stream")
    L = int(lengths.max())
    codes = canonical_codes(lengths)
    # lookup table: every L-bit window starting with a symbol's code maps to that symbol
    sym_tab = np.full(1 << L, -1, dtype=np.int64)
    len_tab = np.zeros(1 << L, dtype=np.int64)
    for s in np.flatnonzero(lengths):
        shift = L - int(lengths[s])
        lo = int(codes[s]) << shift
        sym_tab[lo: lo + (1 << shift)] = s
        len_tab[lo: lo + (1 << shift)] = lengths[s]
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:nbits]
    bits = np.concatenate([bits, np.zeros(L, dtype=np.uint8)])
    out = np.empty(count, dtype=np.int64)
    i, p = 0, 0
    for a in range(0, nbits, _CHUNK):  # blocks of bit positions bound the window arrays
        b = min(nbits, a + _CHUNK)
        window = np.zeros(b - a, dtype=np.int64)
        for k in range(L):
            window = (window << 1) | bits[a + k: b + k]
        step = len_tab[window]
        nxt = (np.arange(a, b) + step).tolist()
        # walk the chain of code starts: the only inherently sequential part
        pos = []
        while p < b and i + len(pos) < count:
            pos.append(p)
            p = nxt[p - a]
        if pos:
            idx = np.asarray(pos, dtype=np.int64) - a
            if (step[idx] == 0).any():
                raise HuffmanError("bit stream holds a code that is not in the table")
            out[i: i + len(pos)] = sym_tab[window[idx]]
            i += len(pos)
        if i == count:
            break
    if i < count:
        raise HuffmanError("bit stream ended before all symbols were decoded")
    if p != nbits:
        raise HuffmanError(f"bit stream length mismatch ({nbits - p} bits left over)")
    return out


# -- table serialisation ----------------------------------------------------------

def serialize_table(lengths) -> bytes:
    """Code lengths as bytes: max_len (u8), symbol width (u8: 1 or 2), one LEB128 count per
    length 1..max_len, then the symbols sorted by (length, symbol)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    present = np.flatnonzero(lengths)
    if len(present) == 0:
        return bytes([0, 1])
    max_len = int(lengths.max())
    if max_len > MAX_CODE_LEN:
        raise UsageError(f"Huffman code length {max_len} exceeds {MAX_CODE_LEN}")
    width = 1 if len(lengths) <= 256 else 2
    out = bytearray([max_len, width])
    for n in range(1, max_len + 1):
        out += _leb128(int((lengths == n).sum()))
    order = sorted(present.tolist(), key=lambda s: (lengths[s], s))
    out += np.asarray(order, dtype="<u1" if width == 1 else "<u2").tobytes()
    return bytes(out)


def parse_table(data: bytes, alphabet: int, offset: int = 0) -> tuple[np.ndarray, int]:
    """Inverse of serialize_table: (code lengths over ``alphabet`` symbols, new offset)."""
    try:
        max_len, width = data[offset], data[offset + 1]
    except IndexError:
        raise HuffmanError("Huffman table is truncated") from None
    offset += 2
    lengths = np.zeros(alphabet, dtype=np.int64)
    if max_len == 0:
        return lengths, offset
    if max_len > MAX_CODE_LEN or width not in (1, 2):
        raise HuffmanError("Huffman table header is corrupt")
    counts = []
    for _ in range(max_len):
        c, offset = _read_leb128(data, offset)
        counts.append(c)
    total = sum(counts)
    if total > alphabet:
        raise HuffmanError("Huffman table lists more symbols than the alphabet holds")
    end = offset + total * width
    if end > len(data):
        raise HuffmanError("Huffman table is truncated")
    syms = np.frombuffer(data[offset:end], dtype="<u1" if width == 1 else "<u2").astype(np.int64)
    if len(syms) and (syms.max() >= alphabet or len(np.unique(syms)) != len(syms)):
        raise HuffmanError("Huffman table holds an invalid symbol")
    i = 0
    for n, c in enumerate(counts, start=1):
        lengths[syms[i: i + c]] = n
        i += c
    _check_kraft(lengths)
    return lengths, end


def _leb128(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _read_leb128(data: bytes, offset: int) -> tuple[int, int]:
    v, shift = 0, 0
    while True:
        if offset >= len(data) or shift > 35:
            raise HuffmanError("Huffman table is truncated or corrupt")
        b = data[offset]
        offset += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, offset


def compress(symbols, alphabet: int) -> tuple[bytes, bytes, int]:
    """Build the code for ``symbols`` and code them: (table bytes, stream bytes, nbits)."""
    symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
    freqs = np.bincount(symbols, minlength=alphabet) if len(symbols) else np.zeros(alphabet, np.int64)
    if len(freqs) > alphabet:
        raise UsageError(f"symbol {int(symbols.max())} outside the alphabet of {alphabet}")
    lengths = code_lengths(freqs)
    stream, nbits = encode(symbols, lengths)
    return serialize_table(lengths), stream, nbits
