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


# ------------------------------------------------------------ weights, ignore_index, probabilities, spatial
def weighted_ce_ref(logits, target, weight, ignore_index=-100, reduction="mean", eps=0.0):
    """Row by row from the textbook softmax: m_n * ((1 - eps) w_t (-log p_t) + eps / C sum_c w_c (-log p_c)),
    the mean divided by sum_n m_n w_t (m_n = 0 for an ignored row)."""
    n, c = logits.shape
    losses, divisor = [], 0.0
    for i in range(n):
        if target[i] == ignore_index:
            losses.append(0.0)
            continue
        logp = np.log(softmax_ref(logits[i], 0))
        losses.append((1 - eps) * weight[target[i]] * -logp[target[i]] + eps / c * -(weight * logp).sum())
        divisor += weight[target[i]]
    losses = np.array(losses)
    return {"none": losses, "sum": losses.sum(), "mean": losses.sum() / divisor}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.3])
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_weighted_cross_entropy_with_ignored_targets_matches_the_definition(reduction, eps, ignore_index):
    rng = np.random.default_rng(4)
    logits, weight = rng.standard_normal((6, 4)), rng.uniform(0.5, 2.0, 4)
    target = np.array([0, 3, ignore_index, 2, 1, 2])  # ignore_index 2: three rows ignored
    got = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                          label_smoothing=eps)
    want = weighted_ce_ref(logits, target, weight, ignore_index, reduction, eps)
    np.testing.assert_allclose(got.data, want, rtol=1e-12)


def test_weighted_mean_divides_by_the_kept_targets_weights():
    logits = np.zeros((3, 2))  # every -log p = log 2
    got = F.cross_entropy(logits, [0, 1, -100], weight=[1.0, 3.0]).item()
    assert got == pytest.approx((1 + 3) * math.log(2) / (1 + 3))
    got = F.cross_entropy(logits, [1, 1, 0], weight=[1.0, 3.0], reduction="sum").item()
    assert got == pytest.approx(7 * math.log(2))


@pytest.mark.parametrize("fn", [F.cross_entropy, lambda x, t, **kw: F.nll_loss(F.log_softmax(x, 1), t, **kw)])
@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 3.0]])
def test_all_ignored_mean_is_nan_with_a_zero_gradient(fn, weight):
    x = mg.Tensor(np.random.default_rng(5).standard_normal((2, 3)), requires_grad=True)
    loss = fn(x, [-100, -100], weight=weight)
    assert math.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(x.grad, np.zeros((2, 3)))  # as PyTorch: no target reached the loss


def test_cross_entropy_gradient_with_weights_is_s_times_softmax_minus_q():
    rng = np.random.default_rng(6)
    logits, weight, target, eps = rng.standard_normal((3, 4)), np.array([0.5, 1.0, 2.0, 4.0]), [3, 0, 1], 0.2
    t = mg.Tensor(logits, requires_grad=True)
    F.cross_entropy(t, target, weight=weight, reduction="sum", label_smoothing=eps).backward()
    q = np.tile(eps / 4 * weight, (3, 1))
    q[np.arange(3), target] += (1 - eps) * weight[target]
    want = softmax_ref(logits, 1) * q.sum(axis=1, keepdims=True) - q
    np.testing.assert_allclose(t.grad, want, rtol=1e-12)


def test_one_hot_probability_targets_equal_class_indices():
    rng = np.random.default_rng(7)
    logits, target = rng.standard_normal((4, 3)), np.array([2, 0, 1, 1])
    onehot = np.eye(3)[target]
    for kw in [{}, {"label_smoothing": 0.25}, {"weight": [0.5, 1.0, 2.0], "reduction": "sum"}]:
        np.testing.assert_allclose(F.cross_entropy(logits, onehot, **kw).data,
                                   F.cross_entropy(logits, target, **kw).data, rtol=1e-12)


def test_probability_targets_keep_float32_logits_float32():
    logits = mg.Tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    loss = F.cross_entropy(logits, np.full((2, 3), 1 / 3))  # a float64 target
    loss.backward()
    assert loss.dtype == logits.grad.dtype == np.float32
    assert loss.item() == pytest.approx(math.log(3), rel=1e-6)


def test_probability_targets_mean_over_rows_even_with_weights():
    logits, probs, weight = np.zeros((2, 2)), np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([1.0, 3.0])
    got = F.cross_entropy(logits, probs, weight=weight).item()
    assert got == pytest.approx((1 * math.log(2) + (0.5 + 1.5) * math.log(2)) / 2)


def test_a_probability_target_tensor_gets_its_gradient():
    logits = mg.Tensor(np.random.default_rng(8).standard_normal((2, 3)), requires_grad=True)
    probs = mg.Tensor(np.full((2, 3), 1 / 3), requires_grad=True)
    F.cross_entropy(logits, probs, reduction="sum").backward()
    np.testing.assert_allclose(probs.grad, -F.log_softmax(logits, 1).data, rtol=1e-12)  # d/dq of -q log p


@pytest.mark.parametrize("probabilities", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_spatial_cross_entropy_is_the_rows_of_the_moved_class_axis(probabilities, reduction):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 2, 4))
    target = rng.dirichlet(np.ones(3), (2, 2, 4)) if probabilities else rng.integers(0, 3, (2, 2, 4))
    rows = x.transpose(0, 2, 3, 1).reshape(-1, 3)
    flat = target.reshape(-1, 3) if probabilities else target.reshape(-1)
    got = F.cross_entropy(x, target.transpose(0, 3, 1, 2) if probabilities else target, reduction=reduction,
                          weight=[1.0, 2.0, 0.5])
    want = F.cross_entropy(rows, flat, reduction=reduction, weight=[1.0, 2.0, 0.5]).data
    assert got.shape == ((2, 2, 4) if reduction == "none" else ())
    np.testing.assert_allclose(got.data, want.reshape(got.shape), rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_of_log_softmax_is_cross_entropy(reduction):
    rng = np.random.default_rng(10)
    x, target, weight = rng.standard_normal((5, 4)), [1, -100, 3, 0, 3], [1.0, 0.5, 2.0, 1.5]
    a, b = mg.Tensor(x, requires_grad=True), mg.Tensor(x, requires_grad=True)
    ours = F.nll_loss(F.log_softmax(a, 1), target, weight=weight, reduction=reduction)
    fused = F.cross_entropy(b, target, weight=weight, reduction=reduction)
    np.testing.assert_allclose(ours.data, fused.data, rtol=1e-12)
    ours.backward(np.ones(ours.shape))
    fused.backward(np.ones(fused.shape))
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-10, atol=1e-15)


def test_nll_loss_picks_minus_the_weighted_target_entry():
    log_probs = mg.Tensor([[-0.5, -1.0, -2.0], [-3.0, -0.25, -1.5]], requires_grad=True)
    loss = F.nll_loss(log_probs, [2, 1], weight=[1.0, 4.0, 0.5])
    assert loss.item() == pytest.approx((0.5 * 2.0 + 4.0 * 0.25) / 4.5)
    loss.backward()
    np.testing.assert_allclose(log_probs.grad, [[0, 0, -0.5 / 4.5], [0, -4.0 / 4.5, 0]])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_and_its_gradients(reduction):
    x, t = mg.Tensor([1.0, 2.0, -1.0], requires_grad=True), mg.Tensor([0.0, 4.0, -1.0], requires_grad=True)
    loss = F.mse_loss(x, t, reduction=reduction)
    want = np.array([1.0, 4.0, 0.0])
    np.testing.assert_allclose(loss.data, {"none": want, "sum": 5.0, "mean": 5 / 3}[reduction])
    loss.backward(np.ones(loss.shape))
    scale = 1 / 3 if reduction == "mean" else 1.0
    np.testing.assert_allclose(x.grad, 2 * np.array([1.0, -2.0, 0.0]) * scale)
    np.testing.assert_allclose(t.grad, -x.grad)


def test_mse_loss_broadcasts_different_shapes_with_a_warning():
    x = mg.Tensor(np.zeros((2, 3)), requires_grad=True)
    with pytest.warns(UserWarning, match=r"mse_loss: target \(3,\) differs from input \(2, 3\)"):
        loss = F.mse_loss(x, np.ones(3))
    assert loss.item() == 1.0
    loss.backward()
    np.testing.assert_allclose(x.grad, np.full((2, 3), -2 / 6))


def bce_ref(x, y, weight=1.0, pos_weight=1.0):
    """-w (pw y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))), the textbook form (moderate x only)."""
    s = 1 / (1 + np.exp(-x))
    return -weight * (pos_weight * y * np.log(s) + (1 - y) * np.log(1 - s))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_matches_the_textbook_formula(reduction):
    rng = np.random.default_rng(11)
    x, y = rng.uniform(-4, 4, (3, 4)), rng.uniform(0, 1, (3, 4))
    weight, pos_weight = rng.uniform(0.5, 2, (3, 1)), rng.uniform(0.5, 3, 4)
    got = F.binary_cross_entropy_with_logits(x, y, weight=weight, pos_weight=pos_weight, reduction=reduction)
    per = bce_ref(x, y, weight, pos_weight)
    np.testing.assert_allclose(got.data, {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction],
                               rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_is_exact_and_finite_at_huge_logits(dtype):
    x = mg.Tensor(np.array([1e4, -1e4, 1e4, -1e4], dtype), requires_grad=True)
    y = mg.Tensor(np.array([0.0, 1.0, 1.0, 0.0], dtype), requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none", pos_weight=np.array(2.0, dtype))
    np.testing.assert_array_equal(loss.data, [1e4, 2e4, 0.0, 0.0])  # confidently wrong costs the margin
    loss.backward(np.ones(4, dtype))
    assert loss.dtype == x.grad.dtype == y.grad.dtype == dtype
    np.testing.assert_array_equal(x.grad, [1.0, -2.0, 0.0, 0.0])  # (1 - y) - l (1 - sigmoid(x))
    np.testing.assert_array_equal(y.grad, [-1e4, 2e4, -1e4, 2e4])  # (pw - 1) softplus(-x) - x
    # second order at the same points: sigmoid' = 0 there, finite
    (gx,) = mg.grad(F.binary_cross_entropy_with_logits(x, y, reduction="sum"), [x], create_graph=True)
    (hx,) = mg.grad(gx.sum(), [x])
    assert np.isfinite(hx.data).all()


def test_check_op_catches_a_wrong_bce_backward(monkeypatch):
    from microgradcnn.ops.loss import BinaryCrossEntropyWithLogitsFn
    from microgradcnn.testing import GradcheckError, check_op

    right = BinaryCrossEntropyWithLogitsFn.backward

    def dropped_pos_weight(ctx, grad):  # the rule for pos_weight = 1, whatever pos_weight is
        attrs = ctx.attrs
        ctx.attrs = {**attrs, "pos_weight": None}
        try:
            return right(ctx, grad)
        finally:
            ctx.attrs = attrs

    monkeypatch.setattr(BinaryCrossEntropyWithLogitsFn, "backward", staticmethod(dropped_pos_weight))
    with pytest.raises(GradcheckError, match="binary_cross_entropy_with_logits"):
        check_op("binary_cross_entropy_with_logits", max_examples=50)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: F.cross_entropy(np.zeros((2, 3)), [0, 1], weight=[1.0, 2.0]), ValueError,
         r"cross_entropy: weight must have one value per class, shape \(3,\), got shape \(2,\)"),
        (lambda: F.nll_loss(np.zeros((2, 3)), [0, 1], weight=np.ones((3, 1))), ValueError,
         r"nll_loss: weight must have one value per class, shape \(3,\), got shape \(3, 1\)"),
        (lambda: F.cross_entropy(np.zeros((2, 3)), np.full((2, 3), 1 / 3), ignore_index=0), ValueError,
         r"cross_entropy: ignore_index=0 needs class-index targets"),
        (lambda: F.cross_entropy(np.zeros((2, 3)), np.full((2, 4), 0.25)), ValueError,
         r"cross_entropy: probability target must have the logits' shape \(2, 3\), got shape \(2, 4\)"),
        (lambda: F.cross_entropy(np.zeros((2, 3, 4)), np.zeros((2, 3), int)), ValueError,
         r"cross_entropy: target must be class indices of shape \(N, d1, ...\) = \(2, 4\), got shape "
         r"\(2, 3\)"),
        (lambda: F.cross_entropy(np.zeros((2, 3)), [0, 1], weight=mg.Tensor(np.ones(3), requires_grad=True)),
         ValueError, "cross_entropy: weight is a constant"),
        (lambda: F.cross_entropy(np.zeros((2, 3)), [0, 1], ignore_index=1.5), TypeError, "ignore_index"),
        (lambda: F.nll_loss(np.zeros((2, 3)), [0, 3]), ValueError,
         r"nll_loss: target\[1\] = 3 is out of range"),
        (lambda: F.nll_loss(np.zeros(3), [0]), ValueError, r"nll_loss: log_probs must be \(N, C\)"),
        (lambda: F.cross_entropy(np.zeros((2, 3)), [0, -1]), ValueError, r"target\[1\] = -1 is out of range"),
        (lambda: F.mse_loss(np.zeros((2, 3)), np.zeros(2)), ValueError,
         r"mse_loss: input \(2, 3\) and target \(2,\) do not broadcast"),
        (lambda: F.mse_loss(np.zeros(2), np.zeros(2), reduction="avg"), ValueError, "mse_loss: reduction"),
        (lambda: F.binary_cross_entropy_with_logits(np.zeros((2, 3)), np.zeros((2, 2))), ValueError,
         r"binary_cross_entropy_with_logits: target shape \(2, 2\) must be the input's shape \(2, 3\)"),
        (lambda: F.binary_cross_entropy_with_logits(np.zeros((2, 3)), np.zeros((2, 3)), pos_weight=[1, 2]),
         ValueError, r"pos_weight of shape \(2,\) does not broadcast to the input's shape \(2, 3\)"),
        (lambda: F.binary_cross_entropy_with_logits(np.zeros(3), np.zeros(3), weight=np.ones((2, 3))),
         ValueError, r"weight of shape \(2, 3\) does not broadcast"),
    ],
)
def test_loss_arguments_are_checked_naming_the_op(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_an_ignored_class_index_in_range_is_ignored_not_an_error():
    logits = np.random.default_rng(12).standard_normal((3, 4))
    got = F.cross_entropy(logits, [1, 2, 2], ignore_index=2, reduction="none").data
    np.testing.assert_allclose(got[1:], 0.0)
    assert got[0] == pytest.approx(cross_entropy_ref(logits[:1], [1])[()])
    # a negative ignore_index other than -100 works as a marker too
    np.testing.assert_allclose(F.cross_entropy(logits, [1, -1, -1], ignore_index=-1).item(), got[0])


# ------------------------------------------------------------------ torch: values, gradients, double backward
def _torch_double(ours, theirs, inputs):
    """Forward, VJP and double backward against PyTorch (the shared helper of the double-backward suite)."""
    pytest.importorskip("torch")
    from .test_torch_double_backward import _double  # tests/ops is a package

    _double(ours, theirs, inputs)


def _torch():
    torch = pytest.importorskip("torch")
    return torch, torch.nn.functional


SPATIAL = [(5, 4), (2, 4, 3)]


@pytest.mark.parametrize("shape", SPATIAL)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 1])
@pytest.mark.parametrize("eps", [0.0, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_class_indices_equal_torch_to_second_order(shape, weighted, ignore_index, eps,
                                                                  reduction):
    torch, TF = _torch()
    rng = np.random.default_rng(13)
    logits = rng.standard_normal(shape)
    target = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    target.reshape(-1)[::3] = ignore_index  # some ignored, never all
    target.reshape(-1)[1] = 0 if ignore_index == 1 else 2
    weight = rng.uniform(0.5, 2.0, shape[1]) if weighted else None
    kw = {"ignore_index": ignore_index, "reduction": reduction, "label_smoothing": eps}
    tw = None if weight is None else torch.tensor(weight)
    _torch_double(lambda t: F.cross_entropy(t, target, weight=weight, **kw),
                  lambda t: TF.cross_entropy(t, torch.tensor(target), weight=tw, **kw), [logits])


@pytest.mark.parametrize("shape", SPATIAL)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_probabilities_equal_torch_to_second_order(shape, weighted, eps, reduction):
    torch, TF = _torch()
    rng = np.random.default_rng(14)
    logits, probs = rng.standard_normal(shape), rng.uniform(0, 1, shape)
    weight = rng.uniform(0.5, 2.0, shape[1]) if weighted else None
    tw = None if weight is None else torch.tensor(weight)
    kw = {"reduction": reduction, "label_smoothing": eps}
    _torch_double(lambda t, q: F.cross_entropy(t, q, weight=weight, **kw),
                  lambda t, q: TF.cross_entropy(t, q, weight=tw, **kw), [logits, probs])


@pytest.mark.parametrize("shape", SPATIAL)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_equals_torch_to_second_order(shape, weighted, ignore_index, reduction):
    torch, TF = _torch()
    rng = np.random.default_rng(15)
    x = rng.standard_normal(shape)
    target = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    target.reshape(-1)[::2] = ignore_index
    target.reshape(-1)[1] = 0 if ignore_index == 1 else 2
    weight = rng.uniform(0.5, 2.0, shape[1]) if weighted else None
    tw = None if weight is None else torch.tensor(weight)
    kw = {"ignore_index": ignore_index, "reduction": reduction}
    # through log_softmax, so the second derivative is not zero
    _torch_double(lambda t: F.nll_loss(F.log_softmax(t, 1), target, weight=weight, **kw),
                  lambda t: TF.nll_loss(TF.log_softmax(t, 1), torch.tensor(target), weight=tw, **kw), [x])
    _torch_double(lambda t: F.nll_loss(t, target, weight=weight, **kw),
                  lambda t: TF.nll_loss(t, torch.tensor(target), weight=tw, **kw), [x])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_equals_torch_to_second_order(reduction):
    _, TF = _torch()
    rng = np.random.default_rng(16)
    x, t = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    _torch_double(lambda a, b: F.mse_loss(a, b, reduction=reduction),
                  lambda a, b: TF.mse_loss(a, b, reduction=reduction), [x, t])
    # through tanh: a non-constant second derivative in the input
    _torch_double(lambda a, b: F.mse_loss(a.tanh(), b, reduction=reduction),
                  lambda a, b: TF.mse_loss(a.tanh(), b, reduction=reduction), [x, t])


@pytest.mark.parametrize("weight", [None, "full", "last"])
@pytest.mark.parametrize("pos_weight", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_bce_with_logits_equals_torch_to_second_order(weight, pos_weight, reduction, scale):
    torch, TF = _torch()
    rng = np.random.default_rng(17)
    x, y = rng.standard_normal((3, 4)) * scale, rng.uniform(0, 1, (3, 4))
    w = {None: None, "full": rng.uniform(0.5, 2, (3, 4)), "last": rng.uniform(0.5, 2, 4)}[weight]
    pw = rng.uniform(0.5, 3, 4) if pos_weight else None
    tw, tpw = (None if a is None else torch.tensor(a) for a in (w, pw))
    _torch_double(lambda a, b: F.binary_cross_entropy_with_logits(a, b, w, reduction, pw),
                  lambda a, b: TF.binary_cross_entropy_with_logits(a, b, tw, pos_weight=tpw,
                                                                   reduction=reduction),
                  [x, y])
