"""Cases shared by the reliability tests of issue 9: every optimizer, a tiny model, one step.

``OPTIMIZER_CASES`` lists every public optimizer of optlib once (plus the option that changes
its state: AMSGrad, Nesterov, centered RMSprop, Adafactor's relative step, a metric-driven
learning rate), as ``factory(learning_rate=..., **kwargs)`` so that
``optax.inject_hyperparams(case.factory)`` sees the same keywords a user would pass.

``train_step`` is the one training step every test jits: it passes what every optimizer may
need (``value`` for metric-driven rates and line searches, ``grad``/``value_fn`` for
line searches, the batch as an extra argument of the objective); plain chains ignore them.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import optlib
from optlib._registry import scheduler_entry

INT32_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class OptimizerCase:
    """One optimizer configuration.

    Attributes:
      name: test id.
      factory: the public optlib optimizer.
      kwargs: its other keywords.
      learning_rate: a rate that trains the tiny model; ``None`` for an optimizer that owns
        its rate (Adafactor's relative step).
      rate: wraps the float rate before it is passed (e.g. into a metric-driven scheduler).
      static_args: integer keywords that shape the computation, for
        ``optax.inject_hyperparams(..., static_args=...)``.
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    kwargs: dict = dataclasses.field(default_factory=dict)
    learning_rate: float | None = 1e-2
    rate: Callable[[Any], Any] | None = None
    static_args: tuple[str, ...] = ()

    @property
    def metric_driven(self) -> bool:
        return self.rate is not None

    @property
    def line_search(self) -> bool:
        return self.factory in (optlib.newton, optlib.bfgs, optlib.lbfgs)

    def make(self, learning_rate: Any = None, **overrides: Any) -> optax.GradientTransformation:
        """The optimizer, with ``learning_rate`` (default: the case's) and keyword overrides."""
        kwargs = {**self.kwargs, **overrides}
        if self.learning_rate is None:
            return self.factory(**kwargs)
        rate = self.learning_rate if learning_rate is None else learning_rate
        if self.rate is not None:
            rate = self.rate(rate)
        return self.factory(learning_rate=rate, **kwargs)


def muon_on_matrices(learning_rate=1e-3, **kwargs) -> optax.GradientTransformation:
    """``optlib.muon`` on the 2-D leaves and ``optlib.adamw`` on the others (the biases).

    It has ``optlib.muon``'s signature, so that ``optax.inject_hyperparams`` sees the same
    keywords (``ns_steps`` must then be static)."""
    others = {k: kwargs[k] for k in ("statistics_dtype",) if k in kwargs}  # both groups'
    return optlib.param_groups(
        {
            "muon": optlib.muon(learning_rate, **kwargs),
            "adamw": optlib.adamw(learning_rate, **others),
        },
        lambda params: optlib.decay_labels(params, "muon", "adamw"),
    )


muon_on_matrices.__signature__ = inspect.signature(optlib.muon)
muon_on_matrices.__wrapped__ = optlib.muon  # the optimizer it stands for (test_completeness)


OPTIMIZER_CASES = (
    OptimizerCase("sgd", optlib.sgd, dict(momentum=0.9, dampening=0.1, weight_decay=1e-3), 5e-2),
    OptimizerCase("sgd_nesterov", optlib.sgd, dict(momentum=0.9, nesterov=True), 5e-2),
    OptimizerCase("adam", optlib.adam, dict(weight_decay=1e-3)),
    OptimizerCase("adam_amsgrad", optlib.adam, dict(amsgrad=True)),
    OptimizerCase("adamw", optlib.adamw, dict(weight_decay=1e-2)),
    OptimizerCase(
        "adagrad", optlib.adagrad, dict(lr_decay=1e-3, initial_accumulator_value=0.1), 1e-1
    ),
    OptimizerCase(
        "rmsprop", optlib.rmsprop, dict(momentum=0.5, centered=True, weight_decay=1e-3), 3e-3
    ),
    OptimizerCase("adadelta", optlib.adadelta, dict(weight_decay=1e-3), 1.0),
    OptimizerCase("nadam", optlib.nadam, dict(weight_decay=1e-2, decoupled_weight_decay=True)),
    OptimizerCase(
        "adafactor", optlib.adafactor, dict(relative_step=False, beta1=0.9, weight_decay=1e-3)
    ),
    OptimizerCase("adafactor_relative_step", optlib.adafactor, {}, None),
    OptimizerCase("newton", optlib.newton, {}, 1.0, static_args=("dense_max_size",)),
    OptimizerCase("bfgs", optlib.bfgs, {}, 1.0, static_args=("max_size",)),
    OptimizerCase(
        "adam_reduce_lr_on_plateau",
        optlib.adam,
        {},
        1e-2,
        rate=lambda lr: optlib.reduce_lr_on_plateau(lr, patience=2, factor=0.5),
    ),
    OptimizerCase(
        "sgd_greedy_lr",
        optlib.sgd,
        dict(momentum=0.9),
        5e-2,
        rate=lambda lr: optlib.greedy_lr(lr, patience=2, min_lr=1e-4),
    ),
    OptimizerCase("lion", optlib.lion, dict(betas=(0.9, 0.99), weight_decay=1e-2), 1e-3),
    OptimizerCase(
        "ademamix",
        optlib.ademamix,
        dict(alpha=5.0, t_alpha=50, t_beta3=50, weight_decay=1e-2),
        static_args=("t_alpha", "t_beta3"),
    ),
    OptimizerCase(
        "stable_adamw", optlib.stable_adamw, dict(weight_decay=1e-2, decouple_lr=True, max_lr=1e-2)
    ),
    OptimizerCase("radam", optlib.radam, dict(weight_decay=1e-2, decoupled_weight_decay=True)),
    OptimizerCase("adamax", optlib.adamax, dict(weight_decay=1e-3)),
    OptimizerCase("rprop", optlib.rprop, dict(etas=(0.4, 1.3)), 1e-3),
    OptimizerCase(
        "rprop_reduce_lr_on_plateau",
        optlib.rprop,
        {},
        1e-3,
        rate=lambda lr: optlib.reduce_lr_on_plateau(lr, patience=2, factor=0.5),
    ),
    OptimizerCase("asgd", optlib.asgd, dict(t0=2, weight_decay=1e-3), 5e-2),
    OptimizerCase("torch_adafactor", optlib.torch_adafactor, dict(weight_decay=1e-2), 5e-2),
    OptimizerCase(
        "asgd_reduce_lr_on_plateau",
        optlib.asgd,
        dict(t0=2),
        5e-2,
        rate=lambda lr: optlib.reduce_lr_on_plateau(lr, patience=2, factor=0.5),
    ),
    OptimizerCase(
        "schedule_free_adamw",
        optlib.schedule_free_adamw,
        dict(weight_decay=1e-3, warmup_steps=3, r=0.5),
        static_args=("warmup_steps",),
    ),
    OptimizerCase(
        "schedule_free_sgd",
        optlib.schedule_free_sgd,
        dict(momentum=0.9, weight_decay=1e-3, warmup_steps=3),
        5e-2,
        static_args=("warmup_steps",),
    ),
    OptimizerCase(  # silent_sgd_phase=False: the first steps move (SGD), then RAdam's
        "schedule_free_radam",
        optlib.schedule_free_radam,
        dict(weight_decay=1e-3, silent_sgd_phase=False),
    ),
    # Muon takes only matrices (as torch): Muon on the 2-D leaves, AdamW on the biases.
    OptimizerCase(
        "muon", muon_on_matrices, dict(weight_decay=1e-2), 2e-2, static_args=("ns_steps",)
    ),
    OptimizerCase(
        "muon_ns_in_param_dtype",
        muon_on_matrices,
        dict(nesterov=False, adjust_lr_fn="match_rms_adamw", ns_steps=3, ns_dtype=None),
        2e-2,
        static_args=("ns_steps",),
    ),
    OptimizerCase(
        "lbfgs",
        optlib.lbfgs,
        dict(max_iter=4, history_size=3),
        0.2,
        static_args=("max_iter", "history_size"),
    ),
    OptimizerCase(
        "lbfgs_strong_wolfe",
        optlib.lbfgs,
        dict(max_iter=4, history_size=3, line_search_fn="strong_wolfe"),
        1.0,
        static_args=("max_iter", "history_size"),
    ),
)


def case_ids(cases) -> list[str]:
    return [case.name for case in cases]


# ------------------------------------------------------------------------------ counters

COUNTERS = (
    "count",
    "fallbacks",
    "curvature_pairs",
    "num_bad_epochs",
    "num_good_epochs",
    "func_evals",
    "n_iter",
)
"""The int32 counters of optlib's states (and optax's ``count``) that grow with the steps."""


def _field(path) -> str | None:
    return getattr(path[-1], "name", None)


def set_counters(state, value: int):
    """``state`` with its int32 counters (``COUNTERS``) set to ``value``."""

    def set_one(path, leaf):
        if _field(path) in COUNTERS and getattr(leaf, "dtype", None) == jnp.int32:
            return jnp.full(leaf.shape, value, jnp.int32)
        return leaf

    return jax.tree_util.tree_map_with_path(set_one, state)


def counters(state) -> dict[str, int]:
    """``{path: value}`` of the int32 counters of ``state``."""
    return {
        jax.tree_util.keystr(path): int(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(state)
        if _field(path) in COUNTERS and getattr(leaf, "dtype", None) == jnp.int32
    }


# --------------------------------------------------------------------------- the tiny model


def init_params(key: jax.Array, dtype: Any = jnp.float32, sizes=(3, 6, 2)) -> dict:
    """A two-layer MLP (``3 -> 6 -> 2``): a matrix, a vector and a 2-D output layer."""
    first, second = jax.random.split(key)
    return {
        "w1": (jax.random.normal(first, sizes[:2]) / jnp.sqrt(sizes[0])).astype(dtype),
        "b1": jnp.zeros(sizes[1], dtype),
        "w2": (jax.random.normal(second, sizes[1:]) / jnp.sqrt(sizes[1])).astype(dtype),
        "b2": jnp.zeros(sizes[2], dtype),
    }


def make_batches(key: jax.Array, count: int, dtype: Any = jnp.float32, size: int = 16):
    """``count`` regression batches ``(x, y)`` stacked on a leading axis, ``y = sin(x A)``."""
    inputs_key, matrix_key = jax.random.split(key)
    x = jax.random.normal(inputs_key, (count, size, 3))
    y = jnp.sin(x @ jax.random.normal(matrix_key, (3, 2)))
    return x.astype(dtype), y.astype(dtype)


def objective(params: dict, batch) -> jax.Array:
    """Mean squared error of the MLP, computed in the parameters' dtype."""
    x, y = batch
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean(jnp.square(hidden @ params["w2"] + params["b2"] - y))


def train_step(tx: optax.GradientTransformation, params, state, batch):
    """One update of ``tx`` on ``batch``: returns ``(params, state, loss before the update)``."""
    value, grads = jax.value_and_grad(objective)(params, batch)
    updates, state = tx.update(
        grads, state, params, value=value, grad=grads, value_fn=objective, batch=batch
    )
    return optax.apply_updates(params, updates), state, value


def split_batches(batches) -> list:
    """``make_batches``'s stack as a list of ``(x, y)`` batches (no indexing per step)."""
    x, y = batches
    return [(x[index], y[index]) for index in range(x.shape[0])]


# ------------------------------------------------------------------ one config per schedule

METRIC_DRIVEN_NAMES = ("ReduceLROnPlateau", "reduce_lr_on_plateau", "GreedyLR", "greedy")
# The step-based Hugging Face names, from the registry (transformers' SchedulerType values;
# test_hf_schedules.py checks the two lists agree).
HF_NAMES = tuple(
    name
    for name in optlib.scheduler_names()
    if scheduler_entry(name).family == "hf" and name not in METRIC_DRIVEN_NAMES
)


def _sub(name: str, learning_rate: float, **kwargs: Any):
    return optlib.get_scheduler(name, learning_rate=learning_rate, **kwargs)


def schedule_kwargs(name: str, learning_rate: float = 1e-2) -> dict:
    """A valid ``get_scheduler(name, learning_rate=..., **kwargs)`` configuration of every
    registered name (``KeyError`` for a name this table does not know yet)."""
    lr = learning_rate
    table = {
        "StepLR": lambda: dict(step_size=7, gamma=0.5),
        "MultiStepLR": lambda: dict(milestones=[3, 10, 10, 50], gamma=0.5),
        "ExponentialLR": lambda: dict(gamma=0.99),
        "CosineAnnealingLR": lambda: dict(T_max=50, eta_min=1e-4),
        "LinearLR": lambda: dict(start_factor=0.25, end_factor=1.0, total_iters=20),
        "LambdaLR": lambda: dict(lr_lambda=lambda e: 1.0 / (1.0 + 0.01 * e)),
        "MultiplicativeLR": lambda: dict(lr_lambda=lambda e: 0.999),
        "ConstantLR": lambda: dict(factor=0.5, total_iters=10),
        "PolynomialLR": lambda: dict(total_iters=100, power=2.0),
        "CosineAnnealingWarmRestarts": lambda: dict(T_0=10, T_mult=2, eta_min=1e-4),
        "CyclicLR": lambda: dict(base_lr=1e-3, max_lr=1e-2, step_size_up=10, mode="triangular2"),
        "OneCycleLR": lambda: dict(max_lr=1e-2, total_steps=100),
        "SequentialLR": lambda: dict(
            schedulers=[
                _sub("LinearLR", lr, start_factor=0.1, total_iters=10),
                _sub("ExponentialLR", lr, gamma=0.98),
            ],
            milestones=[10],
        ),
        "ChainedScheduler": lambda: dict(
            schedulers=[
                _sub("ConstantLR", lr, factor=0.5, total_iters=5),
                _sub("ExponentialLR", lr, gamma=0.98),
            ]
        ),
        "ReduceLROnPlateau": lambda: dict(patience=2, factor=0.5),
        "GreedyLR": lambda: dict(patience=2, min_lr=1e-4),
        "constant": lambda: {},
        "constant_with_warmup": lambda: dict(num_warmup_steps=10),
        "linear": lambda: dict(num_warmup_steps=10, num_training_steps=100),
        "cosine": lambda: dict(num_warmup_steps=10, num_training_steps=100, num_cycles=0.5),
        "cosine_with_restarts": lambda: dict(
            num_warmup_steps=10, num_training_steps=100, num_cycles=3
        ),
        "polynomial": lambda: dict(
            num_warmup_steps=10, num_training_steps=100, lr_end=1e-5, power=2.0
        ),
        "inverse_sqrt": lambda: dict(num_warmup_steps=10, timescale=20),
        "reduce_lr_on_plateau": lambda: dict(patience=2, factor=0.5),
        "cosine_with_min_lr": lambda: dict(
            num_warmup_steps=10, num_training_steps=100, min_lr_rate=0.1
        ),
        "cosine_warmup_with_min_lr": lambda: dict(
            num_warmup_steps=10, num_training_steps=100, min_lr=1e-4, warmup_lr_rate=0.1
        ),
        "warmup_stable_decay": lambda: dict(
            num_warmup_steps=10, num_training_steps=100, num_decay_steps=30
        ),
        "greedy": lambda: dict(patience=2, min_lr=1e-4),
        "cosine_annealing_warm_up_restarts": lambda: dict(
            T_0=20, T_mult=2, eta_max=1e-2, T_up=5, gamma=0.5
        ),
        "CosineAnnealingWarmUpRestarts": lambda: dict(T_0=20, T_mult=1, eta_max=1e-2, T_up=3),
        "linear_decay": lambda: dict(
            final_learning_rate=1e-4, num_training_steps=100, num_hold_steps=10
        ),
        "SWALR": lambda: dict(swa_lr=lr / 10, anneal_epochs=10, anneal_strategy="cos"),
    }
    return table[name]()


def build_schedule(name: str, learning_rate: float = 1e-2):
    """``get_scheduler(name)`` with the configuration of ``schedule_kwargs``."""
    kwargs = schedule_kwargs(name, learning_rate)
    return optlib.get_scheduler(name, learning_rate=learning_rate, **kwargs)


def step_based_names() -> list[str]:
    return [name for name in optlib.scheduler_names() if name not in METRIC_DRIVEN_NAMES]
