"""Deep Compression (Han, Mao, Dally, ICLR 2016) and the ``.esz`` container.

    pruning (magnitude, retrained) -> trained weight sharing (k-means codebooks)
    -> Huffman coding of weight indices and sparse index gaps -> model.esz

    small, report = edgeslim.deep_compress(model, DeepCompress(prune=0.92, bits={"conv": 8, "fc": 5}),
                                           data=data, spec="lenet300", out="out/")
    model, sidecar = edgeslim.codec.decode_file("out/model.esz")
"""
from __future__ import annotations

from .container import EszContents, EszError, decode, encode, read, write
from .esz import decode_file, encode_model, write_model
from .pipeline import DeepCompress, deep_compress
from ..models import register_loader

register_loader(".esz", decode_file)  # a MODEL argument may be an .esz file

__all__ = ["DeepCompress", "EszContents", "EszError", "decode", "decode_file", "deep_compress", "encode",
           "encode_model", "read", "write", "write_model"]
