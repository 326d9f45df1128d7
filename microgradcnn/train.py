"""The training loop behind ``microgradcnn train``: seeded, checkpointed every epoch, bit-exact on resume.

From Python::

    from microgradcnn.train import TrainConfig, fit
    result = fit(TrainConfig(model="seed", epochs=5), out="seed_cnn.npz")
    print(result.history[-1]["test_accuracy"])

Reproducibility: one seed makes two generators (``np.random.SeedSequence(seed).spawn(2)``), one for the
weights' initialisation and one for shuffling the training set. A checkpoint, written after every epoch,
holds the weights, the optimizer state and the shuffling generator's state, so resuming from it continues
exactly as the uninterrupted run would have (identical weights, bit for bit). The learning rate decays
exponentially with the global step, whatever the total number of epochs, so it needs no state of its own
and a 1-epoch run resumed to 2 epochs equals a 2-epoch run (a cosine schedule over ``epochs`` would not).
Ctrl-C (``KeyboardInterrupt``) writes the
state of the last completed epoch boundary and raises :class:`TrainingInterrupted`; the interrupted epoch
is re-run from its start on resume.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from microgradcnn import data as datasets
from microgradcnn import functional as F
from microgradcnn.checkpoint import Checkpoint, load_checkpoint, restore_model, save_checkpoint
from microgradcnn.models import MODELS
from microgradcnn.nn import Module
from microgradcnn.optim import SGD, Adam, Optimizer
from microgradcnn.tensor import Tensor, no_grad

__all__ = [
    "DEFAULTS",
    "DEFAULT_LR",
    "MODEL_DEFAULTS",
    "OPTIMIZERS",
    "Evaluation",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "evaluate",
    "fit",
    "learning_rate",
    "make_optimizer",
    "predict_proba",
    "random_shift",
    "subset",
    "train_step",
]

OPTIMIZERS = ("sgd", "adam")
DEFAULTS: dict[str, Any] = {"epochs": 8, "lr_decay": 0.7, "shift": 0}
"""Values of the ``TrainConfig`` fields left None, unless ``MODEL_DEFAULTS`` has one for the model."""
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"cnn2": {"epochs": 12, "lr_decay": 0.8, "shift": 2}}
"""Per-model overrides of ``DEFAULTS``: the stronger model trains longer, with shifted images."""
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3}
"""Learning rate used when ``TrainConfig.lr`` is None, per optimizer."""


@dataclass
class TrainConfig:
    """Everything that determines a training run; stored in each checkpoint as ``config``.

    The defaults are the CLI's, measured in docs/cli.md: the seed CNN on the offline ``mnist5k`` set, 8 epochs
    of SGD with momentum 0.9, batch 32, learning rate 0.05 multiplied by ``lr_decay`` = 0.7 per epoch
    (smoothly, step by step; 1 keeps it constant). ``shift`` is the data augmentation: each training image
    moves by a random whole number of pixels in [-shift, shift] along each axis. Fields left None are filled
    in on construction from ``MODEL_DEFAULTS[model]``, ``DEFAULTS`` and ``DEFAULT_LR[optimizer]``, so a
    stored config always holds the values used. ``limit`` (tests and quick trials) keeps a fixed random
    subset of that many training and test images.

    Raises:
        ValueError: naming the field, for an unknown model, dataset or optimizer or an out-of-range number.
    """

    model: str = "seed"
    dataset: str = "mnist5k"
    epochs: int | None = None
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_decay: float | None = None
    shift: int | None = None
    seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        preset = {**DEFAULTS, "lr": DEFAULT_LR.get(self.optimizer), **MODEL_DEFAULTS.get(self.model, {})}
        for name, value in preset.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        checks = [
            (self.model in MODELS, f"model must be one of {', '.join(MODELS)}"),
            (self.dataset in datasets.DATASETS, f"dataset must be one of {', '.join(datasets.DATASETS)}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (_is_real(self.lr) and math.isfinite(self.lr) and self.lr > 0, "lr must be a positive number"),
            (_is_real(self.lr_decay) and 0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]"),
            (_is_int(self.shift) and 0 <= self.shift <= 8, "shift must be an int in 0..8"),
            (_is_int(self.epochs) and self.epochs >= 1, "epochs must be an int >= 1"),
            (_is_int(self.batch_size) and self.batch_size >= 1, "batch_size must be an int >= 1"),
            (_is_real(self.momentum) and self.momentum >= 0, "momentum must be >= 0"),
            (_is_real(self.weight_decay) and self.weight_decay >= 0, "weight_decay must be >= 0"),
            (_is_int(self.seed) and self.seed >= 0, "seed must be an int >= 0"),
            (self.limit is None or (_is_int(self.limit) and self.limit >= 1), "limit must be an int >= 1"),
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


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); ``checkpoint`` holds the state after ``epoch`` finished epochs."""

    def __init__(self, checkpoint: Path, epoch: int) -> None:
        super().__init__(f"interrupted; checkpoint after epoch {epoch} saved to {checkpoint}")
        self.checkpoint = checkpoint
        self.epoch = epoch


@dataclass
class TrainResult:
    """What ``fit`` returns: the trained model and optimizer, per-epoch metrics, the checkpoint path."""

    model: Module
    optimizer: Optimizer
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None


@dataclass
class Evaluation:
    """Metrics of a model on a labelled set: mean cross-entropy, accuracy (a fraction), confusion matrix.

    ``confusion_matrix[i, j]`` counts images of true class i predicted as j; ``predictions`` is (N,).
    """

    loss: float
    accuracy: float
    confusion_matrix: np.ndarray
    predictions: np.ndarray

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
    """The optimizer ``config`` asks for, over ``model``'s parameters, at the base learning rate."""
    if config.optimizer == "adam":
        return Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of step ``step`` (0-based): ``base_lr * lr_decay ** (step / steps_per_epoch)``.

    It falls by the factor ``lr_decay`` per epoch, smoothly from step to step, whatever the total number of
    epochs; so training on from a checkpoint follows the same schedule as an uninterrupted run.
    """
    return config.lr * config.lr_decay ** (step / steps_per_epoch)


def train_step(model: Module, optimizer: Optimizer, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """One SGD step on a batch: forward, softmax cross-entropy, backward, update.

    Shapes: x float32 (B, 1, 28, 28), y int (B,). Returns (mean loss, number of correct predictions).
    """
    logits = model(Tensor(x))
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad()
    loss.backward()
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
    """
    model.eval()
    total_loss, preds = 0.0, []
    with no_grad():
        for x, y in datasets.iterate_batches(images, labels, batch_size, shuffle=False):
            logits = model(Tensor(x))
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            preds.append(logits.data.argmax(axis=1))
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    n_classes = max(10, int(labels.max(initial=0)) + 1)
    confusion = np.bincount(labels * n_classes + predictions, minlength=n_classes * n_classes)
    n = max(len(labels), 1)
    return Evaluation(
        loss=total_loss / n,
        accuracy=float((predictions == labels).sum() / n),
        confusion_matrix=confusion.reshape(n_classes, n_classes).astype(np.int64),
        predictions=predictions,
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
    ``microgradcnn.data.load_dataset`` raises (missing files or the data extra).
    """
    train = datasets.load_dataset(config.dataset, "train", root=data_dir, download=download)
    test = datasets.load_dataset(config.dataset, "test", root=data_dir, download=download)
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
) -> TrainResult:
    """Train ``config.model`` on ``config.dataset`` for ``config.epochs`` epochs in total.

    Args:
        config: the run's settings.
        out: checkpoint path, written atomically after every epoch (None: no checkpoint).
        resume: a checkpoint (path or loaded) to continue from; its epoch counts toward ``config.epochs``.
            The caller is responsible for ``config`` matching the checkpoint's (the CLI checks it).
        data: (train images, train labels, test images, test labels) instead of loading ``config.dataset``;
            images uint8 (N, 28, 28) or float32 (N, 1, 28, 28).
        data_dir, download: where MNIST / Fashion-MNIST files live, and whether to fetch them.
        progress: show a tqdm bar per epoch (None: only when stderr is a terminal).
        log: where one summary line per epoch goes.

    Raises:
        TrainingInterrupted: on Ctrl-C, after saving the last epoch boundary's state to ``out``.
        CheckpointError: if ``resume`` does not fit the model.
    """
    train_x, train_y, test_x, test_y = data if data is not None else load_data(config, data_dir, download)
    init_seq, data_seq = np.random.SeedSequence(config.seed).spawn(2)
    model = MODELS[config.model](rng=np.random.default_rng(init_seq))
    optimizer = make_optimizer(config, model)
    data_rng = np.random.default_rng(data_seq)
    history: list[dict[str, Any]] = []
    start = 0
    if resume is not None:
        ckpt = resume if isinstance(resume, Checkpoint) else load_checkpoint(resume)
        restore_model(ckpt, model)
        _restore_training_state(ckpt, optimizer, data_rng)
        start, history = ckpt.epoch, list(ckpt.history)
    result = TrainResult(model, optimizer, config, history, Path(out) if out is not None else None)

    def save(epoch: int) -> None:
        if out is not None:
            state = {
                "config": config.to_dict(),
                "history": history,
                "rng_state": data_rng.bit_generator.state,
            }
            save_checkpoint(out, model, optimizer, epoch=epoch, **state)

    if start >= config.epochs:
        log(f"already trained for {start} epochs (--epochs {config.epochs}); nothing to do")
        save(start)
        return result
    batches = datasets.iterate_batches(train_x, train_y, config.batch_size, rng=data_rng)
    for epoch in range(start, config.epochs):
        boundary = _snapshot(model, optimizer, data_rng, history)
        tic = time.perf_counter()
        # The whole epoch, evaluation and checkpoint included: Ctrl-C anywhere in it rolls back to its start.
        try:
            train_loss, train_accuracy = _train_epoch(
                config, model, optimizer, batches, data_rng, epoch, progress
            )
            metrics = evaluate(model, test_x, test_y)
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
            save(epoch + 1)
        except KeyboardInterrupt:
            if out is None:
                raise
            _restore_snapshot(boundary, model, optimizer, data_rng, history)
            save(epoch)
            raise TrainingInterrupted(Path(out), epoch) from None
        h = history[-1]
        log(
            f"epoch {epoch + 1}/{config.epochs}: train loss {h['train_loss']:.4f} "
            f"acc {h['train_accuracy']:.2%} | "
            f"test loss {h['test_loss']:.4f} acc {h['test_accuracy']:.2%} | {h['seconds']:.1f} s"
        )
    return result


def _train_epoch(
    config: TrainConfig,
    model: Module,
    optimizer: Optimizer,
    batches: datasets.Batches,
    rng: np.random.Generator,
    epoch: int,
    progress: bool | None,
) -> tuple[float, float]:
    """One pass over the shuffled training set; returns (mean loss, accuracy) of the training batches."""
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
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, epoch * len(batches) + i, len(batches))
            loss, hits = train_step(model, optimizer, random_shift(x, config.shift, rng), y)
            seen, correct, loss_sum = seen + len(y), correct + hits, loss_sum + loss * len(y)
            bar.update()
            if i % 10 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.1%}", refresh=False)
    return loss_sum / seen, correct / seen


def _restore_training_state(ckpt: Checkpoint, optimizer: Optimizer, rng: np.random.Generator) -> None:
    """Optimizer state and shuffling RNG from ``ckpt``; CheckpointError naming the file if they do not fit."""
    from microgradcnn.checkpoint import CheckpointError

    where = os.fspath(ckpt.path) if ckpt.path is not None else "checkpoint"
    if ckpt.optimizer_state is None or ckpt.optimizer_type != type(optimizer).__name__:
        raise CheckpointError(
            f"{where}: holds {ckpt.optimizer_type or 'no'} optimizer state, "
            f"cannot resume {type(optimizer).__name__}"
        )
    if ckpt.rng_state is None:
        raise CheckpointError(f"{where}: holds no RNG state, so training cannot resume from it")
    try:
        optimizer.load_state_dict(ckpt.optimizer_state)
        rng.bit_generator.state = ckpt.rng_state
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{where}: cannot resume from it: {err}") from None


def _snapshot(
    model: Module, optimizer: Optimizer, rng: np.random.Generator, history: list[dict[str, Any]]
) -> tuple[Any, ...]:
    """Copies of everything an epoch changes, taken at its start (cheap: kilobytes to a megabyte)."""
    return model.state_dict(), optimizer.state_dict(), rng.bit_generator.state, len(history)


def _restore_snapshot(
    snap: tuple[Any, ...], model: Module, optimizer: Optimizer, rng: np.random.Generator, history: list[Any]
) -> None:
    weights, optim_state, rng_state, n_history = snap
    model.load_state_dict(weights)
    optimizer.load_state_dict(optim_state)
    rng.bit_generator.state = rng_state
    del history[n_history:]
