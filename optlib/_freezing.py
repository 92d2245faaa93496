"""Unfreezing parameters mid-training (torch's ``optimizer.add_param_group``), the optax way.

torch fine-tuning starts with some layers frozen and adds them to the optimizer later::

    backbone.requires_grad_(False)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    ...
    backbone.requires_grad_(True)
    opt.add_param_group({"params": backbone.parameters(), "lr": 1e-4})

The new group starts with fresh per-parameter state (Adam's ``step`` 0, zero moments) while the
head keeps its moments and step counts. In optlib the groups are ``optlib.param_groups``
(``optax.partition``) with a ``"frozen"`` group that zeroes its updates and keeps no state
(``optax.set_to_zero()``; the other groups hold ``optax.MaskedNode`` placeholders, not arrays,
for the frozen leaves); unfreezing builds the optimizer with one more group and moves the state
over with ``carry_over_state``::

    labels = {"backbone": "frozen", "head": "head"}
    tx = optlib.param_groups({"head": optlib.adamw(1e-3), "frozen": optax.set_to_zero()}, labels)
    opt_state = tx.init(params)
    ...
    labels = {"backbone": "backbone", "head": "head"}
    tx = optlib.param_groups({"head": optlib.adamw(1e-3), "backbone": optlib.adamw(1e-4),
                              "frozen": optax.set_to_zero()}, labels)
    opt_state = optlib.carry_over_state(tx, params, opt_state)   # then re-jit the step

Each group's state lives under its label, so the head's state keeps its key paths and is
copied over whole (moments, step count, scheduler state), and the backbone's group is new.
Learning-rate schedules are per group: a schedule in the new group starts at its own step 0
(torch's scheduler has one ``last_epoch`` for all groups; to follow it, give the new group the
schedule shifted by the unfreezing step, ``lambda count: schedule(count + unfrozen_at)``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["carry_over_state"]


def carry_over_state(tx: optax.GradientTransformation, params: Any, old_state: Any) -> Any:
    """``tx.init(params)`` with every leaf that ``old_state`` already has copied from it.

    A leaf is carried over when ``old_state`` has a leaf at the same key path (e.g.
    ``.inner_states['head'].inner_state['adam'].exp_avg['head']['kernel']``) with the same shape and
    dtype; every other leaf (a new parameter group, a parameter that was frozen, a resized
    layer) keeps its fresh initial value. Leaves of ``old_state`` that ``tx`` no longer has are
    dropped. Static parts of the state (its tree structure) come from ``tx``. Pure and
    jit-able.

    Use it whenever the optimizer changes mid-training and the state should survive where it
    still applies: unfreezing a group (torch's ``add_param_group``), adding a group, or
    changing a group's hyperparameters that live outside the state.

    Args:
      tx: the new optimizer.
      params: the parameters it will update (or their ``jax.ShapeDtypeStruct``s).
      old_state: the previous optimizer's state.

    Returns:
      A state for ``tx``.

    Raises:
      ValueError: if ``old_state`` is not an earlier state of the same optimizer: nothing of it
        would be carried over (e.g. an ``optax.sgd`` state for an ``optlib.adamw``), or, for
        parameter groups (``optlib.param_groups``), a group that both states have keeps none
        of its leaves (the group's optimizer changed). Silently starting afresh would lose
        every moment.
    """
    old_leaves = {
        tuple(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(old_state)
    }
    carried: set[tuple] = set()

    def carry(path, fresh):
        old = old_leaves.get(tuple(path))
        if old is None or np.shape(old) != np.shape(fresh):
            return fresh
        if jnp.result_type(old) != jnp.result_type(fresh):
            return fresh
        carried.add(tuple(path))
        return old

    new_state = tx.init(params)
    result = jax.tree_util.tree_map_with_path(carry, new_state)
    new_paths = [tuple(path) for path, _ in jax.tree_util.tree_leaves_with_path(new_state)]
    old_types, new_types = _state_types(old_state), _state_types(new_state)
    for group, old_paths in _by_group(old_leaves).items():
        where = f"group {jax.tree_util.keystr(group)}" if group else "state"
        shared = [path for path in new_paths if _group_of(path) == group]
        if not shared:
            continue  # a group the new optimizer no longer has: dropped, as documented
        lost = old_types.get(group, set()) - new_types.get(group, set())
        if not carried.intersection(shared) or lost:
            detail = (
                f"its {', '.join(sorted(cls.__name__ for cls in lost))} would be lost"
                if lost
                else f"no leaf would be carried (first old leaf "
                f"{jax.tree_util.keystr(old_paths[0])}, first new leaf "
                f"{jax.tree_util.keystr(shared[0])})"
            )
            raise ValueError(
                f"carry_over_state: old_state's {where} is not a state of the new optimizer: "
                f"{detail}. Pass the state of an earlier build of the same optimizer, or start "
                "afresh with tx.init(params)"
            )
    return result


def _group_of(path: tuple) -> tuple:
    """The path up to an ``inner_states[label]`` key (``optax.partition``'s state, i.e. a
    parameter group), or ``()`` for a state without groups."""
    for index, key in enumerate(path[:-1]):
        if getattr(key, "name", None) == "inner_states":
            return tuple(path[: index + 2])
    return ()


def _by_group(old_leaves: dict[tuple, Any]) -> dict[tuple, list[tuple]]:
    groups: dict[tuple, list[tuple]] = {}
    for path in old_leaves:
        groups.setdefault(_group_of(path), []).append(path)
    return groups


def _is_named_state(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _state_types(state: Any) -> dict[tuple, set[type]]:
    """The state ``NamedTuple`` classes that hold arrays, by parameter group."""
    found: dict[tuple, set[type]] = {}

    def visit(prefix: tuple, node: Any) -> None:
        if _is_named_state(node):
            if jax.tree.leaves(node):
                found.setdefault(_group_of(prefix + (None,)), set()).add(type(node))
            for field in node._fields:
                visit(prefix + (jax.tree_util.GetAttrKey(field),), getattr(node, field))
            return
        children = jax.tree_util.tree_flatten_with_path(node, is_leaf=_is_named_state)[0]
        for path, child in children:
            if _is_named_state(child):
                visit(prefix + tuple(path), child)

    visit((), state)
    return found
