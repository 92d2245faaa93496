"""Finding optlib states inside an arbitrary (nested) optax state.

Users hold the state of ``optax.chain``, ``optax.named_chain``, ``optax.partition`` /
``multi_transform``, ``optax.inject_hyperparams``, ``optax.MultiSteps`` or a Flax
``TrainState.opt_state``. Every one of those is a pytree whose nodes include our
``NamedTuple`` states, so one ``jax.tree`` walk with ``is_leaf`` finds them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "current_learning_rate",
    "find_states",
    "is_learning_rate_state",
    "map_states",
    "register_learning_rate_state",
]

T = TypeVar("T")

# State types whose ``learning_rate`` field is the (positive) step size that their
# transform multiplies updates by on the next update.
_LEARNING_RATE_STATES: list[type] = []


def register_learning_rate_state(cls: type[T]) -> type[T]:
    """Class decorator: ``cls`` has a ``learning_rate`` field read by ``current_learning_rate``."""
    if "learning_rate" not in getattr(cls, "_fields", ()):
        raise TypeError(f"{cls.__name__} has no learning_rate field")
    _LEARNING_RATE_STATES.append(cls)
    return cls


def is_learning_rate_state(node: Any) -> bool:
    """Whether ``node`` is the state of a transform that applies a learning rate."""
    return isinstance(node, tuple(_LEARNING_RATE_STATES))


def _is_instance(types: tuple[type, ...]) -> Callable[[Any], bool]:
    return lambda node: isinstance(node, types)


def find_states(tree: Any, types: type | tuple[type, ...]) -> list[Any]:
    """Every node of ``tree`` that is an instance of ``types``, in tree order."""
    types = types if isinstance(types, tuple) else (types,)
    is_target = _is_instance(types)
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=is_target)
    return [leaf for leaf in leaves if is_target(leaf)]


def map_states(tree: Any, types: type | tuple[type, ...], fn: Callable[[Any], Any]) -> Any:
    """``tree`` with every node that is an instance of ``types`` replaced by ``fn(node)``."""
    types = types if isinstance(types, tuple) else (types,)
    is_target = _is_instance(types)
    return jax.tree_util.tree_map(
        lambda node: fn(node) if is_target(node) else node, tree, is_leaf=is_target
    )


def _partition_types() -> tuple[type, ...]:
    names = ("PartitionState", "MultiTransformState")
    found = []
    for module in (optax, getattr(optax, "transforms", None)):
        for name in names:
            cls = getattr(module, name, None) if module is not None else None
            if isinstance(cls, type) and cls not in found:
                found.append(cls)
    return tuple(found)


def _inject_types() -> tuple[type, ...]:
    names = ("InjectHyperparamsState", "InjectStatefulHyperparamsState")
    return tuple(
        cls for cls in (getattr(optax, name, None) for name in names) if isinstance(cls, type)
    )


_NOT_FOUND = object()


class _PerParameter:
    """Per-parameter rates: a tree like the parameters (HF Adafactor's parameter scale)."""

    def __init__(self, tree: Any):
        self.tree = tree


def _multiply(left: Any, right: Any) -> Any:
    """The product of two rates, either of which may be per parameter."""
    if isinstance(left, _PerParameter) or isinstance(right, _PerParameter):
        trees = [rate.tree if isinstance(rate, _PerParameter) else None for rate in (left, right)]
        if trees[0] is not None and trees[1] is not None:
            return _PerParameter(jax.tree.map(jnp.multiply, trees[0], trees[1]))
        tree, factor = (trees[0], right) if trees[0] is not None else (trees[1], left)
        return _PerParameter(jax.tree.map(lambda rate: rate * factor, tree))
    return left * right


def _unwrap(rate: Any) -> Any:
    if isinstance(rate, _PerParameter):
        return rate.tree
    if isinstance(rate, dict):
        return {key: _unwrap(value) for key, value in rate.items()}
    return rate


def _learning_rate_of(node: Any) -> Any:
    """The learning rate a (sub-)state applies, or ``_NOT_FOUND``.

    Transforms in a chain multiply: their rates multiply. Partitions hold one rate per
    group: they give a dict. ``inject_hyperparams`` gives its ``learning_rate`` hyperparameter
    only when the inner optimizer holds no optlib learning-rate state of its own.
    """
    if is_learning_rate_state(node):
        rate = node.learning_rate
        if isinstance(rate, (jax.Array, float, int)) or hasattr(rate, "shape"):
            return jnp.asarray(rate)
        return _PerParameter(rate)
    wrapper: Any = node  # optax's wrapper states, read by their fields
    if isinstance(node, _partition_types()):
        groups = {key: _learning_rate_of(inner) for key, inner in wrapper.inner_states.items()}
        groups = {key: rate for key, rate in groups.items() if rate is not _NOT_FOUND}
        return groups or _NOT_FOUND
    if isinstance(node, _inject_types()):
        inner = _learning_rate_of(wrapper.inner_state)
        if inner is _NOT_FOUND and "learning_rate" in wrapper.hyperparams:
            return jnp.asarray(wrapper.hyperparams["learning_rate"])
        return inner
    if isinstance(node, dict):
        children = list(node.values())
    elif isinstance(node, (tuple, list)):
        children = list(node)
    else:
        children = (
            jax.tree_util.tree_leaves(node, is_leaf=lambda x: x is not node)
            if _is_pytree_node(node)
            else []
        )
    rates = [rate for rate in map(_learning_rate_of, children) if rate is not _NOT_FOUND]
    if not rates:
        return _NOT_FOUND
    if len(rates) == 1:
        return rates[0]
    if any(isinstance(rate, dict) for rate in rates):
        raise ValueError(
            "current_learning_rate: this state chains several learning rates with a partition "
            "(param groups); read each group's state separately."
        )
    product = rates[0]
    for rate in rates[1:]:
        product = _multiply(product, rate)
    return product


def _is_pytree_node(node: Any) -> bool:
    treedef: Any  # jax has no type for PyTreeDef
    leaves, treedef = jax.tree_util.tree_flatten(node, is_leaf=lambda x: x is not node)
    return not (treedef.num_leaves == 1 and leaves and leaves[0] is node)


def current_learning_rate(opt_state: Any) -> jax.Array | dict[str, jax.Array]:
    """The learning rate the next update applies, as an array (jit-able, no host transfer).

    Works for every optlib optimizer whatever its ``learning_rate`` is (a float, a schedule, a
    metric-driven scheduler such as ``reduce_lr_on_plateau``), inside any optax combinator.
    Rates of chained learning-rate transforms multiply (e.g. a warm-up schedule followed by
    ``reduce_lr_on_plateau`` gives warm-up factor x plateau rate); a partition into parameter
    groups gives ``{group: rate}``. Falls back to ``optax.inject_hyperparams``'
    ``learning_rate`` hyperparameter. Where the rate differs per parameter (HF Adafactor with
    ``scale_parameter=True``, whose rate includes each parameter's RMS) it is a tree like the
    parameters: ``rate["w"]`` is HF's ``Adafactor._get_lr`` for parameter ``w``, and
    ``AdafactorSchedule(optimizer).get_last_lr()[0]`` is the entry of the first parameter the
    torch optimizer was given.

    Args:
      opt_state: an optax optimizer state (e.g. ``TrainState.opt_state``).

    Returns:
      The rate as a scalar array, a tree of them for per-parameter rates, or a dict of those
      for parameter groups.

    Raises:
      ValueError: if ``opt_state`` holds no learning rate optlib can read.
    """
    rate = _learning_rate_of(opt_state)
    if rate is _NOT_FOUND:
        raise ValueError(
            "current_learning_rate: no learning rate found in this optimizer state; build the "
            "optimizer from optlib transforms or wrap it in optax.inject_hyperparams."
        )
    return _unwrap(rate)
