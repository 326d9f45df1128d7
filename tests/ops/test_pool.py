import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.ops import pool as pool_module
from microgradcnn.ops.pool import MaxPool2dFn
from microgradcnn.tensor import Context
from microgradcnn.testing import gradcheck
from microgradcnn.testing.strategies import arrays, pool2d_configs


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _geometry(x, kernel_size, stride, padding):
    (kh, kw), (ph, pw) = _pair(kernel_size), _pair(padding)
    sh, sw = (kh, kw) if stride is None else _pair(stride)
    n, c, h, w = x.shape
    return n, c, (kh, kw), (sh, sw), (ph, pw), (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def pool_loop(x, kernel_size, stride=None, padding=0, kind="max", grad=None):
    """One window at a time: the output, and (with ``grad``) the input gradient of the first-max rule."""
    n, c, (kh, kw), (sh, sw), (ph, pw), oh, ow = _geometry(x, kernel_size, stride, padding)
    xp = np.full((n, c, x.shape[2] + 2 * ph, x.shape[3] + 2 * pw), -np.inf if kind == "max" else 0.0)
    xp[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]] = x
    out = np.zeros((n, c, oh, ow))
    dxp = np.zeros_like(xp)
    for i in range(n):
        for ch in range(c):
            for p in range(oh):
                for q in range(ow):
                    rows, cols = slice(p * sh, p * sh + kh), slice(q * sw, q * sw + kw)
                    window = xp[i, ch, rows, cols]
                    if kind == "max":
                        out[i, ch, p, q] = window.max()
                        r, s = divmod(int(np.argmax(window)), kw)  # argmax: the first maximum, row-major
                        if grad is not None:
                            dxp[i, ch, p * sh + r, q * sw + s] += grad[i, ch, p, q]
                    else:
                        out[i, ch, p, q] = window.sum() / (kh * kw)
                        if grad is not None:
                            dxp[i, ch, rows, cols] += grad[i, ch, p, q] / (kh * kw)
    return out, dxp[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]]


def _run(name, cfg, x):
    t = mg.Tensor(x, requires_grad=True)
    out = getattr(F, name)(t, cfg["kernel_size"], cfg["stride"], cfg["padding"])
    grad = np.sin(np.arange(out.size) + 1.0).reshape(out.shape)
    out.backward(grad)
    return out.data, t.grad, grad


@pytest.mark.parametrize("kind", ["max", "avg"])
@given(cfg=pool2d_configs(distinct=False))
def test_pool_forward_and_backward_match_the_loop_definition(kind, cfg):
    out, dx, grad = _run(f"{kind}_pool2d", cfg, cfg["x"])
    ref_out, ref_dx = pool_loop(cfg["x"], cfg["kernel_size"], cfg["stride"], cfg["padding"], kind, grad)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-12)


@given(cfg=pool2d_configs(max_side=6), data=st.data())
def test_max_pool2d_routes_grad_to_the_first_maximum_on_ties(cfg, data):
    # Values from {0, 1, 2}: most windows have tied maxima.
    x = data.draw(arrays(cfg["x"].shape, st.sampled_from([0.0, 1.0, 2.0])))
    out, dx, grad = _run("max_pool2d", cfg, x)
    ref_out, ref_dx = pool_loop(x, cfg["kernel_size"], cfg["stride"], cfg["padding"], "max", grad)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-12)
    # Each output's gradient reaches exactly one input: nothing is doubled or lost.
    np.testing.assert_allclose(dx.sum(), grad.sum(), rtol=1e-9, atol=1e-9)


def test_max_pool2d_constant_window_sends_everything_to_its_top_left():
    x = mg.Tensor(np.ones((1, 1, 4, 4)), requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    want = np.zeros((4, 4))
    want[::2, ::2] = 1  # the seed's loop would have given all 16 positions a 1
    np.testing.assert_array_equal(x.grad[0, 0], want)


def test_max_pool2d_first_max_is_row_major_not_column_major():
    # Two maxima: (0, 1) comes first row-major, (1, 0) first column-major.
    x = mg.Tensor(np.array([[[[0.0, 5.0], [5.0, 0.0]]]]), requires_grad=True)
    F.max_pool2d(x, 2).backward(np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(x.grad[0, 0], [[0.0, 1.0], [0.0, 0.0]])


def test_max_pool2d_overlapping_windows_add_their_gradients():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 2] = 9.0  # the maximum of every 3x3 window that contains it
    t = mg.Tensor(x, requires_grad=True)
    out = F.max_pool2d(t, 3, stride=1)
    out.sum().backward()
    assert (out.data == 9.0).all()
    assert t.grad[0, 0, 1, 2] == 4.0  # four windows
    assert t.grad.sum() == 4.0


def test_max_pool2d_padding_never_wins():
    x = -np.arange(1.0, 26.0).reshape(1, 1, 5, 5)  # all negative: a zero padding would win
    out, _ = pool_loop(x, 3, 2, 1, "max")
    got = F.max_pool2d(x, 3, stride=2, padding=1)
    np.testing.assert_array_equal(got.data, out)
    assert (got.data < 0).all()


def test_avg_pool2d_counts_padding_in_the_divisor():
    x = mg.Tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    out = F.avg_pool2d(x, 3, stride=1, padding=1)  # every 3x3 window holds the 4 ones and 5 padding zeros
    np.testing.assert_allclose(out.data, np.full((1, 1, 2, 2), 4 / 9))
    out.sum().backward()
    np.testing.assert_allclose(x.grad, np.full((1, 1, 2, 2), 4 / 9))  # each one is in 4 windows, 1/9 each


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_pools_keep_float32(name):
    data = np.random.default_rng(0).standard_normal((2, 3, 6, 6), dtype=np.float32)
    x = mg.Tensor(data, requires_grad=True)
    out = getattr(F, name)(x, 3, 2, 1)
    out.sum().backward()
    assert out.dtype == x.grad.dtype == np.float32


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_pool_gradients_match_central_differences_with_overlap_and_padding(name):
    x = np.random.default_rng(1).permutation(2 * 2 * 7 * 6).reshape(2, 2, 7, 6) * 0.1  # no ties
    pool = getattr(F, name)
    assert gradcheck(lambda t: pool(t, (3, 2), (2, 1), (1, 1)), [mg.Tensor(x, requires_grad=True)])


def test_stride_defaults_to_kernel_size_and_windows_need_not_tile():
    x = np.arange(49.0).reshape(1, 1, 7, 7)
    out = F.max_pool2d(x, 3)  # 7 = 2 * 3 + 1: the last row and column are in no window
    np.testing.assert_array_equal(out.data[0, 0], [[16.0, 19.0], [37.0, 40.0]])
    assert out._ctx is None or out._ctx.attrs["stride"] == (3, 3)


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_padding_above_half_the_kernel_raises(name):
    with pytest.raises(ValueError, match=r"padding \(2, 2\) must be at most half the kernel \(3, 3\)"):
        getattr(F, name)(np.zeros((1, 1, 8, 8)), 3, padding=2)
    with pytest.raises(ValueError, match="at most half"):
        getattr(F, name)(np.zeros((1, 1, 8, 8)), (4, 1), padding=(2, 1))


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
@given(k=st.integers(2, 6), data=st.data())
def test_pool_without_room_for_one_window_raises(name, k, data):
    p = data.draw(st.integers(0, k // 2))
    if k - 2 * p <= 1:
        return
    h = data.draw(st.integers(1, k - 2 * p - 1))
    with pytest.raises(ValueError, match=rf"{name}: output size \(0, 8\) is too small: input \({h}, 8\)"):
        getattr(F, name)(np.zeros((1, 1, h, 8)), (k, 1), padding=(p, 0))


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ({"kernel_size": 0}, ValueError, "kernel_size must be at least 1"),
        ({"kernel_size": 2, "stride": 0}, ValueError, "stride"),
        ({"kernel_size": 2.0}, TypeError, "kernel_size must be an int"),
        ({"kernel_size": (2, 2, 2)}, TypeError, "kernel_size"),
        ({"kernel_size": 2, "padding": -1}, ValueError, "padding"),
    ],
)
def test_pools_reject_bad_arguments(args, error, match):
    for name in ("max_pool2d", "avg_pool2d"):
        with pytest.raises(error, match=match):
            getattr(F, name)(np.zeros((1, 1, 4, 4)), **args)


def test_pools_reject_non_4d_input_naming_its_shape():
    with pytest.raises(ValueError, match=r"max_pool2d: x \(4, 4\)"):
        F.max_pool2d(np.zeros((4, 4)), 2)


def _in_layout(x, layout):
    """x's values in another memory layout: NCHW, channels-outer (a conv2d output's) or a strided view."""
    if layout == "channels-outer":
        return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    if layout == "strided":
        wide = np.zeros((*x.shape[:3], 2 * x.shape[3]), dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x


@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(2, 7), st.integers(2, 7)),
    layout=st.sampled_from(["nchw", "channels-outer", "strided"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    data=st.data(),
)
def test_max_pool2d_2x2_fast_path_matches_the_loop_definition(shape, layout, dtype, data):
    # kernel 2, stride 2, no padding takes its own path (flat contiguous passes, winners as flat indices);
    # odd sides, every memory layout and tied maxima must give what the one-window-at-a-time loop gives.
    values = data.draw(arrays(shape, st.sampled_from([0.0, 1.0, 2.0, -3.5])))
    x = _in_layout(values.astype(dtype), layout)
    cfg = {"kernel_size": 2, "stride": None, "padding": 0}
    out, dx, grad = _run("max_pool2d", cfg, x)
    ref_out, ref_dx = pool_loop(values, 2, 2, 0, "max", grad)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-6)
    assert out.dtype == dx.dtype == dtype


@pytest.mark.parametrize("chunk_bytes", [1, 100, 1 << 20])
def test_max_pool2d_2x2_in_chunks_of_planes(monkeypatch, chunk_bytes):
    # Big inputs are pooled a few planes at a time (to stay in cache); the chunks must join up exactly.
    monkeypatch.setattr(pool_module, "_CHUNK_BYTES", chunk_bytes)
    values = np.random.default_rng(3).integers(0, 3, (3, 5, 6, 7)).astype(np.float32)
    cfg = {"kernel_size": 2, "stride": 2, "padding": 0}
    for layout in ("nchw", "channels-outer"):
        out, dx, grad = _run("max_pool2d", cfg, _in_layout(values, layout))
        ref_out, ref_dx = pool_loop(values, 2, 2, 0, "max", grad)
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-6)


def test_max_pool2d_2x2_rows_longer_than_255():
    # The winners' offsets are counted in bytes while a row is short enough; longer rows need wider ints.
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 301))
    cfg = {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}
    out, dx, grad = _run("max_pool2d", cfg, x)
    ref_out, ref_dx = pool_loop(x, 2, 2, 0, "max", grad)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(dx, ref_dx)


def test_max_pool2d_2x2_gradient_keeps_the_input_memory_order():
    # A conv2d output is stored channels-outer; its pool's gradient in that order reaches conv2d's backward
    # without a transposing copy (docs/benchmarks.md).
    x = _in_layout(np.random.default_rng(2).standard_normal((3, 4, 6, 6)), "channels-outer")
    attrs = {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}
    ctx = Context(MaxPool2dFn, (mg.Tensor(x, requires_grad=True),), attrs)
    out = MaxPool2dFn.forward(ctx, x, **attrs)
    (dx,) = MaxPool2dFn.backward(ctx, np.ones(out.shape))
    assert dx.transpose(1, 0, 2, 3).flags.c_contiguous
    np.testing.assert_array_equal(dx, pool_loop(x, 2, 2, 0, "max", np.ones(out.shape))[1])


def test_max_pool2d_propagates_nan_like_torch():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 0] = np.nan
    for kernel, stride in ((2, 2), (3, 1)):  # the 2x2 fast path and the general one
        out = F.max_pool2d(x, kernel, stride).data
        assert np.isnan(out[0, 0, 0, 0])
        assert np.isfinite(out[0, 0, -1, -1])


@given(cfg=pool2d_configs(distinct=False))
def test_max_pool2d_under_no_grad_gives_the_same_values(cfg):
    # Without a backward to come, the forward skips tracking which offset won; the maxima must not change.
    x = mg.Tensor(cfg["x"], requires_grad=True)
    args = {k: cfg[k] for k in ("kernel_size", "stride", "padding")}
    with mg.no_grad():
        fast = F.max_pool2d(x, **args)
    np.testing.assert_array_equal(fast.data, F.max_pool2d(x, **args).data)
    assert not fast.requires_grad
