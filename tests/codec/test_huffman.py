import numpy as np
import pytest

from edgeslim.codec import huffman, sparse
from edgeslim.codec.huffman import HuffmanError


def _roundtrip(symbols, alphabet):
    table, stream, nbits = huffman.compress(symbols, alphabet)
    lengths, end = huffman.parse_table(table, alphabet)
    assert end == len(table)
    out = huffman.decode(stream, nbits, len(symbols), lengths)
    np.testing.assert_array_equal(out, np.asarray(symbols))
    return nbits


@pytest.mark.parametrize("alphabet", [2, 17, 256])
def test_random_stream_round_trip(alphabet):
    rng = np.random.default_rng(alphabet)
    s = rng.integers(0, alphabet, size=5000)
    nbits = _roundtrip(s, alphabet)
    # uniform stream: close to log2(alphabet) bits per symbol
    assert nbits / len(s) <= np.log2(alphabet) + 1


def test_skewed_stream_beats_fixed_width():
    rng = np.random.default_rng(0)
    p = 0.5 ** np.arange(1, 33)
    p /= p.sum()
    s = rng.choice(32, size=20000, p=p)
    nbits = _roundtrip(s, 32)
    assert nbits / len(s) < 2.1  # entropy ~2 bits, fixed width would be 5


def test_extreme_skew_is_length_limited():
    # Fibonacci frequencies give the deepest possible tree; lengths must stay <= 16
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    lengths = huffman.code_lengths(np.array(fib))
    assert lengths.max() <= huffman.MAX_CODE_LEN
    assert (2.0 ** -lengths.astype(float)).sum() <= 1.0
    s = np.repeat(np.arange(40), [min(f, 50) for f in fib])
    _roundtrip(np.random.default_rng(1).permutation(s), 40)


def test_one_symbol_stream():
    s = np.full(100, 7)
    nbits = _roundtrip(s, 8)
    assert nbits == 100
    _roundtrip(np.array([3]), 4)


def test_empty_stream():
    table, stream, nbits = huffman.compress(np.zeros(0, dtype=np.int64), 16)
    assert (stream, nbits) == (b"", 0)
    lengths, _ = huffman.parse_table(table, 16)
    assert huffman.decode(stream, 0, 0, lengths).size == 0


def test_canonical_codes_are_prefix_free():
    lengths = huffman.code_lengths(np.array([5, 9, 12, 13, 16, 45]))
    codes = huffman.canonical_codes(lengths)
    words = [format(int(c), f"0{int(n)}b") for c, n in zip(codes, lengths)]
    for a in words:
        for b in words:
            assert a == b or not b.startswith(a)


def test_corrupt_streams_raise():
    s = np.random.default_rng(0).integers(0, 5, 300)
    table, stream, nbits = huffman.compress(s, 5)
    lengths, _ = huffman.parse_table(table, 5)
    with pytest.raises(HuffmanError):
        huffman.decode(stream[: len(stream) // 2], nbits, len(s), lengths)
    with pytest.raises(HuffmanError):
        huffman.decode(stream, nbits, len(s) + 50, lengths)
    with pytest.raises(HuffmanError):
        huffman.parse_table(table[:3], 5)
    with pytest.raises(HuffmanError):  # symbol outside the alphabet
        huffman.parse_table(table, 2)


def test_relative_index_round_trip_with_overflowing_gaps():
    rng = np.random.default_rng(0)
    numel = 10_000
    pos = np.sort(rng.choice(numel, size=300, replace=False))
    pos = np.unique(np.concatenate([[0, 1, 2, 40, 41, 200], pos, [numel - 1]]))
    for bits in range(1, 9):
        syms = sparse.encode_positions(pos, bits)
        assert syms.max() < (1 << bits)
        fillers = int((syms == (1 << bits) - 1).sum())
        gaps = np.diff(np.concatenate([[-1], pos]))
        assert fillers == int(((gaps - 1) // ((1 << bits) - 1)).sum())
        np.testing.assert_array_equal(sparse.decode_positions(syms, bits, numel), pos)


def test_relative_index_paper_example():
    # 3-bit index: gaps up to 7; a gap of 15 needs two fillers (7 + 7) and then a gap of 1
    syms = sparse.encode_positions([2, 17, 24], 3)
    assert syms.tolist() == [2, 7, 7, 0, 6]
    assert sparse.decode_positions(syms, 3).tolist() == [2, 17, 24]


@pytest.mark.parametrize("bits", [0, 9, 2.5])
def test_index_bits_out_of_range(bits):
    from edgeslim.core.errors import UsageError

    with pytest.raises(UsageError, match="1..8"):
        sparse.encode_positions([1, 2], bits)


def test_round_trip_across_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(huffman, "_CHUNK", 97)  # encode and decode work in blocks; make many
    rng = np.random.default_rng(3)
    p = 0.6 ** np.arange(1, 21)
    s = rng.choice(20, size=3001, p=p / p.sum())
    _roundtrip(s, 20)
