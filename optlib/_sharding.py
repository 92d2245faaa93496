"""Shardings for optimizer state: every statistic sharded like the parameter it belongs to.

``jax.jit(tx.init, out_shardings=state_shardings(tx, params, param_shardings))(params)``
creates the optimizer state already laid out on the mesh:

* a state leaf with its parameter's shape (Adam's ``mu``/``nu``, Adagrad's ``sum``, ...)
  takes the parameter's sharding;
* a leaf whose transform declared how it relates to its parameter (Adafactor's factored
  row/column statistics) keeps the parameter's sharding minus the reduced axis, never
  replicated;
* everything else (counters, learning rates, scalar placeholders, metric-scheduler
  configuration) is replicated.

Which state leaf belongs to which parameter is read off the key paths: optax states nest a
copy of the parameter tree, so a state leaf's path ends with its parameter's path.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from optlib._partition import field_rule, ruled_state_types

__all__ = ["state_shardings"]


def _full_spec(sharding: NamedSharding, ndim: int) -> tuple:
    spec = tuple(sharding.spec)
    return spec + (None,) * (ndim - len(spec))


def _param_table(params: Any, param_shardings: Any) -> dict[tuple, tuple[Any, Any]]:
    shardings = jax.tree_util.tree_leaves(
        param_shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)
    )
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if len(shardings) == 1 and len(leaves) > 1:
        shardings = shardings * len(leaves)
    if len(shardings) != len(leaves):
        raise ValueError(
            f"param_shardings has {len(shardings)} shardings for {len(leaves)} parameters; give "
            "one per parameter (same tree as params) or a single one for all."
        )
    return {tuple(path): (leaf, sharding) for (path, leaf), sharding in zip(leaves, shardings)}


def _owner(path: tuple, table: dict) -> tuple[Any, Any] | None:
    """The (param, sharding) whose key path is the longest suffix of ``path``."""
    for start in range(len(path) + 1):
        found = table.get(path[start:])
        if found is not None:
            return found
    return None


def _replicated(sharding: Any) -> Any:
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec())
    return sharding


def state_shardings(tx: Any, params: Any, param_shardings: Any) -> Any:
    """The sharding of every leaf of ``tx.init(params)``, as a pytree of ``jax.sharding``.

    Args:
      tx: an ``optax.GradientTransformation`` (any nesting of optlib and optax transforms).
      params: the parameters, or their ``jax.ShapeDtypeStruct``s.
      param_shardings: a pytree of ``NamedSharding`` with the structure of ``params`` (or one
        sharding for all).

    Returns:
      A pytree with the structure of the optimizer state, for
      ``jax.jit(tx.init, out_shardings=...)``.
    """
    table = _param_table(params, param_shardings)
    some_sharding = next(iter(table.values()))[1]
    replicated = _replicated(some_sharding)
    abstract_state = jax.eval_shape(tx.init, params)

    def default(path, leaf):
        owner = _owner(tuple(path), table)
        if owner is not None and tuple(leaf.shape) == tuple(owner[0].shape):
            return owner[1]
        return replicated

    def by_rule(rule):
        def shard(path, leaf):
            owner = _owner(tuple(path), table)
            if owner is None or not isinstance(owner[1], NamedSharding):
                return default(path, leaf)
            param, sharding = owner
            spec = rule(_full_spec(sharding, param.ndim), param.ndim)
            if len(spec) != leaf.ndim:
                raise ValueError(f"partition rule gave {spec} for a leaf of shape {leaf.shape}")
            return NamedSharding(sharding.mesh, PartitionSpec(*spec))

        return shard

    ruled = ruled_state_types()

    def node(path, value):
        if not isinstance(value, ruled):
            return default(path, value)
        fields = {}
        for field in value._fields:
            rule = field_rule(type(value), field)
            fn = by_rule(rule) if rule else default
            sub = getattr(value, field)
            fields[field] = jax.tree_util.tree_map_with_path(
                lambda p, leaf, fn=fn, prefix=tuple(path): fn(prefix + tuple(p), leaf), sub
            )
        return type(value)(**fields)

    return jax.tree_util.tree_map_with_path(
        node, abstract_state, is_leaf=lambda x: isinstance(x, ruled)
    )
