"""Argument checks shared by the ops, layers, optimizers and tools: one rule, one message, one exception."""

from __future__ import annotations

import numbers
from typing import Any


def check_int(value: Any, what: str, where: str, *, minimum: int | None = None) -> int:
    """``value`` as a Python int, at least ``minimum`` when given.

    Bools are refused (``True`` is an int to Python, never a size or a count to a user), as are floats, even
    whole ones: ``reshape(3.0, 2)`` is a mistake to report, not to round.

    Raises:
        TypeError: naming ``where`` and ``what``, for anything but an integer.
        ValueError: naming ``where`` and ``what``, for an integer below ``minimum``.
    """
    if type(value) is not int:  # the common case costs one type() call
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{where}: {what} must be an int, got {value!r} ({type(value).__name__})")
        value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: {what} must be at least {minimum}, got {value}")
    return value


def is_int(value: Any) -> bool:
    """True for an integer that is not a bool (Python or NumPy)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """True for a real number that is not a bool (Python or NumPy ints and floats)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
