import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.testing import gradcheck
from microgradcnn.testing.strategies import arrays


def linear_loop(x, w, b=None):
    """out[..., o] = sum_i x[..., i] w[o, i] + b[o], one output element at a time."""
    rows = x.reshape(-1, x.shape[-1])
    out = np.zeros((len(rows), w.shape[0]))
    for r in range(len(rows)):
        for o in range(w.shape[0]):
            out[r, o] = sum(rows[r, i] * w[o, i] for i in range(w.shape[1])) + (0.0 if b is None else b[o])
    return out.reshape((*x.shape[:-1], w.shape[0]))


@given(data=st.data())
def test_linear_forward_and_backward_match_the_definition(data):
    lead = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    fan_in, fan_out = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    x = data.draw(arrays((*lead, fan_in)))
    w = data.draw(arrays((fan_out, fan_in)))
    b = data.draw(st.none() | arrays((fan_out,)))
    tx, tw = mg.Tensor(x, requires_grad=True), mg.Tensor(w, requires_grad=True)
    tb = None if b is None else mg.Tensor(b, requires_grad=True)
    out = F.linear(tx, tw, tb)
    np.testing.assert_allclose(out.data, linear_loop(x, w, b), rtol=1e-10, atol=1e-12)
    g = data.draw(arrays(out.shape))
    out.backward(g)
    g2, x2 = g.reshape(-1, fan_out), x.reshape(-1, fan_in)
    np.testing.assert_allclose(tx.grad, (g2 @ w).reshape(x.shape), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tw.grad, g2.T @ x2, rtol=1e-10, atol=1e-12)
    if b is not None:
        np.testing.assert_allclose(tb.grad, g2.sum(axis=0), rtol=1e-10, atol=1e-12)


def test_linear_gradients_match_central_differences():
    rng = np.random.default_rng(0)
    x, w, b = (mg.Tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 3, 4), (5, 4), (5,)])
    assert gradcheck(F.linear, [x, w, b])


def test_linear_batch_one_weight_gradient_is_the_outer_product():
    x = mg.Tensor(np.array([[1.0, 2.0, 3.0]]))
    w = mg.Tensor(np.zeros((2, 3)), requires_grad=True)
    F.linear(x, w).backward(np.array([[1.0, -1.0]]))
    np.testing.assert_array_equal(w.grad, [[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    assert x.grad is None


def test_linear_keeps_float32():
    rng = np.random.default_rng(1)
    shapes = [(3, 4), (2, 4), (2,)]
    x, w, b = (mg.Tensor(rng.standard_normal(s, dtype=np.float32), requires_grad=True) for s in shapes)
    out = F.linear(x, w, b)
    out.sum().backward()
    assert out.dtype == x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32


@pytest.mark.parametrize(
    ("x", "w", "b", "match"),
    [
        ((3, 4), (5, 3), None, r"x \(3, 4\) and weight \(5, 3\)"),
        ((3, 4), (4,), None, r"weight \(4,\)"),
        ((), (2, 1), None, r"x \(\)"),
        ((3, 4), (5, 4), (4,), r"bias \(4,\) must be \(out,\), weight is \(5, 4\)"),
    ],
)
def test_linear_rejects_shapes_that_do_not_fit(x, w, b, match):
    with pytest.raises(ValueError, match=match):
        F.linear(np.zeros(x), np.zeros(w), None if b is None else np.zeros(b))


def test_seed_head_flatten_then_linear():
    # The seed CNN's head: pooled (N, 8, 13, 13) -> flatten from axis 1 -> linear 1352 -> 10.
    rng = np.random.default_rng(2)
    pooled = mg.Tensor(rng.standard_normal((2, 8, 13, 13)), requires_grad=True)
    w = mg.Tensor(rng.standard_normal((10, 1352)) * 0.01, requires_grad=True)
    flat = F.flatten(pooled)
    assert flat.shape == (2, 1352)
    assert pooled.flatten().shape == (2 * 1352,)  # Tensor.flatten keeps NumPy's start of 0
    logits = F.linear(F.relu(flat), w)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    want = (pooled.data.reshape(2, -1) > 0) * w.data.sum(axis=0)  # relu mask times d(sum logits)/d(flat)
    np.testing.assert_allclose(pooled.grad.reshape(2, -1), want)


def test_functional_reexports_every_op_and_registers_the_cnn_ops():
    for name in ("conv2d", "max_pool2d", "avg_pool2d", "linear", "softmax", "log_softmax", "cross_entropy"):
        assert name in mg.REGISTRY
        assert callable(getattr(F, name))
    assert set(mg.ops.__all__) <= set(F.__all__)
    assert F.relu is mg.ops.relu
    with pytest.raises(ValueError, match="start_axis 1 is out of range"):
        F.flatten(mg.Tensor(np.zeros(3)))
