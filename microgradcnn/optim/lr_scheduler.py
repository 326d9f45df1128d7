"""Learning-rate schedulers with PyTorch's ``step()`` semantics: StepLR, CosineAnnealingLR, OneCycleLR.

A scheduler keeps no learning rate of its own: it writes ``group["lr"]`` into its optimizer's parameter
groups. Building it sets the learning rate of step 0 (``last_epoch`` = 0); each ``step()``, called after
``optimizer.step()``, adds one to ``last_epoch`` and sets the learning rate for the next optimizer step;
``get_last_lr()`` returns the rates it set last, one per group. ``StepLR`` and ``CosineAnnealingLR`` are
*chainable* as in PyTorch: each step updates the current ``group["lr"]`` (a change made to it by hand carries
on) rather than recomputing it from the base rate. ``OneCycleLR`` recomputes both learning rate and
momentum from its phase table each step.

``state_dict()`` holds plain numbers, strings and lists (ready for a checkpoint's JSON);
``load_state_dict()`` of it into a scheduler built the same way continues the schedule exactly. Restore the
optimizer's state as well (its moments, and the entries schedulers add to each group, such as
``initial_lr``), before or after building the scheduler: loading the scheduler's state sets the groups'
rates (and ``OneCycleLR``'s momentum) back to those of its ``last_epoch`` either way.

>>> import numpy as np
>>> from microgradcnn import nn, optim
>>> opt = optim.SGD(nn.Linear(2, 1, rng=np.random.default_rng(0)).parameters(), lr=1.0)
>>> schedule = CosineAnnealingLR(opt, T_max=4)
>>> for _ in range(4):
...     opt.step()
...     schedule.step()
...     print(round(schedule.get_last_lr()[0], 4))
0.8536
0.5
0.1464
0.0
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from microgradcnn._checks import check_int, is_real
from microgradcnn.optim.optimizer import Optimizer, _at_least

__all__ = ["SCHEDULERS", "CosineAnnealingLR", "LRScheduler", "OneCycleLR", "StepLR", "create_scheduler"]


class LRScheduler:
    """Base class: subclasses define ``get_lr()``, the learning rates for the current ``last_epoch``.

    ``last_epoch`` = -1 (the default) starts a schedule: each group's current lr becomes its ``initial_lr``
    (unless the group has one), and ``base_lrs`` lists them. A larger ``last_epoch`` continues one without a
    state dict, from groups that already carry ``initial_lr``, as PyTorch.

    Raises:
        TypeError: when ``optimizer`` is not an ``Optimizer``, or ``last_epoch`` is not an int.
        ValueError: for ``last_epoch`` < -1, or ``last_epoch`` >= 0 with a group lacking ``initial_lr``.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: expected an Optimizer, got {type(optimizer).__name__}")
        last_epoch = check_int(last_epoch, "last_epoch", name, minimum=-1)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", float(group["lr"]))
        else:
            missing = sorted({k for g in optimizer.param_groups for k in self._group_keys() if k not in g})
            if missing:
                raise ValueError(
                    f"{name}: last_epoch={last_epoch} continues a schedule, but the parameter groups lack "
                    f"{missing} (load the optimizer's state first, or start with last_epoch=-1)"
                )
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._last_lr: list[float] = []
        self.step()  # PyTorch's initial step: sets the lr of step last_epoch + 1 (0 for a fresh schedule)

    def _group_keys(self) -> tuple[str, ...]:
        """The entries the scheduler keeps in each parameter group, which continuing a schedule needs."""
        return ("initial_lr",)

    def get_lr(self) -> list[float]:
        """The learning rate of each parameter group at ``last_epoch``; ``step()`` calls it and applies the
        result. Read the rates in use with ``get_last_lr()`` instead."""
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        """The learning rates the last ``step()`` (or the construction) set, one per parameter group."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance the schedule one step: ``last_epoch += 1``, then set each group's lr for it.

        Call it after ``optimizer.step()``. A step that raises (``OneCycleLR`` past its last step) leaves the
        scheduler and the learning rates as they were.

        Raises:
            ValueError: when the optimizer's number of parameter groups changed since construction.
        """
        groups = self.optimizer.param_groups
        if len(groups) != len(self.base_lrs):
            raise ValueError(
                f"{type(self).__name__}: the optimizer has {len(groups)} parameter groups, the scheduler was "
                f"built for {len(self.base_lrs)}"
            )
        self.last_epoch += 1
        self._step_count += 1
        try:
            lrs = self.get_lr()
        except BaseException:
            self.last_epoch -= 1
            self._step_count -= 1
            raise
        for group, lr in zip(groups, lrs, strict=True):
            group["lr"] = float(lr)  # a NumPy scalar would make the state (and a checkpoint's JSON) fail
        self._last_lr = [group["lr"] for group in groups]

    @property
    def _initial(self) -> bool:
        """True inside the step construction takes (the only step with ``_step_count`` 1)."""
        return self._step_count == 1

    def state_dict(self) -> dict[str, Any]:
        """Everything but the optimizer, as PyTorch: ``last_epoch``, ``base_lrs``, the last rates and the
        scheduler's settings; a deep copy of plain numbers, strings and lists."""
        return copy.deepcopy({k: v for k, v in self.__dict__.items() if k != "optimizer"})

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` output (of a scheduler of the same kind, over as many parameter groups).

        Raises:
            ValueError: for something that is not such a state: not a dict, entries this scheduler does not
                have, or learning rates for another number of groups.
        """
        name = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"{name}.load_state_dict: expected a dict, got {type(state_dict).__name__}")
        own = set(self.__dict__) - {"optimizer"}
        unknown = sorted(set(state_dict) - own)
        if unknown:
            raise ValueError(
                f"{name}.load_state_dict: unknown entries {unknown} (the state of another kind of scheduler?)"
            )
        for key in ("base_lrs", "_last_lr"):
            if key in state_dict and len(state_dict[key]) != len(self.base_lrs):
                raise ValueError(
                    f"{name}.load_state_dict: {key} has {len(state_dict[key])} values, the optimizer "
                    f"{len(self.base_lrs)} parameter groups"
                )
        self.__dict__.update(copy.deepcopy(dict(state_dict)))
        # Put the restored rates back into the groups: when the optimizer's state was loaded before this
        # scheduler was built, the construction has overwritten them with the rates of step 0.
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr

    def _current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]


class StepLR(LRScheduler):
    """Multiply each group's learning rate by ``gamma`` every ``step_size`` steps, as PyTorch's ``StepLR``: at
    step t the rate is ``initial_lr * gamma ** (t // step_size)`` (chainable: the multiplication applies to
    the current rate).

    Raises:
        TypeError: for a ``step_size`` that is not an int.
        ValueError: for ``step_size`` < 1 or a negative ``gamma``.
    """

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        self.step_size = check_int(step_size, "step_size", "StepLR", minimum=1)
        _at_least("gamma", gamma, 0.0, "StepLR")
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The current rates, times ``gamma`` when ``last_epoch`` is a positive multiple of ``step_size``."""
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from each group's ``initial_lr`` down to ``eta_min`` over ``T_max`` steps, as
    ``torch.optim.lr_scheduler.CosineAnnealingLR`` (no restarts): at step t the rate is
    ``eta_min + (initial_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``, reaching ``eta_min`` at ``T_max``
    and rising again after it. Computed, as PyTorch, by the recursive (chainable) form of that formula.

    Raises:
        TypeError: for a ``T_max`` that is not an int.
        ValueError: for ``T_max`` < 1 or a negative ``eta_min``.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        self.T_max = check_int(T_max, "T_max", "CosineAnnealingLR", minimum=1)
        _at_least("eta_min", eta_min, 0.0, "CosineAnnealingLR")
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The rates of step ``last_epoch``, each from the current one (see the class docstring)."""
        t, T, low = self.last_epoch, self.T_max, self.eta_min
        if self._initial:
            return self._current_lrs()
        if (t - 1 - T) % (2 * T) == 0:
            # one step past a minimum: the ratio below would divide by 1 + cos(pi) = 0, so step up directly
            return [
                lr + (base - low) * (1 - math.cos(math.pi / T)) / 2
                for lr, base in zip(self._current_lrs(), self.base_lrs, strict=True)
            ]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (lr - low) + low for lr in self._current_lrs()]


def _anneal_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _anneal_linear(start: float, end: float, pct: float) -> float:
    return (end - start) * pct + start


_ANNEAL: dict[str, Callable[[float, float, float], float]] = {"cos": _anneal_cos, "linear": _anneal_linear}


class OneCycleLR(LRScheduler):
    """The 1cycle policy, as ``torch.optim.lr_scheduler.OneCycleLR``; step it after every batch.

    Over ``total_steps`` (or ``epochs * steps_per_epoch``) steps the learning rate rises from
    ``initial_lr = max_lr / div_factor`` to ``max_lr`` during the first ``pct_start`` of the steps, then falls
    to ``min_lr = initial_lr / final_div_factor`` at the last step (``anneal_strategy`` 'cos' or 'linear').
    ``three_phase`` makes the fall symmetric to the rise, back to ``initial_lr``, and adds a third phase down
    to ``min_lr``. With ``cycle_momentum`` (the default, as PyTorch) the momentum -- SGD's and RMSprop's
    ``momentum``, Adam's and AdamW's ``beta1`` -- moves inversely, from ``max_momentum`` at the low rates to
    ``base_momentum`` at ``max_lr``. ``max_lr``, ``base_momentum`` and ``max_momentum`` are one number or
    one per parameter group. The per-group values are stored in the groups (``initial_lr``, ``max_lr``,
    ``min_lr``, ``max_momentum``, ``base_momentum``), as PyTorch.

    Stepping past ``total_steps`` is an error: a longer run needs a scheduler built for it.

    Raises:
        TypeError: for step counts that are not ints.
        ValueError: naming the argument: no ``total_steps`` and not both ``epochs`` and ``steps_per_epoch``,
            counts < 1, ``pct_start`` outside [0, 1], an unknown ``anneal_strategy``, non-positive factors,
            a list of the wrong length, ``cycle_momentum`` with an optimizer without momentum or betas.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | Sequence[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | Sequence[float] = 0.85,
        max_momentum: float | Sequence[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        name = "OneCycleLR"
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: expected an Optimizer, got {type(optimizer).__name__}")
        if total_steps is not None:
            self.total_steps = check_int(total_steps, "total_steps", name, minimum=1)
        elif epochs is not None and steps_per_epoch is not None:
            epochs = check_int(epochs, "epochs", name, minimum=1)
            self.total_steps = epochs * check_int(steps_per_epoch, "steps_per_epoch", name, minimum=1)
        else:
            raise ValueError(
                f"{name}: give total_steps, or both epochs and steps_per_epoch (got total_steps=None, "
                f"epochs={epochs!r}, steps_per_epoch={steps_per_epoch!r})"
            )
        if not (is_real(pct_start) and 0 <= pct_start <= 1):
            raise ValueError(f"{name}: invalid pct_start {pct_start!r}; it must be a number in [0, 1]")
        if anneal_strategy not in _ANNEAL:
            raise ValueError(f"{name}: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        _at_least("div_factor", div_factor, 0.0, name, strict=True)
        _at_least("final_div_factor", final_div_factor, 0.0, name, strict=True)
        self.anneal_strategy = anneal_strategy
        div_factor, final_div_factor = float(div_factor), float(final_div_factor)
        # Each phase ends at a step and names the group entries it anneals between (PyTorch's table).
        total, pct = self.total_steps, float(pct_start)
        if three_phase:
            self._phases = [
                _phase(pct * total - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                _phase(2 * pct * total - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                _phase(total - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            self._phases = [
                _phase(pct * total - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                _phase(total - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]
        groups = optimizer.param_groups
        if last_epoch == -1:
            for group, peak in zip(groups, _per_group("max_lr", max_lr, groups), strict=True):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = bool(cycle_momentum)
        self._use_beta1 = "betas" in optimizer.defaults
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and not self._use_beta1:
                raise ValueError(
                    f"{name}: cycle_momentum needs an optimizer with momentum or betas, "
                    f"{type(optimizer).__name__} has neither (pass cycle_momentum=False)"
                )
            if last_epoch == -1:
                highs = _per_group("max_momentum", max_momentum, groups, low=0.0)
                lows = _per_group("base_momentum", base_momentum, groups, low=0.0)
                for group, high, low in zip(groups, highs, lows, strict=True):
                    _set_momentum(group, high, self._use_beta1)
                    group["max_momentum"], group["base_momentum"] = high, low
        super().__init__(optimizer, last_epoch)

    def _group_keys(self) -> tuple[str, ...]:
        momentum = ("max_momentum", "base_momentum") if self.cycle_momentum else ()
        return ("initial_lr", "max_lr", "min_lr", *momentum)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """As ``LRScheduler.load_state_dict``; also sets the groups' momentum back to ``last_epoch``'s."""
        super().load_state_dict(state_dict)
        if self.cycle_momentum:
            self.get_lr()  # recomputes this step's rates (already restored) and sets its momentum

    def get_lr(self) -> list[float]:
        """The rates of step ``last_epoch`` from the phase table; sets the groups' momentum too (when cycled).

        Raises:
            ValueError: past ``total_steps``.
        """
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(
                f"OneCycleLR: step {step} is past total_steps={self.total_steps}; "
                "build the scheduler for more steps to train longer"
            )
        start = 0.0
        for i, phase in enumerate(self._phases):
            end = phase["end_step"]
            if step <= end or i == len(self._phases) - 1:
                # a phase of no steps (pct_start 0 or 1) is at its end value, not a division by zero
                pct = (step - start) / (end - start) if end != start else 1.0
                break
            start = end
        anneal = _ANNEAL[self.anneal_strategy]
        lrs = []
        for group in self.optimizer.param_groups:
            lrs.append(anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct))
            if self.cycle_momentum:
                momentum = anneal(group[phase["start_momentum"]], group[phase["end_momentum"]], pct)
                _set_momentum(group, momentum, self._use_beta1)
        return lrs


def _phase(
    end_step: float, start_lr: str, end_lr: str, start_momentum: str, end_momentum: str
) -> dict[str, Any]:
    return {
        "end_step": float(end_step),
        "start_lr": start_lr,
        "end_lr": end_lr,
        "start_momentum": start_momentum,
        "end_momentum": end_momentum,
    }


def _per_group(what: str, value: Any, groups: list[dict[str, Any]], low: float = 0.0) -> list[float]:
    """One float per parameter group from a number or a list of them (PyTorch's ``_format_param``)."""
    values = list(value) if isinstance(value, list | tuple) else [value] * len(groups)
    if len(values) != len(groups):
        raise ValueError(
            f"OneCycleLR: {what} has {len(values)} values, the optimizer {len(groups)} parameter groups"
        )
    for v in values:
        _at_least(what, v, low, "OneCycleLR")
    return [float(v) for v in values]


def _set_momentum(group: dict[str, Any], momentum: float, use_beta1: bool) -> None:
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


SCHEDULERS = ("step", "cosine", "onecycle")
"""The schedules ``create_scheduler`` builds, by name."""

_SCHEDULE_OPTIONS = {
    "step": ("step_epochs", "gamma"),
    "cosine": ("eta_min",),
    "onecycle": (
        "max_lr",
        "pct_start",
        "anneal_strategy",
        "cycle_momentum",
        "base_momentum",
        "max_momentum",
        "div_factor",
        "final_div_factor",
        "three_phase",
    ),
}


def create_scheduler(
    name: str, optimizer: Optimizer, epochs: int, steps_per_epoch: int, **options: Any
) -> LRScheduler:
    """The schedule called ``name`` (one of ``SCHEDULERS``, any case) for a run of ``epochs`` epochs of
    ``steps_per_epoch`` batches, to be stepped once after every batch (after ``optimizer.step()``):

    * ``"step"`` -- ``StepLR``: the rate drops by ``gamma`` (default 0.1) every ``step_epochs`` epochs
      (default ``ceil(epochs / 3)``, so a run ends at a hundredth of its rate after two drops).
    * ``"cosine"`` -- ``CosineAnnealingLR`` over the whole run, down to ``eta_min`` (default 0) after the
      last batch.
    * ``"onecycle"`` -- ``OneCycleLR`` over the whole run, peaking at ``max_lr`` (default: each group's
      current lr, so the optimizer's lr is the peak); the other ``OneCycleLR`` options pass through.

    The learning rate of batch b of epoch e is then the same whether the run was interrupted and resumed
    from state dicts or not. Training longer than ``epochs`` needs a new scheduler (``OneCycleLR`` refuses
    to step past its end).

    >>> import numpy as np
    >>> from microgradcnn import nn, optim
    >>> opt = optim.SGD(nn.Linear(2, 1, rng=np.random.default_rng(0)).parameters(), lr=0.1, momentum=0.9)
    >>> type(create_scheduler("onecycle", opt, epochs=3, steps_per_epoch=100)).__name__
    'OneCycleLR'

    Raises:
        TypeError: for ``epochs`` or ``steps_per_epoch`` that are not ints.
        ValueError: for an unknown name (listing the known ones), an option the schedule does not take
            (listing those it does), counts < 1, and the schedulers' own argument errors.
    """
    where = "create_scheduler"
    epochs = check_int(epochs, "epochs", where, minimum=1)
    steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", where, minimum=1)
    key = name.lower() if isinstance(name, str) else None
    if key not in _SCHEDULE_OPTIONS:
        raise ValueError(f"{where}: unknown schedule {name!r}; choose one of {', '.join(SCHEDULERS)}")
    unknown = sorted(set(options) - set(_SCHEDULE_OPTIONS[key]))
    if unknown:
        raise ValueError(
            f"{where}: the {key!r} schedule has no option {', '.join(unknown)}; "
            f"it takes {', '.join(_SCHEDULE_OPTIONS[key])}"
        )
    if key == "step":
        step_epochs = check_int(
            options.get("step_epochs", max(1, math.ceil(epochs / 3))), "step_epochs", where, minimum=1
        )
        return StepLR(optimizer, step_size=step_epochs * steps_per_epoch, gamma=options.get("gamma", 0.1))
    total = epochs * steps_per_epoch
    if key == "cosine":
        return CosineAnnealingLR(optimizer, T_max=total, eta_min=options.get("eta_min", 0.0))
    if not isinstance(optimizer, Optimizer):  # before reading its groups for the default max_lr
        raise TypeError(f"OneCycleLR: expected an Optimizer, got {type(optimizer).__name__}")
    max_lr = options.pop("max_lr", [group["lr"] for group in optimizer.param_groups])
    return OneCycleLR(optimizer, max_lr, total_steps=total, **options)
