"""Reductions: the axis argument's checks, and how max shares its gradient between tied maxima."""

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


def test_full_max_splits_the_gradient_evenly_between_ties():
    x = mg.Tensor(np.array([[1.0, 5.0, 5.0], [5.0, 0.0, 5.0]]), requires_grad=True)
    x.max().backward(np.array(8.0))
    np.testing.assert_array_equal(x.grad, [[0, 2, 2], [2, 0, 2]])
    x.grad = None
    x.max(keepdims=True).backward(np.full((1, 1), 8.0))
    np.testing.assert_array_equal(x.grad, [[0, 2, 2], [2, 0, 2]])


def test_max_over_an_explicit_axis_routes_to_the_first_maximum():
    x = mg.Tensor(np.array([[1.0, 5.0, 5.0], [5.0, 0.0, 5.0]]), requires_grad=True)
    x.max(axis=0).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 1], [1, 0, 0]])
    x.grad = None
    x.max(axis=(0, 1)).backward()  # every axis, named explicitly: still one position (row-major first)
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [0, 0, 0]])


def test_full_max_of_a_nan_sends_the_gradient_to_the_nans():
    x = mg.Tensor(np.array([1.0, np.nan, 3.0, np.nan]), requires_grad=True)
    out = x.max()
    assert np.isnan(out.item())
    out.backward()
    np.testing.assert_array_equal(x.grad, [0, 0.5, 0, 0.5])


def test_max_of_an_empty_tensor_raises():
    for axis in (None, 1, (0, 1)):
        with pytest.raises(ValueError, match=r"^max: cannot reduce an empty axis of shape \(2, 0\)$"):
            mg.Tensor(np.ones((2, 0))).max(axis=axis)
    assert mg.Tensor(np.ones((0, 3))).max(axis=1).shape == (0,)  # nothing empty is reduced
