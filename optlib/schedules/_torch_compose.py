"""SequentialLR and ChainedScheduler in closed form, from their schedulers' rules.

torch builds every scheduler on one optimizer, in order, and then composes their ``step()``
calls on the optimizer's single ``group['lr']``. The functions here turn that recursion into
a function of the step, using each schedule's ``rule`` (``_torch_rules``); the public
docstrings in ``optlib.schedules.torch`` state the semantics and the limits.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from optlib._numerics import as_float
from optlib.schedules._core import MomentumSchedule
from optlib.schedules._torch_rules import (
    INT32_MAX,
    Absolute,
    Composite,
    CosineAnnealing,
    Scaled,
    SwaAnnealing,
    TorchSchedule,
    count_reached,
    div_mod,
    reached,
    step_array,
)


@dataclasses.dataclass(frozen=True)
class _Member:
    """One scheduler of a composite: its lr schedule and, if it cycles momentum, that."""

    schedule: TorchSchedule
    momentum: Callable[[jax.Array], jax.Array] | None


def _members(kind: str, schedulers) -> list[_Member]:
    """Checks ``schedulers`` as torch does (plus what optlib cannot compose)."""
    if isinstance(schedulers, (TorchSchedule, MomentumSchedule)) or not isinstance(
        schedulers, Sequence
    ):
        raise TypeError(f"{kind}: schedulers must be a list of schedules, got {schedulers!r}")
    if not schedulers:
        raise ValueError(f"{kind} expects at least one scheduler in `schedulers`, got none.")
    members = []
    for index, scheduler in enumerate(schedulers):
        where = f"{kind}: schedulers[{index}]"
        if isinstance(scheduler, optax.GradientTransformation):
            raise ValueError(
                f"{where} is a metric-driven scheduler; torch's {kind} does not support "
                "ReduceLROnPlateau, which needs a metric at each step."
            )
        momentum = None
        if isinstance(scheduler, MomentumSchedule):
            scheduler, momentum = scheduler.learning_rate, scheduler.momentum
        if not isinstance(scheduler, TorchSchedule):
            raise TypeError(
                f"{where} must be an optlib torch schedule (e.g. optlib.step_lr(...) or "
                f"get_scheduler('StepLR', ...)), got {scheduler!r}"
            )
        if scheduler.last_epoch >= 0:
            raise ValueError(
                f"{where} ({scheduler.name}) was built with last_epoch: build the members fresh "
                f"and give last_epoch to the {kind} (torch resumes a composite as a whole)."
            )
        if isinstance(scheduler.rule, Composite):
            raise ValueError(
                f"{where} is a {scheduler.name}: nesting SequentialLR / ChainedScheduler is not "
                "supported (torch's SequentialLR raises NotImplementedError when it reaches "
                "one at a milestone, and re-steps a nested one at construction)."
            )
        if scheduler.name == "OneCycleLR" and index > 0:
            raise ValueError(
                f"{where} is a OneCycleLR: it must come first. torch's OneCycleLR overwrites "
                "the optimizer's initial_lr, the base lr of the schedulers built before it."
            )
        members.append(_Member(scheduler, momentum))
    return members


def _check_base_lrs(kind: str, members: list[_Member], learning_rate: float) -> float:
    """The ``initial_lr`` torch gives every scheduler of the optimizer; checks each schedule
    was built with it. A CyclicLR or OneCycleLR built first sets it (to ``base_lr`` /
    ``max_lr / div_factor``); otherwise it is the optimizer's lr."""
    first = members[0].schedule
    base = learning_rate if first.initial_lr is None else first.initial_lr
    for index, member in enumerate(members):
        schedule = member.schedule
        if schedule.initial_lr is not None:  # its values do not depend on the base lr
            continue
        if not math.isclose(schedule.learning_rate, base, rel_tol=1e-12, abs_tol=0.0):  # type: ignore[arg-type]
            origin = "the optimizer" if first.initial_lr is None else f"{first.name} built first"
            raise ValueError(
                f"{kind}: schedulers[{index}] ({schedule.name}) has learning_rate="
                f"{schedule.learning_rate!r}, but torch gives every scheduler of the optimizer "
                f"the base lr {base!r} (from {origin}); build it with learning_rate={base!r}."
            )
    return base


def _with_momentum(schedule: TorchSchedule, members: list[_Member], momentum_of: Callable):
    """``schedule``, as a ``MomentumSchedule`` if a member cycles momentum."""
    if all(member.momentum is None for member in members):
        return schedule
    return MomentumSchedule(schedule, lambda step: as_float(momentum_of(step_array(step))))


# ---------------------------------------------------------------------------- SequentialLR


def sequence_schedules(learning_rate: float, schedulers, milestones: list[int]):
    """torch.optim.lr_scheduler.SequentialLR; see ``optlib.sequential_lr``."""
    members = _members("SequentialLR", schedulers)
    if len(milestones) != len(members) - 1:
        raise ValueError(
            "SequentialLR expects len(milestones) == len(schedulers) - 1, got "
            f"{len(milestones)} milestones for {len(members)} schedulers"
        )
    if list(milestones) != sorted(milestones):
        raise ValueError(f"SequentialLR: milestones must be sorted, got {milestones!r}")
    _check_base_lrs("SequentialLR", members, learning_rate)

    starts = [0, *milestones]  # segment k runs from starts[k] ...
    ends = [*milestones, math.inf]  # ... to ends[k] (excluded)
    reachable = [m for m in milestones if m <= INT32_MAX]

    def segment_of(step):
        return count_reached(reachable, step)

    def lr_branch(k: int) -> Callable:
        schedule, start = members[k].schedule, starts[k]
        rule = schedule.rule
        if start > 0 and isinstance(rule, SwaAnnealing):
            # torch's milestone step (epoch 0) keeps the lr the previous scheduler left;
            # SWALR anneals from there.
            before = branches[bisect.bisect_right(milestones, start - 1)]
            return lambda t: as_float(rule.from_start(before(jnp.int32(start - 1)), t - start))
        if start == 0 or not isinstance(rule, Scaled):
            # Stepped from construction (torch's _initial_step), or restarted at a milestone
            # from its own step 0, where closed forms, absolute rules and the cosine all give
            # the scheduler's value alone.
            return lambda t: as_float(schedule(t - start))
        if rule.milestone_factor is not None:  # torch jumps to its closed form at epoch 0
            scale = schedule.learning_rate * rule.milestone_factor  # type: ignore[operator]
            return lambda t: as_float(scale * rule.partial(jnp.zeros_like(t), t - start))
        # No closed form: the milestone multiplies the lr the previous scheduler left.
        before = branches[bisect.bisect_right(milestones, start - 1)]  # built already
        return lambda t: as_float(
            before(jnp.int32(start - 1)) * rule.partial(jnp.full_like(t, -1), t - start)
        )

    segments = range(len(reachable) + 1)  # a milestone past 2**31 - 1 is never reached
    branches = []
    for k in segments:
        branches.append(lr_branch(k))

    def value(step):
        return jax.lax.switch(segment_of(step), branches, step)

    def momentum_branch(k: int) -> Callable:
        own = members[k].momentum
        if own is not None:
            return lambda t: as_float(own(t - starts[k]))
        # A scheduler without momentum leaves the last value set: by the latest scheduler
        # that ran and cycles momentum, else by the construction of the last one that does.
        ran = [j for j in range(k) if starts[j] < ends[j] and members[j].momentum is not None]
        if ran:
            j = ran[-1]
            last = min(ends[j] - 1 - starts[j], INT32_MAX)
            return lambda t: jnp.full(jnp.shape(t), members[j].momentum(jnp.int32(last)))  # type: ignore[misc]
        j = max(j for j, member in enumerate(members) if member.momentum is not None)
        return lambda t: jnp.full(jnp.shape(t), members[j].momentum(jnp.int32(0)))  # type: ignore[misc]

    def momentum(step):  # used only if a member cycles momentum (_with_momentum)
        return jax.lax.switch(segment_of(step), [momentum_branch(k) for k in segments], step)

    schedule = TorchSchedule("SequentialLR", learning_rate, Composite(value))
    return _with_momentum(schedule, members, momentum)


# ------------------------------------------------------------------------ ChainedScheduler


def _apply_step(schedule: TorchSchedule, lr: jax.Array, step: jax.Array) -> jax.Array:
    """torch's ``scheduler.step()`` number ``step`` applied to the current ``lr``."""
    rule = schedule.rule
    if isinstance(rule, Scaled):
        return lr * rule.ratio(step)
    return rule.apply(lr, step)  # type: ignore[union-attr]  # only CosineAnnealing is left


def _chain_after_absolute(members: list[_Member], last_absolute: int) -> Callable:
    """The last absolute scheduler resets the lr each step; later ones step on its value."""
    head, tail = members[last_absolute].schedule, members[last_absolute + 1 :]

    def value(step):
        lr = as_float(head(step))
        for member in tail:
            lr = _apply_step(member.schedule, lr, step)
        return lr

    return value


def _chain_one_cosine(base: float, rules: list, index: int) -> Callable:
    """Multiplicative schedulers around one CosineAnnealingLR with ``eta_min = 0``.

    Until the first restart (``t = T_max + 1``) the chain multiplies factors. At a restart
    ``s`` the lr before the cosine is 0 (the cosine zeroed it at ``s - 1``) and the cosine adds
    ``base * factor_cos(s)``; the schedulers before it have lost their step-``s`` multiplier,
    those after apply theirs. So from the latest restart ``s <= t``:
    ``lr_t = base * factor_cos(t) * prod_before partial(s, t) * prod_after partial(s - 1, t)``.
    """
    cosine = rules[index]
    period, first_restart = 2 * cosine.t_max, cosine.t_max + 1

    def latest_restart(step):
        if period > INT32_MAX:  # one restart at most below 2**31
            return jnp.full_like(step, min(first_restart, INT32_MAX))
        cycles, _ = div_mod(jnp.maximum(step - min(first_restart, INT32_MAX), 0), period)
        return first_restart + period * cycles

    def value(step):
        product = base * math.prod(rule.factor(step) for rule in rules)
        restart = latest_restart(step)
        since = cosine.base * cosine.factor(step)
        for position, rule in enumerate(rules):
            if position != index:
                since = since * rule.partial(restart - (position > index), step)
        return jnp.where(reached(step, first_restart), since, product)

    return value


def chain_schedules(learning_rate: float, schedulers):
    """torch.optim.lr_scheduler.ChainedScheduler; see ``optlib.chained_scheduler``."""
    members = _members("ChainedScheduler", schedulers)
    base = _check_base_lrs("ChainedScheduler", members, learning_rate)
    rules = [member.schedule.rule for member in members]
    if any(isinstance(rule, SwaAnnealing) for rule in rules) and len(rules) > 1:
        raise ValueError(
            "ChainedScheduler: SWALR chained with other schedulers is not supported (it "
            "recovers its start from the lr the others changed); use SequentialLR."
        )
    absolute = [i for i, rule in enumerate(rules) if isinstance(rule, Absolute)]
    cosines = [i for i, rule in enumerate(rules) if isinstance(rule, CosineAnnealing)]

    if absolute:
        value = _chain_after_absolute(members, absolute[-1])
    elif len(members) == 1:
        value = members[0].schedule
    elif not cosines:
        value = lambda step: base * math.prod(rule.factor(step) for rule in rules)  # type: ignore[union-attr, misc]
    elif len(cosines) > 1:
        raise ValueError(
            "ChainedScheduler: two CosineAnnealingLR with no later LambdaLR / CyclicLR / "
            "OneCycleLR / CosineAnnealingWarmRestarts have no closed form (each one's additive "
            "restart interleaves with the other's recursion); chain at most one."
        )
    elif rules[cosines[0]].eta_min != 0:  # type: ignore[union-attr]
        raise ValueError(
            "ChainedScheduler: a CosineAnnealingLR with eta_min != 0 chained with other "
            "schedulers has no closed form in the step: torch's recursion "
            "lr <- eta_min + r_t * (q_t * lr - eta_min), with q_t the others' multipliers, sums "
            "a term over every past step. Use eta_min=0, put it in a SequentialLR, or follow it "
            "by a scheduler that sets the lr (LambdaLR, ...)."
        )
    else:
        value = _chain_one_cosine(base, rules, cosines[0])

    cycling = [member.momentum for member in members if member.momentum is not None]
    schedule = TorchSchedule(
        "ChainedScheduler", learning_rate, Composite(lambda step: as_float(value(step)))
    )
    return _with_momentum(schedule, members, lambda step: cycling[-1](step) if cycling else None)
