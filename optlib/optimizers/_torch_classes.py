"""The one table from torch optimizer classes to optlib optimizers, and their keyword names.

optlib's torch-parity optimizers take torch's keyword names and defaults, except ``lr``, which
is ``learning_rate``. ``optlib.from_torch`` (reading a live optimizer's param groups), the
checkpoint readers and the parity tests all translate through this module, so adding an
optimizer is one row of ``TORCH_OPTIMIZERS``, keyed by ``class_key(cls)``: the class name for
``torch.optim`` classes, ``"package.Name"`` for other packages' torch optimizers::

    "Adamax": TorchOptimizer(adamax),
    "transformers.Adafactor": TorchOptimizer(adafactor),

``fixed`` holds the torch options that the optlib optimizer implies and does not take
(``AdamW``'s ``decoupled_weight_decay=True``); a different value raises.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import optax

from optlib.optimizers.extras import lion
from optlib.optimizers.huggingface import adafactor
from optlib.optimizers.lbfgs import lbfgs
from optlib.optimizers.muon import muon
from optlib.optimizers.torch import (
    adadelta,
    adagrad,
    adam,
    adamax,
    adamw,
    asgd,
    nadam,
    radam,
    rmsprop,
    rprop,
    sgd,
)
from optlib.optimizers.torch_adafactor import torch_adafactor

__all__ = [
    "IMPLEMENTATION_SWITCHES",
    "TORCH_OPTIMIZERS",
    "TORCH_RENAMES",
    "TorchOptimizer",
    "class_key",
    "torch_kwargs_to_optlib",
    "torch_optimizer_entry",
]

TORCH_RENAMES: Mapping[str, str] = {"lr": "learning_rate"}
"""torch keyword -> optlib keyword, for every optimizer (all other names are torch's own)."""

IMPLEMENTATION_SWITCHES = frozenset({"foreach", "fused", "capturable", "differentiable"})
"""torch options that choose a kernel and change no numbers: dropped."""


@dataclasses.dataclass(frozen=True)
class TorchOptimizer:
    """One row: the optlib optimizer reproducing a ``torch.optim`` class.

    Attributes:
      factory: the optlib optimizer (torch's keywords, ``learning_rate`` for ``lr``).
      fixed: torch options the optlib optimizer implies instead of taking them, with the only
        value it reproduces.
    """

    factory: Callable[..., optax.GradientTransformation]
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)


TORCH_OPTIMIZERS: dict[str, TorchOptimizer] = {
    "SGD": TorchOptimizer(sgd),
    "Adam": TorchOptimizer(adam),
    "AdamW": TorchOptimizer(adamw, fixed={"decoupled_weight_decay": True}),
    "Adagrad": TorchOptimizer(adagrad),
    "RMSprop": TorchOptimizer(rmsprop),
    "Adadelta": TorchOptimizer(adadelta),
    "NAdam": TorchOptimizer(nadam),
    "RAdam": TorchOptimizer(radam),
    "Adamax": TorchOptimizer(adamax),
    "Rprop": TorchOptimizer(rprop),
    "ASGD": TorchOptimizer(asgd),
    "Adafactor": TorchOptimizer(torch_adafactor),
    "Muon": TorchOptimizer(muon),
    "LBFGS": TorchOptimizer(lbfgs),
    # other packages' torch optimizers with the same keywords as their optlib twin
    "transformers.Adafactor": TorchOptimizer(adafactor),
    "lion_pytorch.Lion": TorchOptimizer(lion),
}
"""``class_key(cls)`` -> its optlib optimizer."""

_NOT_REPRODUCED = {
    "SparseAdam": "JAX has no sparse gradients; use optlib.adam on the dense gradients",
}


def class_key(cls: type) -> str:
    """``"SGD"`` for ``torch.optim.SGD``; ``"package.Name"`` for a class of another package
    (``"transformers.Adafactor"``, ``"lion_pytorch.Lion"``)."""
    module = cls.__module__ or ""
    if module.startswith("torch.optim"):
        return cls.__name__
    return f"{module.split('.')[0]}.{cls.__name__}"


def _shown(key: str) -> str:
    return key if "." in key else f"torch.optim.{key}"


def torch_optimizer_entry(key: str) -> TorchOptimizer:
    """The row for ``key`` (``class_key`` of the optimizer's class).

    Raises:
      ValueError: naming the class and listing the supported ones.
    """
    if key in TORCH_OPTIMIZERS:
        return TORCH_OPTIMIZERS[key]
    why = _NOT_REPRODUCED.get(key, "optlib has no optimizer with its math")
    raise ValueError(
        f"{_shown(key)} is not supported ({why}); supported classes: "
        f"{', '.join(_shown(k) for k in TORCH_OPTIMIZERS)}"
    )


def torch_kwargs_to_optlib(kwargs: Mapping[str, Any], class_name: str | None = None) -> dict:
    """torch constructor / param-group keywords -> the optlib optimizer's keywords.

    ``lr`` becomes ``learning_rate``; ``foreach``/``fused``/``capturable``/``differentiable``
    are dropped; tuples stay tuples. With ``class_name``, the class's ``fixed`` options are
    checked and dropped and every remaining keyword must be one the optlib optimizer takes.

    Args:
      kwargs: torch's keywords (a param group's hyperparameters, without ``params``).
      class_name: the class's ``class_key`` (``"AdamW"``), for the checks; ``None`` only
        renames.

    Returns:
      The optlib keywords.

    Raises:
      ValueError: an option the optlib optimizer cannot reproduce, naming it.
    """
    out = {}
    for key, value in kwargs.items():
        if key in IMPLEMENTATION_SWITCHES:
            continue
        out[TORCH_RENAMES.get(key, key)] = tuple(value) if isinstance(value, list) else value
    if class_name is None:
        return out
    entry = torch_optimizer_entry(class_name)
    for key, required in entry.fixed.items():
        if key in out and out.pop(key) != required:
            raise ValueError(
                f"{_shown(class_name)}({key}={kwargs[key]!r}) is not supported: "
                f"optlib.{entry.factory.__name__} reproduces {key}={required!r}"
            )
    accepted = inspect.signature(entry.factory).parameters
    unknown = [key for key in out if key not in accepted]
    if unknown:
        raise ValueError(
            f"{_shown(class_name)} option(s) {unknown} are not supported by "
            f"optlib.{entry.factory.__name__}"
        )
    return out
