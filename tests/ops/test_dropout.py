"""F.dropout: inverted dropout, masks from the given generator, identity in eval, p checked."""

import numpy as np
import pytest

from microgradcnn import functional as F
from microgradcnn.tensor import Tensor


def test_kept_values_are_scaled_and_the_gradient_is_the_same_mask():
    x = Tensor(np.arange(1.0, 2001.0).reshape(40, 50), requires_grad=True)
    out = F.dropout(x, 0.3, rng=np.random.default_rng(0))
    kept = out.data != 0
    np.testing.assert_allclose(out.data[kept], x.data[kept] / 0.7)
    assert 0.25 < 1 - kept.mean() < 0.35  # about p of the elements are dropped
    out.backward(np.ones(x.shape))
    np.testing.assert_allclose(x.grad, kept / 0.7)


def test_the_expected_value_is_unchanged():
    out = F.dropout(Tensor(np.ones(200_000)), 0.6, rng=np.random.default_rng(1))
    assert out.data.mean() == pytest.approx(1.0, abs=0.02)


def test_the_same_generator_state_gives_the_same_mask():
    x = Tensor(np.ones((8, 8)))
    a = F.dropout(x, 0.5, rng=np.random.default_rng(5)).data
    b = F.dropout(x, 0.5, rng=np.random.default_rng(5)).data
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(5)
    F.dropout(x, 0.5, rng=rng)
    assert not np.array_equal(F.dropout(x, 0.5, rng=rng).data, a)  # the generator moved on


def test_identity_in_eval_or_at_p_zero_and_zeros_at_p_one():
    x = Tensor(np.ones((3, 4), dtype=np.float32), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    out = F.dropout(x, 1.0)
    assert out.dtype == np.float32
    assert not out.data.any()
    out.sum().backward()
    assert not x.grad.any()


def test_float32_input_gives_float32_output():
    out = F.dropout(Tensor(np.ones(10, dtype=np.float32)), 0.5, rng=np.random.default_rng(0))
    assert out.dtype == np.float32


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_p_outside_0_1_is_refused_naming_the_value(p):
    with pytest.raises(ValueError, match=r"dropout: dropout probability p must be in \[0, 1\], got"):
        F.dropout(Tensor(np.ones(3)), p)


def test_rng_must_be_a_generator():
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator"):
        F.dropout(Tensor(np.ones(3)), 0.5, rng=3)


def test_statistics_match_torch_dropout():
    torch = pytest.importorskip("torch")  # different generators: compare what dropout guarantees
    x = np.full((400, 500), 2.0)
    ours = F.dropout(Tensor(x), 0.25, rng=np.random.default_rng(0)).data
    theirs = torch.nn.functional.dropout(torch.from_numpy(x), 0.25).numpy()
    assert set(np.unique(ours)) == set(np.unique(theirs)) == {0.0, 2.0 / 0.75}
    assert abs((ours == 0).mean() - (theirs == 0).mean()) < 0.01
