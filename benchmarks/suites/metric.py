"""Metric-driven schedulers: per-step overhead and host transfers.

On each problem (and on a 16-float parameter, which shows the fixed cost per step), three
jitted Adam steps run in interleaved rounds, all taking the same inputs
``(params, state, grads, metric)``:

* ``adam``: ``optlib.adam(1e-3)`` (the metric is ignored);
* ``adam+reduce_lr_on_plateau``: ``optlib.adam(optlib.reduce_lr_on_plateau(1e-3))`` with
  ``update(..., value=metric)``;
* ``adam+greedy_lr``: ``optlib.adam(optlib.greedy_lr(1e-3))`` likewise.

The overhead is the median over rounds of each variant's time over the plain Adam step's in
the same round (``timing.paired_ratio``), minus one.

The timed steps run under ``jax.transfer_guard("disallow")``: any host<->device transfer in a
step raises, and is counted (then the step is redone outside the guard). The compiled step is
also searched for host callbacks, infeed/outfeed and send/recv. A positive control (a numpy
argument under the same guard) checks that the guard does catch transfers here.
"""

from __future__ import annotations

import gc
import re
import statistics

import jax
import jax.numpy as jnp
import numpy as np

import optlib
from benchmarks.context import Context
from benchmarks.problems import Problem
from benchmarks.timing import JaxStepper, interleaved, paired_ratio

_HOST_OPS = re.compile(r"callback|outfeed|infeed|\bsend\b|\brecv\b|host", re.IGNORECASE)
_METADATA = re.compile(r"metadata=\{[^}]*\}")


def _variants():
    return {
        "adam": lambda: optlib.adam(1e-3),
        "adam+reduce_lr_on_plateau": lambda: optlib.adam(optlib.reduce_lr_on_plateau(1e-3)),
        "adam+greedy_lr": lambda: optlib.adam(optlib.greedy_lr(1e-3)),
    }


def _host_ops_in_hlo(stepper: JaxStepper) -> int:
    text = stepper.compiled.as_text()
    instructions = (_METADATA.sub("", line) for line in text.splitlines() if "=" in line)
    return sum(1 for line in instructions if _HOST_OPS.search(line))


def _guard_catches_transfers() -> bool:
    add_one = jax.jit(lambda x: x + 1)
    add_one(jnp.ones(3)).block_until_ready()
    try:
        with jax.transfer_guard("disallow"):
            add_one(np.ones(3, np.float32)).block_until_ready()
    except RuntimeError as error:
        return "Disallowed" in str(error)
    return False


def _guarded_call(stepper) -> int:
    """One step under the guard; returns the number of refused transfers (0 or 1)."""
    try:
        with jax.transfer_guard("disallow"):
            stepper()
        return 0
    except RuntimeError as error:
        if "Disallowed" not in str(error):
            raise
        stepper()
        return 1


TINY_STEPS = 300


def _tiny_problem() -> Problem:
    params = {"w": np.ones((16,), np.float32)}
    return Problem("tiny", "16 floats (fixed per-step cost)", params, {"w": params["w"] * 1e-2})


def run(context: Context) -> dict:
    """Returns ``{"guard_catches_transfers": bool, "rows": [...]}``.

    Besides the mode's problems, a 16-float parameter shows the fixed cost per step (the
    dispatch of each state array), which the overhead percentages of large problems hide.
    """
    rows = []
    problems = [p for p in context.problems if p.name in context.mode.metric_problems]
    for problem in problems + [_tiny_problem()]:
        steps = TINY_STEPS if problem.name == "tiny" else context.mode.steps
        grads = jax.device_put(problem.grads)
        metric = jax.device_put(np.float32(1.0))
        context.log(f"metric: adam with and without metric-driven lr on {problem.description}")
        steppers = {
            name: JaxStepper(build(), problem.params, grads, metric)
            for name, build in _variants().items()
        }
        refused = {name: 0 for name in steppers}
        warm = {name: 0 for name in steppers}

        def guarded(name, stepper, warm=warm, refused=refused):
            if warm[name] < context.mode.warmup:  # compile and warm up outside the guard
                warm[name] += 1
                stepper()
            else:
                refused[name] += _guarded_call(stepper)

        times = interleaved(steppers, context.mode.warmup, steps, call=guarded)
        base = times["adam"]["samples_s"]
        for name, stepper in steppers.items():
            summary = times[name]
            # Paired with the plain Adam step of the same round (see timing.paired_ratio).
            paired = paired_ratio(summary["samples_s"], base)
            extra = statistics.median(a - b for a, b in zip(summary["samples_s"], base))
            rows.append(
                {
                    "problem": problem.name,
                    "variant": name,
                    "times": summary,
                    "overhead": paired["ratio"] - 1,
                    "overhead_us": extra * 1e6,
                    "paired": paired,
                    "state_arrays": len(jax.tree.leaves(stepper.state)),
                    "guarded_steps": steps,
                    "host_transfers_per_step": refused[name] / steps,
                    "host_ops_in_compiled_step": _host_ops_in_hlo(stepper),
                }
            )
        context.log(
            "  "
            + ", ".join(
                f"{row['variant']} {row['overhead'] * 100:+.1f}% "
                f"({row['host_transfers_per_step']:.0f} transfers)"
                for row in rows[-len(steppers) :]
            )
        )
        del steppers
        gc.collect()
    return {"guard_catches_transfers": _guard_catches_transfers(), "rows": rows}
