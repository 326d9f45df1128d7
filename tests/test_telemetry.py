import json
import re

import numpy as np
import pytest

from microgradcnn import data, optim, telemetry, train
from microgradcnn.models import seed_cnn


def tiny_set(n=48, seed=0):
    r = np.random.default_rng(seed)
    return (r.random((n, 28, 28)) * 255).astype(np.uint8), r.integers(0, 10, n)


def drive(recorder, epochs, *, start_epoch=0, model=None, batch=16, stop_at=None, finish=True):
    """What train.fit does with a recorder, on a tiny random set: returns the model.

    ``stop_at=(epoch, batch)`` raises KeyboardInterrupt before that batch's step (a Ctrl-C mid epoch).
    """
    x, y = tiny_set()
    model = model or seed_cnn(relu=True, rng=np.random.default_rng(0))
    opt = optim.SGD(model.parameters(), lr=0.1)
    per_epoch = len(x) // batch
    recorder.start(
        model, x, y, step=start_epoch * per_epoch, epoch=start_epoch, config={"model": "seed-relu"}
    )
    xs = data.preprocess(x)
    for epoch in range(start_epoch, epochs):
        model.train()
        for i in range(per_epoch):
            if stop_at == (epoch, i):
                raise KeyboardInterrupt
            sl = slice(i * batch, (i + 1) * batch)
            loss, hits = train.train_step(model, opt, xs[sl], y[sl])
            recorder.on_step(epoch * per_epoch + i + 1, loss, hits / batch, 0.1)
        metrics = train.evaluate(model, x, y)
        recorder.on_epoch(
            epoch + 1, {"train_loss": loss, "test_loss": metrics.loss, "test_accuracy": metrics.accuracy}
        )
    if finish:
        recorder.finish(model, x, y)
    return model


def test_append_and_read_records_drop_a_torn_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    for step in (1, 2):
        telemetry.append_record(path, {"step": step, "loss": float("nan")})
    with open(path, "ab") as f:
        f.write(b'{"step": 3, "lo')  # a hard kill mid-write
    assert telemetry.read_records(path) == [{"step": 1, "loss": None}, {"step": 2, "loss": None}]
    with open(path, "ab") as f:
        f.write(b"\n")  # torn but terminated: still the last line, still dropped
    assert [r["step"] for r in telemetry.read_records(path)] == [1, 2]
    assert telemetry.read_records(tmp_path / "missing.jsonl") == []


def test_a_damaged_line_inside_the_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"r.jsonl: line 2 is not a JSON record"):
        telemetry.read_records(path)


def test_truncate_keeps_records_up_to_the_step_and_repairs_a_torn_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"st')
    telemetry.truncate_records(path, "step", 2)
    assert path.read_text() == '{"step":1}\n{"step":2}\n'
    telemetry.append_record(path, {"step": 3})
    assert [r["step"] for r in telemetry.read_records(path)] == [1, 2, 3]


def test_dead_fraction_counts_units_zero_for_the_whole_batch():
    out = np.array([[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [2.0, 0.0]]])  # (2, 2, 2): 4 units
    assert telemetry.dead_fraction(out) == 0.5  # units (0,0) and (1,1) never fire


@pytest.mark.parametrize(
    "a",
    [
        np.random.default_rng(0).standard_normal((4, 6, 5, 3)).astype(np.float32).transpose(0, 3, 1, 2),
        np.maximum(np.random.default_rng(1).standard_normal((8, 300)), 0),  # float64, ReLU-like
        (1000 + np.random.default_rng(2).standard_normal(5000)).astype(np.float32),  # mean >> spread
        np.arange(-3, 9, dtype=np.float16).reshape(3, 4)[:, ::2],  # float16, strided
        np.array([5, 5, 5]),  # ints, no spread
    ],
    ids=["channels-last view", "float64", "shifted", "float16 strided", "constant ints"],
)
def test_stats_are_the_float64_mean_std_and_norm(a):
    d = np.asarray(a, dtype=np.float64)
    got = telemetry._stats(a)
    assert got["mean"] == pytest.approx(d.mean(), rel=1e-6, abs=1e-9)
    assert got["std"] == pytest.approx(d.std(), rel=1e-4, abs=1e-9)  # shifted: 1e-4 of a std of 1
    assert got["norm"] == pytest.approx(np.linalg.norm(d), rel=1e-6)


def test_recorder_writes_every_file_and_statistics_per_layer(tmp_path):
    model = drive(telemetry.Recorder(tmp_path, every=2), epochs=2)
    steps = telemetry.read_records(tmp_path / "steps.jsonl")
    assert [r["step"] for r in steps] == [2, 4, 6]  # 3 steps per epoch, every 2nd recorded
    meta = json.loads((tmp_path / "run.json").read_text())
    leaves = [layer["name"] for layer in meta["layers"]]
    assert leaves == ["0", "1", "2", "3", "4"]
    for record in steps:
        assert set(record["layers"]) == set(leaves)
        for stats in record["layers"].values():
            assert stats["act"]["norm"] > 0
            assert stats["grad"]["norm"] > 0
        assert 0 <= record["layers"]["1"]["dead"] <= 1  # the ReLU
        ratio = record["params"]["0.weight"]["update_ratio"]
        assert 1e-6 < ratio < 10
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())  # hooks removed
    assert [r["epoch"] for r in telemetry.read_records(tmp_path / "epochs.jsonl")] == [1, 2]
    snap = np.load(tmp_path / "epoch_0002.npz")
    assert snap["filters/0"].shape == (8, 1, 3, 3)
    assert snap["maps/0"].shape == (4, 8, 26, 26)  # 4 fixed digits, 8 channels
    np.testing.assert_allclose(snap["filters/0"], model[0].weight.data, atol=2e-3)  # float16
    final = json.loads((tmp_path / "final.json").read_text())
    assert np.asarray(final["confusion"]).sum() == 48
    confidences = [w["confidence"] for w in final["worst"]]
    assert confidences == sorted(confidences, reverse=True)
    assert all(w["label"] != w["pred"] for w in final["worst"])


def test_update_ratio_is_the_step_size_relative_to_the_weights(tmp_path):
    recorder = telemetry.Recorder(tmp_path, every=1)
    model = seed_cnn(rng=np.random.default_rng(1))
    x, y = tiny_set(16)
    recorder.start(model, x, y)
    before = model[0].weight.data.copy()
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss, hits = train.train_step(model, opt, data.preprocess(x), y)
    recorder.on_step(1, loss, hits / 16, 0.1)
    want = np.linalg.norm(model[0].weight.data - before) / np.linalg.norm(before)
    got = telemetry.read_records(tmp_path / "steps.jsonl")[0]["params"]["0.weight"]["update_ratio"]
    assert got == pytest.approx(want, rel=1e-5)


def test_steps_between_records_run_without_hooks(tmp_path):
    recorder = telemetry.Recorder(tmp_path, every=3)
    model = seed_cnn(rng=np.random.default_rng(0))
    x, y = tiny_set(16)
    recorder.start(model, x, y)
    armed = []
    for step in range(1, 7):
        armed.append(bool(model[0]._forward_hooks))
        recorder.on_step(step, 1.0, 0.5, 0.1)  # no forward ran: a record without layer statistics
    assert armed == [False, False, True, False, False, True]


def test_ctrl_c_then_resume_continues_the_files_without_duplicates(tmp_path):
    recorder = telemetry.Recorder(tmp_path, every=1)
    with pytest.raises(KeyboardInterrupt):
        drive(recorder, epochs=3, stop_at=(1, 2))  # Ctrl-C in epoch 2, after two of its three steps
    steps = [r["step"] for r in telemetry.read_records(tmp_path / "steps.jsonl")]
    assert steps == [1, 2, 3, 4, 5]  # complete records up to the last step taken
    # fit rolls back to the checkpoint of epoch 1 (step 3); the resumed run starts there
    model = drive(telemetry.Recorder(tmp_path, every=1), epochs=3, start_epoch=1)
    steps = [r["step"] for r in telemetry.read_records(tmp_path / "steps.jsonl")]
    assert steps == list(range(1, 10))
    assert [r["epoch"] for r in telemetry.read_records(tmp_path / "epochs.jsonl")] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.glob("epoch_*.npz")) == [f"epoch_000{i}.npz" for i in (1, 2, 3)]
    assert not model[0]._forward_hooks


def test_resume_drops_epoch_snapshots_and_final_results_beyond_the_checkpoint(tmp_path):
    drive(telemetry.Recorder(tmp_path, every=2), epochs=2)
    assert (tmp_path / "final.json").exists()
    x, y = tiny_set()
    telemetry.Recorder(tmp_path, every=2).start(seed_cnn(rng=np.random.default_rng(0)), x, y, step=3, epoch=1)
    assert not (tmp_path / "final.json").exists()
    assert not (tmp_path / "epoch_0002.npz").exists()
    assert [r["step"] for r in telemetry.read_records(tmp_path / "steps.jsonl")] == [2]


def test_recorder_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="every"):
        telemetry.Recorder(tmp_path, every=0)
    with pytest.raises(TypeError, match="every"):
        telemetry.Recorder(tmp_path, every=2.5)


@pytest.mark.needs("dot")
def test_graph_node_statistics_match_the_rendered_nodes(tmp_path):
    x, y = tiny_set(8)
    recorder = telemetry.Recorder(tmp_path)
    recorder.start(seed_cnn(relu=True, rng=np.random.default_rng(0)), x, y)
    recorder.close()  # dot draws while training goes on; close (or the first epoch's end) writes the graph
    svg = (tmp_path / "graph.svg").read_text()
    nodes = json.loads((tmp_path / "graph_nodes.json").read_text())
    drawn = re.findall(r'<g id="node\d+" class="node">\s*<title>(\w+)</title>(.*?)</g>', svg, re.S)
    assert {title for title, _ in drawn} == set(nodes)
    for title, body in drawn:
        stats, text = nodes[title], " ".join(re.findall(r">([^<]*)</text>", body))
        if stats["kind"] == "op":
            assert stats["name"] in text
        elif stats["shape"]:
            assert str(tuple(stats["shape"])) in text, (title, text)
    assert any(v["name"] == "0.weight" and "grad" in v for v in nodes.values())


def test_layer_outputs_run_one_eval_forward_and_leave_no_hooks():
    model = seed_cnn(rng=np.random.default_rng(0))
    model.train()
    x = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    outputs = telemetry.layer_outputs(model, x)
    leaves = [n for n, m in model.named_modules() if n and not m._modules]
    assert list(outputs) == leaves
    assert model.training  # restored (predict_proba below leaves the model in eval mode)
    logits = outputs[leaves[-1]]  # the last leaf's output is the model's: eval mode, the same numbers
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(proba, train.predict_proba(model, x), rtol=1e-5)
    assert outputs[leaves[0]].shape[:1] == (2,)
    assert outputs[leaves[0]].ndim == 4
    assert not any(m._forward_hooks for m in model.modules())
    assert list(telemetry.layer_outputs(model, x, [leaves[1]])) == [leaves[1]]
