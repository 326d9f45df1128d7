"""The training benchmark's references are trustworthy and its scripts run (tiny settings, valid JSON).

Nothing here asserts a timing: the machines are shared and noisy. The references are checked against the
library on fixed inputs (float64, so the tolerances are tight), and the scripts are run with ``--quick``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.models import seed_cnn
from microgradcnn.optim import SGD

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the benchmark scripts import each other as top-level modules

import _timing  # noqa: E402
import bench_train  # noqa: E402
import numpy_reference as ref  # noqa: E402
from tutorial_loops import TutorialCNN  # noqa: E402

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _library_grads(net: mg.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
    loss = F.cross_entropy(net(mg.Tensor(x)), y)
    loss.backward()
    return loss.item(), [p.grad for p in net.parameters()]


def _seed_net(params: dict[str, np.ndarray]) -> mg.nn.Module:
    net = seed_cnn(rng=np.random.default_rng(5)).double()
    for p, value in zip(net.parameters(), params.values(), strict=True):
        p.data[...] = value
    return net


@pytest.fixture
def seed_problem() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    params = ref.init_seed(rng, np.float64)
    x = rng.uniform(-0.5, 0.5, size=(3, 1, 28, 28))
    return params, x, np.array([4, 0, 9])


def test_numpy_reference_seed_cnn_matches_library_loss_and_grads(seed_problem):
    params, x, y = seed_problem
    loss, grads = ref.seed_loss_and_grads(params, x, y)
    lib_loss, lib_grads = _library_grads(_seed_net(params), x, y)
    assert loss == pytest.approx(lib_loss, rel=1e-12)
    for name, lib in zip(grads, lib_grads, strict=True):
        np.testing.assert_allclose(grads[name], lib, rtol=1e-9, atol=1e-12, err_msg=name)


def test_numpy_reference_seed_logits_match_library_inference(seed_problem):
    params, x, _ = seed_problem
    with mg.no_grad():
        expected = _seed_net(params)(mg.Tensor(x)).data
    np.testing.assert_allclose(ref.seed_logits(params, x), expected, rtol=1e-10, atol=1e-12)


def test_numpy_reference_large_cnn_matches_library_loss_and_grads():
    rng = np.random.default_rng(4)
    params = ref.init_large(rng, in_channels=3, dtype=np.float64)
    x = rng.uniform(-0.5, 0.5, size=(2, 3, 32, 32))
    y = np.array([1, 7])
    net = _timing.build_model("cifar", np.random.default_rng(0)).double()
    for p, value in zip(net.parameters(), params.values(), strict=True):
        p.data[...] = value
    loss, grads = ref.large_loss_and_grads(params, x, y)
    lib_loss, lib_grads = _library_grads(net, x, y)
    assert loss == pytest.approx(lib_loss, rel=1e-12)
    for name, lib in zip(grads, lib_grads, strict=True):
        np.testing.assert_allclose(grads[name], lib, rtol=1e-9, atol=1e-12, err_msg=name)
    with mg.no_grad():
        np.testing.assert_allclose(
            ref.large_logits(params, x), net(mg.Tensor(x)).data, rtol=1e-10, atol=1e-12
        )


def test_numpy_reference_keeps_float32():
    params = ref.init_seed(np.random.default_rng(0))
    x, y = _timing.make_batch(2, (1, 28, 28))
    _, grads = ref.seed_loss_and_grads(params, x, y)
    assert {g.dtype for g in grads.values()} == {np.dtype(np.float32)}
    assert ref.seed_logits(params, x).dtype == np.float32


def test_numpy_reference_max_pool_gives_a_tie_to_the_first_maximum_only():
    x = np.array([[[[1.0, 3.0], [3.0, 0.0]]]])  # one window, the max 3 twice: row-major first is (0, 1)
    out, wins = ref.max_pool2_forward(x)
    np.testing.assert_array_equal(out, [[[[3.0]]]])
    dx = ref.max_pool2_backward(x, wins, np.array([[[[2.0]]]]))
    np.testing.assert_array_equal(dx, [[[[0.0, 2.0], [0.0, 0.0]]]])
    x = np.array([[[[1.0, 0.0, 7.0], [3.0, 3.0, 9.0], [5.0, 5.0, 5.0]]]])  # odd sides: last row/col dropped
    out, wins = ref.max_pool2_forward(x)
    dx = ref.max_pool2_backward(x, wins, np.array([[[[2.0]]]]))
    np.testing.assert_array_equal(dx, [[[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]])


def test_numpy_reference_conv_backward_dx_matches_library():
    rng = np.random.default_rng(6)
    x, w, b = rng.normal(size=(2, 3, 5, 6)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    g = rng.normal(size=(2, 4, 5, 6))
    out, cols = ref.conv2d_forward(x, w, b, padding=1)
    dx, dw, db = ref.conv2d_backward(cols, w, g, x.shape, padding=1)
    xt, wt, bt = (mg.Tensor(a, requires_grad=True) for a in (x, w, b))
    lib = F.conv2d(xt, wt, bt, padding=1)
    lib.backward(g)
    np.testing.assert_allclose(out, lib.data, rtol=1e-10, atol=1e-12)
    for mine, t in ((dx, xt), (dw, wt), (db, bt)):
        np.testing.assert_allclose(mine, t.grad, rtol=1e-10, atol=1e-12)


def test_tutorial_loops_match_library_loss_grads_and_sgd_step(seed_problem):
    params, x, y = seed_problem
    net = _seed_net(params)
    lib_loss, lib_grads = _library_grads(net, x[:1], y[:1])
    tutorial = TutorialCNN.from_torch_layout(*params.values())
    result = tutorial.train(x[0, 0], int(y[0]), lr=0.1)
    assert result.loss == pytest.approx(lib_loss, rel=1e-12)
    for mine, lib in zip(tutorial.torch_layout_grads(), lib_grads, strict=True):
        np.testing.assert_allclose(mine, lib, rtol=1e-9, atol=1e-12)
    SGD(net.parameters(), lr=0.1).step()
    # after the update, the tutorial's parameters (its own layout) map back to the library's
    updated = TutorialCNN.from_torch_layout(*(p.data for p in net.parameters()))
    np.testing.assert_allclose(tutorial.conv.filters, updated.conv.filters, rtol=1e-12)
    np.testing.assert_allclose(tutorial.softmax.weights, updated.softmax.weights, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tutorial.softmax.biases, updated.softmax.biases, rtol=1e-12)


def test_tutorial_loops_predict_matches_library_softmax(seed_problem):
    params, x, _ = seed_problem
    with mg.no_grad():
        expected = F.softmax(_seed_net(params)(mg.Tensor(x)), axis=1).data
    np.testing.assert_allclose(
        TutorialCNN.from_torch_layout(*params.values()).predict(x), expected, rtol=1e-10
    )


def test_tutorial_loops_reject_a_model_that_is_not_the_seed_cnn():
    with pytest.raises(ValueError, match="tutorial_loops"):
        TutorialCNN.from_torch_layout(np.zeros((8, 3, 3, 3)), np.zeros(8), np.zeros((10, 1352)), np.zeros(10))


def test_the_hand_written_models_are_the_numpy_references_table():
    assert set(bench_train.HAND_WRITTEN) == set(ref.MODELS) <= set(_timing.BENCH_MODELS)


def _dropout_off(net):
    """Dropout's masks come from each framework's own generator: switch them off, keep the rest in train."""
    for layer in net.modules():
        if type(layer).__name__ == "Dropout":
            layer.eval()


@pytest.mark.parametrize("model", list(_timing.BENCH_MODELS))
def test_torch_reference_computes_the_library_models_loss_grads_and_running_statistics(model):
    torch = pytest.importorskip("torch")
    import torch_reference

    net = _timing.build_model(model, np.random.default_rng(2)).double().train()
    twin = torch_reference.torch_twin(net, torch).train()
    assert [type(t).__name__ for t in twin] == [type(m).__name__ for m in net.children()]
    assert twin[0].weight.dtype == torch.float64  # the library's float64 state_dict, loaded as it is
    _dropout_off(net)
    _dropout_off(twin)
    rng = np.random.default_rng(7)
    x = rng.uniform(-0.5, 0.5, size=(4, *_timing.BENCH_MODELS[model]))
    y = np.array([3, 0, 9, 3])
    lib_loss, lib_grads = _library_grads(net, x, y)
    loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    assert loss.item() == pytest.approx(lib_loss, rel=1e-10)
    for (name, p), lib in zip(twin.named_parameters(), lib_grads, strict=True):
        np.testing.assert_allclose(p.grad.numpy(), lib, rtol=1e-8, atol=1e-12, err_msg=name)
    # BatchNorm's running statistics moved alike in the training forward, so eval mode agrees too
    for name, buffer in twin.named_buffers():
        np.testing.assert_allclose(buffer.numpy(), net.state_dict()[name], rtol=1e-10, err_msg=name)
    net.eval()
    twin.eval()
    with mg.no_grad(), torch.no_grad():
        np.testing.assert_allclose(
            twin(torch.from_numpy(x)).numpy(), net(mg.Tensor(x)).data, rtol=1e-9, atol=1e-12
        )


def test_torch_twin_names_a_layer_it_cannot_map():
    torch = pytest.importorskip("torch")
    import torch_reference

    with pytest.raises(ValueError, match=r"torch_reference: no PyTorch twin for layer 1 \(GELU\)"):
        torch_reference.torch_twin(mg.nn.Sequential(mg.nn.Flatten(), mg.nn.GELU()), torch)


def test_model_list_takes_all_or_known_names():
    assert _timing.model_list("all") == list(_timing.BENCH_MODELS)
    assert _timing.model_list("bn, seed,bn") == ["bn", "seed"]
    for bad in ("", "seed,resnet"):
        with pytest.raises(Exception, match="--model wants 'all' or names from seed, cnn2"):
            _timing.model_list(bad)
    assert bench_train.parse_args([]).models == ["seed"]


def test_summarize_and_batch_list():
    assert _timing.summarize([3.0, 1.0, 2.0, 4.0, 5.0]) == {
        "median": 3.0,
        "q1": 2.0,
        "q3": 4.0,
        "min": 1.0,
        "max": 5.0,
        "values": [3.0, 1.0, 2.0, 4.0, 5.0],
    }
    assert _timing.batch_list("1, 16,64") == [1, 16, 64]
    with pytest.raises(Exception, match="batch sizes"):
        _timing.batch_list("1,0")


@pytest.fixture
def fake_steps(monkeypatch):
    """(make, calls): make(name, seconds) is a step that logs its name in ``calls`` and moves a fake clock."""
    calls: list[str] = []
    clock = {"t": 0.0}
    monkeypatch.setattr(_timing.time, "perf_counter", lambda: clock["t"])

    def make(name, seconds):
        def step():
            calls.append(name)
            clock["t"] += seconds

        return step

    return make, calls


def test_time_paired_alternates_blocks_and_reports_seconds_per_call(fake_steps):
    step_of, calls = fake_steps
    times = _timing.time_paired(step_of("a", 0.003), step_of("b", 0.001), steps_a=2, steps_b=3, rounds=3)
    a_b, b_a = ["a", "a", "b", "b", "b"], ["b", "b", "b", "a", "a"]
    assert calls == [*a_b, *b_a, *a_b]
    assert times["a"] == pytest.approx([0.003] * 3)
    assert times["b"] == pytest.approx([0.001] * 3)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        _timing.time_paired(step_of("a", 0), step_of("b", 0), 1, 1, 0)


def test_time_in_turn_alternates_the_order_and_gives_median_seconds_per_call(fake_steps):
    step_of, calls = fake_steps
    times = _timing.time_in_turn({"a": step_of("a", 0.5), "b": step_of("b", 0.25)}, repeats=3, calls=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # one warm-up call each, then a b, b a, a b
    assert times == {"a": 0.5, "b": 0.25}


def test_paired_ratio_is_the_median_of_same_repeat_ratios_not_the_ratio_of_medians():
    # Each repeat of a is twice its b, while both drift by far more than that between repeats.
    a = {"images_per_s": {"values": [20.0, 200.0, 60.0]}}
    b = {"images_per_s": {"values": [10.0, 100.0, 30.0]}}
    assert _timing.paired_ratio(a, b) == 2.0
    assert _timing.paired_ratio(a, {"error": "boom"}) is None
    assert _timing.paired_ratio(None, b) is None


def test_write_json_atomic_replaces_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "out.json"
    _timing.write_json_atomic(path, {"a": 1})
    _timing.write_json_atomic(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temporary file left behind


def test_thread_env_sets_every_thread_variable_and_keeps_the_rest():
    env = _timing.thread_env(3, {"PATH": "/bin", "OMP_NUM_THREADS": "8"})
    assert env == {
        "PATH": "/bin",
        "OMP_NUM_THREADS": "3",
        "OPENBLAS_NUM_THREADS": "3",
        "MKL_NUM_THREADS": "3",
    }
    assert "MALLOC_ARENA_MAX=2" in _timing.allocator_regime({"MALLOC_ARENA_MAX": "2"})
    assert "default" in _timing.allocator_regime({})




def test_a_worker_builds_each_case_once_times_it_and_answers_failures_without_dying():
    built: list[str] = []
    calls = {"n": 0}

    def factory(case):
        built.append(case["impl"])
        if case["impl"] == "broken":
            raise ValueError("cannot build")

        def step():
            calls["n"] += 1

        return step

    steps: dict = {}
    case = {"impl": "ok", "model": "seed", "mode": "train", "batch": 4}
    cal = _timing.handle(steps, factory, {"op": "calibrate", "case": case, "min_time": 0.01, "warmup": 0}, {})
    assert cal["steps"] >= 1
    before = calls["n"]
    timed = _timing.handle(steps, factory, {"op": "time", "case": case, "steps": 7}, {})
    assert calls["n"] - before == 8  # one warm-up call, then the 7 timed ones
    assert timed["seconds"] >= 0
    assert built == ["ok"]  # built once, reused
    _timing.handle(steps, factory, {"op": "drop", "case": case}, {})
    _timing.handle(steps, factory, {"op": "time", "case": case, "steps": 1}, {})
    assert built == ["ok", "ok"]  # dropped, so built again
    with pytest.raises(ValueError, match="cannot build"):
        _timing.handle(steps, factory, {"op": "time", "case": {**case, "impl": "broken"}, "steps": 1}, {})
    with pytest.raises(ValueError, match="unknown request op"):
        _timing.handle(steps, factory, {"op": "nonsense"}, {})
    echo = {"echo": lambda request, step_of: step_of(case) is step_of(case)}
    assert _timing.handle(steps, factory, {"op": "echo"}, echo) is True


def test_memory_helpers_see_a_step_s_working_memory_and_a_leak():
    def step():
        np.ones(2**22)  # 32 MiB, touched and freed at once

    peak = _timing.step_peak_mib(step)
    assert peak is None or 28 < peak < 40
    assert abs(_timing.memory_growth(step, steps=20)["traced_growth_mib"]) < 0.05
    kept: list[np.ndarray] = []
    leaky = _timing.memory_growth(lambda: kept.append(np.ones(2**14)), steps=20)
    assert leaky["traced_growth_mib"] >= 20 * 2**17 / 2**20  # 20 kept arrays of 128 KiB


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    cmd = [sys.executable, str(BENCH / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)


def test_bench_train_quick_run_of_every_model_prints_the_table_and_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--quick", "--model", "all", "--batch-sizes", "1,2", "--threads", "1", "--json", str(out)]
    proc = _run("bench_train.py", *args, "--markdown")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "targets:" in proc.stdout
    assert "| model | mode | batch | microgradcnn /s |" in proc.stdout
    report = json.loads(out.read_text())
    rows = {(r["model"], r["mode"], r["batch"]): r for r in report["rows"]}
    have_ort = HAVE_TORCH and importlib.util.find_spec("onnxruntime") is not None
    for model in _timing.BENCH_MODELS:
        for mode, batch in (("train", 2), ("infer", 1), ("infer", 2)):
            got = rows[model, mode, batch]["results"]
            impls = {"microgradcnn"} | ({"torch"} if HAVE_TORCH else set())
            impls |= {"ort"} if have_ort and mode == "infer" else set()
            assert set(got) == impls
            assert all(r["images_per_s"]["median"] > 0 for r in got.values()), got
        assert (report["memory"]["peak"][model]["microgradcnn"] or 0) >= 0
    assert "tutorial" in rows["seed", "train", 1]["results"]
    assert ("bn", "train", 1) not in rows  # BatchNorm1d needs 2+ samples to train
    assert [(o["model"], o["batch"], o["ops"]) for o in report["overhead"]] == [
        ("seed", 1, 5), ("seed", 2, 5), ("cifar", 1, 9), ("cifar", 2, 9)
    ]
    assert report["memory"]["growth"]["steps"] == 20
    workers = report["meta"]["workers"]
    assert workers["mg"]["torch_imported"] is False
    assert workers["mg"]["env"]["OPENBLAS_NUM_THREADS"] == "1"
    verdicts = {t["target"]: t["pass"] for t in report["targets"]}
    assert verdicts["seed train batch 1 vs the tutorial loops"] in (True, False)
    if HAVE_TORCH:
        assert workers["torch"]["torch_imported"] is True
        assert rows["cnn2", "train", 1]["want"] == 1.0
        assert rows["cnn2", "train", 2]["want"] == 1.25
        assert rows["cifar", "infer", 2]["want"] == 1.5
        assert rows["seed", "infer", 2]["want"] is None
        assert verdicts["seed train batch 2 vs PyTorch"] in (True, False)
        assert verdicts["bn train batch 2 peak memory vs PyTorch's"] in (True, False)
        assert not any(name.startswith("lenet5 train batch 1 vs") for name in verdicts)
    if have_ort:
        assert workers["ort"]["torch_imported"] is False
        assert "onnxruntime" in workers["ort"]  # its version, recorded with the figures


def test_ort_runs_the_model_exported_from_the_torch_twin_as_the_library_infers(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import torch_reference

    path = str(tmp_path / "bn.onnx")
    torch_reference.export_onnx({"model": "bn", "path": path}, None)
    case = {"impl": "ort", "model": "bn", "mode": "infer", "batch": 3, "onnx": path}
    (logits,) = torch_reference.ort_step(case, threads=1)()
    net = _timing.build_model("bn", np.random.default_rng(0)).eval()
    with mg.no_grad():
        expected = net(mg.Tensor(_timing.make_batch(3, (1, 28, 28))[0])).data
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_bench_hvp_quick_run_checks_both_frameworks_give_the_same_product():
    proc = _run("bench_hvp.py", "--quick", "--batch", "4", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "microgradcnn" in proc.stdout
    if HAVE_TORCH:
        assert "the two H v agree: yes" in proc.stdout


@pytest.mark.needs("dot")
def test_bench_viz_quick_run():
    proc = _run("bench_viz.py", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "draw_graph(y, max_nodes=...)" in proc.stdout
