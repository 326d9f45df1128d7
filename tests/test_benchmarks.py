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
from microgradcnn.tensor import REGISTRY

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the benchmark scripts import each other as top-level modules

import _timing  # noqa: E402
import bench_train  # noqa: E402
import count_instructions  # noqa: E402
import engine_gaps  # noqa: E402
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


@pytest.mark.parametrize("chunk", [2, 16])  # 2: the batch of 3 runs in two chunks, gradients summed over both
def test_numpy_reference_seed_cnn_matches_library_loss_and_grads(seed_problem, monkeypatch, chunk):
    monkeypatch.setattr(ref, "CHUNK", chunk)
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
    x, y = ref.make_batch(2, (1, 28, 28))
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


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("model", list(_timing.BENCH_MODELS))
def test_torch_reference_computes_the_library_models_loss_grads_and_running_statistics(model):
    import torch
    import torch_reference

    net = _timing.build_model(model, np.random.default_rng(2)).double().train()
    twin = torch_reference.torch_twin(net, torch).train()
    assert [type(t).__name__ for t in twin] == [type(m).__name__ for m in net.children()]
    assert twin[0].weight.dtype == torch.float64  # the library's float64 state_dict, loaded as it is
    _dropout_off(net)
    _dropout_off(twin)
    rng = np.random.default_rng(7)
    x = rng.uniform(-0.5, 0.5, size=(4, *_timing.INPUT_SHAPES[model]))
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


@pytest.mark.parametrize("model", list(_timing.BENCH_MODELS))
def test_kernel_replay_step_updates_parameters_as_the_library_step_does(model):
    net_a, opt, x, y = bench_train._mg_setup(model, 2)
    net_b = bench_train._mg_setup(model, 2)[0]
    net_b.load_state_dict(net_a.state_dict())
    replay, names = bench_train.replay_step(net_b, x, y, _timing.LEARNING_RATE)
    assert names[0] == "conv2d"
    assert names[-1] == "cross_entropy"
    before = [p.data.copy() for p in net_a.parameters()]
    bench_train._mg_train_step(net_a, opt, x, y)()
    replay()
    for a, b, old in zip(net_a.parameters(), net_b.parameters(), before, strict=True):
        assert not np.array_equal(a.data, old)  # the step did move every parameter
        np.testing.assert_allclose(a.data, b.data, rtol=1e-6, atol=1e-7)


def test_summarize_and_batch_list():
    assert _timing.summarize([3.0, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "values": [3.0, 1.0, 2.0],
    }
    assert _timing.batch_list("1, 16,64") == [1, 16, 64]
    with pytest.raises(Exception, match="batch sizes"):
        _timing.batch_list("1,0")


def test_time_paired_alternates_blocks_and_reports_seconds_per_call(monkeypatch):
    calls: list[str] = []
    clock = {"t": 0.0}
    monkeypatch.setattr(_timing.time, "perf_counter", lambda: clock["t"])

    def step_of(name, seconds):
        def step():
            calls.append(name)
            clock["t"] += seconds

        return step

    times = _timing.time_paired(step_of("a", 0.003), step_of("b", 0.001), steps_a=2, steps_b=3, rounds=3)
    a_b, b_a = ["a", "a", "b", "b", "b"], ["b", "b", "b", "a", "a"]
    assert calls == [*a_b, *b_a, *a_b]
    assert times["a"] == pytest.approx([0.003] * 3)
    assert times["b"] == pytest.approx([0.001] * 3)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        _timing.time_paired(step_of("a", 0), step_of("b", 0), 1, 1, 0)


def test_summarize_differences_takes_the_median_of_paired_differences_not_of_each_side():
    # Each round's b is 1 faster than its a, while both drift by far more than that between rounds.
    a = [10.0, 50.0, 20.0, 90.0, 30.0]
    b = [9.0, 49.0, 19.0, 89.0, 29.0]
    diff = _timing.summarize_differences(a, b)
    assert diff["median"] == pytest.approx(1.0)
    assert diff["q1"] == pytest.approx(1.0)
    assert diff["q3"] == pytest.approx(1.0)
    assert diff["rounds"] == 5
    assert _timing.summarize_differences([2.0], [0.5])["median"] == 1.5
    with pytest.raises(ValueError, match="shorter"):
        _timing.summarize_differences([1.0, 2.0], [1.0])


def test_count_instructions_subtracts_the_warm_up_run_and_divides_by_steps_and_ops(monkeypatch):
    totals = {("microgradcnn", 0): 1_000, ("microgradcnn", 4): 9_000}
    totals |= {("kernels", 0): 900, ("kernels", 4): 6_900}
    monkeypatch.setattr(count_instructions, "count", lambda impl, model, batch, steps: totals[impl, steps])
    row = count_instructions.measure("seed", 8, 4, n_ops=5)
    assert row["instructions_per_step"] == {"microgradcnn": 2_000, "kernels": 1_500}
    assert row["engine_instructions_per_step"] == 500
    assert row["engine_instructions_per_op"] == 100


@pytest.mark.parametrize("impl", ["microgradcnn", "kernels"])
def test_count_instructions_child_runs_the_step_it_names(impl, monkeypatch):
    calls = {"n": 0}
    real = bench_train._mg_train_step if impl == "microgradcnn" else bench_train.replay_step

    def counting(*args):
        made = real(*args)
        step = made[0] if isinstance(made, tuple) else made

        def counted():
            calls["n"] += 1
            step()

        return (counted, made[1]) if isinstance(made, tuple) else counted

    monkeypatch.setattr(bench_train, "_mg_train_step" if impl == "microgradcnn" else "replay_step", counting)
    count_instructions.child(impl, "seed", 2, 3)
    assert calls["n"] == count_instructions.WARMUP_STEPS + 3


def test_engine_gaps_splits_a_step_at_its_kernels():
    marks = [("mul.forward", 1.0, 3.0), ("sum.forward", 3.5, 4.0), ("sum.backward", 6.0, 7.0),
             ("mul.backward", 7.0, 9.0), ("mul.backward", 9.25, 9.5)]
    gaps, kernels = engine_gaps.split_gaps(marks, start=0.0, end=10.0)
    assert gaps == {
        "start->mul.forward": 1.0,
        "mul.forward->sum.forward": 0.5,
        "sum.forward->sum.backward": 2.0,
        "sum.backward->mul.backward": 0.0,
        "mul.backward->mul.backward": 0.25,
        "mul.backward->end": 0.5,
    }
    assert kernels == {"mul.forward": 2.0, "sum.forward": 0.5, "sum.backward": 1.0, "mul.backward": 2.25}
    assert sum(gaps.values()) + sum(kernels.values()) == 10.0  # the whole step, every second once


def test_engine_gaps_times_every_kernel_and_puts_the_ops_back():
    before = {fn: (fn.__dict__["forward"], fn.__dict__["backward"]) for fn in REGISTRY.values()}
    marks: list = []
    with engine_gaps.kernel_timers(marks):
        x = mg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
        (x * x).sum().backward()
    assert [name for name, _, _ in marks] == ["mul.forward", "sum.forward", "sum.backward", "mul.backward"]
    assert all(start <= end for _, start, end in marks)
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])  # the timed kernels computed the same thing
    assert {fn: (fn.__dict__["forward"], fn.__dict__["backward"]) for fn in REGISTRY.values()} == before


def test_engine_gaps_charges_engine_time_to_the_gap_it_falls_in(monkeypatch):
    # 3 ms of extra Python in the max-pool module, before its kernel: the library's conv -> pool gap, only.
    real = mg.nn.MaxPool2d.forward

    def slow(self, x):
        import time

        time.sleep(0.003)
        return real(self, x)

    monkeypatch.setattr(mg.nn.MaxPool2d, "forward", slow)
    row = engine_gaps.measure("seed", batch=2, rounds=3)
    gaps = row["gaps_us"]
    order = list(gaps)
    assert order[0] == "start->conv2d.forward"
    assert order[-1] == "conv2d.backward->end"
    assert len(gaps) == 2 * row["graph_ops"] + 1
    slowed = gaps["conv2d.forward->max_pool2d.forward"]
    assert slowed["microgradcnn"] >= 3000 > slowed["kernels"]
    assert row["engine_us_per_step"] >= 3000
    assert row["engine_us_per_op"] == row["engine_us_per_step"] / row["graph_ops"]
    others = [v["microgradcnn"] for k, v in gaps.items() if k != "conv2d.forward->max_pool2d.forward"]
    assert max(others) < 3000


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


def test_worker_requests_build_each_case_once_and_time_its_steps():
    built: list[str] = []
    calls = {"n": 0}

    def factory(case):
        built.append(case["impl"])
        if case["impl"] == "broken":
            raise ValueError("cannot build")

        def step():
            calls["n"] += 1

        return step

    cache = _timing.StepCache(factory)
    case = {"impl": "ok", "model": "seed", "mode": "train", "batch": 4}
    cal = _timing.handle(cache, {"op": "calibrate", "case": case, "min_time": 0.01, "warmup": 0.0}, {})
    assert cal["steps"] >= 1
    before = calls["n"]
    timed = _timing.handle(cache, {"op": "time", "case": case, "steps": 7, "warmup_steps": 1}, {})
    assert calls["n"] - before == 8  # one warm-up call, then the 7 timed ones
    assert timed["seconds"] >= 0
    assert built == ["ok"]  # built once, reused
    _timing.handle(cache, {"op": "drop", "case": case}, {})
    _timing.handle(cache, {"op": "time", "case": case, "steps": 1}, {})
    assert built == ["ok", "ok"]  # dropped, so built again
    with pytest.raises(ValueError, match="cannot build"):
        _timing.handle(cache, {"op": "time", "case": {**case, "impl": "broken"}, "steps": 1}, {})
    other = {**case, "impl": "other"}
    paired = _timing.handle(
        cache, {"op": "paired", "case_a": case, "case_b": other, "steps_a": 2, "steps_b": 1, "rounds": 3}, {}
    )
    assert len(paired["a"]) == len(paired["b"]) == 3
    assert built == ["ok", "ok", "broken", "other"]  # "ok" was still cached
    with pytest.raises(ValueError, match="unknown request op"):
        _timing.handle(cache, {"op": "nonsense"}, {})
    assert _timing.handle(cache, {"op": "extra"}, {"extra": lambda request: {"echo": request["op"]}}) == {
        "echo": "extra"
    }


def test_memory_helpers_see_an_allocation_and_no_growth_for_a_step_that_keeps_nothing():
    def step():
        np.ones(2**20)  # 8 MiB, freed at once

    peak = _timing.step_peak_memory(step, use_tracemalloc=True)
    assert 7.5 < peak["tracemalloc_peak_mib"] < 9
    kept: list[np.ndarray] = []
    growth = _timing.memory_growth(step, steps=20, use_tracemalloc=True)
    assert abs(growth["tracemalloc_growth_mib"]) < 0.05
    leaky = _timing.memory_growth(lambda: kept.append(np.ones(2**14)), steps=20, use_tracemalloc=True)
    assert leaky["tracemalloc_growth_mib"] >= 20 * 2**17 / 2**20  # 20 kept arrays of 128 KiB


def _run(script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_bench_train_quick_run_of_every_model_writes_valid_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = _run(
        "bench_train.py",
        "--quick",
        "--model",
        "all",
        "--batch-sizes",
        "1,2",
        "--growth-steps",
        "5",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "targets:" in proc.stdout
    rows = {(r["model"], r["mode"], r["batch"], r["impl"]): r for r in report["results"]}
    torch_impl = {"torch"} if HAVE_TORCH else set()
    for model in _timing.BENCH_MODELS:
        impls = {"microgradcnn", "kernels"} | torch_impl | ({"numpy"} if model in ref.MODELS else set())
        assert {key[3] for key in rows if key[:3] == (model, "train", 2)} == impls
        assert {key[3] for key in rows if key[:3] == (model, "infer", 2)} == impls - {"kernels"}
        assert set(report["memory"]["peak"][model]) == impls - {"kernels"}
        assert report["graph_ops"][model]["names"][-1] == "cross_entropy"
    for key, row in rows.items():
        assert "error" not in row, (key, row.get("traceback"))
        assert row["images_per_s"]["median"] > 0
        assert len(row["images_per_s"]["values"]) == 2
    assert ("seed", "train", 1, "tutorial") in rows
    assert ("seed", "train", 2, "tutorial") not in rows
    assert ("cnn2", "train", 1, "tutorial") not in rows
    assert not any(key[:3] == ("bn", "train", 1) for key in rows)  # BatchNorm1d needs 2+ samples to train
    assert ("bn", "infer", 1, "microgradcnn") in rows
    workers = report["meta"]["workers"]
    assert workers["mg"]["torch_imported"] is False
    assert workers["numpy"]["torch_imported"] is False
    assert workers["mg"]["env"]["OPENBLAS_NUM_THREADS"] == "1"
    assert report["graph_ops"]["seed"]["ops"] == len(report["graph_ops"]["seed"]["names"]) >= 4
    assert report["memory"]["growth"]["microgradcnn"]["steps"] == 5
    for row in report["overhead"]:  # the library timed against its kernels in alternating blocks as well
        assert row["paired_rounds"] == 4
        low, high = row["overhead_vs_kernels_iqr_us_per_op"]
        assert low <= high
        assert "overhead_vs_kernels_unpaired_us_per_op" in row
    verdicts = {t["target"]: t["pass"] for t in report["targets"]}
    assert verdicts["seed train vs tutorial loops, batch 1"] in (True, False)
    if HAVE_TORCH:
        assert workers["torch"]["torch_imported"] is True
        for model in ("seed", "cnn2", "cifar", "bn"):  # lenet5 has no speed target
            assert verdicts[f"{model} train vs PyTorch, batch 2"] in (True, False)
            assert verdicts[f"{model} infer vs PyTorch, batch 1"] in (True, False)
            assert verdicts[f"{model} peak memory vs PyTorch, train batch 2 (RSS ratio)"] in (True, False)
        assert "bn train vs PyTorch, batch 1" not in verdicts
        assert not any(name.startswith("lenet5 train") for name in verdicts)
        threshold = {t["target"]: t["threshold"] for t in report["targets"]}
        assert threshold["cnn2 train vs PyTorch, batch 1"] == 1.0
        assert threshold["cnn2 infer vs PyTorch, batch 1"] == 1.5


def test_numpy_reference_standalone_prints_json():
    proc = _run("numpy_reference.py", "--quick", "--batch-sizes", "2", "--no-large", "--no-tutorial")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert [(r["case"]["mode"], "images_per_s" in r) for r in report["results"]] == [
        ("train", True),
        ("infer", True),
    ]
    assert report["info"]["env"]["OMP_NUM_THREADS"] == "2"  # the script re-executed itself with the default


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_torch_reference_standalone_prints_json():
    proc = _run("torch_reference.py", "--quick", "--batch-sizes", "2", "--no-large", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert len(report["results"]) == 2
    assert all("images_per_s" in r for r in report["results"])
    assert report["info"]["torch_threads"] == 1
