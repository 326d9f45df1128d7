"""Checkpoints: weights, optimizer state and JSON metadata in one ``.npz``, written atomically, never pickled.

A checkpoint is a NumPy ``.npz`` (a zip of ``.npy`` arrays) holding

* ``model/<name>`` -- one array per ``model.state_dict()`` entry (``"model/0.weight"``);
* ``optimizer/<index>/<state>`` -- the optimizer's per-parameter arrays (momentum buffer, Adam moments);
* ``meta`` -- a uint8 array of UTF-8 JSON: format and version, epoch, the training config, metrics
  history, the data RNG state, the optimizer type and hyperparameters, and the learning-rate scheduler's
  type and ``state_dict()`` (``null`` for a run without one, and absent from files written before
  schedulers were stored: both load as "no scheduler"), and the ``bit_generator.state`` of every module's
  own generator (``module_rng_states``: a Dropout layer's ``rng``, keyed by the module's name), so that a
  resumed run draws the masks the uninterrupted run would have.

It is read with ``np.load(..., allow_pickle=False)``: loading a checkpoint from a stranger never runs code,
and a file that needs unpickling (an object array) is refused with :class:`CheckpointError`.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from microgradcnn._checks import check_int
from microgradcnn._files import write_atomic
from microgradcnn.nn.module import Module
from microgradcnn.optim import Optimizer
from microgradcnn.optim.lr_scheduler import LRScheduler

__all__ = [
    "FORMAT",
    "VERSION",
    "Checkpoint",
    "CheckpointError",
    "load_checkpoint",
    "load_module_rng_states",
    "module_rng_states",
    "restore_model",
    "save_checkpoint",
    "write_atomic",
]

FORMAT = "microgradcnn-checkpoint"
VERSION = 1
_MODEL, _OPTIM, _META = "model/", "optimizer/", "meta"


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, not a checkpoint, needs unpickling, or does not fit the model.

    The message names the file.
    """


@dataclass
class Checkpoint:
    """The contents of one checkpoint file (see the module docstring for the layout).

    ``model_state`` is a ``Module.state_dict()``; ``optimizer_state`` an ``Optimizer.state_dict()`` (or None)
    and ``optimizer_type`` its class name; ``config`` the training settings (``config["model"]`` names a
    ``microgradcnn.models.MODELS`` entry when known); ``history`` one metrics dict per finished epoch;
    ``rng_state`` the ``bit_generator.state`` of the data-shuffling generator at the end of ``epoch``;
    ``scheduler_state`` an ``LRScheduler.state_dict()`` and ``scheduler_type`` its class name (both None
    for a run without a scheduler); ``module_rng_states`` the ``bit_generator.state`` of each module's
    generator, by module name (``module_rng_states(model)``; empty for a model without one, and in files
    written before they were stored).
    """

    model_state: dict[str, np.ndarray]
    optimizer_state: dict[str, Any] | None = None
    optimizer_type: str | None = None
    epoch: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    rng_state: dict[str, Any] | None = None
    path: Path | None = None
    scheduler_state: dict[str, Any] | None = None
    scheduler_type: str | None = None
    module_rng_states: dict[str, dict[str, Any]] = field(default_factory=dict)


def _generators(model: Module) -> dict[str, np.random.Generator]:
    return {
        name: m.rng
        for name, m in model.named_modules()
        if isinstance(getattr(m, "rng", None), np.random.Generator)
    }


def module_rng_states(model: Module) -> dict[str, dict[str, Any]]:
    """The ``bit_generator.state`` of every module of ``model`` that draws from its own generator ``rng``
    (``nn.Dropout``), keyed by the module's name in ``named_modules``; JSON-ready, and copies.

    Such a generator is not in ``state_dict`` (PyTorch keeps no RNG there either), but it decides the
    masks of every later step, so a bit-exact resume (``train.fit``) saves and restores it.
    """
    return {name: rng.bit_generator.state for name, rng in _generators(model).items()}


def load_module_rng_states(model: Module, states: Mapping[str, Mapping[str, Any]]) -> None:
    """Set the generators of ``model``'s modules to ``states`` (from ``module_rng_states``).

    Raises:
        ValueError: naming the modules, if ``states`` lacks a generator of the model or holds one the model
            does not have; or a state does not fit its generator (another bit generator type).
    """
    generators = _generators(model)
    missing, unexpected = sorted(set(generators) - set(states)), sorted(set(states) - set(generators))
    if missing or unexpected:
        raise ValueError(
            "the generator states do not fit the model: missing for module(s) "
            f"{', '.join(missing) or 'none'}; unexpected for {', '.join(unexpected) or 'none'}"
        )
    for name, rng in generators.items():
        try:
            rng.bit_generator.state = dict(states[name])
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(
                f"the generator state of module {name!r} does not fit its generator: {err}"
            ) from None


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Module,
    optimizer: Optimizer | None = None,
    *,
    epoch: int = 0,
    config: Mapping[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    rng_state: Mapping[str, Any] | None = None,
    scheduler: LRScheduler | None = None,
) -> Path:
    """Write ``model``'s weights, ``optimizer``'s state and the metadata to exactly ``path``, atomically.

    ``path`` is used as given: no ``.npz`` suffix is added. ``config``, ``history`` and ``rng_state`` must be
    JSON-serialisable (``rng_state`` is ``generator.bit_generator.state``). ``scheduler``'s ``state_dict()``
    (plain numbers, strings and lists) goes into the JSON metadata with its class name, and so do the states
    of the model's own generators (``module_rng_states(model)``). Returns ``path`` as a ``Path``.

    Raises:
        TypeError: if the metadata is not JSON-serialisable.
    """
    arrays: dict[str, np.ndarray] = {_MODEL + k: v for k, v in model.state_dict().items()}
    optim_meta = None
    if optimizer is not None:
        state = optimizer.state_dict()
        for index, entry in state["state"].items():
            for name, value in entry.items():
                arrays[f"{_OPTIM}{index}/{name}"] = np.asarray(value)
        optim_meta = {
            "type": type(optimizer).__name__,
            "param_groups": state["param_groups"],
            "arrays": sorted(name for name in arrays if name.startswith(_OPTIM)),  # a removed one is noticed
        }
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "epoch": int(epoch),
        "config": dict(config or {}),
        "history": list(history or []),
        "rng_state": None if rng_state is None else dict(rng_state),
        "model_keys": list(model.state_dict()),
        "optimizer": optim_meta,
        "scheduler": None
        if scheduler is None
        else {"type": type(scheduler).__name__, "state": scheduler.state_dict()},
        "module_rng_states": module_rng_states(model),
    }
    try:
        text = json.dumps(meta, allow_nan=True, default=_json_default)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"save_checkpoint: metadata for {os.fspath(path)} is not JSON-serialisable ({err})"
        ) from None
    arrays[_META] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    # np.savez on a file *object*: given a name it would append ".npz" to it.
    return write_atomic(path, lambda f: np.savez(f, **arrays))


def _json_default(value: Any) -> Any:
    """NumPy scalars and arrays in metadata become plain Python numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


_ZIP_MAGIC, _NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the npz at ``path``, read eagerly (a truncated member fails here, not later).

    What the file is gets decided from its first bytes, so a text file or a picture is reported as "not a
    checkpoint" and only a file that really holds pickled data (a pickle, or an ``.npy`` member of object
    dtype) as pickled. Nothing is ever unpickled.
    """
    where = os.fspath(path)
    if path.is_dir():
        raise CheckpointError(f"{where}: is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
            if not head:
                raise CheckpointError(f"{where}: empty file, not a checkpoint")
            if head.startswith(_NPY_MAGIC):
                raise CheckpointError(f"{where}: not a checkpoint (a single .npy array, not an .npz archive)")
            if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # pickle protocols
                raise _pickled(where, "a pickle file")
            if not head.startswith(_ZIP_MAGIC):
                raise CheckpointError(
                    f"{where}: not a checkpoint (not an .npz archive; it starts with {head!r})"
                )
            f.seek(0)
            with zipfile.ZipFile(f) as archive:
                return {
                    info.filename.removesuffix(".npy"): _read_member(archive, info, where)
                    for info in archive.infolist()
                }
    except (FileNotFoundError, CheckpointError):
        raise
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, ValueError) as err:
        raise CheckpointError(
            f"{where}: corrupt or truncated checkpoint ({type(err).__name__}: {err})"
        ) from None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    """One ``.npy`` member, CRC-checked, its header read before its data: object arrays are refused."""
    if not info.filename.endswith(".npy"):
        raise CheckpointError(f"{where}: not a checkpoint (archive member {info.filename!r} is not an array)")
    stream = io.BytesIO(archive.read(info))  # read() checks the CRC: flipped bytes fail here
    version = np.lib.format.read_magic(stream)
    read_header = (
        np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    )
    _, _, dtype = read_header(stream)
    if dtype.hasobject:
        raise _pickled(where, f"an object array, {info.filename!r}")
    stream.seek(0)
    return np.lib.format.read_array(stream, allow_pickle=False)


def _pickled(where: str, what: str) -> CheckpointError:
    return CheckpointError(
        f"{where}: refusing to load pickled data ({what}); checkpoints hold plain arrays only, because "
        "unpickling a file from a stranger can run code"
    )


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate the checkpoint at ``path`` without unpickling anything.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        CheckpointError: naming the file, if it is not a zip/npz, is truncated or corrupt, holds pickled
            data, lacks or has malformed metadata, or its arrays disagree with the metadata.
    """
    p = Path(path)
    where = os.fspath(p)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {where}")
    arrays = _read_arrays(p)
    raw = arrays.pop(_META, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{where}: not a microgradcnn checkpoint (no '{_META}' metadata array)")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{where}: corrupt checkpoint metadata ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a microgradcnn checkpoint (metadata format is not {FORMAT!r})")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format version {meta.get('version')!r}; "
            f"this microgradcnn reads versions up to {VERSION}"
        )
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise CheckpointError(f"{where}: array {name!r} has dtype {array.dtype}, want a numeric array")
        # A diverged run's weights predict nonsense ("0 (nan%)"): refuse them here, whoever wrote the file.
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise CheckpointError(
                f"{where}: array {name!r} holds NaN or inf, so the model it describes is broken"
            )
    try:
        epoch = check_int(meta.get("epoch", 0), "epoch", f"{where}: metadata", minimum=0)
    except (TypeError, ValueError) as err:
        raise CheckpointError(str(err)) from None
    model_state = {k[len(_MODEL) :]: v for k, v in arrays.items() if k.startswith(_MODEL)}
    keys = meta.get("model_keys")
    if not isinstance(keys, list) or sorted(keys) != sorted(model_state):
        raise CheckpointError(f"{where}: the model arrays do not match the metadata's list of keys")
    model_state = {k: model_state[k] for k in keys}  # the model's own parameter order
    optim = meta.get("optimizer")
    optimizer_state = None
    if optim is not None:
        state: dict[int, dict[str, Any]] = {}
        for name, array in arrays.items():
            if not name.startswith(_OPTIM):
                continue
            index, _, key = name[len(_OPTIM) :].partition("/")
            if not index.isdigit() or not key:
                raise CheckpointError(f"{where}: malformed optimizer array name {name!r}")
            state.setdefault(int(index), {})[key] = int(array) if key == "step" else array
        try:
            optimizer_state = {"state": state, "param_groups": list(optim["param_groups"])}
            optimizer_type = str(optim["type"])
        except (KeyError, TypeError):
            raise CheckpointError(f"{where}: malformed optimizer metadata") from None
        listed = optim.get("arrays")  # absent in files written before the list was kept
        found = sorted(name for name in arrays if name.startswith(_OPTIM))
        if listed is not None and sorted(listed) != found:
            missing = sorted(set(listed) - set(found)) or ["none"]
            extra = sorted(set(found) - set(listed)) or ["none"]
            raise CheckpointError(
                f"{where}: the optimizer arrays do not match the metadata's list (missing: "
                f"{', '.join(missing)}; unexpected: {', '.join(extra)}), so training cannot resume from it"
            )
    else:
        optimizer_type = None
    scheduler_type, scheduler_state = _scheduler_meta(meta.get("scheduler"), where)
    generator_states = meta.get("module_rng_states") or {}
    if not isinstance(generator_states, dict) or not all(
        isinstance(v, dict) for v in generator_states.values()
    ):
        raise CheckpointError(
            f"{where}: malformed module_rng_states metadata (want a dict of generator states)"
        )
    try:
        return Checkpoint(
            model_state=model_state,
            optimizer_state=optimizer_state,
            optimizer_type=optimizer_type,
            epoch=epoch,
            config=dict(meta.get("config") or {}),
            history=list(meta.get("history") or []),
            rng_state=meta.get("rng_state"),
            path=p,
            scheduler_state=scheduler_state,
            scheduler_type=scheduler_type,
            module_rng_states=generator_states,
        )
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: malformed checkpoint metadata ({err})") from None


def _scheduler_meta(entry: Any, where: str) -> tuple[str | None, dict[str, Any] | None]:
    """(type, state) of the metadata's ``scheduler`` entry; (None, None) when it is null or absent."""
    if entry is None:
        return None, None
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("type"), str)
        or not isinstance(entry.get("state"), dict)
    ):
        raise CheckpointError(
            f"{where}: malformed scheduler metadata (want a type name and a state dict, got {entry!r:.60})"
        )
    return entry["type"], entry["state"]


def restore_model(checkpoint: Checkpoint, model: Module | None = None) -> Module:
    """Load the checkpoint's weights into ``model``, or into a new model built from ``config["model"]``.

    Returns the model, in eval mode when it was built here.

    Raises:
        CheckpointError: naming the file, if the checkpoint names no known model, or its weights do not fit
            the model (missing or unexpected keys, wrong shapes).
    """
    from microgradcnn.models import MODELS  # models imports nn only; imported here to keep this module light

    where = os.fspath(checkpoint.path) if checkpoint.path is not None else "checkpoint"
    if model is None:
        name = checkpoint.config.get("model")
        if name not in MODELS:
            known = ", ".join(MODELS)
            raise CheckpointError(
                f"{where}: checkpoint names model {name!r}, not one of {known}; build the model yourself and "
                "call model.load_state_dict(checkpoint.model_state)"
            )
        model = MODELS[name](rng=np.random.default_rng(0)).eval()
    try:
        model.load_state_dict(checkpoint.model_state)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{where}: does not fit {type(model).__name__}: {err}") from None
    return model
