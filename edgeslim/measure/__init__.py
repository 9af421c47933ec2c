"""Measurement: params, MACs, memory-access cost, artifact size, latency, accuracy."""
from .counts import check_fits_data, check_input, count_macs, count_params, memory_access_cost, shape_problem
from .latency import artifact_size, bench, latency, onnx_accuracy, torch_threads
from .profile import onnx_params, ort_op_times, profile
from .compare import compare

__all__ = ["artifact_size", "bench", "check_fits_data", "check_input", "compare", "count_macs", "count_params", "latency",
           "memory_access_cost", "onnx_accuracy", "onnx_params", "ort_op_times", "profile", "shape_problem",
           "torch_threads"]
