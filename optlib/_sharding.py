"""Shardings for optimizer state: every statistic sharded like the parameter it belongs to.

``jax.jit(tx.init, out_shardings=state_shardings(tx, params, param_shardings))(params)``
creates the optimizer state already laid out on the mesh:

* a state leaf with its parameter's shape (Adam's ``mu``/``nu``, Adagrad's ``sum``, ...)
  takes the parameter's sharding;
* a leaf whose transform declared how it relates to its parameter (Adafactor's factored
  row/column statistics) keeps the parameter's sharding minus the reduced axis, never
  replicated;
* everything else (counters, learning rates, scalar placeholders, metric-scheduler
  configuration) is replicated;
* with ``shard_state_over="data"`` (ZeRO-1) the leaves of the first two kinds are in addition
  split over that mesh axis where a free dimension is divisible by its size.

A plain ``tx.init(params)`` on sharded arrays gives the same layout without ``jit``: every
transform creates its per-parameter leaves with ``optlib._partition.state_leaf``, which
places them like the parameter (the same rules).

Which state leaf belongs to which parameter is read off the key paths: optax states nest a
copy of the parameter tree, so a state leaf's path ends with its parameter's path.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec, Sharding

from optlib._partition import field_rule, full_spec, ruled_state_types

__all__ = ["split_over", "state_shardings"]


def _format_path(path: tuple) -> str:
    return jax.tree_util.keystr(path).lstrip(".") or "<root>"


def _param_table(params: Any, param_shardings: Any) -> dict[tuple, tuple[Any, Any]]:
    """``{param key path: (param, sharding)}``.

    ``param_shardings`` is one sharding for every parameter, or a tree with the structure of
    ``params`` whose leaves are shardings; a sharding may also stand for a whole subtree (a
    tree prefix, as ``jax.jit``'s ``in_shardings`` allow). Anything else (a mapping that
    leaves parameters out, entries that are not parameters) raises, naming them.
    """
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if isinstance(param_shardings, Sharding):
        return {tuple(path): (leaf, param_shardings) for path, leaf in leaves}
    given = jax.tree_util.tree_leaves_with_path(
        param_shardings, is_leaf=lambda x: isinstance(x, Sharding)
    )
    by_path = {tuple(path): sharding for path, sharding in given}
    table, missing, used = {}, [], set()
    for path, leaf in leaves:
        path = tuple(path)
        prefix = next((path[:n] for n in range(len(path), -1, -1) if path[:n] in by_path), None)
        if prefix is None:
            missing.append(path)
            continue
        used.add(prefix)
        table[path] = (leaf, by_path[prefix])
    unknown = [path for path in by_path if path not in used]
    not_shardings = [path for path, value in by_path.items() if not isinstance(value, Sharding)]
    if missing or unknown or not_shardings:
        details = []
        if missing:
            names = ", ".join(_format_path(path) for path in missing)
            details.append(f"no sharding for parameters {names}")
        if unknown:
            details.append(
                f"entries that are no parameter: {', '.join(map(_format_path, unknown))}"
            )
        if not_shardings:
            names = ", ".join(_format_path(path) for path in not_shardings)
            details.append(f"entries that are not a jax.sharding.Sharding: {names}")
        raise ValueError(
            f"param_shardings has {len(given)} shardings for {len(leaves)} parameters "
            f"({'; '.join(details)}); give one per parameter (the tree of params) or a single "
            "sharding for all"
        )
    return table


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


def _axis_names(entry: Any) -> tuple:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def split_over(sharding: Any, shape: tuple, axis: str) -> Any:
    """``sharding`` additionally split over mesh ``axis`` (ZeRO-1), where it can be.

    On the largest dimension of ``shape`` that ``sharding`` leaves unsharded and whose size
    the axis divides (the first such one on ties); unchanged if ``sharding`` already uses
    ``axis`` or no dimension qualifies (e.g. a length-3 vector on 8 devices).
    """
    spec = list(full_spec(sharding.spec, len(shape)))
    if any(axis in _axis_names(entry) for entry in spec):
        return sharding
    size = sharding.mesh.shape[axis]
    free = [d for d, entry in enumerate(spec) if entry is None and shape[d] % size == 0]
    if not free or size == 1:
        return sharding
    dim = max(free, key=lambda d: shape[d])
    spec[dim] = axis
    return NamedSharding(sharding.mesh, PartitionSpec(*spec), memory_kind=sharding.memory_kind)


def _check_axis(axis: Any, table: dict) -> None:
    for _, sharding in table.values():
        if not isinstance(sharding, NamedSharding):
            raise TypeError(
                f"shard_state_over={axis!r} needs NamedSharding parameter shardings (a mesh "
                f"to split over), got {sharding!r}"
            )
        if axis not in sharding.mesh.axis_names:
            raise ValueError(
                f"shard_state_over={axis!r} is not an axis of the mesh "
                f"{tuple(sharding.mesh.axis_names)}"
            )


def state_shardings(
    tx: Any, params: Any, param_shardings: Any, *, shard_state_over: str | None = None
) -> Any:
    """The sharding of every leaf of ``tx.init(params)``, as a pytree of ``jax.sharding``.

    A state leaf with its parameter's shape takes the parameter's sharding; a factored one
    its sharding minus the reduced axis; everything else is replicated. With
    ``shard_state_over="data"`` (ZeRO-1), the parameter-shaped leaves are in addition split
    over that mesh axis, on their largest dimension the parameter's sharding leaves unsharded
    and the axis size divides: data-parallel training with replicated parameters then keeps
    ``1 / mesh.shape["data"]`` of the statistics on each device (factored statistics are
    split the same way where they can be). A step jitted with these
    state shardings in ``in_shardings``/``out_shardings`` and the parameters' own shardings
    for the parameters computes the same numbers (each statistic is elementwise) and
    returns the parameters in their sharding; XLA gathers the sharded update.

    Args:
      tx: an ``optax.GradientTransformation`` (any nesting of optlib and optax transforms).
      params: the parameters, or their ``jax.ShapeDtypeStruct``s.
      param_shardings: one sharding for every parameter, or a pytree of shardings with the
        structure of ``params`` (a sharding may stand for a whole subtree, as in
        ``jax.jit``'s ``in_shardings``).
      shard_state_over: a mesh axis name to split the parameter-shaped state over, or None.

    Returns:
      A pytree with the structure of the optimizer state, for
      ``jax.jit(tx.init, out_shardings=...)``.

    Raises:
      ValueError: ``param_shardings`` leaves parameters out (the message names them) or has
        entries that are no parameter; ``shard_state_over`` is not a mesh axis.
      TypeError: ``shard_state_over`` with shardings that are not ``NamedSharding``.
    """
    table = _param_table(params, param_shardings)
    if shard_state_over is not None:
        _check_axis(shard_state_over, table)
    some_sharding = next(iter(table.values()))[1]
    replicated = _replicated(some_sharding)
    abstract_state = jax.eval_shape(tx.init, params)

    def default(path, leaf):
        owner = _owner(tuple(path), table)
        if owner is not None and tuple(leaf.shape) == tuple(owner[0].shape):
            if shard_state_over is None:
                return owner[1]
            return split_over(owner[1], tuple(leaf.shape), shard_state_over)
        return replicated

    def by_rule(rule):
        def shard(path, leaf):
            owner = _owner(tuple(path), table)
            if owner is None or not isinstance(owner[1], NamedSharding):
                return default(path, leaf)
            param, sharding = owner
            spec = rule(full_spec(sharding.spec, param.ndim), param.ndim)
            if len(spec) != leaf.ndim:
                raise ValueError(f"partition rule gave {spec} for a leaf of shape {leaf.shape}")
            ruled_sharding = NamedSharding(sharding.mesh, PartitionSpec(*spec))
            if shard_state_over is None or not leaf.ndim:
                return ruled_sharding
            return split_over(ruled_sharding, tuple(leaf.shape), shard_state_over)

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
