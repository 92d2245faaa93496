"""How optimizer-state leaves shard relative to their parameters: the rules' registry.

A transform whose state has leaves not shaped like their parameter (Adafactor's factored
row/column statistics) declares, next to its state class, how each such field is laid out
relative to the parameter's partition spec. ``optlib.state_shardings`` reads the rules; any
other parameter-shaped leaf takes its parameter's sharding.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = [
    "SpecRule",
    "field_rule",
    "register_state_partition",
    "ruled_state_types",
    "without_axis",
]

SpecRule = Callable[[tuple, int], tuple]
"""``(param_spec, param_ndim) -> leaf_spec``, specs as tuples with one entry per array axis."""

_FIELD_RULES: dict[tuple[type, str], SpecRule] = {}


def register_state_partition(state_cls: type, field: str, rule: SpecRule) -> None:
    """Declares how a state field's leaves shard relative to their parameter.

    Args:
      state_cls: the transform's state ``NamedTuple`` class.
      field: the field whose leaves (a tree shaped like the params) the rule covers.
      rule: ``(param_spec, param_ndim) -> leaf_spec``, both as tuples of mesh axis names (or
        ``None``) with one entry per array axis.
    """
    _FIELD_RULES[(state_cls, field)] = rule


def field_rule(state_cls: type, field: str) -> SpecRule | None:
    """The rule declared for ``state_cls.field``, or ``None``."""
    return _FIELD_RULES.get((state_cls, field))


def ruled_state_types() -> tuple[type, ...]:
    """The state classes that declared at least one field rule."""
    return tuple({cls for cls, _ in _FIELD_RULES})


def without_axis(axis: int) -> SpecRule:
    """The rule of a statistic that reduces its parameter over ``axis`` (parameters of rank
    >= 2; a lower-rank parameter's leaf is a scalar, replicated)."""

    def rule(spec: tuple, ndim: int) -> tuple:
        if ndim < 2:
            return ()
        kept = list(spec)
        del kept[axis]
        return tuple(kept)

    return rule
