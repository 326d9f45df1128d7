"""Activation modules: the functional op per element, PyTorch's reprs and values (float64)."""

import numpy as np
import pytest

from microgradcnn import functional as F
from microgradcnn import nn
from microgradcnn.tensor import Tensor

MODULES = [
    ("LeakyReLU", {}),
    ("LeakyReLU", {"negative_slope": 0.3}),
    ("GELU", {}),
    ("GELU", {"approximate": "tanh"}),
    ("ELU", {}),
    ("ELU", {"alpha": 0.5}),
    ("Softplus", {}),
    ("Softplus", {"beta": 2.0, "threshold": 4.0}),
    ("Tanh", {}),
    ("Sigmoid", {}),
]


def sample(seed=0):
    return np.random.default_rng(seed).standard_normal((3, 4, 5)) * 4


@pytest.mark.parametrize(("name", "kwargs"), MODULES)
def test_module_forward_backward_and_repr_match_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    ours, theirs = getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
    assert repr(ours) == repr(theirs)
    x = sample()
    t, tt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, tout = ours(t), theirs(tt)
    g = np.random.default_rng(1).standard_normal(x.shape)
    out.backward(g)
    tout.backward(torch.from_numpy(g))
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(t.grad, tt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("module", "function"),
    [
        (nn.LeakyReLU(0.2), lambda x: F.leaky_relu(x, 0.2)),
        (nn.GELU(), F.gelu),
        (nn.ELU(2.0), lambda x: F.elu(x, 2.0)),
        (nn.Softplus(0.5, 3.0), lambda x: F.softplus(x, 0.5, 3.0)),
        (nn.Tanh(), F.tanh),
        (nn.Sigmoid(), F.sigmoid),
    ],
)
def test_each_module_is_its_functional_op(module, function):
    x = Tensor(sample(2))
    np.testing.assert_array_equal(module(x).data, function(x).data)
    assert module(x).op == function(x).op
    assert list(module.parameters()) == []
    assert module.state_dict() == {}


def test_modules_compose_in_a_sequential_and_stay_float32():
    model = nn.Sequential(nn.Linear(5, 8, rng=np.random.default_rng(0)), nn.GELU(), nn.LeakyReLU(), nn.ELU(),
                          nn.Softplus(), nn.Tanh(), nn.Sigmoid())
    out = model(Tensor(np.ones((2, 5), dtype=np.float32)))
    out.sum().backward()
    assert out.dtype == model[0].weight.grad.dtype == np.float32


def test_bad_module_arguments_name_the_module():
    with pytest.raises(ValueError, match="LeakyReLU: negative_slope"):
        nn.LeakyReLU("x")
    with pytest.raises(ValueError, match="GELU: approximate"):
        nn.GELU("fast")
    with pytest.raises(ValueError, match="ELU: alpha"):
        nn.ELU(None)
    with pytest.raises(ValueError, match="Softplus: beta must be positive"):
        nn.Softplus(-1.0)
