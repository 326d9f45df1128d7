"""cat, stack, where, maximum, minimum: results, gradients at ties and NaN, and errors naming the op."""

import numpy as np
import pytest

import microgradcnn as mg
from microgradcnn import functional as F


def test_cat_joins_along_an_axis_and_splits_the_gradient_back():
    a = mg.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    b = mg.Tensor(np.arange(2.0).reshape(2, 1), requires_grad=True)
    out = mg.cat([a, b], axis=-1)
    np.testing.assert_array_equal(out.data, np.concatenate([a.data, b.data], axis=1))
    out.backward(np.arange(8.0).reshape(2, 4))
    np.testing.assert_array_equal(a.grad, [[0, 1, 2], [4, 5, 6]])
    np.testing.assert_array_equal(b.grad, [[3], [7]])
    assert out.op == "cat"
    assert F.cat is mg.cat


def test_stack_adds_an_axis_and_gives_each_input_its_slice():
    ts = [mg.Tensor(np.full((2,), float(i)), requires_grad=True) for i in range(3)]
    out = mg.stack(ts, axis=1)
    assert out.shape == (2, 3)
    assert mg.stack(ts, axis=-1).shape == (2, 3)
    assert mg.stack(ts).shape == (3, 2)
    out.backward(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    for i, t in enumerate(ts):
        np.testing.assert_array_equal(t.grad, [i + 1, i + 4])
    assert mg.stack([mg.Tensor(1.0), mg.Tensor(2.0)]).shape == (2,)  # 0-d tensors stack to 1-d


def test_mixed_dtypes_join_as_float64():
    out = mg.cat([mg.Tensor(np.ones(2, np.float32)), mg.Tensor(np.ones(1))])
    assert out.dtype == np.float64


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: mg.cat([mg.Tensor(np.ones((2, 3))), mg.Tensor(np.ones((3, 2)))]), ValueError,
         r"^cat: shapes \[\(2, 3\), \(3, 2\)\] must match except along axis 0$"),
        (lambda: mg.cat([mg.Tensor(np.ones((2, 3))), mg.Tensor(np.ones(3))]), ValueError,
         r"^cat: shapes \[\(2, 3\), \(3,\)\] must match except along axis 0$"),
        (lambda: mg.cat([mg.Tensor(np.ones(2))], axis=1), IndexError, r"^cat: axis 1 is out of range"),
        (lambda: mg.cat([mg.Tensor(np.ones(2))], axis=0.0), TypeError, r"^cat: axis must be an int"),
        (lambda: mg.cat([mg.Tensor(1.0)]), ValueError, r"^cat: a 0-d tensor cannot be joined"),
        (lambda: mg.cat([]), ValueError, r"^cat: needs at least one tensor"),
        (lambda: mg.cat(mg.Tensor(np.ones(2))), TypeError, r"^cat: tensors must be a list or tuple"),
        (lambda: mg.stack([mg.Tensor(np.ones(2)), mg.Tensor(np.ones(3))]), ValueError,
         r"^stack: every tensor must have the same shape, got \[\(2,\), \(3,\)\]$"),
        (lambda: mg.stack([mg.Tensor(np.ones(2))], axis=2), IndexError,
         r"^stack: axis 2 is out of range \[-2, 1\] for a tensor of shape \(2,\)$"),
        (lambda: mg.stack([mg.Tensor(np.ones(2))], axis=(0,)), TypeError, r"^stack: axis must be an int"),
        (lambda: mg.stack(()), ValueError, r"^stack: needs at least one tensor"),
    ],
)
def test_bad_joins_name_the_op_and_the_shapes(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_where_routes_the_gradient_by_the_condition_and_broadcasts():
    a = mg.Tensor([[1.0], [2.0]], requires_grad=True)
    b = mg.Tensor([10.0, 20.0, 30.0], requires_grad=True)
    cond = np.array([True, False, True])
    out = mg.where(cond, a, b)
    np.testing.assert_array_equal(out.data, [[1, 20, 1], [2, 20, 2]])
    out.backward(np.ones((2, 3)))
    np.testing.assert_array_equal(a.grad, [[2], [2]])
    np.testing.assert_array_equal(b.grad, [0, 2, 0])


def test_where_takes_a_comparison_and_a_number_and_never_makes_nan_from_an_inf_gradient():
    x = mg.Tensor([-1.0, 2.0], requires_grad=True)
    out = mg.where(x > 0, x, 0.0)
    assert out.dtype == x.dtype
    out.backward(np.array([np.inf, 1.0]))
    np.testing.assert_array_equal(x.grad, [0, 1])  # a mask multiply would give inf * 0 = NaN


@pytest.mark.parametrize(
    ("cond", "error", "pattern"),
    [
        (mg.Tensor([1.0, 0.0]), TypeError, r"^where: cond must be a boolean array .* got a float32 Tensor$"),
        (np.array([1, 0]), TypeError, r"^where: cond must be a boolean array .* got dtype int64"),
        (np.array([True, False, True]), ValueError,
         r"^where: shapes cond \(3,\), a \(2,\) and b \(\) do not broadcast together$"),
    ],
)
def test_bad_where_arguments_name_the_op(cond, error, pattern):
    with pytest.raises(error, match=pattern):
        mg.where(cond, mg.Tensor([1.0, 2.0]), 0.0)


@pytest.mark.parametrize(
    ("name", "out", "grad_a", "grad_b"),
    [
        ("maximum", [2, 2, 3, np.nan], [0, 0.5, 1, 1], [1, 0.5, 0, 1]),
        ("minimum", [1, 2, 1, np.nan], [1, 0.5, 0, 1], [0, 0.5, 1, 1]),
    ],
)
def test_maximum_and_minimum_split_ties_evenly_and_send_nan_gradients_to_both(name, out, grad_a, grad_b):
    a = mg.Tensor([1.0, 2.0, 3.0, np.nan], requires_grad=True)
    b = mg.Tensor([2.0, 2.0, 1.0, 1.0], requires_grad=True)
    result = getattr(mg, name)(a, b)
    np.testing.assert_array_equal(result.data, out)
    result.sum().backward()
    np.testing.assert_array_equal(a.grad, grad_a)  # PyTorch's rule, checked against it in test_torch_parity
    np.testing.assert_array_equal(b.grad, grad_b)


def test_maximum_with_a_number_keeps_the_dtype_and_broadcasts():
    x = mg.Tensor(np.array([[-1.0, 0.5]], np.float32), requires_grad=True)
    out = mg.maximum(x, 0.0)
    assert out.dtype == np.float32
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1]])
    assert mg.minimum(mg.Tensor(np.ones((2, 1))), mg.Tensor(np.zeros(3))).shape == (2, 3)


def test_minimum_composed_from_maximum_passes_the_gradient_check():
    from microgradcnn.testing import check_op
    from microgradcnn.testing.strategies import COMPOSED_CASES

    check_op("minimum", max_examples=None, cases=COMPOSED_CASES["minimum"])
