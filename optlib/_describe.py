"""``describe``: a transformation's recipe in words, to check a port at a glance.

``optlib.from_torch`` and ``optlib.from_training_args`` record what they built (a ``Recipe``,
kept next to the returned transformation); every optlib optimizer records its own call
(``optlib.optimizers._links.chain_record``). ``describe`` prints either.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

from optlib.optimizers._links import chain_record

__all__ = ["Description", "GroupRecipe", "Recipe", "describe", "register_recipe"]


@dataclasses.dataclass
class GroupRecipe:
    """One param group: its optimizer, hyperparameters, learning rate and members."""

    label: str
    optimizer: str
    hyperparameters: dict[str, Any]
    learning_rate: str
    members: list[str] | str


@dataclasses.dataclass
class Recipe:
    """What ``from_torch`` / ``from_training_args`` built, outermost first."""

    source: str
    groups: list[GroupRecipe]
    clipping: str | None = None
    accumulation: int | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


_RECIPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register_recipe(tx: Any, recipe: Recipe) -> Any:
    """Records ``recipe`` for ``tx`` (kept as long as ``tx.update`` lives); returns ``tx``."""
    _RECIPES[tx.update] = recipe
    return tx


def _recipe(tx: Any) -> Recipe | None:
    try:
        return _RECIPES.get(getattr(tx, "update", None))
    except TypeError:
        return None


class Description(str):
    """The text of ``describe``; shown as plain text by the REPL."""

    def __repr__(self) -> str:
        return str(self)


def _value(value: Any) -> str:
    if callable(value) and not isinstance(value, type):
        name = getattr(value, "__name__", None) or type(value).__name__
        return f"<schedule {name}>" if name != "<lambda>" else "<schedule>"
    return repr(value)


def _members(members: list[str] | str) -> str:
    if isinstance(members, str):
        return members
    shown = ", ".join(members[:8]) + (f", ... ({len(members)} in all)" if len(members) > 8 else "")
    return f"{len(members)} parameter(s): {shown}"


def describe(tx: Any) -> Description:
    """The transformation ``tx`` in words: optimizer, groups and their hyperparameters,
    schedule, clipping, accumulation.

    Works for what ``optlib.from_torch`` and ``optlib.from_training_args`` return and for
    every optlib optimizer (``optlib.adamw(...)``: its arguments and links). Returns a ``str``
    (``print(optlib.describe(tx))``; the REPL shows it as text).

    Args:
      tx: an optax transformation.

    Returns:
      The description, one item per line.
    """
    recipe = _recipe(tx)
    if recipe is not None:
        lines = [f"from {recipe.source}"]
        if recipe.accumulation:
            lines.append(
                f"gradient accumulation: optax.MultiSteps, one optimizer step per "
                f"{recipe.accumulation} micro-batches (mean gradient)"
            )
        if recipe.clipping:
            lines.append(f"clipping: {recipe.clipping}")
        several = len(recipe.groups) > 1
        for group in recipe.groups:
            indent = "  " if several else ""
            if several:
                lines.append(f"param group {group.label!r}: {_members(group.members)}")
            hyper = ", ".join(f"{k}={_value(v)}" for k, v in group.hyperparameters.items())
            lines.append(f"{indent}optimizer: {group.optimizer}({hyper})")
            lines.append(f"{indent}learning rate: {group.learning_rate}")
            if not several:
                lines.append(f"{indent}parameters: {_members(group.members)}")
        lines.extend(f"note: {note}" for note in recipe.notes)
        return Description("\n".join(lines))
    record = chain_record(tx)
    if record is not None:
        name = f"optlib.{record.optimizer}" if record.optimizer else "optlib named_chain"
        arguments = ", ".join(f"{k}={_value(v)}" for k, v in record.arguments.items())
        return Description(f"optimizer: {name}({arguments})\nchain: {' -> '.join(record.links)}")
    return Description(
        f"an optax transformation ({type(tx).__name__}) with no recorded recipe: describe knows "
        "optlib optimizers and what optlib.from_torch / optlib.from_training_args build"
    )
