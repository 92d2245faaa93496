"""Cost of evaluating each registered step-based schedule inside a jitted optimizer step.

For each schedule, ``optlib.adam(schedule)`` (a ``MomentumSchedule`` also drives ``beta1``,
as torch's ``cycle_momentum`` does) runs ``K`` steps on a 16-element parameter inside one
jitted ``lax.fori_loop``, interleaved with the same loop of ``optlib.adam(1e-3)``; the cost
per step is ``(time_schedule - time_constant) / K``. The parameter is tiny so that the
schedule's scalar work is not hidden by the update of the parameters; what a real step pays
is this cost, once per step, whatever the model size.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

import optlib
from benchmarks.context import Context
from benchmarks.timing import summarize

TRAINING_STEPS = 1000
WARMUP_STEPS = 100

# Keyword arguments that make each registered name a reasonable 1000-step schedule.
SCHEDULE_KWARGS: dict[str, dict] = {
    "StepLR": {"step_size": 100, "gamma": 0.5},
    "MultiStepLR": {"milestones": [300, 600, 900], "gamma": 0.5},
    "ExponentialLR": {"gamma": 0.999},
    "CosineAnnealingLR": {"T_max": TRAINING_STEPS},
    "LinearLR": {"total_iters": WARMUP_STEPS},
    "LambdaLR": {"lr_lambda": lambda step: 0.999**step},
    "MultiplicativeLR": {"lr_lambda": lambda step: 0.999},
    "ConstantLR": {"total_iters": WARMUP_STEPS},
    "PolynomialLR": {"total_iters": TRAINING_STEPS, "power": 2.0},
    "CosineAnnealingWarmRestarts": {"T_0": 100, "T_mult": 2},
    "CyclicLR": {"base_lr": 1e-4, "max_lr": 1e-2, "step_size_up": 200},
    "OneCycleLR": {"max_lr": 1e-2, "total_steps": TRAINING_STEPS},
    "constant": {},
    "constant_with_warmup": {"num_warmup_steps": WARMUP_STEPS},
    "linear": {"num_warmup_steps": WARMUP_STEPS, "num_training_steps": TRAINING_STEPS},
    "cosine": {"num_warmup_steps": WARMUP_STEPS, "num_training_steps": TRAINING_STEPS},
    "cosine_with_restarts": {
        "num_warmup_steps": WARMUP_STEPS,
        "num_training_steps": TRAINING_STEPS,
        "num_cycles": 3,
    },
    "polynomial": {"num_warmup_steps": WARMUP_STEPS, "num_training_steps": TRAINING_STEPS},
    "inverse_sqrt": {"num_warmup_steps": WARMUP_STEPS},
    "cosine_with_min_lr": {
        "num_warmup_steps": WARMUP_STEPS,
        "num_training_steps": TRAINING_STEPS,
        "min_lr_rate": 0.1,
    },
    "cosine_warmup_with_min_lr": {
        "num_warmup_steps": WARMUP_STEPS,
        "num_training_steps": TRAINING_STEPS,
        "min_lr_rate": 0.1,
    },
    "warmup_stable_decay": {
        "num_warmup_steps": WARMUP_STEPS,
        "num_training_steps": TRAINING_STEPS,
        "num_decay_steps": 200,
    },
    "cosine_annealing_warm_up_restarts": {"T_0": 200, "T_up": 20, "eta_max": 1e-2, "gamma": 0.5},
    "CosineAnnealingWarmUpRestarts": {"T_0": 200, "T_up": 20, "eta_max": 1e-2, "gamma": 0.5},
    "linear_decay": {
        "final_learning_rate": 1e-5,
        "num_training_steps": TRAINING_STEPS,
        "num_hold_steps": WARMUP_STEPS,
    },
}


def _composite_kwargs(name: str) -> dict | None:
    """SequentialLR / ChainedScheduler take schedules built by ``get_scheduler``."""
    warmup = optlib.get_scheduler("LinearLR", learning_rate=1e-3, total_iters=WARMUP_STEPS)
    decay = optlib.get_scheduler("ExponentialLR", learning_rate=1e-3, gamma=0.999)
    if name == "SequentialLR":
        return {"schedulers": [warmup, decay], "milestones": [WARMUP_STEPS]}
    if name == "ChainedScheduler":
        return {"schedulers": [warmup, decay]}
    return None


def build_schedule(name: str):
    """The schedule ``get_scheduler(name, ...)`` builds, or None if it is metric-driven."""
    kwargs = _composite_kwargs(name)
    if kwargs is None:
        kwargs = SCHEDULE_KWARGS.get(name, {})
    schedule = optlib.get_scheduler(name, learning_rate=1e-3, **kwargs)
    if isinstance(schedule, optax.GradientTransformation):
        return None
    return schedule


def _loop(tx: optax.GradientTransformation, num_steps: int):
    grads = jnp.full((16,), 1e-2, jnp.float32)

    def run_steps(params, state):
        def body(_, carry):
            params, state = carry
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        return jax.lax.fori_loop(0, num_steps, body, (params, state))

    params = jnp.ones((16,), jnp.float32)
    state = tx.init(params)
    compiled = jax.jit(run_steps).lower(params, state).compile()

    def call():
        jax.block_until_ready(compiled(params, state))

    return call


def _time_pair(schedule_loop, constant_loop, repeats: int) -> tuple[dict, dict]:
    schedule_loop()
    constant_loop()
    times: tuple[list, list] = ([], [])
    for _ in range(repeats):
        for loop, sink in ((schedule_loop, times[0]), (constant_loop, times[1])):
            start = time.perf_counter()
            loop()
            sink.append(time.perf_counter() - start)
    return summarize(times[0]), summarize(times[1])


def run(context: Context) -> dict:
    """Returns ``{"steps_per_loop": K, "rows": [...]}``, one row per step-based schedule."""
    mode = context.mode
    names = mode.schedules or tuple(optlib.scheduler_names())
    rows, skipped = [], []
    num_steps = mode.schedule_steps
    constant_loop = _loop(optlib.adam(1e-3), num_steps)
    context.log(f"schedules: {len(names)} names, {num_steps} Adam steps per jitted loop")
    for name in names:
        try:
            schedule = build_schedule(name)
        except (TypeError, ValueError) as error:  # a newly registered name we have no kwargs for
            skipped.append({"name": name, "reason": f"{type(error).__name__}: {error}"})
            continue
        if schedule is None:
            skipped.append({"name": name, "reason": "metric-driven (see the metric suite)"})
            continue
        schedule_loop = _loop(optlib.adam(schedule), num_steps)
        timed, constant = _time_pair(schedule_loop, constant_loop, mode.schedule_repeats)
        cost = (timed["median_s"] - constant["median_s"]) / num_steps
        rows.append(
            {
                "name": name,
                "drives_momentum": isinstance(schedule, optlib.MomentumSchedule),
                "loop_s": timed["median_s"],
                "constant_loop_s": constant["median_s"],
                "ns_per_step": cost * 1e9,
                "constant_step_ns": constant["median_s"] / num_steps * 1e9,
            }
        )
    context.log("  " + ", ".join(f"{row['name']} {row['ns_per_step']:.0f} ns" for row in rows))
    return {"steps_per_loop": num_steps, "rows": rows, "skipped": skipped}
