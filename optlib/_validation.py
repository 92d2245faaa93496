"""Argument checks shared by every public constructor.

Every check raises at construction time with a message that names the parameter and the
bad value, the way torch's constructors do ("Invalid learning rate: -1.0"), so a mistake
never turns into a silent wrong number inside a jitted step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_bool",
    "check_callable",
    "check_choice",
    "check_int",
    "check_interval",
    "check_learning_rate",
    "check_non_negative",
    "check_positive",
    "check_real",
    "is_traced",
]


def _is_real(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):
        return True
    # 0-d numpy / jax arrays of a real dtype are accepted as concrete numbers (bfloat16
    # included: its numpy kind is "V", which is why the dtype is asked, not its kind; an
    # inject_hyperparams on bf16 parameters hands hyperparameters over as bf16 scalars).
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape != () or dtype is None:
        return False
    try:
        return bool(jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer))
    except TypeError:  # not a dtype numpy knows
        return False


def is_traced(value: Any) -> bool:
    """A value under ``jit`` (e.g. a hyperparameter from ``optax.inject_hyperparams``)."""
    return isinstance(value, jax.core.Tracer)


def check_real(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """Returns ``value`` as a float, or raises ``TypeError``/``ValueError`` naming ``name``.

    A traced value (inside ``jit``) cannot be inspected and is passed through unchanged.
    """
    if is_traced(value):
        return value
    if not _is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range (e.g. 10**400)
        number = math.inf if value > 0 else -math.inf
    if math.isnan(number) or (math.isinf(number) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def check_positive(name: str, value: Any) -> float:
    """``value > 0``."""
    number = check_real(name, value)
    if is_traced(number):
        return number
    if number <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def check_non_negative(name: str, value: Any) -> float:
    """``value >= 0``."""
    number = check_real(name, value)
    if is_traced(number):
        return number
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return number


def check_interval(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_closed: bool = True,
    high_closed: bool = True,
) -> float:
    """``value`` in the interval between ``low`` and ``high`` (closed or open ends)."""
    number = check_real(name, value)
    if is_traced(number):
        return number
    above = number >= low if low_closed else number > low
    below = number <= high if high_closed else number < high
    if not (above and below):
        left = "[" if low_closed else "("
        right = "]" if high_closed else ")"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {value!r}")
    return number


def _integral(name: str, value: Any) -> int:
    """``value`` as a Python int if it is a concrete integral scalar, else ``TypeError``."""
    if is_traced(value):
        raise TypeError(
            f"{name} must be a concrete integer, got a traced value ({value!r}); under "
            "optax.inject_hyperparams pass it in static_args"
        )
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if isinstance(value, numbers.Integral):
        return int(value)
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    if getattr(value, "shape", None) == () and kind in ("i", "u"):  # numpy / jax 0-d arrays
        return int(value)
    if isinstance(value, numbers.Real) or (getattr(value, "shape", None) == () and kind == "f"):
        number = float(value)
        if math.isfinite(number) and number.is_integer():  # 5.0, as torch accepts
            return int(number)
    raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """A concrete integral scalar, at least ``minimum``, as a Python ``int``.

    Accepted alike: Python and numpy integers, 0-d numpy / jax integer arrays, and integral
    floats such as ``5.0`` (torch accepts them). Rejected (``TypeError`` naming ``name``):
    bools, fractional or non-finite floats, strings, non-scalar arrays, traced values.
    """
    number = _integral(name, value)
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` is one of ``choices``."""
    options = tuple(choices)
    if value not in options:
        listed = ", ".join(repr(option) for option in options)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def check_float_dtype(name: str, value: Any, *, none_means: str) -> Any:
    """``None`` or a floating dtype (a dtype, its name or its scalar type), as a ``jnp.dtype``.

    An array is refused with the ``static_args`` hint: ``optax.inject_hyperparams`` takes a
    callable such as ``jnp.bfloat16`` for a schedule and passes its value at the step count.

    Raises:
      TypeError: naming ``name`` and the bad value (``none_means`` says what ``None`` is).
    """
    if value is None:
        return None
    if isinstance(value, (jax.Array, np.ndarray)):
        raise TypeError(
            f"{name} must be a dtype, got an array {value!r}: under optax.inject_hyperparams a "
            "dtype such as jnp.bfloat16 is callable and is taken for a schedule; pass "
            f"static_args=('{name}',) or a dtype instance (jnp.dtype('bfloat16'))"
        )
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name} must be None ({none_means}) or a floating dtype such as jnp.float32, "
            f"got {value!r}"
        )
    return dtype


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` (a Python or numpy bool): a string such as ``"False"`` or a number
    would otherwise silently switch the option on or off."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_callable(name: str, value: Any) -> Callable[..., Any]:
    """``value`` can be called."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {value!r} ({type(value).__name__})")
    return value


def check_learning_rate(value: Any, name: str = "learning_rate") -> Any:
    """A learning rate: a non-negative finite number, or a schedule (any callable).

    Torch rejects ``lr < 0`` ("Invalid learning rate"); so do we. Schedules are checked by
    their own constructors.
    """
    if callable(value):
        return value
    check_non_negative(name, value)
    return value
