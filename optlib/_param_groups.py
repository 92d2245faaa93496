"""torch's parameter groups, the optax way: one optimizer per labelled subset of the params.

torch::

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1000)

optlib (one scheduler for every group = the same schedule in each group's optimizer; a group
with its own base lr gets the schedule built from that lr, as torch scales each group's
``initial_lr``)::

    schedule = optlib.cosine_annealing_lr(1e-3, T_max=1000)
    tx = optlib.param_groups(
        {"decay": optlib.adamw(schedule, weight_decay=0.01),
         "no_decay": optlib.adamw(schedule, weight_decay=0.0)},
        optlib.decay_labels,
    )

``optlib.current_learning_rate(state)`` then gives ``{"decay": lr, "no_decay": lr}``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["decay_labels", "param_groups"]


def param_groups(
    groups: Mapping[Hashable, optax.GradientTransformation],
    labels: Any | Callable[[Any], Any],
) -> optax.GradientTransformationExtraArgs:
    """One optimizer per parameter group, like torch's ``param_groups`` (``optax.partition``).

    Each group is an optimizer (``optlib.adamw(...)`` with the group's ``learning_rate`` /
    ``weight_decay`` / ...), applied to the leaves whose label is the group's key. This is
    ``optax.partition``, which already does exactly that (each group keeps its own state and
    step count; extra arguments such as ``value=loss`` reach every group), so it is reused;
    the name is the one torch users look for.

    Args:
      groups: ``{label: optimizer}``.
      labels: a pytree of labels matching the params (or a prefix of them), or a function
        ``params -> labels`` such as ``decay_labels``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      TypeError: if ``groups`` is not a non-empty mapping of ``GradientTransformation``s.
      ValueError: if a label has no group, naming the labels: at construction for a tree of
        labels, at ``init`` for a function of the params.
    """
    if not isinstance(groups, Mapping) or not groups:
        raise TypeError(f"groups must be a non-empty mapping {{label: optimizer}}, got {groups!r}")
    for label, transform in groups.items():
        if not isinstance(transform, optax.GradientTransformation):
            raise TypeError(
                f"groups[{label!r}] must be an optax.GradientTransformation, got {transform!r}"
            )
    partitioned = optax.partition(dict(groups), labels)
    if not callable(labels):
        _check_labels(labels, groups)
        return partitioned

    def init_fn(params):
        _check_labels(labels(params), groups)
        return partitioned.init(params)

    return optax.GradientTransformationExtraArgs(init_fn, partitioned.update)


def _check_labels(labels: Any, groups: Mapping[Hashable, Any]) -> None:
    missing = {label for label in jax.tree.leaves(labels) if label not in groups}
    if missing:
        raise ValueError(
            f"labels {', '.join(sorted(map(repr, missing)))} have no optimizer in groups "
            f"(groups: {', '.join(sorted(map(repr, groups)))}); add a group for each label (a "
            "frozen group: "
            "optax.set_to_zero())"
        )


def decay_labels(params: Any, decay: Hashable = "decay", no_decay: Hashable = "no_decay") -> Any:
    """Labels ``decay`` for leaves with ``ndim >= 2`` (weights), else ``no_decay``.

    The usual "no weight decay on biases and normalisation scales" split (HF Trainer excludes
    biases and LayerNorm weights; those are exactly the 0-d and 1-d leaves of most models).

    Args:
      params: the parameter pytree (or the updates, which have the same shapes).
      decay: label of the decayed leaves.
      no_decay: label of the others.

    Returns:
      A pytree of labels with the structure of ``params``.
    """
    return jax.tree.map(lambda p: decay if jnp.ndim(p) >= 2 else no_decay, params)
