import pytest

from edgeslim.core.errors import UsageError
from edgeslim.core.shapes import batched, unbatched


@pytest.mark.parametrize("shape, with_batch, without", [
    ((1, 28, 28), (1, 1, 28, 28), (1, 28, 28)),
    ([3, 32, 32], (1, 3, 32, 32), (3, 32, 32)),
    ((8, 3, 32, 32), (8, 3, 32, 32), (3, 32, 32)),
    ((4, 784), (4, 784), (784,)),
    ((784,), (1, 784), (784,)),
])
def test_one_rule_for_batched_and_unbatched_shapes(shape, with_batch, without):
    assert batched(shape) == with_batch
    assert unbatched(shape) == without


def test_batch_size_and_bad_shapes():
    assert batched((1, 28, 28), batch=32) == (32, 1, 28, 28)
    for bad in ((), (1, 0, 28), ("a", 2, 3), None):
        with pytest.raises(UsageError):
            batched(bad)
