"""F.batch_norm and the batch_norm op: PyTorch's signature and values (float64), gradients, errors."""

import numpy as np
import pytest

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.ops.norm import BatchNormFn
from microgradcnn.testing import GradcheckError, check_op, gradcheck

SHAPES = [(6, 3), (4, 3, 5), (3, 3, 4, 2)]


def test_backward_matches_central_differences():
    check_op("batch_norm", max_examples=40)


def test_the_gradient_check_catches_a_backward_without_the_mean_terms():
    class Naive(BatchNormFn, register=False):  # treats mean and variance as constants
        name = "naive_batch_norm"

        @staticmethod
        def backward(ctx, grad):
            _x, _weight, _xhat, inv_std = ctx.saved_tensors
            return (grad * inv_std,)

    x = mg.Tensor(np.random.default_rng(0).standard_normal((4, 2, 3)), requires_grad=True)
    gradcheck(lambda t: BatchNormFn.apply(t, eps=1e-5), [x])
    with pytest.raises(GradcheckError):
        gradcheck(lambda t: Naive.apply(t, eps=1e-5), [x])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_functional_matches_torch_including_running_statistics(shape, training, affine):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) * 3 + 1
    c = shape[1]
    w = rng.uniform(0.5, 2, c) if affine in ("both", "weight") else None
    b = rng.standard_normal(c) if affine in ("both", "bias") else None
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    ours = [mg.Tensor(a, requires_grad=True) if a is not None else None for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) if a is not None else None for a in (x, w, b)]
    out = F.batch_norm(ours[0], rm, rv, ours[1], ours[2], training=training, momentum=0.3, eps=1e-3)
    tout = torch.nn.functional.batch_norm(theirs[0], trm, trv, theirs[1], theirs[2], training, 0.3, 1e-3)
    g = rng.standard_normal(shape)
    out.backward(g)
    tout.backward(torch.from_numpy(g))
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-12)  # updated in place (or left alone in eval)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-12)
    for m, r in zip(ours, theirs, strict=True):
        if m is not None:
            np.testing.assert_allclose(m.grad, r.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_training_without_running_statistics_updates_nothing():
    x = mg.Tensor(np.arange(12.0).reshape(4, 3))
    out = F.batch_norm(x, None, None, training=True)
    np.testing.assert_allclose(out.data.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out.data.var(axis=0), 1, atol=1e-5)


def test_errors_name_batch_norm_and_the_shapes():
    x = mg.Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"batch_norm: running_mean must be an array of shape \(3,\)"):
        F.batch_norm(x, np.zeros(4), np.ones(3))
    with pytest.raises(ValueError, match=r"batch_norm: weight must have shape \(3,\) .*got \(2,\)"):
        F.batch_norm(x, np.zeros(3), np.ones(3), mg.Tensor(np.ones(2)))
    with pytest.raises(ValueError, match="running_mean and running_var are needed when not training"):
        F.batch_norm(x, None, None)
    with pytest.raises(ValueError, match=r"more than 1 value per channel when training.*\(1, 3\)"):
        F.batch_norm(mg.Tensor(np.ones((1, 3))), None, None, training=True)
    with pytest.raises(ValueError, match=r"at least 2 dims, got shape \(3,\)"):
        F.batch_norm(mg.Tensor(np.ones(3)), None, None, training=True)
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0.0, 1.0\]"):
        F.batch_norm(x, np.zeros(3), np.ones(3), training=True, momentum=2.0)
