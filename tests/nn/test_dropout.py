"""nn.Dropout: seeded masks drawn once per call, identity in eval, not part of the state."""

import numpy as np
import pytest

from microgradcnn import nn
from microgradcnn.tensor import Tensor


def test_a_seeded_layer_is_reproducible_and_draws_once_per_call():
    x = Tensor(np.ones((4, 6)))
    a, b = nn.Dropout(0.5, rng=3), nn.Dropout(0.5, rng=np.random.default_rng(3))
    first = [a(x).data for _ in range(3)]
    second = [b(x).data for _ in range(3)]
    for u, v in zip(first, second, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(first[0], first[1])  # a new mask every call
    expected = np.random.default_rng(3).random((4, 6)) >= 0.5
    np.testing.assert_array_equal(first[0], expected * 2.0)  # one rng.random(x.shape) draw per call


def test_eval_is_the_identity_and_train_switches_back():
    layer = nn.Dropout(0.9, rng=0)
    x = Tensor(np.ones(50))
    assert layer.eval()(x) is x
    assert (layer.train()(x).data == 0).sum() > 25


def test_dropout_inside_a_model_follows_model_eval():
    model = nn.Sequential(nn.Linear(4, 4, rng=np.random.default_rng(0)), nn.Dropout(0.5, rng=0))
    x = Tensor(np.ones((2, 4), dtype=np.float32))
    model.eval()
    np.testing.assert_array_equal(model(x).data, model(x).data)
    assert model.state_dict().keys() == {"0.weight", "0.bias"}  # Dropout has no state, as in PyTorch


def test_repr_and_argument_checks():
    assert repr(nn.Dropout(0.25)) == "Dropout(p=0.25, inplace=False)"
    with pytest.raises(ValueError, match=r"Dropout: dropout probability p must be in \[0, 1\], got 1.5"):
        nn.Dropout(1.5)
    with pytest.raises(TypeError, match="rng must be"):
        nn.Dropout(0.5, rng="seed")


def test_repr_matches_torch():
    torch = pytest.importorskip("torch")
    assert repr(nn.Dropout(0.3)) == repr(torch.nn.Dropout(0.3))
