import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.testing import gradcheck
from microgradcnn.testing.strategies import arrays, class_targets, shapes


def softmax_ref(x, axis):
    """Textbook softmax in float64 with Python's math (no shift: only for moderate inputs)."""
    e = np.vectorize(math.exp)(x)
    return e / e.sum(axis=axis, keepdims=True)


def cross_entropy_ref(logits, target, reduction="mean", eps=0.0):
    """-sum_c q_c log p_c row by row, q = (1 - eps) onehot + eps / C, from the textbook softmax."""
    n, c = logits.shape
    losses = []
    for i in range(n):
        p = softmax_ref(logits[i], 0)
        q = np.full(c, eps / c)
        q[target[i]] += 1 - eps
        losses.append(-sum(q[j] * math.log(p[j]) for j in range(c)))
    losses = np.array(losses)
    return {"none": losses, "sum": losses.sum(), "mean": losses.mean()}[reduction]


@given(data=st.data())
def test_softmax_and_log_softmax_match_the_textbook_formula(data):
    shape = data.draw(shapes(min_dims=1))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = data.draw(arrays(shape, st.floats(-20, 20)))
    want = softmax_ref(x, axis)
    np.testing.assert_allclose(F.softmax(x, axis=axis).data, want, rtol=1e-12)
    np.testing.assert_allclose(F.log_softmax(x, axis=axis).data, np.log(want), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_log_softmax_stay_finite_for_huge_logits(dtype):
    x = mg.Tensor(np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype), requires_grad=True)
    s = F.softmax(x)
    ls = F.log_softmax(x)
    np.testing.assert_allclose(s.data, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)
    np.testing.assert_allclose(ls.data, [[0, -2e4, -1e4], [-math.log(3)] * 3], rtol=1e-6)
    (s * np.arange(6.0).reshape(2, 3)).sum().backward()
    (ls * np.arange(6.0).reshape(2, 3)).sum().backward()
    assert s.dtype == ls.dtype == x.grad.dtype == dtype
    assert np.isfinite(x.grad).all()


def test_softmax_backward_is_the_jacobian_vector_product():
    x = np.array([0.3, -1.2, 2.0, 0.5])
    g = np.array([1.0, -2.0, 0.5, 3.0])
    t = mg.Tensor(x, requires_grad=True)
    F.softmax(t).backward(g)
    s = softmax_ref(x, 0)
    jacobian = np.diag(s) - np.outer(s, s)  # d s_i / d x_j
    np.testing.assert_allclose(t.grad, jacobian.T @ g, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
@given(data=st.data())
def test_cross_entropy_matches_the_definition(reduction, eps, data):
    n, c = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 6))
    logits = data.draw(arrays((n, c), st.floats(-10, 10)))
    target = data.draw(class_targets(n, c))
    got = F.cross_entropy(logits, target, reduction=reduction, label_smoothing=eps).data
    np.testing.assert_allclose(got, cross_entropy_ref(logits, target, reduction, eps), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_mean_backward_is_softmax_minus_target_over_n(eps):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 5))
    target = np.array([0, 4, 2, 2])
    t = mg.Tensor(logits, requires_grad=True)
    F.cross_entropy(t, target, label_smoothing=eps).backward()
    q = np.full((4, 5), eps / 5)
    q[np.arange(4), target] += 1 - eps
    np.testing.assert_allclose(t.grad, (softmax_ref(logits, 1) - q) / 4, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_cross_entropy_gradients_match_central_differences(reduction, eps):
    logits = mg.Tensor(np.random.default_rng(1).standard_normal((3, 4)), requires_grad=True)
    target = [3, 0, 1]
    assert gradcheck(lambda t: F.cross_entropy(t, target, reduction=reduction, label_smoothing=eps), [logits])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_finite_for_extreme_logits(reduction, dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [0.0, 0.0, 1e4]], dtype=dtype)
    target = [1, 1, 0]  # confidently wrong, right, wrong
    t = mg.Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(t, target, reduction=reduction, label_smoothing=0.1)
    loss.backward(np.ones(loss.shape, dtype=dtype))
    assert np.isfinite(loss.data).all()
    assert np.isfinite(t.grad).all()
    assert loss.dtype == t.grad.dtype == dtype
    per_row = F.cross_entropy(logits, target, reduction="none").data
    np.testing.assert_allclose(per_row, [2e4, 0.0, 1e4], rtol=1e-6)
    # the gradient is bounded by 1 per element: softmax and the target both lie in [0, 1]
    assert np.abs(t.grad).max() <= 1.0


@pytest.mark.parametrize(
    "target",
    [
        np.array([2, 0, 1]),
        [2, 0, 1],
        np.array([2.0, 0.0, 1.0]),
        mg.Tensor([2.0, 0.0, 1.0]),
        np.array([2, 0, 1], np.uint8),
    ],
)
def test_cross_entropy_accepts_class_indices_in_any_whole_form(target):
    logits = np.random.default_rng(2).standard_normal((3, 4))
    want = cross_entropy_ref(logits, [2, 0, 1])
    np.testing.assert_allclose(F.cross_entropy(logits, target).data, want, rtol=1e-12)


def test_cross_entropy_keeps_its_own_copy_of_the_target():
    # backward reads the targets again: changing the caller's array in between must not change the gradient
    logits = np.random.default_rng(3).standard_normal((3, 4))
    target = np.array([2, 0, 1], dtype=np.intp)
    t = mg.Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(t, target)
    target[:] = 3
    loss.backward()
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(t.grad, (p - np.eye(4)[[2, 0, 1]]) / 3, rtol=1e-12)


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        ([0, 4, 1], ValueError, r"target\[1\] = 4 is out of range for C = 4"),
        ([0, -1, 1], ValueError, r"target\[1\] = -1 is out of range"),
        (np.array([0, -128, 1], dtype=np.int8), ValueError, r"target\[1\] = -128 is out of range"),
        (np.array([0, 1, 2**64 - 1], dtype=np.uint64), ValueError, r"target\[2\] = 18446744073709551615 "),
        (np.array([0, 2**63, 1], dtype=np.uint64), ValueError, r"target\[1\] = 9223372036854775808 "),
        (np.array([0, 1, 2**62], dtype=np.intp), ValueError, r"target\[2\] = 4611686018427387904 "),
        (np.array([0.0, 1e20, 1.0]), ValueError, r"target\[1\] = 1e\+20 is out of range"),
        (np.array([0.0, 0.5, 1.0]), ValueError, r"target\[1\] = 0.5 is not a whole class index"),
        (mg.Tensor([0.0, 1.0, 2.5]), ValueError, r"target\[2\] = 2.5"),
        (np.array([0.0, np.nan, 1.0]), ValueError, r"target\[1\] = nan"),
        ([0, 1], ValueError, "target has length 2, logits have N = 3"),
        ([0, 1, 2, 3], ValueError, "target has length 4"),
        (np.zeros((3, 1), dtype=int), ValueError, r"1-d .* got shape \(3, 1\)"),
        (1, ValueError, r"got shape \(\)"),
        (np.array([True, False, True]), TypeError, "dtype bool"),
        (["a", "b", "c"], TypeError, "target must hold integer class indices"),
        ([[0], [1, 2], [3]], ValueError, "target is not a flat list"),
    ],
)
def test_cross_entropy_rejects_bad_targets_naming_the_value(target, error, match):
    with pytest.raises(error, match=match):
        F.cross_entropy(np.zeros((3, 4)), target)


@pytest.mark.parametrize(
    ("logits", "kwargs", "match"),
    [
        (np.zeros(4), {}, r"logits must be \(N, C\).*\(4,\)"),
        (np.zeros((0, 4)), {}, r"\(0, 4\)"),
        (np.zeros((3, 4)), {"reduction": "avg"}, "reduction must be one of"),
        (np.zeros((3, 4)), {"label_smoothing": 1.5}, r"label_smoothing must be in \[0, 1\]"),
        (np.zeros((3, 4)), {"label_smoothing": -0.1}, "label_smoothing"),
    ],
)
def test_cross_entropy_rejects_bad_arguments(logits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.cross_entropy(logits, [0] * len(logits), **kwargs)


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
def test_softmax_rejects_bad_axis(fn):
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        fn(np.zeros((2, 3)), axis=2)
    with pytest.raises(ValueError, match="out of range"):
        fn(np.float64(1.0), axis=1)
    with pytest.raises(ValueError, match="is empty"):
        fn(np.zeros((2, 0)))
    with pytest.raises(TypeError, match="axis must be an int"):
        fn(np.zeros((2, 3)), axis=1.0)


@pytest.mark.parametrize(("fn", "want"), [(F.softmax, 1.0), (F.log_softmax, 0.0)])
@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmaxes_of_a_0d_tensor_are_one_element_distributions(fn, want, axis, dtype):
    x = mg.Tensor(np.array(3.5, dtype), requires_grad=True)
    out = fn(x, axis=axis)
    assert out.shape == ()
    assert out.dtype == dtype
    assert out.item() == want
    out.backward(np.array(7.0, dtype))
    assert x.grad.shape == ()
    assert x.grad == 0.0  # the output is constant in x


def test_cross_entropy_is_one_fused_op_recording_its_attrs():
    t = mg.Tensor(np.zeros((2, 3)), requires_grad=True)
    loss = F.cross_entropy(t, [1, 2], reduction="sum", label_smoothing=0.1)
    assert loss.op == "cross_entropy"
    assert loss._ctx.parents == (t,)
    assert loss._ctx.attrs["reduction"] == "sum"
    np.testing.assert_array_equal(loss._ctx.attrs["target"], [1, 2])
