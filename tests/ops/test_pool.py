import math

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
from microgradcnn.testing.strategies import arrays, pool2d_args, pool2d_configs


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _axis(size, k, s, p, d, ceil):
    """Output length by PyTorch's rule, written out: ceil or floor, then drop a last window that starts
    past the input and the left padding."""
    span = d * (k - 1) + 1
    out = (math.ceil if ceil else math.floor)((size + 2 * p - span) / s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def pool_loop(x, kernel_size, stride=None, padding=0, kind="max", grad=None, dilation=1, ceil_mode=False,
              count_include_pad=True):
    """One window at a time: the output, and (with ``grad``) the input gradient of the first-max rule.

    Windows are read from the input directly (positions outside it are padding: -inf for max, 0 for avg);
    an avg window's divisor is its span clipped at the padded input's end, or only its part inside the input
    without ``count_include_pad``.
    """
    (kh, kw), (ph, pw), (dh, dw) = _pair(kernel_size), _pair(padding), _pair(dilation)
    sh, sw = (kh, kw) if stride is None else _pair(stride)
    n, c, h, w = x.shape
    oh, ow = _axis(h, kh, sh, ph, dh, ceil_mode), _axis(w, kw, sw, pw, dw, ceil_mode)
    out, dx = np.zeros((n, c, oh, ow)), np.zeros_like(x)
    for p in range(oh):
        for q in range(ow):
            r0, c0 = p * sh - ph, q * sw - pw
            taps = [(r0 + i * dh, c0 + j * dw) for i in range(kh) for j in range(kw)]
            inside = [(r, col) for r, col in taps if 0 <= r < h and 0 <= col < w]
            for i in range(n):
                for ch in range(c):
                    if kind == "max":
                        values = [x[i, ch, r, col] if (r, col) in inside else -np.inf for r, col in taps]
                        best = int(np.argmax(values))  # the first maximum, row-major
                        out[i, ch, p, q] = values[best]
                        if grad is not None:
                            dx[i, ch, taps[best][0], taps[best][1]] += grad[i, ch, p, q]
                        continue
                    if count_include_pad:
                        divisor = (min(r0 + kh, h + ph) - r0) * (min(c0 + kw, w + pw) - c0)
                    else:
                        divisor = len(inside)
                    out[i, ch, p, q] = sum(x[i, ch, r, col] for r, col in inside) / divisor
                    if grad is not None:
                        for r, col in inside:
                            dx[i, ch, r, col] += grad[i, ch, p, q] / divisor
    return out, dx


def _run(name, cfg, x):
    t = mg.Tensor(x, requires_grad=True)
    args = pool2d_args(name, cfg) if "ceil_mode" in cfg else cfg  # a drawn config, or just the arguments
    out = getattr(F, name)(t, **args)
    grad = np.sin(np.arange(out.size) + 1.0).reshape(out.shape)
    out.backward(grad)
    return out.data, t.grad, grad


def _loop(name, cfg, x, grad):
    args = pool2d_args(name, cfg)
    return pool_loop(x, kind=name[:3], grad=grad, **args)


@pytest.mark.parametrize("kind", ["max", "avg"])
@given(cfg=pool2d_configs(distinct=False))
def test_pool_forward_and_backward_match_the_loop_definition(kind, cfg):
    name = f"{kind}_pool2d"
    out, dx, grad = _run(name, cfg, cfg["x"])
    ref_out, ref_dx = _loop(name, cfg, cfg["x"], grad)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-12)


@given(cfg=pool2d_configs(max_side=6), data=st.data())
def test_max_pool2d_routes_grad_to_the_first_maximum_on_ties(cfg, data):
    # Values from {0, 1, 2}: most windows have tied maxima.
    x = data.draw(arrays(cfg["x"].shape, st.sampled_from([0.0, 1.0, 2.0])))
    out, dx, grad = _run("max_pool2d", cfg, x)
    ref_out, ref_dx = _loop("max_pool2d", cfg, x, grad)
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


def _spy_fast_path(monkeypatch):
    calls = []
    fast = pool_module._max_pool_2x2
    monkeypatch.setattr(pool_module, "_max_pool_2x2", lambda *a: calls.append(1) or fast(*a))
    return calls


@pytest.mark.parametrize(
    ("shape", "args", "fast"),
    [
        ((1, 1, 6, 8), {}, True),
        ((1, 1, 6, 8), {"ceil_mode": True}, True),  # even sides: ceil_mode adds no window
        ((1, 1, 5, 8), {"ceil_mode": True}, False),  # an odd side: one more, overhanging window
        ((1, 1, 6, 8), {"dilation": 2}, False),
    ],
)
def test_the_2x2_fast_path_is_taken_exactly_when_it_computes_the_same_windows(monkeypatch, shape, args, fast):
    calls = _spy_fast_path(monkeypatch)
    x = np.random.default_rng(0).standard_normal(shape)
    out = F.max_pool2d(mg.Tensor(x, requires_grad=True), 2, **args)
    assert bool(calls) == fast
    np.testing.assert_array_equal(out.data, pool_loop(x, 2, **args)[0])


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "floor_out", "ceil_out"),
    [
        (5, 2, 2, 0, 2, 3),  # the extra window starts inside the input, on its last element
        (6, 3, 2, 1, 3, 4),  # the extra window starts on the last element and hangs past the padding
        (4, 3, 2, 0, 1, 2),
        (1, 2, 2, 1, 1, 1),  # the rounded-up window would start in the right padding: dropped
        (8, 3, 3, 1, 3, 3),  # likewise: it would start at padded position 9 = size + padding
        (7, 3, 3, 1, 3, 3),  # the division is exact: nothing to round
    ],
)
def test_ceil_mode_output_sizes_follow_pytorchs_rule(size, kernel, stride, padding, floor_out, ceil_out):
    x = np.zeros((1, 1, size, size))
    for name in ("max_pool2d", "avg_pool2d"):
        pool = getattr(F, name)
        assert pool(x, kernel, stride, padding).shape[2:] == (floor_out, floor_out)
        assert pool(x, kernel, stride, padding, ceil_mode=True).shape[2:] == (ceil_out, ceil_out)


def test_avg_pool2d_divisor_of_windows_hanging_past_the_padding_and_without_padding():
    x = mg.Tensor(np.ones((1, 1, 5, 5)), requires_grad=True)
    out = F.avg_pool2d(x, 2, padding=1, ceil_mode=True)  # 3x3 windows; the last ones end at the padded edge
    # counted: the left padding (1 of 2 along an axis for the first window) but not the overhang
    np.testing.assert_allclose(out.data[0, 0], [[0.25, 0.5, 0.5], [0.5, 1.0, 1.0], [0.5, 1.0, 1.0]])
    exact = F.avg_pool2d(x, 2, padding=1, ceil_mode=True, count_include_pad=False)
    np.testing.assert_allclose(exact.data, np.ones((1, 1, 3, 3)))  # only input elements count: all ones
    exact.sum().backward()
    # each input element is in one window; that window's divisor is how many inputs it holds
    np.testing.assert_allclose(x.grad[0, 0, 0], [1.0, 0.5, 0.5, 0.5, 0.5])


def test_max_pool2d_dilation_spaces_the_window():
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    out = F.max_pool2d(x, 2, stride=1, dilation=3)  # window {(i, j), (i, j+3), (i+3, j), (i+3, j+3)}
    np.testing.assert_array_equal(out.data[0, 0], [[18.0, 19.0], [23.0, 24.0]])


@pytest.mark.parametrize(
    ("name", "args", "error", "match"),
    [
        ("max_pool2d", {"dilation": 0}, ValueError, "max_pool2d: dilation must be at least 1"),
        ("max_pool2d", {"dilation": 1.5}, TypeError, "max_pool2d: dilation must be an int"),
        ("max_pool2d", {"ceil_mode": 1}, TypeError, "max_pool2d: ceil_mode must be a bool, got 1"),
        ("avg_pool2d", {"ceil_mode": "yes"}, TypeError, "avg_pool2d: ceil_mode must be a bool"),
        ("avg_pool2d", {"count_include_pad": None}, TypeError, "avg_pool2d: count_include_pad must be a b"),
        ("max_pool2d", {"dilation": 4}, ValueError,
         r"max_pool2d: output size \(0, 0\) is too small: .* dilation \(4, 4\)"),
    ],
)
def test_pools_reject_bad_new_arguments(name, args, error, match):
    with pytest.raises(error, match=match):
        getattr(F, name)(np.zeros((1, 1, 4, 4)), **{"kernel_size": 2, **args})


def test_max_pool2d_refuses_a_dilated_window_that_holds_only_padding():
    # padded row [pad, x, pad]: the window's taps 0 and 2 both land on padding (PyTorch gives -inf there)
    with pytest.raises(ValueError, match=r"max_pool2d: .* dilation \(2, 2\) some window .* only padding"):
        F.max_pool2d(np.zeros((1, 1, 1, 1)), 2, padding=1, dilation=2)


def adaptive_loop(x, out_size):
    """adaptive_avg_pool2d one window at a time: rows floor(p*H/OH) .. ceil((p+1)*H/OH)."""
    (oh, ow), (h, w) = out_size, x.shape[2:]
    out = np.zeros((*x.shape[:2], oh, ow))
    for p in range(oh):
        for q in range(ow):
            rows = slice(p * h // oh, math.ceil((p + 1) * h / oh))
            cols = slice(q * w // ow, math.ceil((q + 1) * w / ow))
            out[:, :, p, q] = x[:, :, rows, cols].mean(axis=(2, 3))
    return out


@given(h=st.integers(1, 7), w=st.integers(1, 7), oh=st.integers(1, 8), ow=st.integers(1, 8), data=st.data())
def test_adaptive_avg_pool2d_matches_the_loop_definition_and_its_gradient_checks(h, w, oh, ow, data):
    x = data.draw(arrays((2, 2, h, w)))
    out = F.adaptive_avg_pool2d(x, (oh, ow))
    np.testing.assert_allclose(out.data, adaptive_loop(x, (oh, ow)), rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda t: F.adaptive_avg_pool2d(t, (oh, ow)), [mg.Tensor(x, requires_grad=True)])


def test_adaptive_avg_pool2d_size_one_is_global_average_and_none_keeps_a_side():
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 4))
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, 1).data, x.mean(axis=(2, 3), keepdims=True))
    kept = F.adaptive_avg_pool2d(x, (None, 2))
    np.testing.assert_allclose(kept.data, adaptive_loop(x, (5, 2)), rtol=1e-12)


@pytest.mark.parametrize(
    ("size", "error", "match"),
    [
        (0, ValueError, "adaptive_avg_pool2d: output_size must be at least 1"),
        ((2, 0), ValueError, "adaptive_avg_pool2d: output_size must be at least 1"),
        (2.0, TypeError, "adaptive_avg_pool2d: output_size must be an int"),
        ((1, 2, 3), TypeError, r"adaptive_avg_pool2d: output_size must be an int, None or an \(h, w\) pair"),
    ],
)
def test_adaptive_avg_pool2d_rejects_bad_output_sizes(size, error, match):
    with pytest.raises(error, match=match):
        F.adaptive_avg_pool2d(np.zeros((1, 1, 4, 4)), size)
    with pytest.raises(ValueError, match=r"adaptive_avg_pool2d: x \(4, 4\) must be 4-d"):
        F.adaptive_avg_pool2d(np.zeros((4, 4)), 1)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("kernel", [2, 3, (3, 2)])
@pytest.mark.parametrize("size", [(5, 6), (7, 4), (4, 4)])
def test_pools_equal_torch_for_every_argument_combination(size, kernel, stride, padding, ceil_mode):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x = np.random.default_rng(sum(size)).standard_normal((2, 2, *size))
    grad_rng = np.random.default_rng(1)
    runs = [("max_pool2d", {"dilation": d}) for d in (1, 2)]
    runs += [("avg_pool2d", {"count_include_pad": c}) for c in (False, True)]
    for name, extra in runs:
        args = {"stride": stride, "padding": padding, "ceil_mode": ceil_mode, **extra}
        t, tx = mg.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        try:
            tout = getattr(tf, name)(tx, kernel, **args)
        except RuntimeError:  # no output fits (a dilated kernel larger than the input): we refuse too
            with pytest.raises(ValueError, match=rf"{name}: output size .* is too small"):
                getattr(F, name)(t, kernel, **args)
            continue
        out = getattr(F, name)(t, kernel, **args)
        grad = grad_rng.standard_normal(out.shape)
        out.backward(grad)
        tout.backward(torch.tensor(grad))
        np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(t.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("output_size", [1, 3, (2, None), (4, 5), (6, 7)])
def test_adaptive_avg_pool2d_equals_torch(output_size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(4).standard_normal((2, 3, 5, 6))
    t, tx = mg.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    tf = torch.nn.functional
    out, tout = F.adaptive_avg_pool2d(t, output_size), tf.adaptive_avg_pool2d(tx, output_size)
    grad = np.random.default_rng(5).standard_normal(out.shape)
    out.backward(grad)
    tout.backward(torch.tensor(grad))
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(t.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-12)



def test_max_pool2d_2x2_keeps_one_byte_per_output_until_backward():
    # The fast path saves each winner's offset in its window (uint8), not an 8-byte flat index per output;
    # the gradient still reaches each window's first maximum.
    x = np.zeros((2, 3, 4, 6))
    x[:, :, 1, 1] = x[:, :, 2, 4] = 1.0
    t = mg.Tensor(x, requires_grad=True)
    out = F.max_pool2d(t, 2)
    offsets = out._ctx.saved_tensors[1]
    assert offsets.dtype == np.uint8
    assert offsets.shape == (2, 3, 2, 3)
    out.sum().backward()
    want = np.zeros_like(x)
    want[:, :, 1, 1] = want[:, :, 2, 4] = 1.0
    want[:, :, 0, 2] = want[:, :, 2, 0] = 1.0  # all-zero windows: their first element
    want[:, :, 0, 4] = want[:, :, 2, 2] = 1.0
    np.testing.assert_array_equal(t.grad, want)
