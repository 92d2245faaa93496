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
    """
    old_leaves = {
        tuple(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(old_state)
    }

    def carry(path, fresh):
        old = old_leaves.get(tuple(path))
        if old is None or np.shape(old) != np.shape(fresh):
            return fresh
        if jnp.result_type(old) != jnp.result_type(fresh):
            return fresh
        return old

    return jax.tree_util.tree_map_with_path(carry, tx.init(params))
