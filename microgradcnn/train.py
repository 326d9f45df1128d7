"""The training loop behind ``microgradcnn train``: seeded, checkpointed every epoch, bit-exact on resume.

From Python::

    from microgradcnn.train import TrainConfig, fit
    result = fit(TrainConfig(model="seed", epochs=5), out="seed_cnn.npz")
    print(result.history[-1]["test_accuracy"])

Reproducibility: one seed makes two generators (``np.random.SeedSequence(seed).spawn(2)``), one for the
weights' initialisation and one for shuffling the training set. A checkpoint, written after every epoch, holds
the weights, the optimizer state, the learning-rate scheduler's state, the shuffling generator's state and the
state of every module's own generator (a Dropout layer's masks), so resuming from it continues exactly as the
uninterrupted run would have (identical weights, bit for bit). Without a schedule (``schedule="none"``) the
learning rate decays exponentially with the global step, whatever the total number of epochs, so it needs no
state of its own and a 1-epoch run resumed to 2 epochs equals a 2-epoch run. The schedules ``"step"``,
``"cosine"`` and ``"onecycle"`` are laid out over the run's ``epochs``
(``optim.lr_scheduler.create_scheduler``), so a run with one resumes only for the same number of epochs: after
an interruption, not to train longer. Ctrl-C (``KeyboardInterrupt``) writes the state of the last completed
epoch boundary and raises :class:`TrainingInterrupted`; the interrupted epoch is re-run from its start on
resume.

A checkpoint only ever holds a trained, finite state: nothing is written before the first epoch has
finished (so an existing file at ``out`` survives a run stopped early), and a NaN or inf loss or weight
stops training with :class:`TrainingDiverged`, leaving ``out`` with the last finite epoch.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from microgradcnn import data as datasets
from microgradcnn import functional as F
from microgradcnn._checks import check_int, is_int, is_real
from microgradcnn.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_module_rng_states,
    module_rng_states,
    restore_model,
    save_checkpoint,
)
from microgradcnn.models import MODELS
from microgradcnn.nn import Module
from microgradcnn.nn.utils import clip_grad_norm_
from microgradcnn.optim import OPTIMIZERS, Optimizer, create_optimizer
from microgradcnn.optim.lr_scheduler import SCHEDULERS, LRScheduler, create_scheduler
from microgradcnn.tensor import Tensor, no_grad

if TYPE_CHECKING:
    from microgradcnn.telemetry import Recorder

__all__ = [
    "DEFAULTS",
    "DEFAULT_LR",
    "DEFAULT_WEIGHT_DECAY",
    "MODEL_DEFAULTS",
    "OPTIMIZERS",
    "SCHEDULES",
    "Evaluation",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "check_writable",
    "evaluate",
    "fit",
    "learning_rate",
    "make_optimizer",
    "make_scheduler",
    "predict_proba",
    "random_batch_loss",
    "random_shift",
    "subset",
    "train_step",
]

SCHEDULES = ("none", *SCHEDULERS)
"""``TrainConfig.schedule`` values: ``"none"`` (``lr_decay`` per epoch) or a ``create_scheduler`` name."""
DEFAULTS: dict[str, Any] = {"epochs": 8, "batch_size": 32, "lr_decay": 0.7, "shift": 0, "schedule": "none"}
"""Values of the ``TrainConfig`` fields left None, unless ``MODEL_DEFAULTS`` has one for the model."""
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    # 6 epochs of batch 16 under a one-cycle schedule peaking at SGD's default 0.05: 24,000 images, half
    # of 12 epochs x0.8 per epoch at batch 32, for the same 97.6-98.4 % (seeds 0-4, docs/training.md)
    "cnn2": {"epochs": 6, "batch_size": 16, "schedule": "onecycle", "shift": 2},
    "bn": {"epochs": 15, "lr_decay": 0.85, "shift": 2},
}
"""Per-model overrides of ``DEFAULTS``: the stronger models train with shifted images (``cnn2``'s recipe is
measured in docs/training.md, ``bn``'s at >= 98.5 % on mnist5k in docs/layers.md)."""
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3, "rmsprop": 1e-3}
"""Learning rate used when ``TrainConfig.lr`` is None, per optimizer (a key of ``optim.OPTIMIZERS``)."""
DEFAULT_WEIGHT_DECAY = {"adamw": 1e-2}
"""Weight decay used when ``TrainConfig.weight_decay`` is None: AdamW's (PyTorch's) 0.01, else 0."""


@dataclass
class TrainConfig:
    """Everything that determines a training run; stored in each checkpoint as ``config``.

    The defaults are the CLI's, measured in docs/cli.md: the seed CNN on the offline ``mnist5k`` set, 8 epochs
    of SGD with momentum 0.9, batch 32, learning rate 0.05 multiplied by ``lr_decay`` = 0.7 per epoch
    (smoothly, step by step; 1 keeps it constant). ``shift`` is the data augmentation: each training image
    moves by a random whole number of pixels in [-shift, shift] along each axis. Fields left None are filled
    in on construction from ``MODEL_DEFAULTS[model]``, ``DEFAULTS``, ``DEFAULT_LR[optimizer]`` and
    ``DEFAULT_WEIGHT_DECAY``, so a stored config always holds the values used (``cnn2``: 6 epochs of batch
    16 under the ``onecycle`` schedule; an ``lr_decay`` given without a ``schedule`` means schedule
    ``"none"``). ``limit`` (tests and quick trials) keeps a fixed random subset of that many training and
    test images.

    ``optimizer`` is a key of ``optim.OPTIMIZERS`` (``sgd``, ``adam``, ``adamw``, ``rmsprop``), built by
    ``optim.create_optimizer`` with PyTorch's defaults for everything but ``lr`` and ``weight_decay``
    (and ``momentum``, which is SGD's alone). ``schedule`` is one of ``SCHEDULES``: ``"none"`` decays the
    rate by ``lr_decay`` per epoch; ``"step"``, ``"cosine"`` and ``"onecycle"`` are
    ``optim.lr_scheduler.create_scheduler``'s schedules over the whole run, stepped after every batch, with
    ``lr`` as their starting (``onecycle``: peak) rate; they replace ``lr_decay``, which is then 1.
    ``clip_grad_norm`` (None: no clipping) clips the gradients of every batch to that total 2-norm between
    backward and the optimizer's step (``nn.utils.clip_grad_norm_``).

    Raises:
        ValueError: naming the field, for an unknown model, dataset, optimizer or schedule, an out-of-range
            number, ``lr_decay`` other than 1 with a schedule, or ``momentum`` other than 0.9 for an
            optimizer without SGD's momentum.
    """

    model: str = "seed"
    dataset: str = "mnist5k"
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    lr_decay: float | None = None
    shift: int | None = None
    seed: int = 0
    limit: int | None = None
    schedule: str | None = None
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        preset = {
            **DEFAULTS,
            "lr": DEFAULT_LR.get(self.optimizer),
            "weight_decay": DEFAULT_WEIGHT_DECAY.get(self.optimizer, 0.0),
            **MODEL_DEFAULTS.get(self.model, {}),
        }
        if self.schedule is None and self.lr_decay is not None:
            self.schedule = "none"  # a decay given without a schedule is the decay of schedule "none"
        if (self.schedule or preset["schedule"]) != "none":
            preset["lr_decay"] = 1.0  # the schedule sets the rate of every step
        for name, value in preset.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        checks = [
            (self.model in MODELS, f"model must be one of {', '.join(MODELS)}"),
            (self.dataset in datasets.DATASETS, f"dataset must be one of {', '.join(datasets.DATASETS)}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (is_real(self.lr) and math.isfinite(self.lr) and self.lr > 0, "lr must be a positive number"),
            (is_real(self.lr_decay) and 0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]"),
            (is_int(self.shift) and 0 <= self.shift <= 8, "shift must be an int in 0..8"),
            (is_int(self.epochs) and self.epochs >= 1, "epochs must be an int >= 1"),
            (is_int(self.batch_size) and self.batch_size >= 1, "batch_size must be an int >= 1"),
            (is_real(self.momentum) and self.momentum >= 0, "momentum must be >= 0"),
            (is_real(self.weight_decay) and self.weight_decay >= 0, "weight_decay must be >= 0"),
            (is_int(self.seed) and self.seed >= 0, "seed must be an int >= 0"),
            (self.limit is None or (is_int(self.limit) and self.limit >= 1), "limit must be an int >= 1"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (
                self.schedule == "none" or self.lr_decay == 1,
                f"lr_decay applies to schedule 'none' only; {self.schedule!r} sets the rate itself",
            ),
            (
                self.optimizer == "sgd" or self.momentum == 0.9,
                f"momentum is SGD's; {self.optimizer} has none to set",
            ),
            (
                self.clip_grad_norm is None
                or (
                    is_real(self.clip_grad_norm)
                    and math.isfinite(self.clip_grad_norm)
                    and self.clip_grad_norm > 0
                ),
                "clip_grad_norm must be None or a positive number",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message} (got {self})")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys are ignored (a newer checkpoint's extras)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); ``checkpoint`` holds the state after ``epoch`` finished epochs.

    ``checkpoint`` is None when the interrupt came before the first epoch finished: nothing was written, and
    a file that was already at ``out`` is left as it was.
    """

    def __init__(self, checkpoint: Path | None, epoch: int) -> None:
        saved = (
            f"checkpoint after epoch {epoch} saved to {checkpoint}" if checkpoint else "no checkpoint written"
        )
        super().__init__(f"interrupted; {saved}")
        self.checkpoint = checkpoint
        self.epoch = epoch


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or inf in epoch ``epoch`` (1-based), at step ``step`` of it.

    ``loss`` is the offending value. ``checkpoint`` is the file holding the last finite state, after
    ``saved_epoch`` epochs, or None (and ``saved_epoch`` None) if no epoch of this run was saved; nothing
    non-finite is ever written.
    """

    def __init__(
        self,
        what: str,
        *,
        epoch: int,
        step: int,
        loss: float,
        checkpoint: Path | None,
        saved_epoch: int | None,
    ) -> None:
        kept = (
            f"{checkpoint} holds the last finite state, after epoch {saved_epoch}"
            if checkpoint is not None
            else "no checkpoint was written"
        )
        super().__init__(f"training diverged: {what} in epoch {epoch}, step {step}; {kept}")
        self.epoch, self.step, self.loss = epoch, step, loss
        self.checkpoint, self.saved_epoch = checkpoint, saved_epoch


class _NonFinite(Exception):
    """Raised inside an epoch; ``fit`` turns it into TrainingDiverged with what it knows of the files."""

    def __init__(self, what: str, step: int, loss: float) -> None:
        super().__init__(what)
        self.what, self.step, self.loss = what, step, loss


@dataclass
class TrainResult:
    """What ``fit`` returns: the trained model, optimizer and scheduler (None without a schedule), per-epoch
    metrics, the checkpoint path."""

    model: Module
    optimizer: Optimizer
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    scheduler: LRScheduler | None = None


@dataclass
class Evaluation:
    """Metrics of a model on a labelled set: mean cross-entropy, accuracy (a fraction), confusion matrix.

    ``confusion_matrix[i, j]`` counts images of true class i predicted as j; ``predictions`` is (N,);
    ``probabilities`` (N, classes) are the softmax of the logits, as ``predict_proba`` gives them.
    """

    loss: float
    accuracy: float
    confusion_matrix: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray | None = None

    @property
    def per_class_accuracy(self) -> list[float | None]:
        """Recall of each class (diagonal / row sum); None for a class with no images."""
        totals = self.confusion_matrix.sum(axis=1)
        return [None if n == 0 else float(self.confusion_matrix[i, i] / n) for i, n in enumerate(totals)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: accuracy, loss, per_class_accuracy, confusion_matrix (rows true, cols predicted)."""
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "per_class_accuracy": self.per_class_accuracy,
            "confusion_matrix": self.confusion_matrix.tolist(),
        }


# ---- building blocks ------------------------------------------------------------------------------------
def make_optimizer(config: TrainConfig, model: Module) -> Optimizer:
    """The optimizer ``config`` asks for (``optim.create_optimizer(config.optimizer, ...)``), over ``model``'s
    parameters, at the base learning rate, with ``config.weight_decay`` (and ``config.momentum`` for SGD)."""
    hyperparameters: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        hyperparameters["momentum"] = config.momentum
    return create_optimizer(config.optimizer, model.parameters(), **hyperparameters)


def make_scheduler(config: TrainConfig, optimizer: Optimizer, steps_per_epoch: int) -> LRScheduler | None:
    """The scheduler of ``config.schedule`` over ``config.epochs`` epochs of ``steps_per_epoch`` batches
    (``optim.lr_scheduler.create_scheduler``, stepped after every batch), or None for ``"none"``."""
    if config.schedule == "none":
        return None
    return create_scheduler(config.schedule, optimizer, config.epochs, steps_per_epoch)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of step ``step`` (0-based): ``base_lr * lr_decay ** (step / steps_per_epoch)``.

    It falls by the factor ``lr_decay`` per epoch, smoothly from step to step, whatever the total number of
    epochs; so training on from a checkpoint follows the same schedule as an uninterrupted run.
    """
    return config.lr * config.lr_decay ** (step / steps_per_epoch)


def train_step(
    model: Module,
    optimizer: Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    clip_grad_norm: float | None = None,
) -> tuple[float, int]:
    """One optimizer step on a batch: forward, softmax cross-entropy, backward, clipping, update.

    With ``clip_grad_norm`` the gradients are scaled to at most that total 2-norm
    (``nn.utils.clip_grad_norm_``) after backward and before ``optimizer.step()``.

    Shapes: x float32 (B, 1, 28, 28), y int (B,). Returns (mean loss, number of correct predictions).
    """
    logits = model(Tensor(x))
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad()
    loss.backward()
    if clip_grad_norm is not None:
        clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()
    return loss.item(), int((logits.data.argmax(axis=1) == y).sum())


def random_shift(x: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Move each image by its own random offset in [-max_shift, max_shift]^2, filling with background -0.5.

    Shapes: x (B, C, H, W) -> the same. The background is ``data.preprocess``'s value of a 0 pixel. One
    vectorised gather of windows of the padded batch; draws 2 * B integers from ``rng``.
    """
    if max_shift == 0:
        return x
    b, _, h, w = x.shape
    s = max_shift
    padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)), constant_values=-0.5)
    windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # (B, C, 2s+1, 2s+1, H, W), a view
    dy, dx = rng.integers(0, 2 * s + 1, size=(2, b))
    return np.ascontiguousarray(windows[np.arange(b), :, dy, dx])  # (B, C, H, W)


def predict_proba(model: Module, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Class probabilities, no graph recorded. Shapes: x float32 (N, 1, 28, 28) -> (N, 10)."""
    model.eval()
    with no_grad():
        parts = [
            F.softmax(model(Tensor(x[i : i + batch_size])), axis=1).data for i in range(0, len(x), batch_size)
        ]
    return np.concatenate(parts) if parts else np.zeros((0, 10), dtype=np.float32)


def evaluate(model: Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> Evaluation:
    """Loss, accuracy and confusion matrix of ``model`` on a labelled set, without recording a graph.

    ``images``: uint8 (N, 28, 28) raw or float32 (N, 1, 28, 28) preprocessed; ``labels``: int (N,).

    Raises:
        ValueError: for a set without images (its accuracy would be a made-up number).
    """
    if len(labels) == 0:
        raise ValueError("evaluate: the set has no images, so there is nothing to evaluate")
    model.eval()
    total_loss, preds, probas = 0.0, [], []
    with no_grad():
        for x, y in datasets.iterate_batches(images, labels, batch_size, shuffle=False):
            logits = model(Tensor(x))
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            preds.append(logits.data.argmax(axis=1))
            probas.append(F.softmax(logits, axis=1).data)
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    n_classes = max(10, int(labels.max(initial=0)) + 1)
    confusion = np.bincount(labels * n_classes + predictions, minlength=n_classes * n_classes)
    n = len(labels)
    return Evaluation(
        loss=total_loss / n,
        accuracy=float((predictions == labels).sum() / n),
        confusion_matrix=confusion.reshape(n_classes, n_classes).astype(np.int64),
        predictions=predictions,
        probabilities=np.concatenate(probas),
    )


MNIST_SIDE = 28  # images are MNIST-shaped unless the model says otherwise


def random_batch_loss(
    model: Module, batch_size: int = 8, *, seed: int = 0, input_shape: tuple[int, ...] | None = None
) -> tuple[Tensor, Tensor]:
    """The loss of one seeded random training batch of ``model``: ``(x, F.cross_entropy(model(x), y))``.

    Inputs are uniform in [-0.5, 0.5) (the range of MNIST pixels after ``x / 255 - 0.5``), in the dtype of
    the model's parameters, of shape ``(batch_size, *input_shape)``; labels are uniform over the model's
    classes. The same ``seed`` gives the same batch. ``input_shape`` defaults to the model's
    ``input_shape`` attribute if it has one, else (in_channels, 28, 28) for a first layer with
    ``in_channels`` (a conv net, e.g. the seed CNN: (1, 28, 28)), else (in_features,). Used to draw a model's
    training graph (``viz.write_model_graph``).

    Shapes: ``model`` maps (N, *input_shape) to logits (N, classes); the loss is 0-d.

    Raises:
        TypeError, ValueError: ``batch_size`` is not an int >= 1; the input shape cannot be inferred; the
            model's output is not (N, classes).
    """
    batch_size = check_int(batch_size, "batch_size", "random_batch_loss", minimum=1)
    shape = _input_shape(model) if input_shape is None else tuple(int(s) for s in input_shape)
    params = [p for _, p in model.named_parameters()]
    dtype = params[0].dtype if params else np.dtype(np.float32)
    rng = np.random.default_rng(seed)
    x = Tensor((rng.random((batch_size, *shape)) - 0.5).astype(dtype))
    logits = model(x)
    if logits.ndim != 2 or logits.shape[0] != batch_size:
        raise ValueError(
            f"random_batch_loss: the model maps input {x.shape} to {logits.shape}; want logits (N, classes)"
        )
    y = rng.integers(0, logits.shape[1], size=batch_size)
    return x, F.cross_entropy(logits, y)


def _input_shape(model: Any) -> tuple[int, ...]:
    """The per-sample input shape a model expects (see random_batch_loss)."""
    declared = getattr(model, "input_shape", None)
    if declared is not None:
        return tuple(int(s) for s in declared)
    modules = model.named_modules() if hasattr(model, "named_modules") else [("", model)]
    for _, module in modules:
        if isinstance(getattr(module, "in_channels", None), int):
            return (module.in_channels, MNIST_SIDE, MNIST_SIDE)
        if isinstance(getattr(module, "in_features", None), int):
            return (module.in_features,)
    raise ValueError(
        f"random_batch_loss: cannot infer the input shape of {type(model).__name__}; "
        "pass input_shape=(C, H, W)"
    )


def subset(images: np.ndarray, labels: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random subset of ``limit`` images (in their original order), the same in every run.

    Random rather than the first ``limit``: mnist5k is ordered by class.
    """
    keep = np.sort(np.random.default_rng(12345).permutation(len(labels))[:limit])
    return images[keep], labels[keep]


def load_data(
    config: TrainConfig, data_dir: str | os.PathLike[str] | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) of ``config.dataset``, cut to ``config.limit``.

    The limit keeps the same random subset in every run (:func:`subset`). Raises what
    ``microgradcnn.data.load_dataset`` raises (missing files or the data extra), and ValueError naming the
    dataset and split if one holds no images.
    """
    train = datasets.load_dataset(config.dataset, "train", root=data_dir, download=download)
    test = datasets.load_dataset(config.dataset, "test", root=data_dir, download=download)
    for split, (_, labels) in (("train", train), ("test", test)):
        if len(labels) == 0:
            where = f" in {data_dir}" if data_dir is not None else ""
            raise ValueError(f"the {split} split of {config.dataset}{where} has no images")
    if config.limit is not None:
        train, test = subset(*train, config.limit), subset(*test, config.limit)
    return train[0], train[1], test[0], test[1]


# ---- the loop -------------------------------------------------------------------------------------------
def fit(
    config: TrainConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | Checkpoint | None = None,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    recorder: Recorder | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``config.dataset`` for ``config.epochs`` epochs in total.

    Args:
        config: the run's settings.
        out: checkpoint path, written atomically after every epoch (None: no checkpoint).
        resume: a checkpoint (path or loaded) to continue from; its epoch counts toward ``config.epochs``.
            The caller is responsible for ``config`` matching the checkpoint's (the CLI checks it); the
            optimizer, the schedule and, with a schedule, the number of epochs are checked here.
        data: (train images, train labels, test images, test labels) instead of loading ``config.dataset``;
            images uint8 (N, 28, 28) or float32 (N, 1, 28, 28).
        data_dir, download: where MNIST / Fashion-MNIST files live, and whether to fetch them.
        progress: show a tqdm bar per epoch (None: only when stderr is a terminal).
        log: where one summary line per epoch goes.
        recorder: a ``telemetry.Recorder`` to write the run's telemetry to its directory (None: none). It is
            started after the model is built or resumed (at the checkpoint's step, so a resumed run's
            records continue without duplicates), called after every optimizer step and every epoch's
            evaluation, finished at the end, and closed (its hooks removed) on Ctrl-C or divergence.

    A checkpoint is written only once an epoch has been trained, and only with finite weights: a run
    stopped (Ctrl-C, divergence) before its first epoch finished leaves a file already at ``out`` as it was.

    Raises:
        TrainingInterrupted: on Ctrl-C, after saving the last epoch boundary's state to ``out``.
        TrainingDiverged: when a training loss, the test loss or a weight becomes NaN or inf; ``out`` keeps
            the last finite epoch.
        CheckpointError: naming the file, if ``resume`` does not fit the model, does not come from a training
            run, or holds another optimizer, another schedule (or none when ``config`` has one) or a schedule
            laid out for another number of epochs.
        ValueError: if the training or the test set has no images.
        OSError: naming ``out``, if the checkpoint cannot be written there (checked before training).
    """
    train_x, train_y, test_x, test_y = data if data is not None else load_data(config, data_dir, download)
    for what, labels in (("training", train_y), ("test", test_y)):
        if len(labels) == 0:
            raise ValueError(f"fit: the {what} set has no images")
    if out is not None:
        check_writable(out)
    init_seq, data_seq = np.random.SeedSequence(config.seed).spawn(2)
    model = MODELS[config.model](rng=np.random.default_rng(init_seq))
    optimizer = make_optimizer(config, model)
    data_rng = np.random.default_rng(data_seq)
    batches = datasets.iterate_batches(train_x, train_y, config.batch_size, rng=data_rng)  # draws nothing yet
    scheduler = make_scheduler(config, optimizer, len(batches))
    history: list[dict[str, Any]] = []
    start = 0
    if resume is not None:
        ckpt = resume if isinstance(resume, Checkpoint) else load_checkpoint(resume)
        restore_model(ckpt, model)
        _restore_training_state(ckpt, config, model, optimizer, scheduler, data_rng)
        start, history = ckpt.epoch, list(ckpt.history)
    result = TrainResult(model, optimizer, config, history, Path(out) if out is not None else None, scheduler)
    # The epoch the file at `out` holds from this run (or from the checkpoint it resumes in place).
    saved: list[int | None] = [start if resume is not None and _same_file(out, ckpt.path) else None]

    def save(epoch: int) -> None:
        if out is not None:
            state = {
                "config": config.to_dict(),
                "history": history,
                "rng_state": data_rng.bit_generator.state,
            }
            save_checkpoint(out, model, optimizer, epoch=epoch, scheduler=scheduler, **state)
            saved[0] = epoch

    if start >= config.epochs:  # the file already holds this state: leave it untouched
        log(f"already trained for {start} epochs (--epochs {config.epochs}); nothing to do")
        return result
    if recorder is not None:
        recorder.start(model, test_x, test_y, step=start * len(batches), epoch=start, config=config.to_dict())
    for epoch in range(start, config.epochs):
        boundary = _snapshot(model, optimizer, scheduler, data_rng, history)
        tic = time.perf_counter()
        # The whole epoch, evaluation and checkpoint included: Ctrl-C anywhere in it rolls back to its start.
        try:
            # A diverging run overflows before its loss is NaN; NumPy's warnings from deep inside the ops
            # would only repeat what the finiteness checks report as one clear TrainingDiverged.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                train_loss, train_accuracy = _train_epoch(
                    config, model, optimizer, scheduler, batches, data_rng, epoch, progress, recorder
                )
                metrics = evaluate(model, test_x, test_y)
            _check_finite(model, metrics.loss, len(batches))
            history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "train_accuracy": train_accuracy,
                    "test_loss": metrics.loss,
                    "test_accuracy": metrics.accuracy,
                    "seconds": time.perf_counter() - tic,
                }
            )
            if recorder is not None:
                recorder.on_epoch(epoch + 1, history[-1])
            save(epoch + 1)
        except _NonFinite as bad:
            if recorder is not None:
                recorder.close()
            _restore_snapshot(boundary, model, optimizer, scheduler, data_rng, history)
            checkpoint = Path(out) if out is not None and saved[0] is not None else None
            raise TrainingDiverged(
                bad.what,
                epoch=epoch + 1,
                step=bad.step,
                loss=bad.loss,
                checkpoint=checkpoint,
                saved_epoch=saved[0] if checkpoint is not None else None,
            ) from None
        except KeyboardInterrupt:
            if recorder is not None:
                recorder.close()  # the hooks of a step it was recording
            if out is None:
                raise
            _restore_snapshot(boundary, model, optimizer, scheduler, data_rng, history)
            if epoch == 0:  # nothing trained yet: never replace a file with an untrained model
                raise TrainingInterrupted(None, 0) from None
            save(epoch)
            raise TrainingInterrupted(Path(out), epoch) from None
        h = history[-1]
        log(
            f"epoch {epoch + 1}/{config.epochs}: train loss {h['train_loss']:.4f} "
            f"acc {h['train_accuracy']:.2%} | "
            f"test loss {h['test_loss']:.4f} acc {h['test_accuracy']:.2%} | {h['seconds']:.1f} s"
        )
    if recorder is not None:  # the last epoch's evaluation is of the final weights: no second test pass
        recorder.finish(model, test_x, test_y, probabilities=metrics.probabilities)
    return result


def _train_epoch(
    config: TrainConfig,
    model: Module,
    optimizer: Optimizer,
    scheduler: LRScheduler | None,
    batches: datasets.Batches,
    rng: np.random.Generator,
    epoch: int,
    progress: bool | None,
    recorder: Recorder | None = None,
) -> tuple[float, float]:
    """One pass over the shuffled training set; returns (mean loss, accuracy) of the training batches.

    The learning rate of each batch comes from ``scheduler`` (stepped after every optimizer step), or without
    one from ``learning_rate``. ``recorder.on_step`` gets each step's global number (1-based, over the whole
    run), loss, batch accuracy and the learning rate the step used.
    """
    from tqdm import tqdm  # lazy: only training needs it

    seen = correct = 0
    loss_sum = 0.0
    model.train()
    desc = f"epoch {epoch + 1}/{config.epochs}"
    disable = None if progress is None else not progress  # None: a bar only on a terminal
    with tqdm(
        total=len(batches), desc=desc, unit="batch", leave=False, disable=disable, dynamic_ncols=True
    ) as bar:
        for i, (x, y) in enumerate(batches):
            if scheduler is None:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, epoch * len(batches) + i, len(batches))
            lr = optimizer.param_groups[0]["lr"]
            # positional: tests replace train_step with a wrapper taking *args
            loss, hits = train_step(
                model, optimizer, random_shift(x, config.shift, rng), y, config.clip_grad_norm
            )
            if not math.isfinite(loss):  # stop at once: every later step would be NaN too
                raise _NonFinite(f"the training loss became {loss} (learning rate {lr:.3g})", i + 1, loss)
            if scheduler is not None:
                scheduler.step()  # after optimizer.step(): sets the rate of the next batch
            if recorder is not None:
                recorder.on_step(epoch * len(batches) + i + 1, loss, hits / len(y), lr)
            seen, correct, loss_sum = seen + len(y), correct + hits, loss_sum + loss * len(y)
            bar.update()
            if i % 10 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.1%}", refresh=False)
    return loss_sum / seen, correct / seen


def _check_finite(model: Module, test_loss: float, step: int) -> None:
    """_NonFinite if the test loss or a weight is NaN or inf (the last step can break the weights unseen)."""
    if not math.isfinite(test_loss):
        raise _NonFinite(f"the test loss became {test_loss}", step, test_loss)
    for name, p in model.named_parameters():
        if not np.isfinite(p.data).all():
            raise _NonFinite(f"the weights {name!r} hold NaN or inf", step, test_loss)


def _same_file(a: str | os.PathLike[str] | None, b: str | os.PathLike[str] | None) -> bool:
    return (
        a is not None and b is not None and os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    )


def check_writable(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, if a file can be created or replaced there; checked without writing anything.

    Meant to run before a long job that ends by writing ``path``, so that it fails at once rather than after
    the work. Missing parent directories are fine (``write_atomic`` creates them).

    Raises:
        ValueError: ``path`` is empty.
        IsADirectoryError, NotADirectoryError, PermissionError: naming ``path``: it is a directory, a parent
            of it is a file, or the directory it would go in is not writable.
    """
    if os.fspath(path) == "":
        raise ValueError("no file name given (an empty path)")
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot write {target}: it is a directory")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:  # the nearest ancestor that exists
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"cannot write {target}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):  # EROFS and missing permissions alike
        raise PermissionError(errno.EACCES, f"cannot write {target}: the directory {parent} is not writable")
    return target


def _restore_training_state(
    ckpt: Checkpoint,
    config: TrainConfig,
    model: Module,
    optimizer: Optimizer,
    scheduler: LRScheduler | None,
    rng: np.random.Generator,
) -> None:
    """Optimizer and scheduler state, shuffling RNG and the model's own generators (Dropout) from ``ckpt``;
    CheckpointError naming the file if they do not fit (another optimizer or schedule, a schedule for
    another number of epochs, no state for a Dropout layer's generator)."""
    from microgradcnn.checkpoint import CheckpointError

    where = os.fspath(ckpt.path) if ckpt.path is not None else "checkpoint"
    if ckpt.optimizer_state is None or ckpt.optimizer_type != type(optimizer).__name__:
        raise CheckpointError(
            f"{where}: holds {ckpt.optimizer_type or 'no'} optimizer state, "
            f"cannot resume {type(optimizer).__name__}"
        )
    if ckpt.rng_state is None:
        raise CheckpointError(f"{where}: holds no RNG state, so training cannot resume from it")
    wanted = type(scheduler).__name__ if scheduler is not None else None
    if ckpt.scheduler_type != wanted:  # a file without scheduler state is a run without a schedule
        saved_schedule = ckpt.config.get("schedule", "none")
        raise CheckpointError(
            f"{where}: holds the state of schedule {saved_schedule!r} "
            f"({ckpt.scheduler_type or 'no scheduler'}), cannot resume schedule {config.schedule!r} "
            f"({wanted or 'no scheduler'})"
        )
    saved_epochs = ckpt.config.get("epochs")
    if scheduler is not None and saved_epochs != config.epochs:
        raise CheckpointError(
            f"{where}: its {config.schedule!r} schedule is laid out over {saved_epochs} epochs, so it cannot "
            f"continue to {config.epochs} epochs; resume with {saved_epochs} epochs"
        )
    if len(ckpt.history) != ckpt.epoch:  # training writes one metrics entry per epoch
        raise CheckpointError(
            f"{where}: holds epoch {ckpt.epoch} but the metrics of {len(ckpt.history)} epoch(s); training "
            "writes one per epoch, so the file was edited and cannot be resumed"
        )
    try:
        load_module_rng_states(model, ckpt.module_rng_states)
    except ValueError as err:  # a file written before these states were stored has none
        raise CheckpointError(
            f"{where}: {err}; without them the resumed run's dropout masks would differ from the "
            "uninterrupted run's, so it cannot resume bit for bit"
        ) from None
    try:
        optimizer.load_state_dict(ckpt.optimizer_state)
        if scheduler is not None:  # after the optimizer: its rates and momentum are the scheduler's to set
            scheduler.load_state_dict(ckpt.scheduler_state)
        rng.bit_generator.state = ckpt.rng_state
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{where}: cannot resume from it: {err}") from None


def _snapshot(
    model: Module,
    optimizer: Optimizer,
    scheduler: LRScheduler | None,
    rng: np.random.Generator,
    history: list[dict[str, Any]],
) -> tuple[Any, ...]:
    """Copies of everything an epoch changes, taken at its start (cheap: kilobytes to a megabyte)."""
    schedule = scheduler.state_dict() if scheduler is not None else None
    generators = module_rng_states(model)  # the Dropout masks the epoch drew are drawn again on resume
    state = model.state_dict(), optimizer.state_dict(), schedule, rng.bit_generator.state, len(history)
    return (*state, generators)


def _restore_snapshot(
    snap: tuple[Any, ...],
    model: Module,
    optimizer: Optimizer,
    scheduler: LRScheduler | None,
    rng: np.random.Generator,
    history: list[Any],
) -> None:
    weights, optim_state, schedule_state, rng_state, n_history, generators = snap
    model.load_state_dict(weights)
    load_module_rng_states(model, generators)
    optimizer.load_state_dict(optim_state)
    if scheduler is not None:
        scheduler.load_state_dict(schedule_state)
    rng.bit_generator.state = rng_state
    del history[n_history:]
