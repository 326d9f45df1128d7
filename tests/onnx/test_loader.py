"""mg.onnx.load: a file becomes a Module of registry ops (same outputs, same gradients, drawable, trainable,
exportable again), and a bad or hostile file gets a clear error naming the file or the node."""

import os

import numpy as np
import pytest
from onnx_models import EveryOp, SoftsignModel, digits, forward, save, weight

import microgradcnn as mg
from microgradcnn import nn
from microgradcnn.onnx import IMPORTERS, OnnxError, OnnxModel, register_importer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper, TP = onnx.helper, onnx.TensorProto


@pytest.fixture
def exported(tmp_path, model):
    return mg.onnx.load(mg.onnx.export(model, digits(1), tmp_path / "m.onnx"))


# ---- round trip --------------------------------------------------------------------------------------------
def test_round_trip_gives_the_same_outputs_and_parameters(model, exported):
    assert isinstance(exported, OnnxModel)
    params = [name for name, _ in model.named_parameters()]
    if list(model.buffers()):
        # eval-mode BatchNorm exports as Mul and Add with its running statistics folded into constants
        # (docs/interop.md): the parameters come back by name, the buffers as those constants
        assert set(params) < set(exported.state_dict())
    else:
        assert sorted(exported.state_dict()) == sorted(params)
    for n in (1, 5):
        np.testing.assert_allclose(forward(exported, digits(n, n)), forward(model, digits(n, n)), atol=1e-6)


def test_round_trip_gives_the_same_gradients(model, exported):
    x = digits(3)
    grads = []
    for m in (model, exported):
        m.zero_grad()
        xt = mg.Tensor(x, requires_grad=True)
        mg.functional.cross_entropy(m(xt), np.array([1, 2, 3])).backward()
        grads.append(({k: p.grad for k, p in m.named_parameters()}, xt.grad))
    (ours, ours_x), (theirs, theirs_x) = grads
    assert ours.keys() <= theirs.keys()  # (and BatchNorm's folded statistics, see above)
    for k in ours:
        np.testing.assert_allclose(theirs[k], ours[k], atol=1e-6, err_msg=k)
    np.testing.assert_allclose(theirs_x, ours_x, atol=1e-6)


def test_the_loaded_model_passes_gradcheck_in_float64(exported, model_name):
    x = mg.Tensor(digits(2, dtype=np.float64), requires_grad=True)
    assert mg.testing.check_module_gradients(exported, x)  # every parameter, and the input
    if model_name in ("seed", "stack"):  # (cnn2's input Jacobian element by element takes half a minute)
        x1 = mg.Tensor(digits(1, dtype=np.float64), requires_grad=True)
        assert mg.testing.gradcheck(lambda x: exported.double()(x), [x1])


def test_gradcheck_catches_a_wrong_imported_backward(tmp_path, monkeypatch):
    """The check above has teeth: an importer that builds a wrong gradient fails it."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 3, rng=np.random.default_rng(0)), nn.ReLU())
    loaded = mg.onnx.load(mg.onnx.export(model, digits(1), tmp_path / "m.onnx"))

    class LeakyWrong(mg.Function, register=False):
        name = "relu_wrong_backward"

        @staticmethod
        def forward(ctx, x):
            return np.maximum(x, 0)

        @staticmethod
        def backward(ctx, grad):
            return (grad,)  # ignores the kink: wrong for x < 0

    monkeypatch.setitem(IMPORTERS, "Relu", lambda node, inputs: LeakyWrong.apply(inputs[0]))
    with pytest.raises(mg.testing.GradcheckError):
        mg.testing.check_module_gradients(loaded, mg.Tensor(digits(2, dtype=np.float64)))


def test_the_loaded_model_records_registry_ops_that_viz_draws(exported, model_name):
    out = exported(mg.Tensor(digits(2)))
    source = mg.viz.draw_graph(out, params=exported).source
    assert "conv2d" in source
    assert "linear" in source
    assert "0.weight" in source  # parameters keep their state_dict names


def test_fine_tune_and_export_again(tmp_path, exported):
    opt = mg.optim.SGD(exported.parameters(), lr=0.5)
    before = exported.state_dict()
    mg.functional.cross_entropy(exported(mg.Tensor(digits(4))), np.array([0, 1, 2, 3])).backward()
    opt.step()
    assert any(not np.array_equal(before[k], v) for k, v in exported.state_dict().items())
    path = mg.onnx.export(exported, digits(1), tmp_path / "again.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": digits(5, 7)})[0]
    np.testing.assert_allclose(got, forward(exported, digits(5, 7)), atol=1e-5)


def test_round_trip_of_every_mapped_op(tmp_path):
    model = EveryOp()
    loaded = mg.onnx.load(mg.onnx.export(model, digits(1), tmp_path / "m.onnx"))
    np.testing.assert_allclose(forward(loaded, digits(4)), forward(model, digits(4)), atol=1e-5)
    x = mg.Tensor(digits(2, dtype=np.float64))
    assert mg.testing.check_module_gradients(loaded, x)


def test_external_data_inside_the_folder_loads(tmp_path, model):
    path = mg.onnx.export(model, digits(1), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    onnx.save_model(
        proto, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data", size_threshold=0
    )
    loaded = mg.onnx.load(tmp_path / "ext.onnx")
    np.testing.assert_allclose(forward(loaded, digits(2)), forward(model, digits(2)), atol=1e-6)


# ---- hand-made files ---------------------------------------------------------------------------------------
def test_a_gemm_without_transpose_and_scaled(tmp_path):
    w, c = weight("w", (4, 3)), weight("c", (3,), 1)
    path = save(tmp_path, [helper.make_node("Gemm", ["x", "w", "c"], ["y"], alpha=0.5, beta=2.0)], [w, c])
    x = np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
    want = 0.5 * x @ onnx.numpy_helper.to_array(w) + 2.0 * onnx.numpy_helper.to_array(c)
    np.testing.assert_allclose(forward(mg.onnx.load(path), x), want, rtol=1e-5)


def test_shape_arithmetic_of_a_view_reshape(tmp_path):
    """x.view(x.size(0), -1) as tracers write it: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Constant", [], ["i0"], value=helper.make_tensor("i0", TP.INT64, [], [0])),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Constant", [], ["ax"], value=helper.make_tensor("ax", TP.INT64, [1], [0])),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        helper.make_node("Constant", [], ["m1"], value=helper.make_tensor("m1", TP.INT64, [1], [-1])),
        helper.make_node("Concat", ["n1", "m1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    path = save(tmp_path, nodes, in_shape=("N", 2, 3))
    x = np.arange(30, dtype=np.float32).reshape(5, 2, 3)
    np.testing.assert_array_equal(forward(mg.onnx.load(path), x), x.reshape(5, 6))


def test_a_registered_importer_reads_a_new_op_type(tmp_path):
    path = save(tmp_path, [helper.make_node("Softsign", ["x"], ["y"])])
    with pytest.raises(OnnxError, match=r"node 'Softsign_0' has op type 'Softsign'"):
        mg.onnx.load(path)

    @register_importer("Softsign")
    def import_softsign(node, inputs):
        x = inputs[0]
        return x / ((x * x) ** 0.5 + 1.0)

    try:
        x = np.array([[-3.0, 0.5, 1.0, 2.0]], dtype=np.float32)
        np.testing.assert_allclose(forward(mg.onnx.load(path), x), x / (1 + np.abs(x)), rtol=1e-6)
    finally:
        del IMPORTERS["Softsign"]


# ---- bad input ---------------------------------------------------------------------------------------------
@pytest.fixture
def good_file(tmp_path):
    model = mg.models.seed_cnn(rng=np.random.default_rng(0))
    return mg.onnx.export(model, digits(1), tmp_path / "good.onnx")


def test_a_truncated_file_names_the_file(good_file, tmp_path):
    cut = tmp_path / "cut.onnx"
    for size in (len(good_file.read_bytes()) // 2, 40, 3):
        cut.write_bytes(good_file.read_bytes()[:size])
        with pytest.raises(OnnxError, match=rf"{cut}: not (a valid )?an? ONNX model|{cut}: not"):
            mg.onnx.load(cut)


@pytest.mark.parametrize(
    "content", [b"", b"hello, I am a text file\n", b"PK\x03\x04not a model", bytes(range(256))]
)
def test_a_non_onnx_file_names_the_file(tmp_path, content):
    path = tmp_path / "weights.npz"
    path.write_bytes(content)
    with pytest.raises(OnnxError, match=rf"^{path}: not"):
        mg.onnx.load(path)


def test_a_missing_file_names_the_file(tmp_path):
    with pytest.raises(OnnxError, match=rf"{tmp_path / 'nope.onnx'}: cannot read"):
        mg.onnx.load(tmp_path / "nope.onnx")


def test_a_file_over_the_size_limit_is_not_read(good_file):
    with pytest.raises(OnnxError, match=rf"{good_file}: \d+ bytes, more than the limit of 1000"):
        mg.onnx.load(good_file, max_bytes=1000)


def test_an_unsupported_op_names_the_node_and_op_type(tmp_path):
    path = save(
        tmp_path, [helper.make_node("LRN", ["x"], ["y"], name="norm1", size=3)], in_shape=(1, 4, 2, 2)
    )
    with pytest.raises(
        OnnxError, match=rf"{path}: node 'norm1' has op type 'LRN', which microgradcnn cannot"
    ):
        mg.onnx.load(path)


def test_a_custom_domain_op_is_refused(tmp_path):
    path = save(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="r", domain="com.evil")])
    with pytest.raises(OnnxError, match=r"node 'r' has op type 'Relu' of domain 'com.evil'"):
        mg.onnx.load(path)


def test_a_shape_mismatch_names_the_node(tmp_path):
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fc", transB=1),
    ]
    path = save(tmp_path, nodes, [weight("w", (3, 5)), weight("b", (3,))], in_shape=("N", 2, 2))
    with pytest.raises(OnnxError, match=r"node 'fc' \(Gemm\): linear: x \(1, 4\) and weight \(3, 5\)"):
        mg.onnx.load(path)


def test_an_input_of_the_wrong_shape_names_the_input(good_file):
    model = mg.onnx.load(good_file)
    with pytest.raises(
        OnnxError, match=r"input 'input' must have shape \('N', 1, 28, 28\), got \(2, 1, 27, 28\)"
    ):
        model(np.zeros((2, 1, 27, 28), np.float32))


def test_tensor_bytes_must_fit_the_dims(tmp_path):
    w = weight("w", (4, 3))
    w.dims[:] = [4, 30]  # claims ten times the bytes it holds
    path = save(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"])], [w])
    with pytest.raises(OnnxError, match=rf"{path}: tensor 'w' of dims \[4, 30\] holds 48 bytes, want 480"):
        mg.onnx.load(path)


def test_a_huge_claimed_tensor_is_refused_before_reading(tmp_path):
    w = TP(name="w", data_type=TP.FLOAT, dims=[10**6, 10**6], raw_data=b"")
    path = save(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"])], [w])
    with pytest.raises(OnnxError, match=r"tensor 'w' of dims \[1000000, 1000000\] would need"):
        mg.onnx.load(path)


def external(name, location, shape=(4, 3), offset=None):
    t = TP(name=name, data_type=TP.FLOAT, dims=list(shape), data_location=TP.EXTERNAL)
    entries = {"location": location, "length": str(4 * int(np.prod(shape)))}
    if offset is not None:
        entries["offset"] = str(offset)
    for k, v in entries.items():
        t.external_data.add(key=k, value=v)
    return t


@pytest.mark.parametrize(
    "location", ["../secret.bin", "sub/../../secret.bin", "/etc/passwd", "C:\\secret.bin", "..\\secret.bin"]
)
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(bytes(48))
    path = save(folder, [helper.make_node("MatMul", ["x", "w"], ["y"])], [external("w", location)])
    with pytest.raises(
        OnnxError, match=rf"{path}: tensor 'w' has external data .*(inside|outside) the model's"
    ):
        mg.onnx.load(path)


def test_external_data_through_a_symlink_out_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(bytes(48))
    os.symlink(tmp_path / "secret.bin", folder / "w.bin")
    path = save(folder, [helper.make_node("MatMul", ["x", "w"], ["y"])], [external("w", "w.bin")])
    with pytest.raises(OnnxError, match=r"external data 'w.bin', which leads outside the model's folder"):
        mg.onnx.load(path)


def test_external_data_must_fit_its_file(tmp_path):
    (tmp_path / "w.bin").write_bytes(bytes(48))
    path = save(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"])], [external("w", "w.bin", offset=8)])
    with pytest.raises(OnnxError, match=r"offset 8 and length 48 do not fit .* in a file of 48 bytes"):
        mg.onnx.load(path)


def test_valid_external_data_in_the_folder_is_read(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    (tmp_path / "w.bin").write_bytes(bytes(8) + arr.tobytes())
    path = save(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"])], [external("w", "w.bin", offset=8)])
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(forward(mg.onnx.load(path), x), x @ arr)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"kernel_shape": [2, 2], "pads": [0, 0, 1, 1]}, r"asymmetric pads \[0, 0, 1, 1\]"),
        ({"kernel_shape": [2, 2], "ceil_mode": 1}, "ceil_mode=1 is not supported"),
        ({"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"}, "auto_pad=SAME_UPPER is not supported"),
        ({"kernel_shape": [2, 2], "dilations": [2, 2]}, "dilations"),
        ({"kernel_shape": [2, 2, 2]}, r"attribute kernel_shape=\[2, 2, 2\] is not 2 values"),
    ],
)
def test_pool_attributes_we_cannot_run_name_the_node(tmp_path, attrs, message):
    path = save(
        tmp_path,
        [helper.make_node("MaxPool", ["x"], ["y"], name="pool", **attrs)],
        in_shape=(1, 1, 4, 4),
        out_shape=(1, 1, 2, 2),
    )
    with pytest.raises(OnnxError, match=rf"{path}: node 'pool' \(MaxPool\): {message}"):
        mg.onnx.load(path)


def test_average_pool_without_counting_the_padding_is_refused(tmp_path):
    node = helper.make_node("AveragePool", ["x"], ["y"], name="avg", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    path = save(tmp_path, [node], in_shape=(1, 1, 4, 4), out_shape=(1, 1, 2, 2))
    with pytest.raises(OnnxError, match=r"node 'avg' \(AveragePool\): count_include_pad=0 with padding"):
        mg.onnx.load(path)


def test_a_users_op_round_trips_through_its_two_registrations(tmp_path):
    @mg.onnx.register_exporter("onnx_test_softsign")
    def export_softsign(g, ctx, inputs, out):
        g.node("Softsign", inputs, out)

    @register_importer("Softsign")
    def import_softsign(node, inputs):
        x = inputs[0]
        return x / ((x * x) ** 0.5 + 1.0)

    try:
        model = SoftsignModel()
        loaded = mg.onnx.load(mg.onnx.export(model, digits(1), tmp_path / "m.onnx"))
        np.testing.assert_allclose(forward(loaded, digits(3)), forward(model, digits(3)), atol=1e-6)
        assert mg.testing.check_module_gradients(loaded, mg.Tensor(digits(2, dtype=np.float64)))
    finally:
        del mg.onnx.EXPORTERS["onnx_test_softsign"]
        del IMPORTERS["Softsign"]
