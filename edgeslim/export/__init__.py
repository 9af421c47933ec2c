"""ONNX export with verification, and ONNX Runtime sessions."""
from .exporter import check_opset, compare, opset_range
from .exporter import onnx_export as onnx
from .runtime import session

__all__ = ["check_opset", "compare", "onnx", "opset_range", "session"]
