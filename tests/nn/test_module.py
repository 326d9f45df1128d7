from collections import OrderedDict

import numpy as np
import pytest

import microgradcnn as mg
from microgradcnn import nn
from microgradcnn.tensor import Tensor


def rng(seed=0):
    return np.random.default_rng(seed)


class Block(nn.Module):
    def __init__(self, r):
        super().__init__()
        self.fc = nn.Linear(3, 4, rng=r)
        self.scale = nn.Parameter(np.ones(4, dtype=np.float32))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x)) * self.scale


class Net(nn.Module):
    def __init__(self, r):
        super().__init__()
        self.first = Block(r)
        self.second = nn.Sequential(nn.Linear(4, 4, rng=r), nn.ReLU(), nn.Linear(4, 2, rng=r))

    def forward(self, x):
        return self.second(self.first(x))


def test_parameter_is_a_tensor_requiring_grad_that_shares_its_array():
    a = np.zeros((2, 3), dtype=np.float32)
    p = nn.Parameter(a)
    assert isinstance(p, Tensor)
    assert p.requires_grad
    assert p.data is a
    assert not nn.Parameter(a, requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter containing:")


def test_named_parameters_are_dotted_in_registration_order():
    net = Net(rng())
    names = [name for name, _ in net.named_parameters()]
    assert names == [  # a module's own parameters first, then its children's (PyTorch's order)
        "first.scale",
        "first.fc.weight",
        "first.fc.bias",
        "second.0.weight",
        "second.0.bias",
        "second.2.weight",
        "second.2.bias",
    ]
    assert [p for _, p in net.named_parameters()] == list(net.parameters())
    assert net.first.fc.weight is dict(net.named_parameters())["first.fc.weight"]


def test_named_parameters_match_pytorch_for_the_same_structure():
    torch = pytest.importorskip("torch")

    class TorchBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 4)
            self.scale = torch.nn.Parameter(torch.ones(4))
            self.act = torch.nn.ReLU()

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = TorchBlock()
            self.second = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))

    ours, theirs = Net(rng()), TorchNet()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (_, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert p.shape == tuple(q.shape)


def test_children_and_modules_traverse_depth_first():
    net = Net(rng())
    assert list(net.children()) == [net.first, net.second]
    mods = list(net.modules())
    assert mods[:4] == [net, net.first, net.first.fc, net.first.act]
    assert mods[4] is net.second
    assert len(mods) == 8
    names = [n for n, _ in net.named_modules()]
    assert names == ["", "first", "first.fc", "first.act", "second", "second.0", "second.1", "second.2"]


def test_shared_parameters_and_modules_are_listed_once():
    shared = nn.Linear(2, 2, rng=rng())
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(seq.parameters())) == 2
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
    assert len(list(seq.modules())) == 3  # seq, shared (once), relu


def test_reassigning_an_attribute_moves_or_drops_its_registration():
    block = Block(rng())
    block.fc = nn.ReLU()  # now a module without parameters
    assert [n for n, _ in block.named_parameters()] == ["scale"]
    block.scale = None  # a registered parameter may become None (PyTorch), and is skipped
    assert list(block.named_parameters()) == []
    with pytest.raises(TypeError, match="scale"):
        block.scale = np.ones(4)
    del block.act
    assert [n for n, _ in block.named_children()] == ["fc"]
    block.act = 3  # a plain attribute once unregistered
    assert [n for n, _ in block.named_children()] == ["fc"]


def test_assigning_before_init_says_to_call_super_init():
    class Forgetful(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(RuntimeError, match=r"super\(\).__init__\(\)"):
        Forgetful()


def test_call_runs_forward_inside_the_module_scope():
    net = Net(rng())
    out = net(Tensor(np.ones((5, 3), dtype=np.float32)))
    assert out.shape == (5, 2)
    # the last op (the second Linear's) ran inside net, net.second and net.second[2], innermost last
    assert out._ctx.scope == (net, net.second, net.second[2])
    assert mg.tensor.current_scope() == ()  # popped again


def test_scope_is_popped_when_forward_raises():
    net = Net(rng())
    with pytest.raises(ValueError, match="linear"):
        net(Tensor(np.ones((5, 7), dtype=np.float32)))
    assert mg.tensor.current_scope() == ()


def test_forward_must_be_overridden():
    with pytest.raises(NotImplementedError, match="Module"):
        nn.Module()(1)


def test_train_and_eval_set_training_recursively():
    net = Net(rng())
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.train(False)
    assert not net.second[0].training


def test_zero_grad_sets_grads_to_none_or_zeros():
    net = Net(rng())
    net(Tensor(np.ones((2, 3), dtype=np.float32))).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_state_dict_copies_arrays_under_parameter_names():
    net = Net(rng())
    state = net.state_dict()
    assert list(state) == [n for n, _ in net.named_parameters()]
    state["first.scale"][:] = 7
    assert np.all(net.first.scale.data == 1)  # a copy: the snapshot does not alias the model


def test_load_state_dict_copies_in_place_and_keeps_identity_and_dtype():
    src, dst = Net(rng(1)), Net(rng(2))
    weight = dst.first.fc.weight
    array = weight.data
    state = {k: v.astype(np.float64) for k, v in src.state_dict().items()}
    result = dst.load_state_dict(state)
    assert result.missing_keys == []
    assert result.unexpected_keys == []
    assert dst.first.fc.weight is weight
    assert weight.data is array
    assert weight.dtype == np.float32
    for (_, p), (_, q) in zip(src.named_parameters(), dst.named_parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_load_state_dict_names_missing_and_unexpected_keys():
    net = Net(rng())
    state = net.state_dict()
    del state["second.2.bias"]
    state["second.9.weight"] = np.zeros(3)
    before = net.first.fc.weight.data.copy()
    state["first.fc.weight"] = before + 1
    with pytest.raises(nn.StateDictError, match=r"missing key\(s\): second.2.bias") as info:
        net.load_state_dict(state)
    assert "unexpected key(s): second.9.weight" in str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, ValueError)
    np.testing.assert_array_equal(net.first.fc.weight.data, before)  # nothing changed on failure
    result = net.load_state_dict(state, strict=False)
    assert result == (["second.2.bias"], ["second.9.weight"])
    np.testing.assert_array_equal(net.first.fc.weight.data, before + 1)


def test_load_state_dict_rejects_shape_mismatch_even_when_not_strict():
    net = Net(rng())
    state = net.state_dict()
    state["first.fc.weight"] = np.zeros((4, 5))
    for strict in (True, False):
        with pytest.raises(
            ValueError, match=r"size mismatch for first.fc.weight: checkpoint \(4, 5\), model \(4, 3\)"
        ):
            net.load_state_dict(state, strict=strict)


def test_load_state_dict_rejects_non_numeric_values():
    net = Net(rng())
    state = net.state_dict()
    state["first.scale"] = np.array(["a", "b", "c", "d"])
    with pytest.raises(TypeError, match=r"first\.scale"):
        net.load_state_dict(state)
    with pytest.raises(TypeError, match="mapping"):
        net.load_state_dict([1, 2])


def test_to_converts_parameters_and_grads_in_place():
    net = Net(rng())
    net(Tensor(np.ones((2, 3), dtype=np.float32))).sum().backward()
    params = list(net.parameters())
    assert net.to(np.float64) is net
    assert list(net.parameters()) == params  # same Parameter objects
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in params)
    out = net(Tensor(np.ones((2, 3))))
    assert out.dtype == np.float64
    net.float()
    assert all(p.dtype == np.float32 for p in params)
    net.double()
    assert all(p.dtype == np.float64 for p in params)
    with pytest.raises(TypeError, match="float32 or float64"):
        net.to(np.int32)
    with pytest.raises(TypeError, match="float32 or float64"):
        net.to("not a dtype")


def test_parameters_default_to_float32():
    assert all(p.dtype == np.float32 for p in Net(rng()).parameters())


def test_repr_nests_children_like_pytorch():
    net = Net(rng())
    text = repr(net)
    assert text.startswith(
        "Net(\n  (first): Block(\n    (fc): Linear(in_features=3, out_features=4, bias=True)"
    )
    assert "    (act): ReLU()\n  )\n  (second): Sequential(\n    (0): Linear" in text
    assert text.endswith("\n  )\n)")
    assert repr(nn.ReLU()) == "ReLU()"


def test_repr_matches_pytorch_for_the_seed_cnn():
    torch = pytest.importorskip("torch")
    from microgradcnn.models import seed_cnn

    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(1352, 10)
    )
    assert repr(seed_cnn(rng=rng())) == repr(theirs)


def test_sequential_from_ordered_dict_uses_its_names():
    seq = nn.Sequential(OrderedDict([("conv", nn.Conv2d(1, 2, 3, rng=rng())), ("act", nn.ReLU())]))
    assert [n for n, _ in seq.named_parameters()] == ["conv.weight", "conv.bias"]
    assert isinstance(seq[1], nn.ReLU)


# ---- buffers -------------------------------------------------------------------------------------------
class Counter(nn.Module):
    """A parameter, a persistent float buffer, an int buffer, a non-persistent one and a None one."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(np.ones(2, dtype=np.float32))
        self.register_buffer("total", np.zeros(2, dtype=np.float32))
        self.register_buffer("steps", np.zeros((), dtype=np.int64))
        self.register_buffer("scratch", np.zeros(3, dtype=np.float32), persistent=False)
        self.register_buffer("unused", None)

    def forward(self, x):
        if self.training:
            self.total += x.data.sum(axis=0)
            self.steps += 1
        return x * self.weight


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2, rng=rng())
        self.count = Counter()


def test_buffers_are_state_but_not_parameters():
    net = Holder()
    assert [n for n, _ in net.named_parameters()] == ["fc.weight", "fc.bias", "count.weight"]
    assert [n for n, _ in net.named_buffers()] == ["count.total", "count.steps", "count.scratch"]
    assert net.count.total is dict(net.named_buffers())["count.total"]
    assert [b.shape for b in net.buffers()] == [(2,), (), (3,)]
    # PyTorch's state_dict order: a module's parameters, its persistent buffers, then its children's
    assert list(net.state_dict()) == ["fc.weight", "fc.bias", "count.weight", "count.total", "count.steps"]
    assert net.count.unused is None
    opt = mg.optim.SGD(net.parameters(), lr=0.1)
    assert sum(len(g["params"]) for g in opt.param_groups) == 3


def test_buffers_update_in_training_and_round_trip_through_state_dict():
    net = Holder()
    net.count(Tensor(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)))
    state = net.state_dict()
    np.testing.assert_array_equal(state["count.total"], [4.0, 6.0])
    assert state["count.steps"] == 1
    assert state["count.steps"].dtype == np.int64
    state["count.total"][:] = 0  # a copy: the snapshot does not alias the buffer
    assert net.count.total[0] == 4.0
    fresh = Holder()
    total = fresh.count.total
    fresh.load_state_dict(net.state_dict())
    assert fresh.count.total is total  # loaded in place, like parameters
    np.testing.assert_array_equal(fresh.count.total, [4.0, 6.0])
    assert fresh.count.steps == 1
    assert fresh.count.steps.dtype == np.int64
    with pytest.raises(nn.StateDictError, match=r"missing key\(s\): count.steps"):
        fresh.load_state_dict({k: v for k, v in net.state_dict().items() if k != "count.steps"})
    with pytest.raises(nn.StateDictError, match=r"size mismatch for count.total"):
        fresh.load_state_dict({**net.state_dict(), "count.total": np.zeros(3)})


def test_eval_stops_buffer_updates_and_train_returns_self():
    net = Holder()
    assert net.eval() is net
    assert not net.count.training
    net.count(Tensor(np.ones((1, 2), dtype=np.float32)))
    assert net.count.steps == 0
    assert net.train() is net
    assert net.count.training
    net.count(Tensor(np.ones((1, 2), dtype=np.float32)))
    assert net.count.steps == 1
    with pytest.raises(TypeError, match="mode must be a bool"):
        net.train("no")


def test_to_converts_float_buffers_and_keeps_integer_ones():
    net = Holder()
    net.to(np.float64)
    assert net.count.total.dtype == np.float64
    assert net.count.scratch.dtype == np.float64
    assert dict(net.named_buffers())["count.total"] is net.count.total  # attribute and registry agree
    assert net.count.steps.dtype == np.int64
    net.float()
    assert net.state_dict()["count.total"].dtype == np.float32


def test_assigning_to_a_buffer_name_replaces_the_buffer():
    c = Counter()
    c.total = np.full(2, 5.0)
    assert c.state_dict()["total"][0] == 5.0
    c.total = None
    assert "total" not in c.state_dict()
    with pytest.raises(TypeError, match="buffer 'total' must be a numpy array or None"):
        c.total = [1.0, 2.0]
    del c.steps
    assert "steps" not in c.state_dict()
    assert "steps" not in dict(c.named_buffers())


def test_register_buffer_rejects_bad_names_and_values():
    c = Counter()
    with pytest.raises(KeyError, match="already exists"):
        c.register_buffer("weight", np.zeros(1))
    with pytest.raises(KeyError, match="already exists"):
        c.register_buffer("training", np.zeros(1))
    with pytest.raises(KeyError, match=r"contain no '\.'"):
        c.register_buffer("a.b", np.zeros(1))
    with pytest.raises(TypeError, match="must be a string"):
        c.register_buffer(3, np.zeros(1))
    with pytest.raises(TypeError, match="must be a numpy array or None"):
        c.register_buffer("fresh", [1, 2])
    c.register_buffer("total", np.ones(2))  # re-registering a buffer replaces it
    assert c.total[0] == 1.0


def test_buffer_state_dict_keys_match_pytorch():
    torch = pytest.importorskip("torch")

    class TorchCounter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(2))
            self.register_buffer("total", torch.zeros(2))
            self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
            self.register_buffer("scratch", torch.zeros(3), persistent=False)
            self.register_buffer("unused", None)

    class TorchHolder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)
            self.count = TorchCounter()

    ours, theirs = Holder(), TorchHolder()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in ours.state_dict().items()})


# ---- hooks ----------------------------------------------------------------------------------------------
def _linear_pair(torch):
    """A Linear(3, 2) of ours and torch's with the same weights, float64."""
    ours = nn.Linear(3, 2, rng=rng(1)).double()
    theirs = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
        theirs.bias.copy_(torch.from_numpy(ours.bias.data))
    return ours, theirs


def test_forward_hooks_run_in_registration_order_and_may_replace_the_output():
    model = nn.Linear(3, 2, rng=rng())
    calls = []
    model.register_forward_hook(lambda m, inputs, out: calls.append(("a", m, len(inputs), out.shape)))
    model.register_forward_hook(lambda m, inputs, out: out * 0 + 7)
    model.register_forward_hook(lambda m, inputs, out: calls.append(("c", float(out.data.max()))))
    out = model(Tensor(np.ones((5, 3), np.float32)))
    assert calls == [("a", model, 1, (5, 2)), ("c", 7.0)]  # the third hook saw the replacement
    np.testing.assert_array_equal(out.data, 7)


def test_removed_hooks_stop_running_and_removal_while_running_is_safe():
    model = nn.ReLU()
    calls = []
    handles = []

    def remove_self(m, inputs, out):
        calls.append("self")
        handles[0].remove()

    handles.append(model.register_forward_hook(remove_self))
    handles.append(model.register_forward_hook(lambda m, i, o: calls.append("next")))
    x = Tensor([1.0, -1.0])
    model(x)
    model(x)
    assert calls == ["self", "next", "next"]  # the running call finished with the hooks it started with
    handles[1].remove()
    handles[1].remove()  # again: no effect
    model(x)
    assert calls == ["self", "next", "next"]
    assert not model._forward_hooks


def test_a_module_without_hooks_has_no_hook_dicts():
    model = nn.Linear(2, 2, rng=rng())
    assert "_forward_hooks" not in vars(model)
    assert "_backward_hooks" not in vars(model)
    with pytest.raises(TypeError, match="hook must be callable"):
        model.register_forward_hook(3)


def test_full_backward_hook_matches_pytorch():
    torch = pytest.importorskip("torch")
    ours, theirs = _linear_pair(torch)
    x = rng(2).standard_normal((4, 3))
    got, want = [], []
    ours.register_full_backward_hook(lambda m, gi, go: got.append((m, gi, go)))
    theirs.register_full_backward_hook(lambda m, gi, go: want.append((gi, go)))
    xo = Tensor(x, requires_grad=True)
    (ours(xo) ** 2).sum().backward()
    xt = torch.tensor(x, requires_grad=True)
    (theirs(xt) ** 2).sum().backward()
    assert len(got) == len(want) == 1
    (module, gi, go), (gi_t, go_t) = got[0], want[0]
    assert module is ours
    assert len(gi) == len(gi_t) == 1
    assert len(go) == len(go_t) == 1
    np.testing.assert_allclose(go[0], go_t[0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(gi[0], gi_t[0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-12)


def test_full_backward_hook_can_replace_grad_input_like_pytorch():
    torch = pytest.importorskip("torch")
    ours, theirs = _linear_pair(torch)
    x = rng(3).standard_normal((4, 3))
    ours.register_full_backward_hook(lambda m, gi, go: (gi[0] * 3,))
    theirs.register_full_backward_hook(lambda m, gi, go: (gi[0] * 3,))
    xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ours(xo).sum().backward()
    theirs(xt).sum().backward()
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-12)
    # the parameters' gradients are not affected by the replacement
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12)


def test_full_backward_hook_without_an_input_that_requires_grad_gets_none():
    model = nn.Linear(3, 2, rng=rng())
    got = []
    handle = model.register_full_backward_hook(lambda m, gi, go: got.append((gi, go[0].shape)))
    model(Tensor(np.ones((4, 3), np.float32))).sum().backward()
    assert got == [((None,), (4, 2))]  # as PyTorch: grad_input is (None,) for an input without grad
    handle.remove()
    model(Tensor(np.ones((4, 3), np.float32))).sum().backward()
    assert len(got) == 1


def test_full_backward_hook_runs_once_per_backward_and_checks_its_replacement():
    model = nn.ReLU()
    got = []
    model.register_full_backward_hook(lambda m, gi, go: got.append(gi[0].copy()))
    x = Tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = model(x)
    (y.sum() * 2).backward(retain_graph=True)
    y.sum().backward()
    assert [g.tolist() for g in got] == [[2.0, 0.0, 2.0], [1.0, 0.0, 1.0]]
    model.register_full_backward_hook(lambda m, gi, go: (gi[0], gi[0]))
    with pytest.raises(RuntimeError, match="returned 2 gradients for 1 inputs"):
        model(x).sum().backward()
