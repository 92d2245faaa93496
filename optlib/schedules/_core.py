"""Pieces shared by every schedule family: the momentum-carrying wrapper and epoch stepping."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable

import jax.numpy as jnp
import optax

from optlib._validation import check_callable
from optlib.schedules._steps import check_step_count

__all__ = ["MomentumSchedule", "per_epoch", "takes_last_epoch"]


@dataclasses.dataclass(frozen=True)
class MomentumSchedule:
    """A learning-rate schedule that also sets momentum, like torch's ``cycle_momentum``.

    Calling it gives the learning rate; ``.momentum(step)`` gives the momentum (SGD) or
    ``beta1`` (Adam family) torch would have set after ``step`` scheduler steps. optlib's
    optimizers read ``.momentum`` when such a schedule is their ``learning_rate``.

    Attributes:
      learning_rate: ``step -> lr``.
      momentum: ``step -> momentum``.
    """

    learning_rate: optax.Schedule
    momentum: optax.Schedule

    def __call__(self, step):
        return self.learning_rate(step)


def per_epoch(schedule: Callable, steps_per_epoch: int) -> Callable:
    """Runs a schedule on epochs while optax counts updates.

    A torch recipe that calls ``scheduler.step()`` once per epoch (``StepLR(step_size=30)``
    meaning 30 epochs) becomes ``per_epoch(step_lr(...), steps_per_epoch)``: update ``k``
    uses ``schedule(k // steps_per_epoch)``, so the rate changes exactly at epoch
    boundaries, as in the torch loop. A ``MomentumSchedule`` stays one, with its momentum
    stepped per epoch too.

    Args:
      schedule: any ``step -> value`` schedule.
      steps_per_epoch: optimizer updates per epoch (>= 1).

    Returns:
      The schedule of the update count.
    """
    schedule = check_callable("schedule", schedule)
    steps_per_epoch = check_step_count("steps_per_epoch", steps_per_epoch, minimum=1)

    def epoch_of(step):
        return jnp.asarray(step) // steps_per_epoch

    def on_epochs(fn):
        return lambda step: fn(epoch_of(step))

    if isinstance(schedule, MomentumSchedule):
        return MomentumSchedule(on_epochs(schedule.learning_rate), on_epochs(schedule.momentum))
    return on_epochs(schedule)


def takes_last_epoch(resume: Callable, doc: str) -> Callable[[Callable], Callable]:
    """A decorator adding torch's keyword ``last_epoch`` to a schedule factory.

    ``factory(..., last_epoch=k)`` is ``resume(factory(...), k)``; the keyword joins the
    signature (keyword-only, default ``-1``) and ``doc`` (its ``Args`` line) the docstring.

    Args:
      resume: ``(schedule, last_epoch) -> schedule`` of the family (torch's or HF's numbers).
      doc: the ``Args`` entry, inserted before ``Returns:``.

    Returns:
      The decorator.
    """

    def decorate(factory: Callable) -> Callable:
        signature = inspect.signature(factory)
        keyword = inspect.Parameter(
            "last_epoch", inspect.Parameter.KEYWORD_ONLY, default=-1, annotation="int"
        )

        @functools.wraps(factory)
        def build(*args, last_epoch: int = -1, **kwargs):
            return resume(factory(*args, **kwargs), last_epoch)

        build.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), keyword]
        )
        build.__doc__ = (factory.__doc__ or "").replace("\n    Returns:", doc + "\n    Returns:", 1)
        return build

    return decorate
