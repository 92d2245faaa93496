"""``get_scheduler``: one factory for every schedule and metric-driven scheduler by name.

The registry only maps names to the layer-1/2 callables defined in ``optlib.schedules`` and
``optlib.transforms.metric``; each module registers its own rows with ``register`` when imported.

Two calling conventions meet here:

* **torch** names (``"StepLR"``, ``"CyclicLR"``, ...): the constructor's own keywords, minus
  ``optimizer`` (``last_epoch`` with torch's meaning, see ``optlib.schedules.torch``);
  ``learning_rate`` plays the optimizer's ``lr``.
* **Hugging Face** names (``"linear"``, ``"cosine"``, ...): ``transformers.get_scheduler``'s
  ``num_warmup_steps``, ``num_training_steps`` and ``scheduler_specific_kwargs`` (flat keywords
  are accepted too), with HF's "... requires `num_warmup_steps`" errors. Like HF, a standard
  argument a schedule does not use (``num_training_steps`` for ``"constant_with_warmup"``)
  is ignored; any other keyword the schedule does not take is a ``TypeError``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optax

__all__ = ["SchedulerEntry", "get_scheduler", "register", "scheduler_entry", "scheduler_names"]

_STANDARD = ("num_warmup_steps", "num_training_steps")


@dataclasses.dataclass(frozen=True)
class SchedulerEntry:
    """One row of the registry.

    Attributes:
      name: the name users pass to ``get_scheduler``.
      factory: callable taking ``learning_rate`` and the reference's keywords.
      reference: the reference it mirrors, e.g. ``"torch.optim.lr_scheduler.StepLR"``.
      family: ``"torch"``, ``"hf"`` or ``"optlib"`` (calling convention; optlib extras use
        HF's).
      forwards: which of ``num_warmup_steps``/``num_training_steps`` ``get_scheduler`` passes
        on (HF convention only).
      requires: which of them must not be ``None`` (checked in HF's order).
    """

    name: str
    factory: Callable[..., Any]
    reference: str
    family: str
    forwards: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()


_REGISTRY: dict[str, SchedulerEntry] = {}


def register(
    name: str,
    factory: Callable[..., Any],
    reference: str,
    *,
    family: str,
    forwards: tuple[str, ...] = (),
    requires: tuple[str, ...] = (),
) -> None:
    """Adds a name to ``get_scheduler``. Called by the module that defines ``factory``."""
    if family not in ("torch", "hf", "optlib"):
        raise ValueError(f"family must be 'torch', 'hf' or 'optlib', got {family!r}")
    if name in _REGISTRY and _REGISTRY[name].factory is not factory:
        raise ValueError(f"scheduler name {name!r} is already registered")
    unknown = set(forwards) - set(_STANDARD) or set(requires) - set(forwards)
    if unknown:
        raise ValueError(f"bad forwards/requires for {name!r}: {sorted(unknown)}")
    _REGISTRY[name] = SchedulerEntry(name, factory, reference, family, forwards, requires)


def scheduler_names() -> list[str]:
    """Every name ``get_scheduler`` accepts, in registration order."""
    return list(_REGISTRY)


def scheduler_entry(name: str) -> SchedulerEntry:
    """The registry row for ``name`` (``ValueError`` listing valid names if unknown)."""
    key = getattr(name, "value", name)  # accepts an HF SchedulerType enum member too
    if key not in _REGISTRY:
        raise ValueError(
            f"Unknown scheduler name {name!r}. Valid names: {', '.join(scheduler_names())}"
        )
    return _REGISTRY[key]


def _accepted_keywords(factory: Callable[..., Any]) -> set[str] | None:
    parameters = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


def get_scheduler(
    name: str,
    *,
    learning_rate: Any = None,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> optax.Schedule | optax.GradientTransformationExtraArgs:
    """Builds any optlib schedule or metric-driven scheduler from its torch or HF name.

    Args:
      name: a torch ``lr_scheduler`` class name or an HF ``SchedulerType`` value; see
        ``optlib.scheduler_names()`` (or ``python -m optlib list``).
      learning_rate: the base learning rate (torch's optimizer ``lr``). Required.
      num_warmup_steps: HF convention; passed to HF-style schedules that use it.
      num_training_steps: HF convention; passed to HF-style schedules that use it.
      scheduler_specific_kwargs: HF convention: the schedule's other keywords.
      **kwargs: the reference's own keywords, flat.

    Returns:
      A jit-traceable ``optax.Schedule`` for step-based names; a
      ``GradientTransformationExtraArgs`` for metric-driven ones.

    Raises:
      ValueError: unknown name (the message lists valid names), missing ``learning_rate``,
        or a required HF argument left ``None``.
      TypeError: a keyword the scheduler does not take (named in the message).
    """
    entry = scheduler_entry(name)
    if learning_rate is None:
        raise ValueError(f"{entry.name} requires `learning_rate`, please provide that argument.")
    specific = dict(scheduler_specific_kwargs or {})
    both = set(specific) & set(kwargs)
    if both:
        raise TypeError(
            f"{entry.name}: {sorted(both)} given both flat and in scheduler_specific_kwargs"
        )
    specific.update(kwargs)

    standard = {"num_warmup_steps": num_warmup_steps, "num_training_steps": num_training_steps}
    if entry.family == "torch":
        given = [key for key, value in standard.items() if value is not None]
        if given:
            raise TypeError(
                f"{entry.name} ({entry.reference}) got an unexpected keyword argument "
                f"{given[0]!r}; torch schedulers take their own keywords only."
            )
    else:
        for key in entry.requires:
            if standard[key] is None:
                raise ValueError(f"{entry.name} requires `{key}`, please provide that argument.")
        for key in entry.forwards:
            if key in specific:
                raise TypeError(
                    f"{entry.name}: pass {key!r} once, not in scheduler_specific_kwargs"
                )
            specific[key] = standard[key]

    accepted = _accepted_keywords(entry.factory)
    if accepted is not None:
        for key in specific:
            if key not in accepted or key == "learning_rate":
                raise TypeError(
                    f"{entry.name} ({entry.reference}) got an unexpected keyword argument {key!r}"
                )
    return entry.factory(learning_rate=learning_rate, **specific)
