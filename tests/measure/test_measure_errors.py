"""An input shape that does not fit the model, and timing settings that time nothing, are named."""
import pytest
import torch

from edgeslim import models
from edgeslim.core.errors import UsageError
from edgeslim.measure import bench, check_input, profile, shape_problem
from edgeslim.testing.models import TinyConvNet


@pytest.mark.parametrize("spec, shape, needle", [
    ("lenet5", (1, 1, 4, 4), "input shape [1,1,4,4] is too small for lenet5: a 5x5 kernel is larger than the 4x4"),
    ("lenet5", (1, 1, 8, 8), "too small for lenet5: a 5x5 kernel is larger than the 2x2 feature map"),
    ("vgg_small", (1, 1, 4, 4), "input shape [1,1,4,4] is too small for vgg_small"),
    ("lenet5", (1, 3, 28, 28), "does not fit lenet5: its first convolution takes 1 channel(s), the shape gives 3"),
    ("lenet300", (1, 1, 4, 4), "does not fit lenet300: a Linear layer takes 784 features and gets 16"),
])
def test_shapes_that_do_not_fit_are_named(spec, shape, needle):
    with pytest.raises(UsageError) as err:
        check_input(models.create(spec), shape, spec)
    assert needle in err.value.message and err.value.hint


def test_a_fitting_shape_passes_and_other_errors_are_not_shape_errors():
    check_input(models.create("lenet5"), (1, 28, 28), "lenet5")
    check_input(TinyConvNet(), (2, 1, 3, 3))  # adaptive pooling: any size fits
    assert shape_problem(RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), (1, 1, 8, 8)) is None
    assert shape_problem(ValueError("Kernel size can't be greater"), (1, 1, 8, 8)) is None


def test_a_shape_too_big_for_memory_is_named():
    oom = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 71980801280 bytes.")
    message, hint = shape_problem(oom, (1, 1, 30000, 30000), "lenet5")
    assert message == "input shape [1,1,30000,30000] needs more memory than is free to run lenet5 (one tensor of " \
                      "67.0 GiB)" and "smaller --input-shape" in hint


def test_profile_checks_the_shape_before_exporting(tmp_path):
    with pytest.raises(UsageError, match="too small for the model"):
        profile(models.create("lenet5"), (1, 1, 4, 4), onnx_path=tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kw, needle", [
    ({"runs": 0}, "runs must be an integer >= 1, got 0"),
    ({"warmup": -5}, "warmup must be an integer >= 0, got -5"),
    ({"threads": 0}, "threads must be an integer >= 1, got 0"),
    ({"rounds": 0}, "rounds must be an integer >= 1, got 0"),
    ({"runs": 2.5}, "runs must be an integer >= 1, got 2.5"),
])
def test_timing_that_times_nothing_is_refused(kw, needle, tmp_path):
    with pytest.raises(UsageError, match=needle.replace("(", r"\(")):
        bench([TinyConvNet()], (1, 1, 8, 8), **kw)
    if "rounds" not in kw:
        with pytest.raises(UsageError, match=needle.replace("(", r"\(")):
            profile(TinyConvNet(), (1, 1, 8, 8), onnx_path=tmp_path / "m.onnx", **kw)
        assert not list(tmp_path.iterdir())
