"""Reductions: the axis argument's checks."""

import numpy as np
import pytest

import microgradcnn as mg


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
@pytest.mark.parametrize(
    ("axis", "error", "pattern"),
    [
        (True, TypeError, r"axis must be an int, got True \(bool\)"),
        ((0, False), TypeError, r"axis must be an int, got False \(bool\)"),
        (1.0, TypeError, r"axis must be an int, got 1.0 \(float\)"),
        ("0", TypeError, r"axis must be an int, got '0' \(str\)"),
        (2, IndexError, r"axis 2 is out of range for a tensor of shape \(2, 3\)"),
        ((0, -3), ValueError, r"axis -3 is out of range"),  # NumPy's AxisError: ValueError and IndexError
        ((1, -1), ValueError, r"repeated axis in \(1, -1\)"),
    ],
)
def test_bad_axis_names_the_op_and_the_value(name, axis, error, pattern):
    with pytest.raises(error, match=rf"{name}: {pattern}"):
        getattr(mg.Tensor(np.ones((2, 3))), name)(axis=axis)


def test_good_axes_still_work():
    x = mg.Tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(x.sum(axis=np.int64(1)).data, [3, 12])
    np.testing.assert_array_equal(x.sum(axis=[0, -1]).data, 15)
    np.testing.assert_array_equal(x.mean(axis=-2, keepdims=True).data, [[1.5, 2.5, 3.5]])
    assert mg.Tensor(2.0).sum(axis=0).data == 2.0  # a 0-d tensor takes axis 0 or -1, as in PyTorch
