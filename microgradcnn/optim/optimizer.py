"""Optimizers with PyTorch's update rules: SGD (momentum, Nesterov, weight decay), Adam, AdamW and RMSprop.

Updates happen in place on each parameter's ``.data``, so the Parameter objects a model holds stay the same,
and a float32 parameter stays float32. Parameters whose ``.grad`` is None are skipped, as in PyTorch.

>>> import numpy as np
>>> from microgradcnn.nn import Parameter
>>> w = Parameter(np.array([1.0, -2.0], dtype=np.float32))
>>> w.grad = np.array([0.5, 0.5], dtype=np.float32)
>>> SGD([w], lr=0.1).step()
>>> w.data
array([ 0.95, -2.05], dtype=float32)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from microgradcnn._checks import is_real
from microgradcnn.tensor import Tensor

__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "create_optimizer"]


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad`` and state dicts, as ``torch.optim``.

    ``params`` is an iterable of Tensors (usually ``model.parameters()``) or of dicts ``{"params": [...],
    "lr": ...}``, one per group, whose keys override ``defaults`` for that group. ``param_groups`` is the
    list of group dicts (change ``group["lr"]`` to change the learning rate, as the schedulers of
    ``optim.lr_scheduler`` do); ``state`` maps a parameter to its state dict (momentum buffer, Adam moments).

    Raises:
        ValueError: for an empty parameter list, or a parameter listed twice.
        TypeError: for a parameter that is not a Tensor.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Tensor, dict[str, Any]] = {}
        if isinstance(params, Tensor):
            raise TypeError(
                f"{type(self).__name__}: params must be an iterable of Tensors, got a single Tensor"
            )
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], Mapping):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: Mapping[str, Any]) -> None:
        """Append a group ``{"params": [...], **hyperparameters}``; missing hyperparameters take defaults."""
        name = type(self).__name__
        if not isinstance(group, Mapping) or "params" not in group:
            raise TypeError(f"{name}: a parameter group must be a dict with a 'params' key")
        raw = group["params"]
        params = [raw] if isinstance(raw, Tensor) else list(raw)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: parameter {i} is a {type(p).__name__}, not a Tensor")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{name}: unknown hyperparameter(s) {sorted(unknown)} in a parameter group")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in seen for p in params):
            raise ValueError(f"{name}: a parameter appears more than once in the parameter groups")
        full = {**self.defaults, **group, "params": params}
        self._validate(full)
        self.param_groups.append(full)

    def _validate(self, group: dict[str, Any]) -> None:
        """Check one group's hyperparameters; subclasses raise ValueError naming the bad one."""
        _at_least("lr", group["lr"], 0.0, type(self).__name__)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter: None (the default, as PyTorch) or zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad[...] = 0

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        raise NotImplementedError

    def _param_state(self, p: Tensor) -> dict[str, Any]:
        """``p``'s state dict, made empty on first use (not ``setdefault(p, {})``, which builds a dict on
        every call of every step)."""
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {}
        return state

    # ---- state dicts ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The state as PyTorch lays it out: ``{"state": {index: {name: array or int}}, "param_groups":
        [{hyperparameters, "params": [index]}]}``.

        As PyTorch's: parameters are numbered in group order; arrays are copies.
        """
        index = {id(p): i for i, p in enumerate(self._flat_params())}
        state = {
            index[id(p)]: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
            for p, s in self.state.items()
            if id(p) in index
        }
        groups = [
            {**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
            for g in self.param_groups
        ]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore hyperparameters and state from ``state_dict()`` output (of an optimizer of the same kind
        over parameters of the same shapes); arrays are copied and cast to each parameter's dtype.

        Raises:
            ValueError: naming the problem, when the groups, parameter counts, state names or shapes differ.
        """
        name = type(self).__name__
        try:
            groups, state = list(state_dict["param_groups"]), dict(state_dict["state"])
        except (KeyError, TypeError):
            raise ValueError(
                f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups'"
            ) from None
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: {len(groups)} parameter groups, "
                f"the optimizer has {len(self.param_groups)}"
            )
        for i, (saved, own) in enumerate(zip(groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: group {i} has {len(saved['params'])} parameters, "
                    f"optimizer has {len(own['params'])}"
                )
        params = {
            int(i): p
            for g, o in zip(groups, self.param_groups, strict=True)
            for i, p in zip(g["params"], o["params"], strict=True)
        }
        new_state: dict[Tensor, dict[str, Any]] = {}
        for key, entry in state.items():
            p = params.get(int(key))
            if p is None:
                raise ValueError(f"{name}.load_state_dict: state for parameter {key}, which no group lists")
            unknown = set(entry) - set(self._state_names())
            if unknown:
                raise ValueError(
                    f"{name}.load_state_dict: unknown state {sorted(unknown)} for parameter {key}"
                )
            restored: dict[str, Any] = {}
            for k, v in entry.items():
                if k == "step":
                    restored[k] = int(v)
                    continue
                arr = np.asarray(v)
                if arr.shape != p.shape:
                    raise ValueError(
                        f"{name}.load_state_dict: {k} of parameter {key} has shape {arr.shape}, "
                        f"the parameter {p.shape}"
                    )
                restored[k] = arr.astype(p.dtype, copy=True)
            new_state[p] = restored
        for saved, own in zip(groups, self.param_groups, strict=True):
            hyper = {k: v for k, v in saved.items() if k != "params"}
            candidate = {**own, **hyper}
            self._validate(candidate)
            own.update(hyper)
        self.state = new_state

    def _state_names(self) -> tuple[str, ...]:
        return ()

    def _flat_params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params")
        return "\n".join([*lines, ")"])


def _at_least(what: str, value: Any, low: float, where: str, *, strict: bool = False) -> None:
    """Refuse anything but a real number >= low (> low when ``strict``), NaN included, naming the optimizer or
    scheduler (``where``) and the hyperparameter."""
    if not is_real(value) or not (value > low if strict else value >= low):
        raise ValueError(
            f"{where}: invalid {what} {value!r}; it must be a number {'>' if strict else '>='} {low}"
        )


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay.

    Exactly ``torch.optim.SGD`` without dampening. Per parameter p with gradient g, each ``step()``::

        g = g + weight_decay * p
        buf = g (first step)  or  momentum * buf + g          # only when momentum != 0
        g = g + momentum * buf (nesterov)  or  buf
        p = p - lr * g

    Raises:
        ValueError: for a negative lr, momentum or weight_decay, or nesterov without momentum.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(
            params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov}
        )

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        name = type(self).__name__
        _at_least("momentum", group["momentum"], 0.0, name)
        _at_least("weight_decay", group["weight_decay"], 0.0, name)
        if group["nesterov"] and group["momentum"] <= 0:
            raise ValueError(f"{name}: nesterov momentum requires momentum > 0")

    def _state_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",)

    def step(self) -> None:
        """One update of every parameter with a gradient (see the class docstring)."""
        for group in self.param_groups:
            lr, momentum, decay, nesterov = (
                group["lr"],
                group["momentum"],
                group["weight_decay"],
                group["nesterov"],
            )
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if decay != 0:
                    g = g + decay * p.data  # a new array: p.grad itself stays the plain gradient
                if momentum != 0:
                    state = self._param_state(p)
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = np.array(g, dtype=p.dtype)
                    else:
                        buf *= momentum
                        buf += g
                    g = g + momentum * buf if nesterov else buf
                p.data -= lr * g


class Adam(Optimizer):
    """Adam, optionally AMSGrad, exactly as ``torch.optim.Adam``: weight decay is added to the gradient (L2,
    not AdamW's decoupled decay) and both moments are bias-corrected. Per parameter, each ``step()``::

        t = t + 1
        g = g + weight_decay * p
        m = m + (1 - beta1) * (g - m)                      # = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)                              # amsgrad only; then v_max replaces v below
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Raises:
        ValueError: for a negative lr, eps or weight_decay, or a beta outside [0, 1).
    """

    _decoupled_weight_decay = False
    """AdamW's one difference: decay the parameter itself instead of adding to the gradient."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(
            params,
            {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad},
        )

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        name = type(self).__name__
        _at_least("eps", group["eps"], 0.0, name)
        _at_least("weight_decay", group["weight_decay"], 0.0, name)
        betas = group["betas"]
        if (
            not isinstance(betas, tuple | list)
            or len(betas) != 2
            or not all(is_real(b) and 0.0 <= b < 1.0 for b in betas)
        ):
            raise ValueError(f"{name}: invalid betas {betas!r}; both must be in [0, 1)")
        group["betas"] = (float(betas[0]), float(betas[1]))  # a checkpoint's JSON brings a list back

    def _state_names(self) -> tuple[str, ...]:
        return ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def step(self) -> None:
        """One update of every parameter with a gradient (see the class docstring)."""
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                state = self._param_state(p)
                if not state:
                    state.update(step=0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                if decay != 0:
                    if self._decoupled_weight_decay:
                        p.data *= 1 - lr * decay
                    else:
                        g = g + decay * p.data
                m += (1 - beta1) * (g - m)  # PyTorch's lerp, in the same order of operations
                v *= beta2
                v += (1 - beta2) * (g * g)
                if group["amsgrad"]:
                    v_max = _zeros_on_first_use(state, "max_exp_avg_sq", p)
                    np.maximum(v_max, v, out=v_max)
                    v = v_max
                step_size = lr / (1 - beta1**t)
                denom = np.sqrt(v) / math.sqrt(1 - beta2**t)
                denom += eps
                p.data -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay, exactly as ``torch.optim.AdamW`` (Loshchilov & Hutter). Each
    ``step()`` first shrinks the parameter, ``p = p * (1 - lr * weight_decay)``, then takes Adam's step on the
    plain gradient (see ``Adam``), so the decay does not pass through the adaptive scaling. The signature is
    Adam's with PyTorch's AdamW default weight_decay, 1e-2; the checks and errors are Adam's.
    """

    _decoupled_weight_decay = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


class RMSprop(Optimizer):
    """RMSprop exactly as ``torch.optim.RMSprop`` (eps added outside the square root, optional momentum and
    centering). Per parameter, each ``step()``::

        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        a = a + (1 - alpha) * (g - a)                      # centered only: the mean gradient
        s = sqrt(v - a * a) (centered)  or  sqrt(v), then s = s + eps
        buf = momentum * buf + g / s;  p = p - lr * buf    # momentum > 0
        p = p - lr * g / s                                 # momentum == 0

    Raises:
        ValueError: for a negative lr, alpha, eps, weight_decay or momentum.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "alpha": alpha,
                "eps": eps,
                "weight_decay": weight_decay,
                "momentum": momentum,
                "centered": centered,
            },
        )

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        for what in ("alpha", "eps", "weight_decay", "momentum"):
            _at_least(what, group[what], 0.0, type(self).__name__)

    def _state_names(self) -> tuple[str, ...]:
        return ("step", "square_avg", "momentum_buffer", "grad_avg")

    def step(self) -> None:
        """One update of every parameter with a gradient (see the class docstring)."""
        for group in self.param_groups:
            lr, alpha, eps, decay, momentum = (
                group[k] for k in ("lr", "alpha", "eps", "weight_decay", "momentum")
            )
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                state = self._param_state(p)
                if not state:
                    state.update(step=0, square_avg=np.zeros_like(p.data))
                state["step"] += 1
                if decay != 0:
                    g = g + decay * p.data
                v = state["square_avg"]
                v *= alpha
                v += (1 - alpha) * (g * g)
                if group["centered"]:
                    mean = _zeros_on_first_use(state, "grad_avg", p)
                    mean += (1 - alpha) * (g - mean)
                    # v >= mean**2 in exact arithmetic; rounding can push the difference a hair below zero
                    # once the gradient is steady, and sqrt would then turn the step into NaN
                    s = np.sqrt(np.maximum(v - mean * mean, 0.0))
                else:
                    s = np.sqrt(v)
                s += eps
                if momentum > 0:
                    buf = _zeros_on_first_use(state, "momentum_buffer", p)
                    buf *= momentum
                    buf += g / s
                    p.data -= lr * buf
                else:
                    p.data -= lr * (g / s)


def _zeros_on_first_use(state: dict[str, Any], name: str, p: Tensor) -> Any:
    """``state[name]``, a zero array of ``p``'s shape and dtype the first time (allocated once, not on every
    step as ``setdefault(name, np.zeros_like(...))`` would)."""
    buf = state.get(name)
    if buf is None:
        buf = state[name] = np.zeros_like(p.data)
    return buf


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}
"""The optimizers ``create_optimizer`` builds, by lower-case name."""


def create_optimizer(name: str, params: Iterable[Any], **hyperparameters: Any) -> Optimizer:
    """The optimizer called ``name`` (a key of ``OPTIMIZERS``, any case) over ``params``, with
    ``hyperparameters`` passed to its constructor; those not given keep the class's (PyTorch's) defaults.

    A hyperparameter the optimizer does not have is an error, not silently dropped: ``momentum`` for Adam
    would otherwise look applied and not be.

    >>> from microgradcnn.nn import Linear
    >>> opt = create_optimizer("AdamW", Linear(3, 2).parameters(), lr=1e-3, weight_decay=0.05)
    >>> type(opt).__name__, opt.defaults["weight_decay"]
    ('AdamW', 0.05)

    Raises:
        ValueError: for an unknown name (listing the known ones) or a hyperparameter the optimizer lacks
            (listing those it has).
    """
    cls = OPTIMIZERS.get(name.lower()) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(
            f"create_optimizer: unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}"
        )
    accepted = [n for n in inspect.signature(cls).parameters if n != "params"]
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        raise ValueError(
            f"create_optimizer: {cls.__name__} has no hyperparameter {', '.join(unknown)}; "
            f"it takes {', '.join(accepted)}"
        )
    return cls(params, **hyperparameters)
