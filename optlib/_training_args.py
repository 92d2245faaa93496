"""``from_training_args``: the optax transformation Hugging Face ``Trainer`` would build.

transformers::

    args = TrainingArguments(optim="adamw_torch", learning_rate=3e-4, weight_decay=0.01,
                             lr_scheduler_type="cosine", warmup_steps=0.1, max_grad_norm=1.0,
                             gradient_accumulation_steps=4, ...)
    trainer = Trainer(model, args, ...)   # create_optimizer_and_scheduler(num_training_steps)

optlib (``args`` may also be a plain ``dict`` of those fields; transformers is not needed)::

    tx = optlib.from_training_args(args, num_training_steps=10_000, params=params)

What Trainer does, and what is reproduced here (transformers 5.x, ``Trainer.create_optimizer``,
``get_optimizer_cls_and_kwargs``, ``create_scheduler``, the training loop):

* two param groups, ``weight_decay=args.weight_decay`` and ``0.0``; a parameter gets no decay
  when it sits in a ``nn.LayerNorm`` or its dotted name matches ``bias``, ``layernorm``,
  ``rmsnorm``, ``(^|.)norm($|.)`` or ``_norm($|.)`` (lowercased): ``hf_no_decay_labels``;
* the optimizer class and keywords of ``args.optim`` (``optim_args`` parsed as
  ``"k1=v1,k2=v2"``, read only by the names whose Trainer handler reads them);
* ``get_scheduler(lr_scheduler_type, num_warmup_steps=args.get_warmup_steps(n),
  num_training_steps=n, scheduler_specific_kwargs=lr_scheduler_kwargs)``;
* ``clip_grad_norm_(max_grad_norm)`` on the accumulated gradient when ``max_grad_norm > 0``;
* one optimizer (and scheduler) step per ``gradient_accumulation_steps`` micro-batches on the
  mean of their gradients: ``optax.MultiSteps``, which does exactly that (the inner chain,
  clipping and schedules included, runs and counts once per optimizer step, as Trainer's
  ``num_training_steps`` counts them; zero updates in between).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optlib._describe import GroupRecipe, Recipe, register_recipe
from optlib._from_torch import key_path
from optlib._param_groups import param_groups
from optlib._registry import get_scheduler
from optlib.optimizers import (
    adafactor,
    adagrad,
    adamw,
    ademamix,
    lion,
    rmsprop,
    schedule_free_adamw,
    schedule_free_radam,
    schedule_free_sgd,
    sgd,
    stable_adamw,
)
from optlib.transforms import clip_grad_norm

__all__ = ["HF_NO_DECAY_PATTERNS", "TRAINER_OPTIMIZERS", "from_training_args", "hf_no_decay_labels"]

HF_NO_DECAY_PATTERNS = (
    r"bias",
    r"layernorm",
    r"rmsnorm",
    r"(?:^|\.)norm(?:$|\.)",
    r"_norm(?:$|\.)",
)
"""``Trainer.get_decay_parameter_names``' name patterns, searched in the lowercased name."""


def _path_name(path: Sequence[Any]) -> str:
    return ".".join(key_path(path))


def hf_no_decay_labels(
    params: Any,
    no_decay: Sequence[str] | Callable[[str], bool] | None = None,
    *,
    decay: Hashable = "decay",
    no_decay_label: Hashable = "no_decay",
) -> Any:
    """Labels Hugging Face ``Trainer``'s weight-decay rule would give: ``decay`` / ``no_decay``.

    Trainer (``get_decay_parameter_names``) skips weight decay for a parameter whose dotted
    name, lowercased, matches ``bias``, ``layernorm``, ``rmsnorm``, ``(^|.)norm($|.)`` or
    ``_norm($|.)``, and for every parameter of an ``nn.LayerNorm`` module. Here the name is the
    JAX key path joined with ``"."`` (``{"encoder": {"layer_norm": {"scale": ...}}}`` ->
    ``"encoder.layer_norm.scale"``), so Flax's ``LayerNorm_0`` / ``RMSNorm_0`` and any ``bias``
    match by name. A JAX tree has no module types: a norm layer whose name matches none of the
    patterns (torch ``self.ln_f = nn.LayerNorm(...)``) needs ``no_decay``.

    Unlike ``decay_labels`` (by rank), this is Trainer's rule: a 1-d parameter that is neither
    a bias nor a norm (e.g. a learned scale vector) is decayed, as in Trainer.

    Args:
      params: the parameter pytree (or anything with its structure).
      no_decay: extra regular expressions searched in the lowercased dotted name, on top of
        Trainer's (e.g. ``[r"(?:^|\\.)ln_f\\."]``); or a function ``name -> bool`` (True = no
        decay) that replaces the rule entirely.
      decay: label of the decayed leaves.
      no_decay_label: label of the others.

    Returns:
      A pytree of labels with the structure of ``params`` (for ``optlib.param_groups``).
    """
    skip = _no_decay_rule(no_decay)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: no_decay_label if skip(_path_name(path)) else decay, params
    )


def _no_decay_rule(no_decay: Sequence[str] | Callable[[str], bool] | None) -> Callable:
    if callable(no_decay):
        return no_decay
    if isinstance(no_decay, str):
        raise TypeError(f"no_decay must be a list of patterns or a function, got {no_decay!r}")
    patterns = [re.compile(p) for p in (*HF_NO_DECAY_PATTERNS, *(no_decay or ()))]
    return lambda name: any(p.search(name.lower()) for p in patterns)


# ---------------------------------------------------------------------------------------------
# TrainingArguments fields.

_DEFAULTS: dict[str, Any] = {
    "optim": "adamw_torch_fused",
    "optim_args": None,
    "learning_rate": 5e-5,
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-8,
    "max_grad_norm": 1.0,
    "lr_scheduler_type": "linear",
    "lr_scheduler_kwargs": None,
    "warmup_steps": 0,
    "warmup_ratio": 0.0,
    "gradient_accumulation_steps": 1,
    "max_steps": -1,
}
"""The TrainingArguments fields read, with transformers 5.x's defaults (a dict may omit any)."""


def _fields(args: Any) -> dict[str, Any]:
    if isinstance(args, Mapping):
        fields = dict(args)
    elif dataclasses.is_dataclass(args):
        fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(args)}
    else:
        raise TypeError(
            f"args must be a transformers.TrainingArguments or a dict of its fields, got {args!r}"
        )
    out = {key: fields.get(key, default) for key, default in _DEFAULTS.items()}
    for key in ("optim", "lr_scheduler_type"):  # enums -> their string values
        out[key] = getattr(out[key], "value", out[key])
    kwargs = out["lr_scheduler_kwargs"]
    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs) if kwargs.strip() else {}
    out["lr_scheduler_kwargs"] = dict(kwargs or {})
    return out


def parse_optim_args(optim_args: str | None) -> dict[str, str]:
    """``"a=1, b=x"`` -> ``{"a": "1", "b": "x"}``: Trainer's parsing (spaces removed, values
    kept as strings)."""
    if not optim_args:
        return {}
    parsed = {}
    for item in optim_args.replace(" ", "").split(","):
        key, equals, value = item.partition("=")
        if not equals or "=" in value:
            raise ValueError(f"optim_args must be 'key=value,key=value', got {optim_args!r}")
        parsed[key] = value
    return parsed


def warmup_steps_of(fields: Mapping[str, Any], num_training_steps: int) -> int:
    """``TrainingArguments.get_warmup_steps``: an int, or a float below 1 as a fraction of the
    training steps rounded up; a ``warmup_ratio`` (transformers < 5) when ``warmup_steps`` is
    0."""
    steps = fields["warmup_steps"]
    if steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {steps!r}")
    if steps == 0 and fields.get("warmup_ratio"):
        return math.ceil(num_training_steps * fields["warmup_ratio"])
    return int(steps) if steps >= 1 else math.ceil(num_training_steps * steps)


# ---------------------------------------------------------------------------------------------
# Trainer's optimizer handlers: name -> (optlib optimizer, keywords, reference), per
# transformers' trainer_optimizer.py. Each gets the fields and the parsed optim_args; the
# param groups' weight_decay is added by from_training_args (it overrides any other).


Fields = Mapping[str, Any]
OptimArgs = Mapping[str, str]
Handled = tuple[Callable[..., optax.GradientTransformation], dict[str, Any], str]


def _flag(value: str) -> bool:
    return value.lower() in ("true", "1", "yes")


def _floats(optim_args: Mapping[str, str], keys: Sequence[str]) -> dict[str, float]:
    return {key: float(optim_args[key]) for key in keys if key in optim_args}


def _adam_betas(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {"betas": (fields["adam_beta1"], fields["adam_beta2"]), "eps": fields["adam_epsilon"]}


def _adamw_torch(fields: Fields, optim_args: OptimArgs) -> Handled:
    return adamw, _adam_betas(fields), "torch.optim.AdamW"


def _adafactor(fields: Fields, optim_args: OptimArgs) -> Handled:
    kwargs = {"scale_parameter": False, "relative_step": False}
    return adafactor, kwargs, "transformers.Adafactor(scale_parameter=False, relative_step=False)"


def _sgd(fields: Fields, optim_args: OptimArgs) -> Handled:
    kwargs: dict[str, Any] = _floats(optim_args, ("momentum", "dampening"))
    if "nesterov" in optim_args:
        kwargs["nesterov"] = _flag(optim_args["nesterov"])
    return sgd, kwargs, "torch.optim.SGD"


def _adagrad(fields: Fields, optim_args: OptimArgs) -> Handled:
    return adagrad, _floats(optim_args, ("lr_decay", "eps")), "torch.optim.Adagrad"


def _rmsprop(fields: Fields, optim_args: OptimArgs) -> Handled:
    kwargs: dict[str, Any] = _floats(optim_args, ("momentum", "alpha", "eps"))
    if "centered" in optim_args:
        kwargs["centered"] = _flag(optim_args["centered"])
    return rmsprop, kwargs, "torch.optim.RMSprop"


def _lion(fields: Fields, optim_args: OptimArgs) -> Handled:
    kwargs = {"betas": (fields["adam_beta1"], fields["adam_beta2"])}
    return lion, kwargs, "bitsandbytes.optim.Lion(optim_bits=32)"


def _ademamix(fields: Fields, optim_args: OptimArgs) -> Handled:
    get = lambda key, default: float(optim_args.get(key, default))
    kwargs: dict[str, Any] = {
        "betas": (
            get("beta1", fields["adam_beta1"]),
            get("beta2", fields["adam_beta2"]),
            get("beta3", 0.9999),
        ),
        "alpha": get("alpha", 5.0),
        "eps": get("eps", fields["adam_epsilon"]),
    }
    for key in ("t_alpha", "t_beta3"):
        if key in optim_args:
            kwargs[key] = int(optim_args[key])
    return ademamix, kwargs, "bitsandbytes.optim.AdEMAMix(optim_bits=32)"


def _stable_adamw(fields: Fields, optim_args: OptimArgs) -> Handled:
    kwargs: dict[str, Any] = _adam_betas(fields)
    # Trainer: bool() of the string, so any non-empty value (even "False") is True.
    kwargs["decouple_lr"] = bool(optim_args.get("decouple_lr", False))
    if optim_args.get("max_lr") is not None:
        kwargs["max_lr"] = float(optim_args["max_lr"])
    elif kwargs["decouple_lr"]:  # optimi: max_lr defaults to the constructor's lr
        kwargs["max_lr"] = fields["learning_rate"]
    return stable_adamw, kwargs, "optimi.StableAdamW"


def _schedule_free(factory: Callable, reference: str, *, adam: bool, warmup: bool) -> Callable:
    """Trainer's schedule-free handler: Adam's betas/eps for the Adam variants, the raw
    ``warmup_steps`` field (not for RAdam), ``weight_lr_power`` and ``r`` from optim_args."""

    def handler(fields: Fields, optim_args: OptimArgs) -> Handled:
        kwargs: dict[str, Any] = _adam_betas(fields) if adam else {}
        if warmup:
            kwargs["warmup_steps"] = fields["warmup_steps"]
        kwargs["weight_lr_power"] = float(optim_args.get("weight_lr_power", 2.0))
        kwargs["r"] = float(optim_args.get("r", 0.0))
        return factory, kwargs, reference

    return handler


_schedule_free_adamw = _schedule_free(
    schedule_free_adamw, "schedulefree.AdamWScheduleFree", adam=True, warmup=True
)
_schedule_free_sgd = _schedule_free(
    schedule_free_sgd, "schedulefree.SGDScheduleFree", adam=False, warmup=True
)
_schedule_free_radam = _schedule_free(
    schedule_free_radam, "schedulefree.RAdamScheduleFree", adam=True, warmup=False
)


# The optim_args keys that change what a handler builds (Trainer ignores the others; a
# "weight_decay" reaches sgd/adagrad/rmsprop but the param groups' weight_decay overrides it).
_OPTIM_ARGS_READ: dict[Callable, tuple[str, ...]] = {
    _sgd: ("momentum", "dampening", "nesterov"),
    _adagrad: ("lr_decay", "eps"),
    _rmsprop: ("momentum", "alpha", "eps", "centered"),
    _ademamix: ("beta1", "beta2", "beta3", "alpha", "eps", "t_alpha", "t_beta3"),
    _stable_adamw: ("decouple_lr", "max_lr", "kahan_sum"),
    _schedule_free_adamw: ("weight_lr_power", "r"),
    _schedule_free_sgd: ("weight_lr_power", "r"),
    _schedule_free_radam: ("weight_lr_power", "r"),
}

TRAINER_OPTIMIZERS: dict[str, Callable[[Fields, OptimArgs], Handled]] = {
    "adamw_torch": _adamw_torch,
    "adamw_torch_fused": _adamw_torch,
    "adamw_torch_xla": _adamw_torch,
    "adamw_torch_npu_fused": _adamw_torch,
    "adafactor": _adafactor,
    "sgd": _sgd,
    "adagrad": _adagrad,
    "rmsprop": _rmsprop,
    "lion_32bit": _lion,
    "paged_lion_32bit": _lion,
    "ademamix": _ademamix,
    "paged_ademamix_32bit": _ademamix,
    "stable_adamw": _stable_adamw,
    "schedule_free_adamw": _schedule_free_adamw,
    "schedule_free_sgd": _schedule_free_sgd,
    "schedule_free_radam": _schedule_free_radam,
}
"""``TrainingArguments.optim`` names whose math optlib reproduces -> their handler."""


def from_training_args(
    args: Any,
    *,
    num_training_steps: int | None = None,
    params: Any = None,
    no_decay: Sequence[str] | Callable[[str], bool] | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The optax transformation Hugging Face ``Trainer`` builds from ``args``.

    ``optax.MultiSteps`` (``gradient_accumulation_steps > 1``) of ``chain(clip_grad_norm
    (max_grad_norm > 0), param_groups({"decay": opt(weight_decay), "no_decay": opt(0.0)},
    hf_no_decay_labels))``, where ``opt`` is the optimizer of ``args.optim`` with Trainer's
    keywords and ``learning_rate`` is ``get_scheduler(lr_scheduler_type, ...)`` with
    Trainer's warm-up steps. See the module docstring for each piece.

    Supported ``optim``: ``adamw_torch``, ``adamw_torch_fused``, ``adamw_torch_xla``,
    ``adamw_torch_npu_fused`` (torch's AdamW math), ``adafactor`` (HF Adafactor with Trainer's
    ``scale_parameter=False, relative_step=False``), ``sgd``, ``adagrad``, ``rmsprop``,
    ``lion_32bit`` / ``paged_lion_32bit`` (bitsandbytes Lion, 32-bit), ``ademamix`` /
    ``paged_ademamix_32bit`` (bitsandbytes AdEMAMix, 32-bit), ``stable_adamw`` (torch-optimi).
    As in Trainer, ``optim_args`` is read only by the names whose handler reads it (sgd,
    adagrad, rmsprop, ademamix, stable_adamw); its ``weight_decay`` is overridden by the groups'.

    Args:
      args: a ``transformers.TrainingArguments`` or a ``dict`` of its fields (missing fields
        take transformers 5.x's defaults; other fields are not read).
      num_training_steps: optimizer steps (Trainer's ``max_steps``); default
        ``args.max_steps`` when it is > 0.
      params: the parameter pytree, optional: when given, the no-decay labels are checked and
        listed by ``describe`` and the accumulation buffer takes the params' float width
        (at least float32); the labels are always computed from the params at ``init``.
      no_decay: extra no-decay patterns or a replacement rule (see ``hf_no_decay_labels``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``optlib.describe(tx)`` tells what it is.

    Raises:
      ValueError: an unknown ``optim`` (listing the supported ones), a bad ``optim_args``, a
        missing ``num_training_steps``, or a scheduler error from ``get_scheduler``.
    """
    fields = _fields(args)
    if num_training_steps is None:
        if fields["max_steps"] is None or fields["max_steps"] <= 0:
            raise ValueError("num_training_steps is required (args.max_steps is not > 0)")
        num_training_steps = int(fields["max_steps"])
    name = fields["optim"]
    if name not in TRAINER_OPTIMIZERS:
        raise ValueError(
            f"optim={name!r} is not supported by from_training_args; supported: "
            f"{', '.join(TRAINER_OPTIMIZERS)}"
        )
    handler = TRAINER_OPTIMIZERS[name]
    optim_args = parse_optim_args(fields["optim_args"])
    factory, kwargs, reference = handler(fields, optim_args)
    unread = sorted(set(optim_args) - set(_OPTIM_ARGS_READ.get(handler, ())))
    notes = []
    if unread:
        notes.append(f"optim_args {unread} have no effect for optim={name!r}, as in Trainer")
    warmup = warmup_steps_of(fields, num_training_steps)
    schedule_name = fields["lr_scheduler_type"]
    schedule = get_scheduler(
        schedule_name,
        learning_rate=fields["learning_rate"],
        num_warmup_steps=warmup,
        num_training_steps=num_training_steps,
        scheduler_specific_kwargs=fields["lr_scheduler_kwargs"],
    )
    shown = [f"learning_rate={fields['learning_rate']!r}"]
    shown += [f"num_warmup_steps={warmup}", f"num_training_steps={num_training_steps}"]
    shown += [f"{k}={v!r}" for k, v in fields["lr_scheduler_kwargs"].items()]
    schedule_text = f"{schedule_name}({', '.join(shown)})"

    rule = _no_decay_rule(no_decay)
    labels = lambda tree: hf_no_decay_labels(tree, rule)
    decays = {"decay": fields["weight_decay"], "no_decay": 0.0}
    groups: dict[Hashable, optax.GradientTransformation] = {
        label: factory(learning_rate=schedule, **kwargs, weight_decay=weight_decay)
        for label, weight_decay in decays.items()
    }
    members: dict[str, Any] = {
        "decay": "parameters not matched by Trainer's no-decay rule",
        "no_decay": "biases and norm parameters (Trainer's no-decay rule)",
    }
    if params is not None:
        named = jax.tree_util.tree_flatten_with_path(labels(params))[0]
        names: dict[str, list[str]] = {label: [] for label in decays}
        for path, label in named:
            names[label].append("/".join(key_path(path)))
        members = names
    tx: Any = param_groups(groups, labels)
    max_norm = fields["max_grad_norm"]
    clipping = None
    if max_norm is not None and max_norm > 0:
        tx = optax.chain(clip_grad_norm(max_norm), tx)
        clipping = f"optlib.clip_grad_norm({max_norm!r}) (torch.nn.utils.clip_grad_norm_)"
    steps = int(fields["gradient_accumulation_steps"])
    if steps < 1:
        raise ValueError(f"gradient_accumulation_steps must be >= 1, got {steps!r}")
    if steps > 1:
        dtypes = [jnp.asarray(x).dtype for x in jax.tree.leaves(params)] if params else []
        accumulator = jnp.result_type(
            jnp.float32, *(d for d in dtypes if jnp.issubdtype(d, jnp.floating))
        )
        tx = optax.MultiSteps(tx, every_k_schedule=steps, accumulator_dtype=accumulator)
        tx = optax.GradientTransformationExtraArgs(tx.init, tx.update)
    recipes = [
        GroupRecipe(
            label=label,
            optimizer=f"optlib.{factory.__name__}",
            hyperparameters={**kwargs, "weight_decay": decays[label]},
            learning_rate=schedule_text,
            members=members[label],
        )
        for label in decays
    ]
    recipe = Recipe(
        source=f"transformers Trainer (optim={name!r}: {reference})",
        groups=recipes,
        clipping=clipping,
        accumulation=steps if steps > 1 else None,
        notes=notes,
    )
    return register_recipe(tx, recipe)
