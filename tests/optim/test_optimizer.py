import numpy as np
import pytest

from microgradcnn import nn, optim
from microgradcnn.tensor import Tensor


def make_params(dtype=np.float32, seed=0):
    r = np.random.default_rng(seed)
    return [nn.Parameter(r.standard_normal(shape).astype(dtype)) for shape in [(3, 4), (4,), (2, 2, 3)]]


def grad_sequence(params, steps, seed=1):
    r = np.random.default_rng(seed)
    return [[r.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(steps)]


def run(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.copy()
        opt.step()


# ---- hand-computed formulas (float64) ------------------------------------------------------------------
def sgd_reference(p0, grads, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    p, buf = p0.astype(np.float64), None
    for g in grads:
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def adam_reference(p0, grads, lr, b1, b2, eps, weight_decay=0.0, amsgrad=False, decoupled=False):
    p = p0.astype(np.float64)
    m, v, v_max = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        v_max = np.maximum(v_max, v)
        m_hat, v_hat = m / (1 - b1**t), (v_max if amsgrad else v) / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def rmsprop_reference(
    p0, grads, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False
):
    p = p0.astype(np.float64)
    v, mean, buf = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        mean = alpha * mean + (1 - alpha) * g
        s = np.sqrt(v - mean * mean if centered else v) + eps
        buf = momentum * buf + g / s
        p = p - lr * (buf if momentum else g / s)
    return p


SGD_CASES = [
    {"lr": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.01},
    {"lr": 0.1, "weight_decay": 0.1},
]
ADAM_CASES = [
    {},
    {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6},
    {"lr": 0.003, "weight_decay": 0.05},
    {"lr": 0.01, "betas": (0.5, 0.9), "amsgrad": True, "weight_decay": 0.01},
]
ADAMW_CASES = [
    {},  # PyTorch's default weight_decay 1e-2
    {"lr": 0.01, "weight_decay": 0.3},
    {"lr": 0.02, "betas": (0.7, 0.95), "weight_decay": 0.1, "amsgrad": True},
    {"lr": 0.01, "weight_decay": 0.0},
]
RMSPROP_CASES = [
    {},
    {"lr": 0.003, "alpha": 0.9, "eps": 1e-6},
    {"lr": 0.01, "weight_decay": 0.1},
    {"lr": 0.001, "momentum": 0.9},
    {"lr": 0.001, "centered": True},
    {"lr": 0.002, "alpha": 0.8, "momentum": 0.5, "centered": True, "weight_decay": 0.05},
]
CASES = (
    [("SGD", kw) for kw in SGD_CASES]
    + [("Adam", kw) for kw in ADAM_CASES]
    + [("AdamW", kw) for kw in ADAMW_CASES]
    + [("RMSprop", kw) for kw in RMSPROP_CASES]
)


def adam_reference_with_defaults(
    p0, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False
):
    return adam_reference(p0, grads, lr, betas[0], betas[1], eps, weight_decay, amsgrad, decoupled)


def adamw_reference(p0, grads, weight_decay=1e-2, **kwargs):
    return adam_reference_with_defaults(p0, grads, weight_decay=weight_decay, decoupled=True, **kwargs)


REFERENCES = {
    "SGD": sgd_reference,
    "Adam": adam_reference_with_defaults,
    "AdamW": adamw_reference,
    "RMSprop": rmsprop_reference,
}


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_follows_the_hand_computed_update_rule(name, kwargs):
    params = make_params(np.float64)
    start = [p.data.copy() for p in params]
    grads = grad_sequence(params, 5)
    run(getattr(optim, name)(params, **kwargs), params, grads)
    for i, p in enumerate(params):
        expected = REFERENCES[name](start[i], [g[i] for g in grads], **kwargs)
        np.testing.assert_allclose(p.data, expected, rtol=1e-10, atol=1e-12)


def test_adamw_decays_the_weights_apart_from_the_gradient_scaling():
    # Adam's L2 decay passes through 1/sqrt(v): on a zero gradient the first step is then a sign step of size
    # lr; AdamW's decay shrinks each weight by the factor 1 - lr * weight_decay and nothing else
    start = np.array([1.0, -4.0])
    adam_w, adamw_w = nn.Parameter(start.copy()), nn.Parameter(start.copy())
    adam_w.grad, adamw_w.grad = np.zeros(2), np.zeros(2)
    optim.Adam([adam_w], lr=0.1, weight_decay=0.5).step()
    optim.AdamW([adamw_w], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(adam_w.data, [0.9, -3.9], rtol=1e-6)
    np.testing.assert_allclose(adamw_w.data, start * 0.95, rtol=1e-12)


def test_amsgrad_keeps_the_largest_second_moment():
    p = nn.Parameter(np.array([0.0]))
    opt = optim.Adam([p], lr=0.1, betas=(0.0, 0.5), amsgrad=True)
    for g in [4.0, 0.0, 0.0]:
        p.grad = np.array([g])
        opt.step()
    v, v_max = opt.state[p]["exp_avg_sq"], opt.state[p]["max_exp_avg_sq"]
    np.testing.assert_allclose(v, [2.0])  # 8 after the first step, halved twice
    np.testing.assert_allclose(v_max, [8.0])


def test_centered_rmsprop_stays_finite_on_a_steady_gradient():
    # with a constant gradient the centered variance v - mean**2 tends to 0 and rounds below it for some
    # elements; the square root of that would turn the whole step into NaN
    params = make_params(np.float64)
    grads = [g.copy() for g in grad_sequence(params, 1)[0]]
    opt = optim.RMSprop(params, lr=1e-12, alpha=0.5, centered=True)
    run(opt, params, [grads] * 200)
    for p in params:
        assert np.isfinite(p.data).all()


def test_adam_first_step_moves_each_weight_by_about_lr():
    # with bias correction the first step is lr * g / (|g| + eps): a sign step of size lr
    p = nn.Parameter(np.array([1.0, -1.0, 3.0]))
    p.grad = np.array([0.5, -2.0, 1e-3])
    optim.Adam([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [0.9, -0.9, 2.9], rtol=1e-4)


def torch_run(torch, make_opt, params, grads):
    tparams = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]
    opt = make_opt(tparams)
    for step_grads in grads:
        for tp, g in zip(tparams, step_grads, strict=True):
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
    return [tp.detach().numpy() for tp in tparams]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_matches_torch_optim(name, kwargs, dtype):
    torch = pytest.importorskip("torch")
    params = make_params(dtype)
    grads = grad_sequence(params, 6)
    expected = torch_run(torch, lambda ps: getattr(torch.optim, name)(ps, **kwargs), params, grads)
    run(getattr(optim, name)(params, **kwargs), params, grads)
    # float32: the adaptive ones divide by sqrt(v) + eps, where rounding differs more than in SGD's
    # multiply-adds
    tol = {np.float32: 1e-6 if name == "SGD" else 1e-5, np.float64: 1e-12}[dtype]
    for p, e in zip(params, expected, strict=True):
        assert p.dtype == dtype
        np.testing.assert_allclose(p.data, e, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: optim.Adam(ps, amsgrad=True),
        lambda ps: optim.AdamW(ps),
        lambda ps: optim.RMSprop(ps, momentum=0.9, centered=True, weight_decay=0.1),
    ],
)
def test_updates_are_in_place_and_keep_float32(make):
    params = make_params(np.float32)
    arrays = [p.data for p in params]
    opt = make(params)
    run(opt, params, grad_sequence(params, 2))
    for p, a in zip(params, arrays, strict=True):
        assert p.data is a  # same array object: views and the model's Parameter stay valid
        assert p.dtype == np.float32
    for state in opt.state.values():
        for value in state.values():
            if isinstance(value, np.ndarray):
                assert value.dtype == np.float32


def test_parameters_without_grad_are_skipped():
    a, b = make_params()[:2]
    before = b.data.copy()
    a.grad = np.ones_like(a.data)
    opt = optim.Adam([a, b], lr=0.1)
    opt.step()
    np.testing.assert_array_equal(b.data, before)
    assert b not in opt.state


def test_zero_grad_sets_grads_to_none_by_default():
    params = make_params()
    for p in params:
        p.grad = np.ones_like(p.data)
    opt = optim.SGD(params, lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert all(not p.grad.any() for p in params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_training_a_linear_model_reduces_the_loss():
    from microgradcnn import functional as F

    r = np.random.default_rng(0)
    x = r.standard_normal((64, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    for opt_cls, kwargs in [
        (optim.SGD, {"lr": 0.5, "momentum": 0.9}),
        (optim.Adam, {"lr": 0.05}),
        (optim.AdamW, {"lr": 0.05}),
        (optim.RMSprop, {"lr": 0.05}),
    ]:
        model = nn.Linear(5, 2, rng=np.random.default_rng(1))
        opt = opt_cls(model.parameters(), **kwargs)
        losses = []
        for _ in range(60):
            loss = F.cross_entropy(model(Tensor(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.4 * losses[0], opt_cls


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-3),
        lambda ps: optim.AdamW(ps, lr=0.01, amsgrad=True),
        lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.9, centered=True, weight_decay=1e-3),
    ],
)
def test_state_dict_round_trip_continues_identically(make):
    params_a = make_params()
    params_b = make_params()
    grads = grad_sequence(params_a, 6)
    opt_a = make(params_a)
    run(opt_a, params_a, grads[:3])
    saved = opt_a.state_dict()
    for p, q in zip(params_a, params_b, strict=True):
        q.data[...] = p.data
    opt_b = make(params_b)
    opt_b.load_state_dict(saved)
    run(opt_a, params_a, grads[3:])
    run(opt_b, params_b, grads[3:])
    for p, q in zip(params_a, params_b, strict=True):
        np.testing.assert_array_equal(p.data, q.data)
    # the snapshot is a copy: later steps do not change it
    first = next(iter(saved["state"].values()))
    assert all(v is not opt_a.state[params_a[0]].get(k) for k, v in first.items())


def test_state_dict_layout_follows_pytorch():
    params = make_params()
    opt = optim.Adam(params, lr=0.01)
    run(opt, params, grad_sequence(params, 2))
    state = opt.state_dict()
    assert set(state) == {"state", "param_groups"}
    assert state["param_groups"][0]["params"] == [0, 1, 2]
    assert state["param_groups"][0]["lr"] == 0.01
    assert state["state"][1]["step"] == 2
    assert set(state["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


def test_load_state_dict_rejects_mismatches():
    params = make_params()
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    run(opt, params, grad_sequence(params, 1))
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="group 0 has 3 parameters, optimizer has 2"):
        optim.SGD(make_params()[:2], lr=0.1, momentum=0.9).load_state_dict(saved)
    other = [nn.Parameter(np.zeros((4, 3), np.float32)), *make_params()[1:]]
    with pytest.raises(ValueError, match=r"momentum_buffer of parameter 0 has shape \(3, 4\)"):
        optim.SGD(other, lr=0.1, momentum=0.9).load_state_dict(saved)
    with pytest.raises(ValueError, match="unknown state"):
        optim.Adam(make_params()).load_state_dict(saved)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"weights": 1})


def test_param_groups_take_their_own_hyperparameters():
    a, b = make_params(np.float64)[:2]
    a.grad, b.grad = np.ones_like(a.data), np.ones_like(b.data)
    a0, b0 = a.data.copy(), b.data.copy()
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    opt.step()
    np.testing.assert_allclose(a.data, a0 - 0.1)
    np.testing.assert_allclose(b.data, b0 - 0.5)
    opt.param_groups[0]["lr"] = 0.0
    opt.step()
    np.testing.assert_allclose(a.data, a0 - 0.1)
    assert "Parameter Group 1" in repr(opt)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda ps: optim.SGD(ps, lr=-1), "invalid lr"),
        (lambda ps: optim.SGD(ps, lr=0.1, momentum=-0.5), "invalid momentum"),
        (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "nesterov"),
        (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1), "invalid weight_decay"),
        (lambda ps: optim.Adam(ps, betas=(0.9, 1.0)), "betas"),
        (lambda ps: optim.Adam(ps, eps=-1e-8), "invalid eps"),
        (lambda ps: optim.Adam(ps, lr=float("nan")), "Adam: invalid lr nan"),
        (lambda ps: optim.AdamW(ps, betas=(-0.1, 0.9)), r"AdamW: invalid betas \(-0.1, 0.9\)"),
        (lambda ps: optim.AdamW(ps, betas=0.9), "AdamW: invalid betas 0.9"),
        (lambda ps: optim.AdamW(ps, lr=-0.1), "AdamW: invalid lr -0.1"),
        (lambda ps: optim.AdamW(ps, weight_decay="0.1"), "AdamW: invalid weight_decay '0.1'"),
        (lambda ps: optim.RMSprop(ps, lr=-1e-3), "RMSprop: invalid lr -0.001"),
        (lambda ps: optim.RMSprop(ps, alpha=-0.5), "RMSprop: invalid alpha -0.5"),
        (lambda ps: optim.RMSprop(ps, momentum=-0.9), "RMSprop: invalid momentum -0.9"),
        (lambda ps: optim.RMSprop(ps, eps=True), "RMSprop: invalid eps True"),
        (lambda ps: optim.SGD([], lr=0.1), "empty parameter list"),
        (lambda ps: optim.SGD([ps[0], ps[0]], lr=0.1), "more than once"),
        (lambda ps: optim.SGD([{"params": ps, "betas": (0.9, 0.9)}], lr=0.1), "unknown hyperparameter"),
    ],
)
def test_bad_hyperparameters_raise_value_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make(make_params())


def test_non_tensor_parameters_raise_type_errors():
    with pytest.raises(TypeError, match="not a Tensor"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(make_params()[0], lr=0.1)


def test_the_package_keeps_the_old_import_paths():
    import microgradcnn as mg
    from microgradcnn.optim import SGD, Adam, Optimizer

    assert mg.optim.SGD is SGD
    assert issubclass(Adam, Optimizer)
    assert mg.optim.lr_scheduler.StepLR.__module__ == "microgradcnn.optim.lr_scheduler"


@pytest.mark.parametrize(
    ("name", "cls"), [("sgd", "SGD"), ("Adam", "Adam"), ("ADAMW", "AdamW"), ("rmsprop", "RMSprop")]
)
def test_create_optimizer_builds_each_by_name(name, cls):
    params = make_params()
    opt = optim.create_optimizer(name, params, lr=0.25, weight_decay=0.5)
    assert type(opt).__name__ == cls
    assert opt.param_groups[0]["lr"] == 0.25
    assert opt.param_groups[0]["weight_decay"] == 0.5
    assert opt.param_groups[0]["params"] == params
    assert set(optim.OPTIMIZERS) == {"sgd", "adam", "adamw", "rmsprop"}


def test_create_optimizer_passes_each_optimizers_own_hyperparameters():
    opt = optim.create_optimizer("rmsprop", make_params(), momentum=0.9, centered=True)
    assert opt.defaults == {**optim.RMSprop(make_params()).defaults, "momentum": 0.9, "centered": True}


def test_create_optimizer_rejects_unknown_names_and_hyperparameters():
    with pytest.raises(
        ValueError, match="unknown optimizer 'lbfgs'; choose one of sgd, adam, adamw, rmsprop"
    ):
        optim.create_optimizer("lbfgs", make_params())
    with pytest.raises(ValueError, match="Adam has no hyperparameter momentum; it takes lr, betas, eps"):
        optim.create_optimizer("adam", make_params(), momentum=0.9)
    with pytest.raises(ValueError, match="unknown optimizer None"):
        optim.create_optimizer(None, make_params())
