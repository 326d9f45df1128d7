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


def test_logsumexp_is_stable_for_large_and_infinite_values():
    x = mg.Tensor(np.array([[1e4, 1e4], [-1e4, 0.0], [-np.inf, 0.0]]), requires_grad=True)
    out = x.logsumexp(axis=1)
    np.testing.assert_allclose(out.data, [1e4 + np.log(2), 0.0, 0.0])
    out.sum().backward()  # its gradient is the softmax of each row
    np.testing.assert_allclose(x.grad, [[0.5, 0.5], [0.0, 1.0], [0.0, 1.0]])
    assert mg.Tensor([-np.inf, -np.inf]).logsumexp().item() == -np.inf
    assert mg.Tensor(np.ones((2, 0))).logsumexp(axis=1).data.tolist() == [-np.inf, -np.inf]
    assert mg.Tensor(np.ones((2, 3))).logsumexp(axis=(0, 1), keepdims=True).shape == (1, 1)


def test_var_and_std_divide_by_n_minus_ddof():
    data = np.array([[1.0, 2.0, 4.0], [3.0, 3.0, 3.0]])
    x = mg.Tensor(data, requires_grad=True)
    for ddof in (0, 1):
        np.testing.assert_allclose(x.var(axis=1, ddof=ddof).data, data.var(axis=1, ddof=ddof))
        np.testing.assert_allclose(x.std(ddof=ddof).data, data.std(ddof=ddof))
    assert x.var(axis=0, keepdims=True).shape == (1, 3)
    x.var(axis=1, ddof=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[-4 / 3, -1 / 3, 5 / 3], [0, 0, 0]])  # 2 (x - mean) / (n - 1)


def test_var_is_stable_for_a_large_offset():
    data = 1e8 + np.array([0.0, 1.0, 2.0])  # a one-pass E[x^2] - E[x]^2 would lose every digit
    np.testing.assert_allclose(mg.Tensor(data).var().data, 2 / 3, rtol=1e-7)


def test_std_of_a_constant_slice_has_gradient_zero_as_torch():
    # 0.1 + 0.1 + 0.1 = 0.30000000000000004: a plain mean is 1 ulp off, and std would be 1e-17, not 0
    x = mg.Tensor(np.array([[0.1, 0.1, 0.1], [1.0, 2.0, 3.0]]), requires_grad=True)
    assert x.std(axis=1).data[0] == 0.0
    x.std(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0, 0], [-1 / np.sqrt(6), 0, 1 / np.sqrt(6)]])


def test_var_with_no_degrees_of_freedom_gives_nan_or_inf_without_warnings():
    assert np.isnan(mg.Tensor([1.0]).var(ddof=1).item())
    assert np.isinf(mg.Tensor([1.0, 2.0]).var(ddof=2).item())


@pytest.mark.parametrize("name", ["var", "std"])
@pytest.mark.parametrize(
    ("ddof", "error", "pattern"),
    [(1.0, TypeError, r"ddof must be an int, got 1.0 \(float\)"), (True, TypeError, r"ddof must be an int"),
     (-1, ValueError, r"ddof must be at least 0, got -1")],
)
def test_bad_ddof_names_the_op(name, ddof, error, pattern):
    with pytest.raises(error, match=rf"^{name}: {pattern}"):
        getattr(mg.Tensor(np.ones(3)), name)(ddof=ddof)


def test_min_follows_maxs_tie_rules():
    x = mg.Tensor(np.array([[1.0, 0.0, 0.0], [0.0, 5.0, 0.0]]), requires_grad=True)
    np.testing.assert_array_equal(x.min(axis=1).data, [0, 0])
    x.min().backward(np.array(8.0))  # the whole tensor: split evenly between the four minima
    np.testing.assert_array_equal(x.grad, [[0, 2, 2], [2, 0, 2]])
    x.grad = None
    x.min(axis=1).sum().backward()  # an explicit axis: each row's first minimum
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize("name", ["logsumexp", "var", "std", "min"])
@pytest.mark.parametrize(
    ("axis", "error", "pattern"),
    [(1.0, TypeError, r"axis must be an int, got 1.0"), (2, IndexError, r"axis 2 is out of range"),
     ((0, 0), ValueError, r"repeated axis in \(0, 0\)")],
)
def test_bad_axis_of_the_new_reductions_names_the_op(name, axis, error, pattern):
    with pytest.raises(error, match=rf"^{name}: {pattern}"):
        getattr(mg.Tensor(np.ones((2, 3))), name)(axis=axis)


def test_min_of_an_empty_tensor_raises():
    with pytest.raises(ValueError, match=r"^min: cannot reduce an empty axis of shape \(2, 0\)$"):
        mg.Tensor(np.ones((2, 0))).min(axis=1)


def test_argmax_is_data_without_a_graph():
    x = mg.Tensor(np.array([[1.0, 7.0, 7.0], [np.nan, 0.0, 9.0]]), requires_grad=True)
    idx = x.argmax(axis=1)
    assert isinstance(idx, np.ndarray)
    assert idx.dtype.kind == "i"
    np.testing.assert_array_equal(idx, [1, 0])  # the first of ties; a NaN counts as the maximum
    assert x.argmax() == 3
    assert x.argmax(axis=-1, keepdims=True).shape == (2, 1)
    assert mg.Tensor(5.0).argmax(axis=0) == 0
    for axis, error in ((2, IndexError), ((0,), TypeError), (0.0, TypeError)):
        with pytest.raises(error, match=r"^argmax: axis"):
            x.argmax(axis=axis)
    with pytest.raises(ValueError, match=r"^argmax: cannot take the argmax of an empty tensor"):
        mg.Tensor(np.ones(0)).argmax()


def test_min_passes_the_gradient_check():
    from microgradcnn.testing import check_op
    from microgradcnn.testing.strategies import COMPOSED_CASES

    check_op("min", max_examples=None, cases=COMPOSED_CASES["min"])
