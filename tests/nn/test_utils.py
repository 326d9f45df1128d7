import math

import numpy as np
import pytest

import microgradcnn as mg
from microgradcnn import nn
from microgradcnn.nn.utils import clip_grad_norm_


def params_with_grads(dtype=np.float64, scale=1.0, seed=0):
    r = np.random.default_rng(seed)
    params = [nn.Parameter(r.standard_normal(shape).astype(dtype)) for shape in [(3, 4), (4,), (2, 1, 3)]]
    for p in params:
        p.grad = (scale * r.standard_normal(p.shape)).astype(dtype)
    return params


def concatenated(params):
    return np.concatenate([p.grad.ravel() for p in params])


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_scales_to_max_norm_keeping_the_direction(norm_type, max_norm):
    params = params_with_grads()
    before = concatenated(params)
    total = clip_grad_norm_(params, max_norm, norm_type=norm_type)
    np.testing.assert_allclose(total, np.linalg.norm(before, ord=norm_type), rtol=1e-13)
    after = concatenated(params)
    if total > max_norm:  # clipped: the new norm is max_norm (up to the 1e-6 guard), same direction
        np.testing.assert_allclose(np.linalg.norm(after, ord=norm_type), max_norm, rtol=1e-5)
        np.testing.assert_allclose(after, before * (max_norm / (total + 1e-6)), rtol=1e-14)
    else:  # under the limit: untouched
        np.testing.assert_array_equal(after, before)


def test_worked_example_and_the_returned_number():
    w = nn.Parameter(np.zeros(2))
    w.grad = np.array([3.0, 4.0])
    total = clip_grad_norm_(w, max_norm=2.5)  # a single Tensor is accepted, as in PyTorch
    assert total == 5.0
    assert total.item() == 5.0  # PyTorch returns a 0-d tensor; .item() and float() work on ours too
    np.testing.assert_allclose(w.grad, [1.5, 2.0], rtol=1e-6)


def test_in_place_on_the_grad_arrays_and_float32_stays_float32():
    params = params_with_grads(np.float32, scale=10.0)
    arrays = [p.grad for p in params]
    total = clip_grad_norm_(iter(params), 1.0)  # any iterable, e.g. model.parameters()
    assert isinstance(total, np.float64)
    for p, a in zip(params, arrays, strict=True):
        assert p.grad is a
        assert p.grad.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(concatenated(params).astype(np.float64)), 1.0, rtol=1e-5)


def test_parameters_without_gradients_are_skipped_and_none_give_zero():
    params = params_with_grads()
    params[1].grad = None
    expected = np.linalg.norm(np.concatenate([params[0].grad.ravel(), params[2].grad.ravel()]))
    assert clip_grad_norm_(params, 1e9) == pytest.approx(expected, rel=1e-14)
    assert params[1].grad is None
    for p in params:
        p.grad = None
    assert clip_grad_norm_(params, 1.0) == 0.0


def test_no_float32_overflow_for_large_gradients():
    p = nn.Parameter(np.zeros(4, dtype=np.float32))
    p.grad = np.full(4, 1e20, dtype=np.float32)  # squares overflow float32
    total = clip_grad_norm_([p], 1.0)
    assert total == pytest.approx(2e20, rel=1e-6)
    np.testing.assert_allclose(p.grad, 0.5, rtol=1e-5)


def test_a_model_parameters_through_the_package_path():
    model = mg.nn.Sequential(nn.Linear(3, 4, rng=np.random.default_rng(0)), nn.ReLU(), nn.Linear(4, 2))
    loss = (model(mg.Tensor(np.ones((5, 3), np.float32))) * 100.0).sum()
    loss.backward()
    total = mg.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    assert total > 1.0
    norm = np.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in model.parameters()))
    assert norm == pytest.approx(1.0, rel=1e-5)


def test_a_nonfinite_norm_poisons_the_gradients_as_pytorch_or_raises_when_asked():
    params = params_with_grads()
    params[0].grad[0, 0] = np.nan
    assert math.isnan(clip_grad_norm_(params, 1.0))
    assert np.isnan(params[2].grad).all()
    params = params_with_grads()
    params[1].grad[0] = np.inf
    with pytest.raises(RuntimeError, match=r"clip_grad_norm_: the total 2.0-norm of the gradients is inf"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    assert np.isfinite(params[0].grad).all()  # nothing was scaled


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((-1.0,), ValueError, "clip_grad_norm_: max_norm must be a number >= 0, got -1.0"),
        (("1",), ValueError, "clip_grad_norm_: max_norm must be a number >= 0, got '1'"),
        ((1.0, 0), ValueError, r"clip_grad_norm_: norm_type must be a number > 0 or math.inf, got 0"),
        ((1.0, "fro"), ValueError, "norm_type must be a number > 0 or math.inf, got 'fro'"),
    ],
)
def test_bad_arguments_raise_clear_errors(args, error, message):
    with pytest.raises(error, match=message):
        clip_grad_norm_(params_with_grads(), *args)


def test_non_tensors_raise_a_type_error():
    with pytest.raises(TypeError, match="clip_grad_norm_: parameter 1 is a ndarray, not a Tensor"):
        clip_grad_norm_([params_with_grads()[0], np.zeros(3)], 1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.3, 100.0])
def test_matches_torch(norm_type, max_norm, dtype):
    torch = pytest.importorskip("torch")
    params = params_with_grads(dtype)
    tparams = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]
    for p, tp in zip(params, tparams, strict=True):
        tp.grad = torch.from_numpy(p.grad.copy())
    total = clip_grad_norm_(params, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(total, ttotal.item(), rtol=tol)
    for p, tp in zip(params, tparams, strict=True):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=tol, atol=tol)
