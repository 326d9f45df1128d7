"""Shape ops' argument checks: every axis and size is an int in range, with errors naming the op and value."""

import numpy as np
import pytest

import microgradcnn as mg
from microgradcnn import functional as F


@pytest.fixture
def a():
    return mg.Tensor(np.ones((2, 3)))


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda a: a.transpose(0, 5), IndexError, r"transpose: axis 5 is out of range .*\(2, 3\)"),
        (lambda a: a.transpose(0, 5), ValueError, r"transpose: axis 5"),  # NumPy's AxisError is both
        (lambda a: a.transpose(-3, 0), IndexError, r"transpose: axis -3 is out of range"),
        (lambda a: a.transpose(1, -1), ValueError, r"transpose: repeated axis in \(1, -1\)"),
        (lambda a: a.transpose(0), ValueError, r"transpose: axes \(0,\) .*\(2, 3\)"),
        (lambda a: a.transpose(1, 0, 2), IndexError, r"transpose: axis 2 is out of range"),
        (lambda a: a.transpose(0, 1.0), TypeError, r"transpose: axis must be an int, got 1.0 \(float\)"),
        (lambda a: a.transpose(True, 0), TypeError, r"transpose: axis must be an int, got True \(bool\)"),
        (lambda a: a.reshape(3.7, 2), TypeError, r"reshape: shape entry must be an int, got 3.7 \(float\)"),
        (lambda a: a.reshape((3, 2.0)), TypeError, r"reshape: shape entry must be an int, got 2.0"),
        (lambda a: a.reshape(6.0), TypeError, r"reshape: shape entry must be an int, got 6.0"),
        (lambda a: a.reshape(True, 6), TypeError, r"reshape: shape entry must be an int, got True"),
        (lambda a: a.reshape("6"), TypeError, r"reshape: shape entry must be an int, got '6'"),
        (lambda a: a.reshape(-1, -1), ValueError, r"reshape: only one axis may be -1, got \(-1, -1\)"),
        (lambda a: a.reshape(-2, 3), ValueError, r"reshape: a size must be -1 or at least 0, got \(-2, 3\)"),
        (lambda a: a.reshape(4, 2), ValueError, r"reshape: .*\(2, 3\) \(6 elements\) to \(4, 2\)"),
        (lambda a: a.flatten(2), IndexError, r"flatten: start_axis 2 is out of range .*\(2, 3\)"),
        (lambda a: a.flatten(0.5), TypeError, r"flatten: start_axis must be an int, got 0.5"),
        (lambda a: F.flatten(a, True), TypeError, r"flatten: start_axis must be an int, got True"),
    ],
)
def test_bad_shape_arguments_name_the_op_and_the_value(a, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(a)


def test_good_shape_arguments_still_work(a):
    x = mg.Tensor(np.arange(24.0).reshape(2, 3, 4))
    assert x.transpose(2, 0, 1).shape == (4, 2, 3)
    assert x.transpose((-1, 0, 1)).shape == (4, 2, 3)
    assert x.transpose(np.int64(1), 0, 2).shape == (3, 2, 4)
    assert x.transpose().shape == x.T.shape == (4, 3, 2)
    assert x.reshape(np.int32(6), -1).shape == (6, 4)
    assert x.reshape([4, 6]).shape == (4, 6)
    assert x.reshape(24).shape == (24,)
    assert x.flatten(-2).shape == (2, 12)
    assert F.flatten(x).shape == (2, 12)
    assert mg.Tensor(3.0).flatten().shape == (1,)


def test_a_tensor_index_must_hold_whole_numbers():
    x = mg.Tensor([10.0, 20.0, 30.0], requires_grad=True)
    with pytest.raises(IndexError, match=r"getitem: a tensor index must hold whole numbers, got 1.1"):
        x[mg.Tensor(1.1)]
    with pytest.raises(IndexError, match=r"getitem: a tensor index must hold whole numbers, got nan"):
        x[mg.Tensor([0.0, np.nan])]
    with pytest.raises(IndexError, match=r"getitem: a tensor index must hold whole numbers, got 0.5"):
        x[(mg.Tensor([0.0, 0.5]),)]
    # whole-number tensors index as integers, and route the gradient
    y = x[mg.Tensor([2.0, 0.0, 2.0])]
    np.testing.assert_array_equal(y.data, [30, 10, 30])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1, 0, 2])
    assert x[mg.Tensor(1.0)].data == 20.0
