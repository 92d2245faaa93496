"""Plot learning-rate schedules with matplotlib (an optional dependency: ``optlib[plot]``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from optlib._numerics import INT32_MAX
from optlib._validation import check_int

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_schedule"]


def _import_matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - exercised by monkeypatching in tests
        raise ImportError(
            "optlib.plot_schedule needs matplotlib: pip install 'optlib[plot]'"
        ) from error
    return Figure


def _evaluate(schedule: Callable[[Any], Any], steps: np.ndarray) -> np.ndarray:
    """``schedule`` at every step, in one jitted vmap (a ``MomentumSchedule`` gives its lr)."""
    values = jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int32))
    return np.asarray(values, np.float64)


def _check_steps(steps: Any) -> np.ndarray:
    """``steps`` as a non-empty 1-D array of update counts in ``[0, 2**31 - 1]``."""
    if np.ndim(steps) == 0:
        return np.arange(check_int("steps", steps, minimum=1))
    values = np.asarray(steps)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"steps must be a number of steps >= 1 or a non-empty 1-D sequence of steps, got "
            f"{steps!r}"
        )
    if values.dtype.kind == "f" and np.all(np.isfinite(values) & (values == np.round(values))):
        values = values.astype(np.int64)
    if values.dtype.kind not in "iu":
        raise TypeError(f"steps must be integers (update counts), got {steps!r}")
    if values.min() < 0 or values.max() > INT32_MAX:
        raise ValueError(f"steps must be in [0, 2**31 - 1] (optax's update count), got {steps!r}")
    return values


def plot_schedule(
    schedules: Callable[[Any], Any] | Sequence[Callable[[Any], Any]],
    steps: int | Sequence[int] | np.ndarray = 1000,
    labels: str | Sequence[str] | None = None,
    ax: Any = None,
    path: str | None = None,
    *,
    title: str | None = None,
    log_scale: bool = False,
) -> Axes:
    """Draws one or several schedules over a range of update counts.

    Each schedule is evaluated at every step (one ``jit(vmap(...))`` per schedule) and drawn
    as a line of learning rate against step.

    Args:
      schedules: a schedule ``step -> lr`` or a sequence of them (anything
        ``optlib.get_scheduler`` returns for a step-based name, or any ``optax.Schedule``).
      steps: an int ``n`` for steps ``0 .. n-1``, or the steps themselves.
      labels: a legend label per schedule (a single string for a single schedule); no
        legend when ``None``.
      ax: a matplotlib ``Axes`` to draw on; a new figure is made when ``None`` (through
        ``pyplot`` so notebooks show it, or a detached ``Figure`` when only saving to
        ``path``).
      path: if given, the figure is saved there (format from the extension, e.g. ``.png``).
      title: an optional title for the axes.
      log_scale: draw the learning rate on a logarithmic axis (zero values, e.g. the start of
        a warm-up from 0, are left out of the log axis by matplotlib).

    Returns:
      The matplotlib ``Axes`` drawn on.

    Raises:
      ImportError: matplotlib is not installed (``pip install 'optlib[plot]'``).
      TypeError: ``schedules`` is neither a schedule nor a sequence of them (e.g. a bare
        float: plot ``optax.constant_schedule(lr)``), or ``steps`` are not integers.
      ValueError: ``steps`` is below 1, empty, or outside ``[0, 2**31 - 1]``; ``labels`` do
        not match ``schedules``.
    """
    figure_class = _import_matplotlib()
    one = callable(schedules) or hasattr(schedules, "update")  # one schedule (or a transform)
    if not one and (isinstance(schedules, (str, bytes)) or not isinstance(schedules, Sequence)):
        hint = (
            f"; for a constant rate plot optax.constant_schedule({schedules!r})"
            if isinstance(schedules, (int, float)) and not isinstance(schedules, bool)
            else ""
        )
        raise TypeError(
            "schedules must be a step -> lr schedule or a sequence of them, got "
            f"{schedules!r} ({type(schedules).__name__}){hint}"
        )
    schedules = [schedules] if one else list(schedules)  # type: ignore[list-item, arg-type]
    if not schedules:
        raise ValueError("schedules must hold at least one schedule, got an empty sequence")
    if isinstance(labels, str):
        labels = [labels]
    if labels is not None and len(labels) != len(schedules):
        raise ValueError(
            f"labels must give one label per schedule ({len(schedules)}), got {len(labels)}"
        )
    for index, schedule in enumerate(schedules):
        if not callable(schedule):
            raise TypeError(
                f"schedules[{index}] must be a step -> lr schedule, got {type(schedule).__name__} "
                "(metric-driven schedulers have no fixed curve to plot)"
            )
    steps = _check_steps(steps)

    if ax is None:
        if path is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(9, 4.5))
        else:
            ax = figure_class(figsize=(9, 4.5)).subplots()
    for index, schedule in enumerate(schedules):
        label = labels[index] if labels is not None else None
        ax.plot(steps, _evaluate(schedule, steps), label=label, linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    if log_scale:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if title is not None:
        ax.set_title(title)
    if labels is not None:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if path is not None:
        ax.figure.savefig(path, dpi=120, bbox_inches="tight")  # keeps the outside legend
    return ax
