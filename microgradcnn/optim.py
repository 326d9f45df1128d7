"""Optimizers with PyTorch's update rules: SGD (momentum, Nesterov, weight decay) and Adam.

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

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from microgradcnn.tensor import Tensor

__all__ = ["SGD", "Adam", "Optimizer"]


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad`` and state dicts, as ``torch.optim``.

    ``params`` is an iterable of Tensors (usually ``model.parameters()``) or of dicts ``{"params": [...],
    "lr": ...}``, one per group, whose keys override ``defaults`` for that group. ``param_groups`` is the
    list of group dicts (change ``group["lr"]`` to change the learning rate); ``state`` maps a parameter to
    its state dict (momentum buffer, Adam moments).

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


def _at_least(what: str, value: Any, low: float, name: str) -> None:
    if (
        not isinstance(value, int | float | np.floating | np.integer)
        or isinstance(value, bool)
        or not value >= low
    ):
        raise ValueError(f"{name}: invalid {what} {value!r}; it must be a number >= {low}")


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
        _at_least("momentum", group["momentum"], 0.0, "SGD")
        _at_least("weight_decay", group["weight_decay"], 0.0, "SGD")
        if group["nesterov"] and group["momentum"] <= 0:
            raise ValueError("SGD: nesterov momentum requires momentum > 0")

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
                    state = self.state.setdefault(p, {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = np.array(g, dtype=p.dtype)
                    else:
                        buf *= momentum
                        buf += g
                    g = g + momentum * buf if nesterov else buf
                p.data -= lr * g


class Adam(Optimizer):
    """Adam (not AMSGrad), exactly as ``torch.optim.Adam``: weight decay is added to the gradient (L2, not
    AdamW's decoupled decay) and both moments are bias-corrected. Per parameter, each ``step()``::

        t = t + 1
        g = g + weight_decay * p
        m = m + (1 - beta1) * (g - m)                      # = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Raises:
        ValueError: for a negative lr, eps or weight_decay, or a beta outside [0, 1).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        _at_least("eps", group["eps"], 0.0, "Adam")
        _at_least("weight_decay", group["weight_decay"], 0.0, "Adam")
        betas = group["betas"]
        if len(betas) != 2 or not all(isinstance(b, int | float) and 0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Adam: invalid betas {betas!r}; both must be in [0, 1)")
        group["betas"] = (float(betas[0]), float(betas[1]))

    def _state_names(self) -> tuple[str, ...]:
        return ("step", "exp_avg", "exp_avg_sq")

    def step(self) -> None:
        """One update of every parameter with a gradient (see the class docstring)."""
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                state = self.state.setdefault(p, {})
                if not state:
                    state.update(step=0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                if decay != 0:
                    g = g + decay * p.data
                m += (1 - beta1) * (g - m)  # PyTorch's lerp, in the same order of operations
                v *= beta2
                v += (1 - beta2) * (g * g)
                step_size = lr / (1 - beta1**t)
                denom = np.sqrt(v) / math.sqrt(1 - beta2**t)
                denom += eps
                p.data -= step_size * (m / denom)
