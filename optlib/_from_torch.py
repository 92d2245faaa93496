"""``from_torch``: the optax transformation that reproduces a live torch optimizer + scheduler.

torch::

    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=3e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=10_000)

optlib::

    tx = optlib.from_torch(opt, sched, param_paths=[name for name, _ in model.named_parameters()])
    print(optlib.describe(tx))

The optimizer's class is looked up in ``optlib.optimizers._torch_classes.TORCH_OPTIMIZERS``;
each param group's hyperparameters become the optlib optimizer's keywords. The scheduler's
class and attributes become an optlib schedule (or metric-driven transform), built once per
group from that group's base lr, as torch scales each group.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optlib._describe import GroupRecipe, Recipe, register_recipe
from optlib._param_groups import param_groups
from optlib._registry import get_scheduler
from optlib.optimizers._torch_classes import (
    class_key,
    torch_kwargs_to_optlib,
    torch_optimizer_entry,
)

__all__ = ["from_torch", "key_path", "normalize_param_paths"]


# ---------------------------------------------------------------------------------------------
# Parameter paths.


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def key_path(path: Sequence[Any]) -> tuple[str, ...]:
    """A ``jax.tree_util`` key path as a tuple of strings (``("layer", "kernel")``)."""
    return tuple(_key_name(key) for key in path)


def normalize_param_paths(param_paths: Sequence[Any]) -> list[tuple[str, ...]]:
    """``["a/b", ("a", "c"), ...]`` -> ``[("a", "b"), ("a", "c"), ...]``.

    Raises:
      TypeError: if ``param_paths`` is not a sequence of ``str`` / tuples of keys.
      ValueError: if a path is listed twice.
    """
    if isinstance(param_paths, (str, bytes)) or not isinstance(param_paths, Sequence):
        raise TypeError(
            f'param_paths must be a list of "a/b" strings or tuples of keys, got {param_paths!r}'
        )
    paths = []
    for path in param_paths:
        if isinstance(path, str):
            paths.append(tuple(path.split("/")))
        elif isinstance(path, (tuple, list)):
            paths.append(tuple(str(key) for key in path))
        else:
            raise TypeError(f'param_paths entries must be "a/b" or tuples of keys, got {path!r}')
    seen = set()
    for path in paths:
        if path in seen:
            raise ValueError(f"param_paths lists {'/'.join(path)!r} twice")
        seen.add(path)
    return paths


def _module_paths(module: Any, optimizer: Any) -> list[tuple[str, ...]]:
    """The names of ``optimizer``'s parameters in ``module``, in param-group order."""
    names = {id(p): tuple(n.split(".")) for n, p in module.named_parameters()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    missing = [i for i, p in enumerate(params) if id(p) not in names]
    if missing:
        raise ValueError(
            f"param_paths: the module has no parameter for the optimizer's parameter(s) "
            f"{missing} (in param-group order); pass the paths explicitly"
        )
    return [names[id(p)] for p in params]


def _labels_by_path(label_of: dict[tuple[str, ...], str]) -> Callable[[Any], Any]:
    """``params -> labels`` from ``{path: label}``; every leaf must be listed, and only leaves."""

    def labels(params):
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        paths = [key_path(path) for path, _ in flat]
        missing = ["/".join(p) for p in paths if p not in label_of]
        unknown = sorted("/".join(p) for p in set(label_of) - set(paths))
        problems = []
        if missing:
            problems.append(
                f"leaves not in param_paths {missing} (torch's optimizer does not train them: "
                "add them, or keep them out of the update with optax.masked)"
            )
        if unknown:
            problems.append(f"param_paths not in the params {unknown}")
        if problems:
            raise ValueError("param_paths do not match the params: " + "; ".join(problems))
        return jax.tree_util.tree_unflatten(treedef, [label_of[p] for p in paths])

    return labels


def _checked(tx: optax.GradientTransformation, paths: list[tuple[str, ...]]):
    """``tx`` whose ``init`` first checks that the params are exactly ``paths``."""
    check = _labels_by_path(dict.fromkeys(paths, "all"))

    def init_fn(params):
        check(params)
        return tx.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        return optax.with_extra_args_support(tx).update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# Schedulers: one optlib schedule per param group.


def _number(value: Any) -> Any:
    """A torch scalar tensor as a Python float; anything else unchanged."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def _integral(value: float) -> int | float:
    """``value`` as an int when it is one (torch stores CyclicLR's step sizes as floats)."""
    rounded = round(value)
    return int(rounded) if math.isclose(value, rounded, rel_tol=0, abs_tol=1e-9) else value


# transformers' LambdaLR factories (``functools.partial`` of these) -> optlib's HF schedules.
_HF_LAMBDAS = {
    "_get_constant_lambda": "constant",
    "_get_constant_schedule_with_warmup_lr_lambda": "constant_with_warmup",
    "_get_linear_schedule_with_warmup_lr_lambda": "linear",
    "_get_cosine_schedule_with_warmup_lr_lambda": "cosine",
    "_get_cosine_with_hard_restarts_schedule_with_warmup_lr_lambda": "cosine_with_restarts",
    "_get_polynomial_decay_schedule_with_warmup_lr_lambda": "polynomial",
    "_get_inverse_sqrt_schedule_lr_lambda": "inverse_sqrt",
    "_get_cosine_with_min_lr_schedule_with_warmup_lr_rate_lambda": "cosine_warmup_with_min_lr",
    "_get_wsd_scheduler_lambda": "warmup_stable_decay",
}


def _hf_lambda(lr_lambda: Any, base_lr: float):
    """A transformers ``get_*_schedule`` lambda as ``(name, kwargs, scale)``, else ``None``."""
    func = lr_lambda.func if isinstance(lr_lambda, functools.partial) else lr_lambda
    module = getattr(func, "__module__", "") or ""
    name = _HF_LAMBDAS.get(getattr(func, "__name__", ""))
    if name is None or not module.startswith("transformers"):
        return None
    kwargs = dict(lr_lambda.keywords) if isinstance(lr_lambda, functools.partial) else {}
    learning_rate, scale = base_lr, 1.0
    if name == "cosine" and kwargs.get("min_lr_rate") is not None:
        name = "cosine_with_min_lr"
    elif name == "cosine":
        kwargs.pop("min_lr_rate", None)
    if name == "polynomial":
        # HF's lambda is relative to lr_init (the optimizer's default lr) for every group.
        learning_rate = kwargs.pop("lr_init")
        scale = base_lr / learning_rate
    return name, kwargs, learning_rate, scale


def _traceable(lr_lambda: Callable, name: str) -> Callable:
    try:
        jax.eval_shape(lr_lambda, jax.ShapeDtypeStruct((), jnp.int32))
    except Exception as error:
        raise ValueError(
            f"{name}'s lr_lambda {lr_lambda!r} is not jax-traceable ({type(error).__name__}: "
            f"{error}); write it with jax.numpy (it is called with an int32 array)"
        ) from None
    return lr_lambda


def _per_group(value: Any, index: int) -> Any:
    return value[index] if isinstance(value, (list, tuple)) else value


def _call(name: str, learning_rate: float, sub_texts: Sequence[str] = (), **kwargs: Any):
    """``get_scheduler(name, ...)`` and its description."""
    shown = [f"learning_rate={learning_rate!r}"]
    shown += [f"{key}={value!r}" for key, value in kwargs.items() if key != "schedulers"]
    if sub_texts:
        shown.append(f"schedulers=[{', '.join(sub_texts)}]")
    schedule = get_scheduler(name, learning_rate=learning_rate, **kwargs)
    return schedule, f"{name}({', '.join(shown)})"


def _scheduler(scheduler: Any, index: int, base_lr: float) -> tuple[Any, str]:
    """Group ``index``'s optlib schedule for the torch ``scheduler``, and its description."""
    name = type(scheduler).__name__
    s = scheduler
    if name in ("StepLR",):
        return _call(name, base_lr, step_size=s.step_size, gamma=s.gamma)
    if name == "MultiStepLR":
        return _call(name, base_lr, milestones=sorted(s.milestones.elements()), gamma=s.gamma)
    if name == "ConstantLR":
        return _call(name, base_lr, factor=s.factor, total_iters=s.total_iters)
    if name == "LinearLR":
        return _call(
            name,
            base_lr,
            start_factor=s.start_factor,
            end_factor=s.end_factor,
            total_iters=s.total_iters,
        )
    if name == "ExponentialLR":
        return _call(name, base_lr, gamma=s.gamma)
    if name == "PolynomialLR":
        return _call(name, base_lr, total_iters=s.total_iters, power=s.power)
    if name == "CosineAnnealingLR":
        return _call(name, base_lr, T_max=s.T_max, eta_min=s.eta_min)
    if name == "CosineAnnealingWarmRestarts":
        return _call(name, base_lr, T_0=s.T_0, T_mult=s.T_mult, eta_min=s.eta_min)
    if name in ("LambdaLR", "MultiplicativeLR"):
        lr_lambda = s.lr_lambdas[index]
        hf = _hf_lambda(lr_lambda, base_lr) if name == "LambdaLR" else None
        if hf is not None:
            hf_name, kwargs, learning_rate, scale = hf
            schedule, text = _call(hf_name, learning_rate, **kwargs)
            if scale != 1.0:
                schedule = _scaled(schedule, scale)
                text = f"{scale!r} * {text}"
            return schedule, text
        return _call(name, base_lr, lr_lambda=_traceable(lr_lambda, name))
    if name == "CyclicLR":
        up = _integral(s.total_size * s.step_ratio)
        down = _integral(s.total_size - s.total_size * s.step_ratio)
        cyclic: dict[str, Any] = {
            "base_lr": s.base_lrs[index],
            "max_lr": s.max_lrs[index],
            "step_size_up": up,
            "step_size_down": down,
            "mode": s.mode,
            "gamma": s.gamma,
            "scale_mode": s.scale_mode,
            "cycle_momentum": s.cycle_momentum,
        }
        if s._scale_fn_custom is not None:
            cyclic["scale_fn"] = _traceable(s._scale_fn_custom, "CyclicLR scale_fn")
        if s.cycle_momentum:
            cyclic["base_momentum"] = s.base_momentums[index]
            cyclic["max_momentum"] = s.max_momentums[index]
        return _call(name, s.base_lrs[index], **cyclic)
    if name == "OneCycleLR":
        group = s.optimizer.param_groups[index]
        phases = s._schedule_phases
        kwargs = {
            "max_lr": group["max_lr"],
            "total_steps": s.total_steps,
            "pct_start": (phases[0]["end_step"] + 1) / s.total_steps,
            "anneal_strategy": s._anneal_func_type,
            "cycle_momentum": s.cycle_momentum,
            "div_factor": group["max_lr"] / group["initial_lr"],
            "final_div_factor": group["initial_lr"] / group["min_lr"],
            "three_phase": len(phases) == 3,
        }
        if s.cycle_momentum:
            kwargs["base_momentum"] = group["base_momentum"]
            kwargs["max_momentum"] = group["max_momentum"]
        return _call(name, group["initial_lr"], **kwargs)
    if name in ("SequentialLR", "ChainedScheduler"):
        subs = [_scheduler(sub, index, _per_group(sub.base_lrs, index)) for sub in s._schedulers]
        kwargs = {"schedulers": [schedule for schedule, _ in subs]}
        if name == "SequentialLR":
            kwargs["milestones"] = list(s._milestones)
        return _call(name, base_lr, [text for _, text in subs], **kwargs)
    if name == "SWALR":
        return _call(
            name,
            base_lr,
            swa_lr=s.optimizer.param_groups[index]["swa_lr"],
            anneal_epochs=s.anneal_epochs,
            anneal_strategy=s._anneal_strategy,
        )
    if name == "ReduceLROnPlateau":
        return _call(
            name,
            base_lr,
            mode=s.mode,
            factor=s.factor,
            patience=s.patience,
            threshold=s.threshold,
            threshold_mode=s.threshold_mode,
            cooldown=s.cooldown,
            min_lr=s.min_lrs[index],
            eps=s.eps,
        )
    if name == "GreedyLR" and type(s).__module__.startswith("transformers"):
        return _call(
            name,
            s._init_lrs[index],
            mode=s.mode,
            factor=s.factor,
            patience=s.patience,
            threshold=s.threshold,
            threshold_mode=s.threshold_mode,
            cooldown=s.cooldown,
            warmup=s.warmup,
            min_lr=s.min_lrs[index],
            max_lr=s.max_lrs[index],
            eps=s.eps,
            smooth=s.smooth,
            window_size=s.window_size,
            reset_start=s.reset_start_original,
        )
    raise ValueError(
        f"torch scheduler {type(scheduler).__module__}.{name} is not supported by from_torch"
    )


def _scaled(schedule: Callable, scale: float) -> Callable:
    return lambda count: scale * schedule(count)


# ---------------------------------------------------------------------------------------------


def from_torch(
    optimizer: Any, scheduler: Any = None, *, param_paths: Sequence[Any] | Any
) -> optax.GradientTransformationExtraArgs:
    """The optax transformation reproducing a live ``torch.optim`` optimizer (and scheduler).

    The optimizer's class picks the optlib optimizer (``torch.optim.AdamW`` ->
    ``optlib.adamw``, ..., ``torch.optim.ASGD`` -> ``optlib.asgd``, ``torch.optim.Adafactor``
    -> ``optlib.torch_adafactor``, ``torch.optim.Muon`` -> ``optlib.muon`` (its
    Newton–Schulz in bfloat16, as torch), ``torch.optim.LBFGS`` -> ``optlib.lbfgs`` (call
    its ``update`` with ``value=``, ``grad=``, ``value_fn=``: one update is one
    ``step(closure)``), ``transformers.Adafactor`` -> ``optlib.adafactor``,
    ``lion_pytorch.Lion`` -> ``optlib.lion``); each param group's hyperparameters become its
    keywords (``lr`` -> ``learning_rate``; ``foreach``, ``fused``, ``capturable``,
    ``differentiable`` are ignored: they change no numbers). Several param groups become
    ``optlib.param_groups`` with labels ``"group_0"``, ``"group_1"``, ... assigned from
    ``param_paths``. The scheduler (``StepLR`` ... ``CyclicLR`` / ``OneCycleLR`` with momentum
    cycling, ``SequentialLR``, ``ChainedScheduler``, ``ReduceLROnPlateau``, transformers'
    ``GreedyLR``, ``torch.optim.swa_utils.SWALR`` (``optlib.swa_lr``, alone or inside
    ``SequentialLR``), and the ``LambdaLR``s of ``transformers.get_scheduler``, recognised by
    their lambda) becomes each group's ``learning_rate``, built from the group's base lr
    (torch's ``initial_lr``).

    The transformation reproduces the torch run from its start: ``tx.init(params)`` is a fresh
    optimizer and a scheduler at ``last_epoch == 0``. What a live pair has done since
    construction (``optimizer.state``, ``scheduler.last_epoch``, ReduceLROnPlateau's ``best``
    and reduced lrs) is state, not recipe: it is not read here (load it into the optax state
    with ``optlib.from_torch_state_dict``). The recipe is read from the construction-time
    attributes (``base_lrs``, ``initial_lr``), so an advanced scheduler gives the same
    transformation as a fresh one; only ReduceLROnPlateau has no record of its starting lr and
    uses each group's current ``lr``.

    Args:
      optimizer: a torch optimizer of a class in optlib's table
        (``optlib.optimizers._torch_classes.TORCH_OPTIMIZERS``).
      scheduler: ``None`` or a ``torch.optim.lr_scheduler`` scheduler on ``optimizer``.
      param_paths: one path per torch parameter, in ``optimizer.param_groups`` order (group 0's
        params first, which is not ``model.named_parameters()``'s order when the groups split
        the model): ``"a/b"`` strings or tuples of keys of the JAX parameter pytree; or the
        ``torch.nn.Module`` itself, whose parameter names split at ``"."`` are the paths
        (``"encoder.0.weight"`` -> ``("encoder", "0", "weight")``), matched to the groups by
        identity. At ``init`` the params must have exactly these leaves.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``optlib.describe(tx)`` tells what it is.

    Raises:
      ValueError: an unsupported optimizer / scheduler class or option (named), a
        ``param_paths`` whose length is not the optimizer's number of parameters, a scheduler
        on another optimizer, a ``LambdaLR`` whose lambda is not jax-traceable.
      TypeError: if ``optimizer`` is not a torch optimizer.
    """
    if not hasattr(optimizer, "param_groups") or not hasattr(optimizer, "defaults"):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
    class_name = class_key(type(optimizer))
    entry = torch_optimizer_entry(class_name)
    if scheduler is not None and getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError("scheduler is attached to another optimizer than `optimizer`")
    if hasattr(param_paths, "named_parameters"):
        param_paths = _module_paths(param_paths, optimizer)
    paths = normalize_param_paths(param_paths)
    counts = [len(group["params"]) for group in optimizer.param_groups]
    if len(paths) != sum(counts):
        raise ValueError(
            f"param_paths has {len(paths)} entries but the optimizer has {sum(counts)} "
            f"parameters ({' + '.join(map(str, counts))} in its param groups)"
        )

    transforms: dict[Hashable, optax.GradientTransformation] = {}
    recipes: list[GroupRecipe] = []
    label_of: dict[tuple[str, ...], str] = {}
    learning_rates: list[Any] = []
    start = 0
    for index, group in enumerate(optimizer.param_groups):
        label = f"group_{index}"
        hyper = {k: _number(group[k]) for k in optimizer.defaults if k in group and k != "params"}
        kwargs = torch_kwargs_to_optlib(hyper, class_name)
        base_lr = _number(group.get("initial_lr", group["lr"]) if scheduler else group["lr"])
        schedule_text = None
        if scheduler is not None:
            kwargs["learning_rate"], schedule_text = _scheduler(scheduler, index, base_lr)
            learning_rates.append(kwargs["learning_rate"])
        transforms[label] = entry.factory(**kwargs)
        members = paths[start : start + counts[index]]
        label_of.update(dict.fromkeys(members, label))
        start += counts[index]
        shown = {k: v for k, v in kwargs.items() if k != "learning_rate"}
        recipes.append(
            GroupRecipe(
                label=label,
                optimizer=f"optlib.{entry.factory.__name__}",
                hyperparameters=shown,
                learning_rate=schedule_text or repr(kwargs["learning_rate"]),
                members=["/".join(p) for p in members],
            )
        )
    tx: optax.GradientTransformationExtraArgs
    if len(transforms) == 1:
        tx = _checked(next(iter(transforms.values())), paths)
    else:
        tx = param_groups(transforms, _labels_by_path(label_of))
    notes = []
    if any(getattr(k, "momentum", None) is not None for k in learning_rates):
        notes.append("momentum / betas[0] follow the scheduler's momentum cycle, as in torch")
    source = class_name if "." in class_name else f"torch.optim.{class_name}"
    if scheduler is not None:
        source += f" + {type(scheduler).__module__}.{type(scheduler).__name__}"
    return register_recipe(tx, Recipe(source=source, groups=recipes, notes=notes))
