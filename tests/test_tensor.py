import gc
import tracemalloc

import numpy as np
import pytest

import microgradcnn as mg
from microgradcnn.tensor import unbroadcast


# ---- construction and attributes ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_arrays_keep_their_dtype_and_memory(dtype):
    a = np.arange(6, dtype=dtype).reshape(2, 3)
    t = mg.Tensor(a)
    assert t.dtype == dtype
    assert t.data is a


@pytest.mark.parametrize("data", [3, 2.5, True, [1, 2], [[1.5, 2.5]], np.arange(3), np.array([True, False])])
def test_numbers_lists_and_int_bool_arrays_become_float32(data):
    t = mg.Tensor(data)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.data, np.asarray(data, dtype=np.float32))


@pytest.mark.parametrize("data", ["abc", ["a", "b"], {"a": 1}, np.array(["x"]), None, np.array([1 + 2j])])
def test_non_numeric_data_raises_type_error(data):
    with pytest.raises(TypeError, match="Tensor"):
        mg.Tensor(data)


def test_attributes_and_conversions():
    t = mg.Tensor(np.ones((2, 3, 4), dtype=np.float64), requires_grad=True)
    got = (t.shape, t.ndim, t.size, t.dtype, t.requires_grad, t.grad)
    assert got == ((2, 3, 4), 3, 24, np.float64, True, None)
    assert t.numpy() is t.data
    assert mg.Tensor([[4.0]]).item() == 4.0
    with pytest.raises(ValueError, match="one-element"):
        t.item()
    d = (t * 2).detach()
    assert d.requires_grad is False
    assert d.is_leaf
    assert "requires_grad=True" in repr(t)
    assert "grad_fn=<mul>" in repr(t * 2)


# ---- operators and dtypes ----------------------------------------------------------------------------------
def test_operators_with_scalars_and_arrays_on_either_side():
    x = mg.Tensor(np.array([1.0, 2.0, 4.0], dtype=np.float32))
    a = np.array([2.0, 2.0, 2.0], dtype=np.float32)
    cases = {
        "x+1": (x + 1, [2, 3, 5]),
        "1+x": (1 + x, [2, 3, 5]),
        "x-a": (x - a, [-1, 0, 2]),
        "a-x": (a - x, [1, 0, -2]),
        "x*a": (x * a, [2, 4, 8]),
        "a*x": (a * x, [2, 4, 8]),
        "x/2": (x / 2, [0.5, 1, 2]),
        "4/x": (4 / x, [4, 2, 1]),
        "-x": (-x, [-1, -2, -4]),
        "x**2": (x**2, [1, 4, 16]),
        "2**x": (2**x, [2, 4, 16]),
        "x**x": (x**x, [1, 4, 256]),
    }
    for label, (got, want) in cases.items():
        assert isinstance(got, mg.Tensor), label
        np.testing.assert_allclose(got.data, want, rtol=1e-6, err_msg=label)


def test_python_scalars_never_upcast_but_float64_operands_do():
    x32 = mg.Tensor(np.ones(3, dtype=np.float32))
    assert (x32 * 2.0).dtype == np.float32
    assert (2.5 - x32).dtype == np.float32
    assert (x32 ** 3).dtype == np.float32
    assert (x32 + np.ones(3)).dtype == np.float64
    assert (x32 + mg.Tensor(np.ones(3))).dtype == np.float64
    x64 = mg.Tensor(np.zeros(1))
    assert (x64 + 0.1).data[0] == 0.1  # the scalar is taken at float64 precision, not rounded to float32


def test_float32_weight_in_float64_expression_gets_float32_grad():
    w = mg.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    (w * np.arange(3.0)).sum().backward()
    assert w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad, [0, 1, 2])


def test_matmul_batched_and_1d():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5))
    np.testing.assert_allclose((mg.Tensor(a) @ b).data, a @ b)
    np.testing.assert_allclose((a @ mg.Tensor(b)).data, a @ b)
    v = rng.standard_normal(4)
    np.testing.assert_allclose((mg.Tensor(a) @ v).data, a @ v)


def test_comparisons_give_plain_bool_arrays_and_tensors_hash_by_identity():
    x = mg.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    for got, want in [(x < 2, [1, 0, 0]), (x <= 2, [1, 1, 0]), (x > 2, [0, 0, 1]), (x >= 2, [0, 1, 1]),
                      (x == 2, [0, 1, 0]), (x != 2, [1, 0, 1]), (x == mg.Tensor([1.0, 0.0, 3.0]), [1, 0, 1])]:
        assert type(got) is np.ndarray
        assert got.dtype == bool
        np.testing.assert_array_equal(got, np.array(want, dtype=bool))
    y = mg.Tensor([1.0, 2.0, 3.0])
    assert len({x, y, x}) == 2
    assert {x: "x"}[x] == "x"


def test_methods_forward_values():
    a = np.arange(24, dtype=np.float64).reshape(2, 3, 4) - 10
    t = mg.Tensor(a)
    np.testing.assert_array_equal(t.sum(axis=(0, -1), keepdims=True).data, a.sum(axis=(0, -1), keepdims=True))
    np.testing.assert_array_equal(t.mean(axis=-2).data, a.mean(axis=-2))
    np.testing.assert_array_equal(t.max(axis=1).data, a.max(axis=1))
    np.testing.assert_array_equal(t.relu().data, np.maximum(a, 0))
    np.testing.assert_allclose(t.sigmoid().data, 1 / (1 + np.exp(-a)))
    np.testing.assert_array_equal(t.reshape(4, -1).data, a.reshape(4, -1))
    np.testing.assert_array_equal(t.reshape((6, 4)).data, a.reshape(6, 4))
    np.testing.assert_array_equal(t.transpose(2, 0, 1).data, a.transpose(2, 0, 1))
    np.testing.assert_array_equal(t.transpose((1, 0, 2)).data, a.transpose(1, 0, 2))
    np.testing.assert_array_equal(t.T.data, a.T)
    np.testing.assert_array_equal(t.flatten().data, a.ravel())
    np.testing.assert_array_equal(t.flatten(1).data, a.reshape(2, -1))
    np.testing.assert_array_equal(t[1, None, ::2, [0, 0, 3]].data, a[1, None, ::2, [0, 0, 3]])


def test_sigmoid_is_finite_for_huge_inputs():
    x = mg.Tensor(np.array([-1e4, 0.0, 1e4], dtype=np.float32), requires_grad=True)
    s = x.sigmoid()
    np.testing.assert_array_equal(s.data, [0.0, 0.5, 1.0])
    s.sum().backward()
    assert np.isfinite(x.grad).all()


def test_ndarray_on_the_left_defers_to_tensor():
    out = np.ones(3) * mg.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    assert isinstance(out, mg.Tensor)
    assert out.requires_grad


# ---- backward ----------------------------------------------------------------------------------------------
def test_gradients_accumulate_across_backward_calls():
    x = mg.Tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [3 + 2, 3 + 4])


def test_a_tensor_used_twice_gets_both_contributions():
    x = mg.Tensor(3.0, requires_grad=True)
    (x * x + x).backward()
    assert x.grad == 7.0


def test_intermediates_keep_no_grad_unless_retained():
    x = mg.Tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    k = (x * 3).retain_grad()
    (h * k).sum().backward()
    assert h.grad is None
    np.testing.assert_array_equal(k.grad, [2, 4])


def test_implicit_seed_only_for_one_element_tensors():
    x = mg.Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"one-element .* \(2,\)"):
        (x * 2).backward()
    (x * 2).backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad, [2, 20])
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        (x * 2).backward(np.ones(3))


def test_backward_without_graph_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        mg.Tensor([1.0]).backward()


@pytest.mark.parametrize(
    "make", [lambda x: (x * x).sum(), lambda x: (x + 1).sum()], ids=["saves", "saves_nothing"]
)
def test_second_backward_through_released_graph_raises(make):
    x = mg.Tensor([1.0, 2.0], requires_grad=True)
    y = make(x)
    y.backward()
    with pytest.raises(RuntimeError, match=r"second time.*retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = mg.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad, [4, 8])


def test_no_grad_records_nothing_as_context_and_decorator():
    x = mg.Tensor([1.0], requires_grad=True)
    with mg.no_grad():
        y = x * 2
    assert not y.requires_grad
    assert y.is_leaf
    assert mg.is_grad_enabled()

    @mg.no_grad()
    def f(t):
        assert not mg.is_grad_enabled()
        return t * 2

    assert not f(x).requires_grad
    assert (x * 2).requires_grad


def test_detach_cuts_the_graph():
    x = mg.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).detach() * x
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1, 4])  # only the outer factor contributes


def test_a_chain_of_100000_ops_backpropagates_without_recursion():
    x = mg.Tensor(np.array(1.0), requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.backward()
    assert x.grad == 1.0


def test_indexing_with_repeated_indices_adds_gradients():
    x = mg.Tensor([10.0, 20.0, 30.0], requires_grad=True)
    x[np.array([0, 2, 0, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad, [3, 0, 1])


def test_max_splits_full_ties_evenly_and_routes_an_axis_to_first_maximum():
    x = mg.Tensor(np.array([[1.0, 5.0, 5.0], [5.0, 0.0, 5.0]]), requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.25, 0.25], [0.25, 0, 0.25]])
    x.grad = None
    x.max(axis=0).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 1], [1, 0, 0]])


def test_none_gradient_leaves_grad_untouched():
    class Stop(mg.Function, register=False):
        name = "stop"

        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, grad):
            return grad, None

    a, b = mg.Tensor([1.0], requires_grad=True), mg.Tensor([2.0], requires_grad=True)
    Stop.apply(a, b).sum().backward()
    assert a.grad[0] == 1.0
    assert b.grad is None


# ---- registry ----------------------------------------------------------------------------------------------
def test_registry_holds_the_builtin_ops_by_public_name():
    for name in ["add", "mul", "matmul", "sum", "max", "getitem", "relu", "exp", "log"]:
        assert mg.REGISTRY[name].name == name


def test_duplicate_op_name_raises_value_error():
    with pytest.raises(ValueError, match="'add' is taken"):

        class MyAdd(mg.Function):
            name = "add"


def test_function_without_name_raises_type_error():
    with pytest.raises(TypeError, match="must set"):

        class Nameless(mg.Function, register=False):
            pass


def test_wrong_shaped_gradient_from_an_op_names_it():
    class Bad(mg.Function, register=False):
        name = "bad_op"

        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return (np.ones(7),)

    with pytest.raises(RuntimeError, match=r"bad_op.backward: gradient \(7,\) for input 0 of shape \(2, 3\)"):
        Bad.apply(mg.Tensor(np.ones((2, 3)), requires_grad=True)).sum().backward()


def test_unbroadcast_sums_added_and_stretched_axes():
    g = np.ones((4, 2, 3))
    np.testing.assert_array_equal(unbroadcast(g, (2, 1)), np.full((2, 1), 12.0))
    np.testing.assert_array_equal(unbroadcast(g, ()), 24.0)
    with pytest.raises(ValueError, match="cannot reduce"):
        unbroadcast(g, (3, 2))


# ---- errors ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fn", "pattern"),
    [
        (lambda a, b: a + b, r"add: .*\(2, 3\), \(4,\)"),
        (lambda a, b: a * b, r"mul: .*\(2, 3\), \(4,\)"),
        (lambda a, b: a @ b, r"matmul: .*\(2, 3\) and \(4,\)"),
        (lambda a, b: a.reshape(5, -1), r"reshape: .*\(2, 3\).*\(5, -1\)"),
        (lambda a, b: a.transpose(0, 0), r"transpose: .*\(2, 3\)"),
        (lambda a, b: a.sum(axis=2), r"sum: axis 2 is out of range"),
        (lambda a, b: a.max(axis=(0, -2)), r"max: repeated axis"),
    ],
)
def test_shape_errors_are_value_errors_naming_op_and_shapes(fn, pattern):
    a, b = mg.Tensor(np.ones((2, 3))), mg.Tensor(np.ones(4))
    with pytest.raises(ValueError, match=pattern):
        fn(a, b)


def test_index_out_of_range_names_the_shape():
    with pytest.raises(IndexError, match=r"getitem: .*\(2, 3\)"):
        mg.Tensor(np.ones((2, 3)))[5]


def test_wrong_operand_types_raise_type_error():
    with pytest.raises(TypeError):
        mg.Tensor([1.0]) + "a"


def test_rpow_needs_a_positive_base():
    with pytest.raises(ValueError, match="rpow"):
        (-2.0) ** mg.Tensor([1.0])


# ---- anomaly detection -------------------------------------------------------------------------------------
def test_detect_anomaly_names_the_forward_op_and_shapes():
    x = mg.Tensor(np.array([[1.0, -1.0]]), requires_grad=True)
    with np.errstate(invalid="ignore"):
        assert np.isnan(x.log().data).any()  # without it, NaN propagates silently as in NumPy
        with mg.detect_anomaly(), pytest.raises(RuntimeError, match=r"log forward .*NaN.*\(1, 2\)"):
            x.log()


def test_detect_anomaly_names_the_backward_op():
    x = mg.Tensor(np.array([0.0, 1.0]), requires_grad=True)
    with np.errstate(divide="ignore"), mg.detect_anomaly():
        y = (x**0.5).sum()
        with pytest.raises(RuntimeError, match=r"pow backward"):
            y.backward()


# ---- memory ------------------------------------------------------------------------------------------------
def test_repeated_training_like_iterations_do_not_grow_memory():
    rng = np.random.default_rng(0)
    w = mg.Tensor(rng.standard_normal((32, 16)).astype(np.float32), requires_grad=True)
    x = mg.Tensor(rng.standard_normal((8, 32)).astype(np.float32))

    def step():
        loss = ((x @ w).tanh() ** 2).mean()
        loss.backward()
        with mg.no_grad():
            w.data -= 0.01 * w.grad
        w.grad = None

    for _ in range(50):
        step()
    gc.collect()
    tracemalloc.start()
    for _ in range(100):
        step()
    gc.collect()
    base, _ = tracemalloc.get_traced_memory()
    for _ in range(1000):
        step()
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert after - base < 64 * 1024, f"memory grew by {after - base} bytes over 1,000 iterations"


def test_call_runs_the_kernel_on_arrays_and_records_on_tensors():
    from microgradcnn.ops.elementwise import MulFn

    a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    out = MulFn.call(a, b)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, [3.0, 8.0])
    t = mg.Tensor(a, requires_grad=True)
    rec = MulFn.call(t, b)
    assert isinstance(rec, mg.Tensor)
    assert rec.op == "mul"
    rec.sum().backward()
    np.testing.assert_array_equal(t.grad, b)


# ---- mg.grad and create_graph ------------------------------------------------------------------------------
def test_grad_returns_constant_tensors_and_leaves_dot_grad_alone():
    x = mg.Tensor([1.0, 2.0], requires_grad=True)
    w = mg.Tensor([3.0, 4.0], requires_grad=True)
    y = (x * w).sum()
    gx, gw = mg.grad(y, [x, w])
    np.testing.assert_array_equal(gx.data, [3.0, 4.0])
    np.testing.assert_array_equal(gw.data, [1.0, 2.0])
    assert isinstance(gx, mg.Tensor)
    assert not gx.requires_grad
    assert x.grad is None
    assert w.grad is None
    with pytest.raises(RuntimeError, match="second time"):  # retain_graph defaults to create_graph=False
        mg.grad(y, x)


def test_grad_of_a_single_input_is_a_one_tuple_and_seeds_non_scalar_outputs():
    x = mg.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (g,) = mg.grad(x * x, x, grad_outputs=np.array([1.0, 10.0, 100.0]))
    np.testing.assert_array_equal(g.data, [2.0, -40.0, 600.0])
    with pytest.raises(RuntimeError, match="one-element"):
        mg.grad(x * x, x)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        mg.grad(x * x, x, grad_outputs=[np.ones(2)])


def test_grad_names_an_unused_input_by_position_unless_allowed():
    x = mg.Tensor([1.0], requires_grad=True)
    unused = mg.Tensor([2.0], requires_grad=True)
    constant = mg.Tensor([3.0])
    y = (x * x).sum()
    with pytest.raises(ValueError, match=r"inputs\[1\].*not used"):
        mg.grad(y, [x, unused], retain_graph=True)
    with pytest.raises(ValueError, match=r"inputs\[0\].*does not require grad"):
        mg.grad(y, [constant], retain_graph=True)
    gx, gu = mg.grad(y, [x, unused], allow_unused=True)
    assert gu is None
    np.testing.assert_array_equal(gx.data, [2.0])


def test_grad_with_respect_to_an_intermediate_runs_only_the_ops_below_it():
    x = mg.Tensor([1.0, 2.0], requires_grad=True)
    h = x.exp()
    y = (h * 3.0).sum()
    (gh,) = mg.grad(y, h)
    np.testing.assert_array_equal(gh.data, [3.0, 3.0])
    y2 = h.sum()  # exp's saved output was not released: the op below h did not run
    y2.backward()
    np.testing.assert_allclose(x.grad, np.exp([1.0, 2.0]), rtol=1e-6)


def test_create_graph_differentiates_to_any_order():
    x = mg.Tensor(np.array([0.3, -0.7]), requires_grad=True)
    (g1,) = mg.grad((x**4).sum(), x, create_graph=True)
    assert g1.requires_grad
    (g2,) = mg.grad(g1.sum(), x, create_graph=True)
    (g3,) = mg.grad(g2.sum(), x)
    np.testing.assert_allclose(g1.data, 4 * x.data**3)
    np.testing.assert_allclose(g2.data, 12 * x.data**2)
    np.testing.assert_allclose(g3.data, 24 * x.data)


def test_third_order_through_a_tanh_chain():
    x = mg.Tensor(np.array([0.2, -0.5, 1.1]), requires_grad=True)
    y = ((x * 1.5).tanh() * 0.8).tanh()
    grads, order = [], y.sum()
    for _ in range(3):
        (order,) = mg.grad(order, x, create_graph=True)
        grads.append(order.data.copy())
        order = order.sum()
    # central differences of the analytic second derivative give the third
    eps = 1e-5

    def second(values):
        t = mg.Tensor(values, requires_grad=True)
        (d1,) = mg.grad(((t * 1.5).tanh() * 0.8).tanh().sum(), t, create_graph=True)
        (d2,) = mg.grad(d1.sum(), t)
        return d2.data

    numeric = (second(x.data + eps) - second(x.data - eps)) / (2 * eps)
    np.testing.assert_allclose(grads[2], numeric, rtol=1e-6, atol=1e-8)


def test_backward_refuses_create_graph_pointing_to_grad():
    x = mg.Tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"microgradcnn\.grad"):
        (x * x).sum().backward(create_graph=True)


def test_create_graph_refuses_a_user_op_whose_backward_is_not_differentiable():
    class Sine(mg.Function, register=False):  # backward on NumPy functions: first order only
        name = "sine_np"

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return np.sin(x)

        @staticmethod
        def backward(ctx, grad):
            return (np.cos(ctx.saved_tensors[0]) * grad,)

    x = mg.Tensor([0.0, 1.0], requires_grad=True)
    (g,) = mg.grad(Sine.apply(x).sum(), x)  # first order is fine
    np.testing.assert_allclose(g.data, np.cos([0.0, 1.0]), rtol=1e-6)
    with pytest.raises(RuntimeError, match=r"'sine_np'.*differentiable_backward.*gradgradcheck"):
        mg.grad(Sine.apply(x).sum(), x, create_graph=True)


def test_needs_input_grad_tells_an_op_which_gradients_to_compute():
    seen = []

    class Probe(mg.Function, register=False):
        name = "probe"

        @staticmethod
        def forward(ctx, a, b):
            seen.append(ctx.needs_input_grad)
            return a * b

        @staticmethod
        def backward(ctx, grad):
            return tuple(grad if need else None for need in ctx.needs_input_grad)

    a, b = mg.Tensor([1.0], requires_grad=True), mg.Tensor([2.0])
    Probe.apply(a, b).sum().backward()
    with mg.no_grad():
        Probe.apply(a, b)
    assert seen == [(True, False), (False, False)]
    np.testing.assert_array_equal(a.grad, [1.0])


def test_an_op_run_with_nothing_to_record_gets_one_false_per_input_and_no_graph():
    seen = []

    class Many(mg.Function, register=False):
        name = "many_probe"

        @staticmethod
        def forward(ctx, *arrays):
            seen.append(ctx.needs_input_grad)
            ctx.save_for_backward(*arrays)  # kept nowhere: no backward follows
            return sum(arrays)

        @staticmethod
        def backward(ctx, grad):
            return (grad,) * len(ctx.saved_tensors)

    xs = [mg.Tensor([float(i)], requires_grad=True) for i in range(20)]
    with mg.no_grad():
        out = Many.apply(*xs)
    constants = Many.apply(*[x.detach() for x in xs])
    assert seen == [(False,) * 20, (False,) * 20]
    for t in (out, constants):
        assert t._ctx is None
        assert not t.requires_grad
        np.testing.assert_array_equal(t.data, [190.0])
    Many.apply(*xs).backward(np.ones(1, np.float32))  # recorded: one True per input, every gradient 1
    assert seen[-1] == (True,) * 20
    assert all(x.grad[0] == 1.0 for x in xs)


# ---- thread-local engine state -----------------------------------------------------------------------------
def test_no_grad_in_one_thread_leaves_recording_on_in_another():
    import threading

    inside, release = threading.Event(), threading.Event()

    def other():
        with mg.no_grad():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=other)
    t.start()
    inside.wait(5)
    try:
        assert mg.is_grad_enabled()
        x = mg.Tensor([1.0], requires_grad=True)
        assert (x * x).requires_grad
        with mg.detect_anomaly():
            pass
    finally:
        release.set()
        t.join()
    assert mg.is_grad_enabled()


def test_anomaly_mode_and_module_scope_are_per_thread():
    import threading

    from microgradcnn.tensor import current_scope, scope

    seen = {}

    def other():
        seen["scope"] = current_scope()
        x = mg.Tensor([np.inf], requires_grad=True)
        seen["inf"] = x * 2.0  # inf, but anomaly mode is on in the main thread only

    with mg.detect_anomaly(), scope("outer"):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert current_scope() == ("outer",)
    assert seen["scope"] == ()
    assert seen["inf"]._ctx.scope == ()


# ---- in-place edits of saved arrays ------------------------------------------------------------------------
def test_editing_a_saved_input_through_data_is_refused_at_backward():
    x = mg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    w = mg.Tensor(np.array([3.0, 4.0]), requires_grad=True)
    y = (x * w).sum()
    x.data[:] = 100
    with pytest.raises(RuntimeError, match=r"input 0 .* op 'mul' was modified in place"):
        y.backward()


def test_an_optimizer_step_between_forward_and_backward_is_refused():
    from microgradcnn import functional as F
    from microgradcnn import models
    from microgradcnn.optim import SGD

    net = models.seed_cnn(rng=np.random.default_rng(0))
    opt = SGD(net.parameters(), lr=0.1)
    x = mg.Tensor(np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32))
    loss = F.cross_entropy(net(x), [3, 7])
    loss.backward(retain_graph=True)
    opt.step()  # the classifier weight's SGD step sums to zero over classes: a plain checksum misses it
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_editing_a_saved_output_is_refused_and_unedited_graphs_still_work():
    x = mg.Tensor(np.linspace(-1, 1, 5000), requires_grad=True)  # large: sampled, not copied whole
    y = x.exp()
    y.data *= 2.0
    with pytest.raises(RuntimeError, match="its output of op 'exp'"):
        y.sum().backward()
    z = mg.Tensor(np.linspace(-1, 1, 5000), requires_grad=True)
    z.exp().sum().backward()
    np.testing.assert_allclose(z.grad, np.exp(z.data))



def test_editing_one_element_of_a_large_strided_saved_input_is_refused():
    # a strided view has no flat view to sample: its fingerprint is all of it, so one edited element shows
    base = mg.Tensor(np.linspace(-1, 1, 10000).reshape(100, 100))
    x = mg.Tensor(base.data[:, ::2], requires_grad=True)  # a non-contiguous float64 view, 40 kB
    assert not x.data.flags.contiguous
    y = x * mg.Tensor(np.ones(50), requires_grad=True)
    x.data[37, 11] += 1.0
    with pytest.raises(RuntimeError, match=r"input 0 \(shape \(100, 50\)\) of op 'mul'"):
        y.sum().backward()

# ---- truth value -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "want"), [([0.0], False), ([2.0], True), (0.0, False), (-1.0, True), ([[np.nan]], True)]
)
def test_a_one_element_tensor_is_true_when_nonzero(data, want):
    assert bool(mg.Tensor(data)) is want


@pytest.mark.parametrize(("data", "pattern"), [([1.0, 2.0], r"2 elements.*\(2,\)"), ([], r"0 elements")])
def test_truth_value_of_several_or_no_elements_is_ambiguous(data, pattern):
    with pytest.raises(ValueError, match=rf"bool: the truth value of a tensor with {pattern}"):
        bool(mg.Tensor(data))


def test_an_op_error_names_the_op_once():
    with pytest.raises(ValueError, match=r"^max: cannot reduce an empty axis of shape \(0,\)") as info:
        mg.Tensor(np.zeros(0, np.float32)).max()
    assert "max: max:" not in str(info.value)


# ---- Tensor.register_hook ----------------------------------------------------------------------------------
# Each scenario runs on microgradcnn and (when installed) on PyTorch through the same few calls, and returns
# what the hooks saw and the gradients that came out: the torch-free tests pin the values, the parity test
# compares the two libraries on every scenario.


class _Mg:
    @staticmethod
    def leaf(values):
        return mg.Tensor(np.asarray(values, dtype=np.float64), requires_grad=True)

    @staticmethod
    def grad(out, inputs, create_graph=False):
        return mg.grad(out, inputs, create_graph=create_graph)

    @staticmethod
    def array(t):
        return np.asarray(t.data if isinstance(t, mg.Tensor) else t, dtype=np.float64)


class _Torch:
    @staticmethod
    def leaf(values):
        import torch

        return torch.tensor(values, dtype=torch.float64, requires_grad=True)

    @staticmethod
    def grad(out, inputs, create_graph=False):
        import torch

        return torch.autograd.grad(out, inputs, create_graph=create_graph)

    @staticmethod
    def array(t):
        return t.detach().numpy().copy()


def _order_and_replacement(lib):
    seen = []
    x = lib.leaf([1.0, 2.0])
    y = x * 3
    y.register_hook(lambda g: seen.append(("first", lib.array(g))) or g * 2)
    y.register_hook(lambda g: seen.append(("second", lib.array(g))))  # None keeps the first one's result
    y.register_hook(lambda g: g + 1)
    (y * y).sum().backward()
    return seen, lib.array(x.grad)


def _removal(lib):
    seen = []
    x = lib.leaf([1.0, -1.0])
    handle = x.register_hook(lambda g: seen.append("removed") or g * 0)
    x.register_hook(lambda g: seen.append("kept"))
    handle.remove()
    handle.remove()  # again: no effect
    (x * 5).sum().backward()
    return seen, lib.array(x.grad)


def _leaf_used_twice_and_accumulating(lib):
    seen = []
    x = lib.leaf([1.0, 2.0])
    x.register_hook(lambda g: seen.append(lib.array(g)))
    (x * x + x).sum().backward()  # one call with the sum of both uses: 2x + 1
    (x * 2).sum().backward()  # this backward's gradient only, before it is added into .grad
    return seen, lib.array(x.grad)


def _leaf_replacement_reaches_dot_grad(lib):
    x = lib.leaf([1.0, 2.0, 3.0])
    x.register_hook(lambda g: g * 10)
    (x * x).sum().backward()
    return lib.array(x.grad)


def _retain_grad_keeps_the_hooked_gradient(lib):
    x = lib.leaf([1.0, 2.0])
    y = x * 3
    y.retain_grad()
    y.register_hook(lambda g: g * 10)
    y.sum().backward()
    return lib.array(y.grad), lib.array(x.grad)


def _root_and_grad(lib):
    seen = []
    x = lib.leaf([1.0, 2.0])
    y = x * 3
    y.register_hook(lambda g: seen.append(("y", lib.array(g))) or g * 2)
    x.register_hook(lambda g: seen.append(("x", lib.array(g))))
    z = (y * y).sum()
    z.register_hook(lambda g: seen.append(("z", lib.array(g))))
    (gx,) = lib.grad(z, x)
    return seen, lib.array(gx)


def _create_graph(lib):
    seen = []
    x = lib.leaf([1.0, 2.0])
    y = x**3
    y.register_hook(lambda g: g * 2)
    (gx,) = lib.grad(y.sum(), x, create_graph=True)  # 2 * 3x**2, differentiable
    x.register_hook(lambda g: seen.append(lib.array(g)))
    gx.sum().backward()  # d/dx 6x**2 = 12x, through the hook's doubling
    return seen, lib.array(gx), lib.array(x.grad)


SCENARIOS = [
    _order_and_replacement,
    _removal,
    _leaf_used_twice_and_accumulating,
    _leaf_replacement_reaches_dot_grad,
    _retain_grad_keeps_the_hooked_gradient,
    _root_and_grad,
    _create_graph,
]


def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    elif isinstance(a, tuple | list):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            _same(u, v)
    else:
        assert a == b


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__.strip("_"))
def test_tensor_hooks_match_torch(scenario):
    pytest.importorskip("torch")
    _same(scenario(_Mg), scenario(_Torch))


def test_hooks_run_in_order_each_on_the_previous_result():
    seen, xgrad = _order_and_replacement(_Mg)
    # d/dy sum(y*y) = 2y = [6, 12]; the first hook doubles it, the second sees that, the third adds 1
    assert [name for name, _ in seen] == ["first", "second"]
    np.testing.assert_array_equal(seen[0][1], [6.0, 12.0])
    np.testing.assert_array_equal(seen[1][1], [12.0, 24.0])
    np.testing.assert_array_equal(xgrad, 3 * np.array([13.0, 25.0]))


def test_a_removed_hook_no_longer_runs():
    seen, xgrad = _removal(_Mg)
    assert seen == ["kept"]
    np.testing.assert_array_equal(xgrad, [5.0, 5.0])


def test_a_leaf_hook_runs_once_per_backward_with_the_summed_gradient():
    seen, xgrad = _leaf_used_twice_and_accumulating(_Mg)
    np.testing.assert_array_equal(np.array(seen), [[3.0, 5.0], [2.0, 2.0]])
    np.testing.assert_array_equal(xgrad, [5.0, 7.0])
    np.testing.assert_array_equal(_leaf_replacement_reaches_dot_grad(_Mg), [20.0, 40.0, 60.0])


def test_retain_grad_keeps_what_the_hook_returned():
    ygrad, xgrad = _retain_grad_keeps_the_hooked_gradient(_Mg)
    np.testing.assert_array_equal(ygrad, [10.0, 10.0])
    np.testing.assert_array_equal(xgrad, [30.0, 30.0])


def test_hooks_run_in_grad_and_its_result_is_the_hooked_gradient():
    seen, gx = _root_and_grad(_Mg)
    assert [name for name, _ in seen] == ["z", "y", "x"]  # outputs first
    np.testing.assert_array_equal(seen[1][1], [6.0, 12.0])
    np.testing.assert_array_equal(gx, [36.0, 72.0])
    y = (_Mg.leaf([1.0, 2.0]) * 3)
    y.register_hook(lambda g: g * 2)
    np.testing.assert_array_equal(mg.grad((y * y).sum(), y)[0].data, [12.0, 24.0])


def test_under_create_graph_a_hook_gets_a_tensor_and_its_replacement_is_differentiated():
    kinds = []
    x = _Mg.leaf([1.0, 2.0])
    y = x**3
    y.register_hook(lambda g: kinds.append(type(g)))
    mg.grad(y.sum(), x, create_graph=True)
    assert kinds == [mg.Tensor]
    seen, gx, xgrad = _create_graph(_Mg)
    np.testing.assert_array_equal(gx, [6.0, 24.0])
    np.testing.assert_array_equal(xgrad, [12.0, 24.0])
    np.testing.assert_array_equal(seen[0], [12.0, 24.0])


def test_register_hook_refuses_a_tensor_without_grad_and_a_wrong_shaped_replacement():
    no_grad = r"register_hook: the tensor \(shape \(2,\)\) does not require grad"
    with pytest.raises(RuntimeError, match=no_grad):
        mg.Tensor([1.0, 2.0]).register_hook(lambda g: g)
    with pytest.raises(TypeError, match="register_hook: a hook must be callable"):
        _Mg.leaf([1.0]).register_hook(3)

    def halve(g):
        return g[:1]

    x = _Mg.leaf([1.0, 2.0])
    x.register_hook(halve)
    wrong = r"hook 'test_.*halve' returned a gradient of shape \(1,\) for a tensor of shape \(2,\)"
    with pytest.raises(RuntimeError, match=wrong):
        (x * 2).sum().backward()


def test_a_hook_may_remove_itself_while_running():
    x = _Mg.leaf([1.0])
    calls = []
    handle = None

    def once(g):
        calls.append(1)
        handle.remove()

    handle = x.register_hook(once)
    (x * 2).sum().backward()
    (x * 2).sum().backward()
    assert calls == [1]
