"""IDX reader/writer: round trips and one clear DataError per kind of damage."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from edgeslim.core.errors import DataError
from edgeslim.data.idx import parse_idx, read_idx, write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([1, -2, 3], dtype=np.int8),
        np.array([[1, -70000], [3, 2**30]], dtype=np.int32),
        np.array([0.5, -1.25, 3e10], dtype=np.float32),
        np.array([1e-300, 2.5], dtype=np.float64),
        np.array([-300, 300], dtype=np.int16),
    ],
    ids=["u8-3d", "i8", "i32-2d", "f32", "f64", "i16"],
)
def test_round_trip(tmp_path, array, suffix):
    path = write_idx(tmp_path / f"a.idx{suffix}", array)
    back = read_idx(path)
    assert back.dtype == array.dtype.newbyteorder("=")
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    back[...] = 0  # writable, and not a view of the caller's data
    assert array.any()


def test_header_is_big_endian_and_gzip_is_detected_by_content(tmp_path):
    array = np.array([[7, 8, 9]], dtype=np.uint8)
    raw = write_idx(tmp_path / "raw.idx", array).read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x02"
    assert raw[4:12] == struct.pack(">II", 1, 3)
    assert gzip.decompress(write_idx(tmp_path / "b.gz", array).read_bytes()) == raw
    (tmp_path / "raw-named.gz").write_bytes(raw)  # misnamed: still read as raw
    np.testing.assert_array_equal(read_idx(tmp_path / "raw-named.gz"), array)
    big = write_idx(tmp_path / "i32.idx", np.array([1], dtype=np.int32)).read_bytes()
    assert big[-4:] == b"\x00\x00\x00\x01"


def _damage(blob: bytes, how: str) -> bytes:
    return {
        "truncated": blob[:-5],
        "trailing": blob + b"\x00\x01",
        "no-header": blob[:3],
        "short-dims": blob[:9],
        "bad-magic": b"\x12\x34" + blob[2:],
        "bad-type": blob[:2] + b"\x07" + blob[3:],
        "zero-dims": blob[:3] + b"\x00" + blob[4:],
    }[how]


@pytest.mark.parametrize(
    "how, message",
    [
        ("truncated", "IDX file truncated: header says shape (4, 5, 6) (136 bytes), file has 131"),
        ("trailing", "IDX file has trailing bytes"),
        ("no-header", "truncated IDX file (3 bytes, no header)"),
        ("short-dims", "truncated IDX header (9 of 16 bytes)"),
        ("bad-magic", "wrong magic number 0x12340803"),
        ("bad-type", "wrong magic number 0x00000703"),
        ("zero-dims", "wrong magic number 0x00000800"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_damaged_files(tmp_path, how, message, gz):
    ok = write_idx(tmp_path / "ok.idx", np.zeros((4, 5, 6), dtype=np.uint8)).read_bytes()
    blob = _damage(ok, how)
    path = tmp_path / ("bad.idx.gz" if gz else "bad.idx")
    path.write_bytes(gzip.compress(blob) if gz else blob)
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert str(path) in err.value.message
    assert message in err.value.message
    assert "delete it and fetch it again" in err.value.hint


@pytest.mark.parametrize("how", ["cut-stream", "bad-crc", "garbage-after-magic"])
def test_bad_gzip(tmp_path, how):
    good = gzip.compress(write_idx(tmp_path / "ok.idx", np.ones((50, 50), dtype=np.uint8)).read_bytes())
    blob = {
        "cut-stream": good[: len(good) // 2],
        "bad-crc": good[:-8] + bytes(8),
        "garbage-after-magic": b"\x1f\x8b" + b"not really gzip at all",
    }[how]
    path = tmp_path / "bad.gz"
    path.write_bytes(blob)
    with pytest.raises(DataError, match="corrupt or truncated gzip data") as err:
        read_idx(path)
    assert str(path) in err.value.message and err.value.hint


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file") as err:
        read_idx(tmp_path / "nope.idx")
    assert err.value.hint


def test_parse_names_its_source():
    with pytest.raises(DataError, match="^memory: truncated"):
        parse_idx(b"\x00", source="memory")


def test_write_refuses_dtypes_idx_cannot_hold(tmp_path):
    with pytest.raises(DataError, match="IDX cannot store dtype int64"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.int64))
    assert not list(tmp_path.iterdir())
