"""ONNX export with verification, and ONNX Runtime sessions."""
from .exporter import compare
from .exporter import onnx_export as onnx
from .runtime import session

__all__ = ["compare", "onnx", "session"]
