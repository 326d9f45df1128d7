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


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda a: a.squeeze(2), IndexError, r"^squeeze: axis 2 is out of range for .* \(2, 3\)"),
        (lambda a: a.squeeze(1.0), TypeError, r"^squeeze: axis must be an int, got 1.0 \(float\)$"),
        (lambda a: a.unsqueeze(3), IndexError, r"^unsqueeze: axis 3 is out of range \[-3, 2\] .*\(2, 3\)$"),
        (lambda a: a.unsqueeze(-4), IndexError, r"^unsqueeze: axis -4 is out of range \[-3, 2\]"),
        (lambda a: a.unsqueeze((0,)), TypeError, r"^unsqueeze: axis must be an int, got \(0,\)"),
        (lambda a: a.permute(0), ValueError, r"^permute: axes \(0,\) do not permute the 2 axes of"),
        (lambda a: a.permute(0, 0), ValueError, r"^permute: repeated axis in \(0, 0\)"),
        (lambda a: a.permute(0, 2), IndexError, r"^permute: axis 2 is out of range"),
        (lambda a: a.expand(4, 3), ValueError, r"^expand: cannot expand shape \(2, 3\) to \(4, 3\): only"),
        (lambda a: a.expand(3), ValueError, r"^expand: 1 sizes \(3,\) for a tensor of 2 axes \(2, 3\)$"),
        (lambda a: a.expand(-1, 2, 3), ValueError, r"^expand: -1 \(keep the size\) is not allowed in a new"),
        (lambda a: a.expand(2, -2), ValueError, r"^expand: size must be at least -1, got -2$"),
        (lambda a: a.expand(2, 3.0), TypeError, r"^expand: size must be an int, got 3.0 \(float\)$"),
        (lambda a: a.flip(2), IndexError, r"^flip: axis 2 is out of range"),
        (lambda a: a.flip((0, 0)), ValueError, r"^flip: repeated axis in \(0, 0\)"),
        (lambda a: F.pad(a, (1,)), ValueError, r"^pad: pad needs \(before, after\) pairs, .* got \(1,\)$"),
        (lambda a: F.pad(a, (1, 1) * 3), ValueError, r"^pad: 3 \(before, after\) pairs in .* \(2, 3\)$"),
        (lambda a: F.pad(a, (-2, -2)), ValueError,
         r"^pad: widths \(-2, -2\) crop more than the 3 elements of axis 1 \(shape \(2, 3\)\)$"),
        (lambda a: F.pad(a, (-4, 2)), ValueError, r"^pad: widths \(-4, 2\) crop more than the 3 elements"),
        (lambda a: F.pad(a, (0, 0, -3, 0)), ValueError, r"^pad: widths \(-3, 0\) crop more than the 2"),
        (lambda a: F.pad(a, (1.0, 1)), TypeError, r"^pad: pad width must be an int, got 1.0 \(float\)$"),
        (lambda a: F.pad(a, 1), TypeError, r"^pad: pad must be a tuple or list of ints, got int$"),
        (lambda a: F.pad(a, (1, 1), value="0"), TypeError, r"^pad: value must be a real number, got '0'"),
    ],
)
def test_bad_arguments_of_the_new_shape_ops_name_the_op_and_the_value(a, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(a)


def test_squeeze_drops_size_one_axes_and_leaves_named_others_alone_as_torch():
    x = mg.Tensor(np.ones((1, 2, 1, 3)), requires_grad=True)
    assert x.squeeze().shape == (2, 3)
    assert x.squeeze(0).shape == (2, 1, 3)
    assert x.squeeze(1).shape == (1, 2, 1, 3)  # not size 1: left alone, as in PyTorch
    assert x.squeeze((1, -2)).shape == (1, 2, 3)
    assert mg.Tensor(2.0).squeeze(0).shape == ()  # a 0-d tensor takes axis 0 or -1
    assert x.squeeze().op == "reshape"  # composed: no op of its own


def test_unsqueeze_permute_expand_and_flip_in_their_spellings():
    x = mg.Tensor(np.arange(6.0).reshape(2, 3))
    assert x.unsqueeze(0).shape == (1, 2, 3)
    assert x.unsqueeze(-1).shape == (2, 3, 1)
    assert x.unsqueeze(2).shape == (2, 3, 1)
    assert mg.Tensor(2.0).unsqueeze(-1).shape == (1,)
    assert x.permute(1, 0).shape == x.permute((1, 0)).shape == x.permute([-1, 0]).shape == (3, 2)
    assert x.unsqueeze(1).expand(2, 4, 3).shape == x.unsqueeze(1).expand((-1, 4, -1)).shape == (2, 4, 3)
    assert x.expand(5, 2, 3).shape == (5, 2, 3)
    assert mg.Tensor(np.ones(1)).expand(0).shape == (0,)
    np.testing.assert_array_equal(x.flip().data, x.data[::-1, ::-1])
    np.testing.assert_array_equal(x.flip(-1).data, x.data[:, ::-1])


def test_expand_sums_the_gradient_over_the_stretched_axes():
    x = mg.Tensor(np.array([[1.0], [2.0]]), requires_grad=True)
    out = x.expand(3, 2, 4)
    out.backward(np.arange(24.0).reshape(3, 2, 4))
    np.testing.assert_array_equal(x.grad, np.arange(24.0).reshape(3, 2, 4).sum(axis=(0, 2))[:, None])
    out.data[0, 0, 0] = 5.0  # a fresh array, not a read-only broadcast view of x
    assert x.data[0, 0] == 1.0


def test_pad_follows_torchs_order_crops_with_negative_widths_and_cuts_the_gradient_back():
    x = mg.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    out = F.pad(x, (1, -1, 0, 2), value=9.0)  # last axis: 1 before, crop 1 after; axis 0: 2 after
    np.testing.assert_array_equal(out.data, [[9, 0, 1], [9, 3, 4], [9, 9, 9], [9, 9, 9]])
    out.backward(np.arange(12.0).reshape(4, 3))
    np.testing.assert_array_equal(x.grad, [[1, 2, 0], [4, 5, 0]])  # the cropped column gets 0
    assert F.pad(x, (-3, 0)).shape == (2, 0)  # cropping a whole axis is allowed, as in PyTorch
    assert F.pad(x, (-3, 1)).shape == (2, 1)
    assert F.pad(x, []).shape == (2, 3)
    assert F.pad(mg.Tensor(np.ones((1, 1, 2, 2), np.float32)), (1, 1, 1, 1)).dtype == np.float32


@pytest.mark.parametrize("name", ["squeeze", "unsqueeze", "permute", "expand"])
def test_composed_shape_ops_pass_the_gradient_check(name):
    from microgradcnn.testing import check_op
    from microgradcnn.testing.strategies import COMPOSED_CASES

    check_op(name, max_examples=None, cases=COMPOSED_CASES[name])
