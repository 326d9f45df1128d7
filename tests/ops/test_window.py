import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microgradcnn.ops.window import col2im, im2col, int_pair, out_size, pad_hw, scatter_windows, window_slices
from microgradcnn.testing.strategies import conv2d_configs


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize(
    ("value", "want"),
    [(3, (3, 3)), ((1, 2), (1, 2)), ([2, 0], (2, 0)), (np.int64(4), (4, 4)), ((np.int32(1), 5), (1, 5))],
)
def test_int_pair_accepts_ints_and_pairs_of_ints(value, want):
    got = int_pair(value, "padding", "conv2d", 0)
    assert got == want
    assert all(type(v) is int for v in got)  # NumPy ints become Python ints


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (True, TypeError, r"^pool: stride must be an int or an \(h, w\) pair of ints, got True$"),
        (2.0, TypeError, r"^pool: stride must be an int or an \(h, w\) pair of ints, got 2.0$"),
        ((1, 2, 3), TypeError, r"^pool: stride must be an int or an \(h, w\) pair"),
        ("2", TypeError, r"^pool: stride must be an int"),
        ((1, 1.5), TypeError, r"^pool: stride entry of \(1, 1.5\) must be an int, got 1.5 \(float\)$"),
        ((False, 1), TypeError, r"^pool: stride entry of \(False, 1\) must be an int, got False \(bool\)$"),
        (0, ValueError, r"^pool: stride must be at least 1, got 0$"),
        ((2, 0), ValueError, r"^pool: stride entry of \(2, 0\) must be at least 1, got 0$"),
        ([-1, 1], ValueError, r"^pool: stride entry of \(-1, 1\) must be at least 1, got -1$"),
    ],
)
def test_int_pair_rejects_with_the_shared_int_rule_naming_op_and_argument(value, error, match):
    with pytest.raises(error, match=match):
        int_pair(value, "stride", "pool", 1)


@given(size=st.integers(1, 12), kernel=st.integers(1, 4), stride=st.integers(1, 3), padding=st.integers(0, 2),
       dilation=st.integers(1, 3))
def test_out_size_counts_the_windows_that_fit(size, kernel, stride, padding, dilation):
    extent = dilation * (kernel - 1) + 1
    fits = sum(1 for start in range(0, size + 2 * padding, stride) if start + extent <= size + 2 * padding)
    assert max(out_size(size, kernel, stride, padding, dilation), 0) == fits


def test_window_slices_read_each_offset_of_every_window():
    rng = np.random.default_rng(0)
    xp = rng.standard_normal((2, 3, 9, 8))
    kernel, out, stride, dilation = (2, 3), (3, 2), (3, 2), (2, 1)
    slices = window_slices(kernel, out, stride, dilation)
    assert len(slices) == 6
    for k, (rows, cols) in enumerate(slices):
        i, j = divmod(k, kernel[1])
        for p in range(out[0]):
            for q in range(out[1]):
                want = xp[:, :, stride[0] * p + dilation[0] * i, stride[1] * q + dilation[1] * j]
                np.testing.assert_array_equal(xp[:, :, rows, cols][:, :, p, q], want)


def test_pad_hw_surrounds_with_the_value_and_returns_x_itself_without_padding():
    x = np.arange(12.0).reshape(1, 2, 2, 3)
    assert pad_hw(x, (0, 0)) is x
    xp = pad_hw(x, (1, 2), value=-np.inf)
    assert xp.shape == (1, 2, 4, 7)
    np.testing.assert_array_equal(xp[:, :, 1:3, 2:5], x)
    assert np.isneginf(xp).sum() == xp.size - x.size


@pytest.mark.parametrize(("kernel", "stride", "overlap"), [((3, 2), (1, 2), True), ((2, 2), (2, 3), False)])
def test_scatter_windows_is_the_transpose_of_reading_windows(kernel, stride, overlap):
    # <read(x), parts> == <x, scatter(parts)> for every x and parts: the adjoint, which backward needs
    rng = np.random.default_rng(1)
    shape, padding = (2, 2, 7, 6), (1, 1)
    out = tuple(out_size(shape[2 + a], kernel[a], stride[a], padding[a]) for a in (0, 1))
    slices = window_slices(kernel, out, stride)
    x = rng.standard_normal(shape)
    parts = [rng.standard_normal((2, 2, *out)) for _ in slices]
    xp = pad_hw(x, padding)
    read = sum(float((xp[:, :, r, c] * part).sum()) for (r, c), part in zip(slices, parts, strict=True))
    back = scatter_windows(iter(parts), shape, padding, slices, overlap, x.dtype)
    assert back.shape == shape
    np.testing.assert_allclose((x * back).sum(), read, rtol=1e-12)


def test_scatter_windows_fills_disjoint_views_through_a_function():
    slices = window_slices((1, 2), (2, 2), (1, 2))

    def fill(first, second):
        first[...] = 1.0
        second[...] = 2.0

    back = scatter_windows(fill, (1, 1, 2, 4), (0, 0), slices, False, np.float64)
    np.testing.assert_array_equal(back[0, 0], [[1, 2, 1, 2], [1, 2, 1, 2]])


def _configs():
    return conv2d_configs(max_side=6)


@given(cfg=_configs())
def test_im2col_copies_every_patch_into_its_row_and_column(cfg):
    x, w, groups = cfg["x"], cfg["weight"], cfg["groups"]
    (sh, sw), (ph, pw), (dh, dw) = _pair(cfg["stride"]), _pair(cfg["padding"]), _pair(cfg["dilation"])
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(wd, kw, sw, pw, dw)
    cols = im2col(x, (kh, kw), (oh, ow), (sh, sw), (ph, pw), (dh, dw), groups)
    assert cols.shape == (groups, c // groups * kh * kw, n * oh * ow)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    rows = cols.reshape(c, kh, kw, n, oh, ow)
    for ci, i, j in [(0, 0, 0), (c - 1, kh - 1, kw - 1), (c // 2, kh // 2, 0)]:
        np.testing.assert_array_equal(rows[ci, i, j], xp[:, ci, i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                                                          j * dw : j * dw + sw * (ow - 1) + 1 : sw])


@given(cfg=_configs(), seed=st.integers(0, 2**32 - 1))
def test_col2im_is_the_transpose_of_im2col(cfg, seed):
    x, w, groups = cfg["x"], cfg["weight"], cfg["groups"]
    args = (_pair(cfg["stride"]), _pair(cfg["padding"]), _pair(cfg["dilation"]))
    kernel = w.shape[2:]
    out = tuple(out_size(x.shape[2 + a], kernel[a], *(v[a] for v in args)) for a in (0, 1))
    cols = im2col(x, kernel, out, *args, groups)
    dcols = np.random.default_rng(seed).standard_normal(cols.shape)
    back = col2im(dcols, x.shape, kernel, out, *args)
    assert back.shape == x.shape
    np.testing.assert_allclose((x * back).sum(), (cols * dcols).sum(), rtol=1e-9, atol=1e-9)


def test_im2col_is_a_snapshot_of_the_input():
    x = np.ones((1, 1, 3, 3))
    cols = im2col(x, (2, 2), (2, 2), (1, 1), (0, 0), (1, 1))
    x[...] = 5.0
    np.testing.assert_array_equal(cols, np.ones((1, 4, 4)))
