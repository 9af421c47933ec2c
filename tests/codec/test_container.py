import pytest
import torch
from torch import nn

from edgeslim.codec import container
from edgeslim.quantization import sharing
from edgeslim.codec.container import EszError
from edgeslim.core.errors import EdgeslimError, UsageError


def _shared_model(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    m[1].running_mean.uniform_(-1, 1)
    mask0 = torch.rand_like(m[0].weight) > 0.3
    mask4 = torch.rand_like(m[4].weight) > 0.9  # 90% pruned: many overflowing gaps at 3 index bits
    sharing.share(m[0], 3, mask=mask0)
    sharing.share(m[4], 2, mask=mask4)
    baked = sharing.bake(m)
    shared = {f"{k}.weight": dict(v, index_bits=3) for k, v in baked.items()}
    return m, shared


def test_round_trip_is_bit_exact(tmp_path):
    m, shared = _shared_model()
    sd = m.state_dict()
    size, stats = container.write(tmp_path / "m.esz", sd, shared, meta={"spec": "toy"})
    assert size == (tmp_path / "m.esz").stat().st_size
    assert stats["4.weight"]["fillers"] > 0
    got = container.read(tmp_path / "m.esz")
    assert got.meta["spec"] == "toy"
    assert list(got.state_dict) == list(sd)
    for k, v in sd.items():
        assert got.state_dict[k].dtype == v.dtype
        assert torch.equal(got.state_dict[k], v), k
    for k, s in shared.items():
        assert torch.equal(got.shared[k]["codebook"], s["codebook"])
        assert torch.equal(got.shared[k]["mask"], s["mask"])
        assert torch.equal(got.shared[k]["index"][s["mask"]], s["index"][s["mask"]])


def test_dense_shared_layer_and_empty_layer():
    w = torch.randn(6, 5)
    cb, idx = sharing.kmeans(w, 4)
    full = torch.ones_like(w, dtype=torch.bool)
    empty = torch.zeros_like(w, dtype=torch.bool)
    sd = {"a": cb[idx], "b": torch.zeros_like(w), "c": torch.zeros(0), "d": torch.tensor(7)}
    shared = {"a": {"codebook": cb, "index": idx, "mask": full, "index_bits": 4},
              "b": {"codebook": cb, "index": idx, "mask": empty, "index_bits": 4}}
    data, _ = container.encode(sd, shared)
    got = container.decode(data)
    for k in sd:
        assert torch.equal(got.state_dict[k], sd[k])


def test_every_flipped_byte_is_detected():
    m = nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 2))
    sharing.share(m[0], 2, mask=torch.rand(8, 6, generator=torch.Generator().manual_seed(0)) > 0.5)
    shared = {f"{k}.weight": dict(v, index_bits=2) for k, v in sharing.bake(m).items()}
    data, _ = container.encode(m.state_dict(), shared, meta={"spec": "x"})
    container.decode(data)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0xFF
        with pytest.raises(EszError):
            container.decode(bytes(bad))
        bad[i] ^= 0x5A  # a second, different change of the same byte
        with pytest.raises(EszError):
            container.decode(bytes(bad))


def test_truncated_foreign_and_newer_files(tmp_path):
    m, shared = _shared_model()
    data, _ = container.encode(m.state_dict(), shared)
    for n in (0, 3, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(EszError, match="truncated|not an .esz"):
            container.decode(data[:n])
    with pytest.raises(EszError, match="more than its header"):
        container.decode(data + b"\0")
    with pytest.raises(EszError, match="not an .esz file"):
        container.decode(b"PK\x03\x04" + data[4:])
    onnx_like = tmp_path / "model.onnx"
    onnx_like.write_bytes(b"\x08\x07\x12\x07pytorch" * 10)
    with pytest.raises(EszError, match="not an .esz file") as e:
        container.read(onnx_like)
    assert isinstance(e.value, EdgeslimError) and e.value.hint
    # a (valid) file from a newer format version
    import struct
    import zlib

    body = bytearray(data[:-4])
    struct.pack_into("<H", body, 4, 2)
    newer = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    with pytest.raises(EszError, match="version 2"):
        container.decode(newer)
    with pytest.raises(EszError, match="no such file"):
        container.read(tmp_path / "missing.esz")


def test_codebook_larger_than_256_is_refused():
    w = torch.randn(1000)
    cb = torch.linspace(-3, 3, 300)
    idx = torch.bucketize(w, cb).clamp(max=299)
    with pytest.raises(UsageError, match="larger than 256"):
        container.encode({"w": cb[idx]}, {"w": {"codebook": cb, "index": idx, "mask": torch.ones(1000, dtype=torch.bool)}})


def test_bad_index_bits_refused():
    w = torch.randn(50)
    cb, idx = sharing.kmeans(w, 4)
    with pytest.raises(UsageError, match="1..8"):
        container.encode({"w": cb[idx]}, {"w": {"codebook": cb, "index": idx, "mask": w > 0, "index_bits": 9}})


def test_write_is_atomic(tmp_path, monkeypatch):
    m, shared = _shared_model()
    path = tmp_path / "m.esz"
    container.write(path, m.state_dict(), shared)
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    import edgeslim.core.io as io

    monkeypatch.setattr(io.os, "fsync", boom)  # fails after the temp file was written
    with pytest.raises(RuntimeError):
        container.write(path, m.state_dict(), shared)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.esz"]
