"""Compile time against the number of leaves (10, 100, 1000), optlib against optax.

For each size, a tree of small leaves (2/3 ``32x64`` matrices, 1/3 vectors) and a fresh
optimizer (so that nothing is cached) are traced and lowered (``jax.jit(step).lower``), then
compiled by XLA (``.compile()``); both times are kept. optlib and optax alternate within each
repeat, and the best of the repeats is reported (on a shared machine load only ever adds
time; every repeat is kept in the JSON). Each repeat also gives a paired ratio (optlib and
optax compiled back to back), and a sign test over the repeats says whether optlib is
measurably slower to compile.
"""

from __future__ import annotations

import time

import jax

from benchmarks.context import Context
from benchmarks.problems import leaves_tree
from benchmarks.timing import optimizer_step, paired_ratio
from benchmarks.twins import TWINS_BY_NAME


def _compile_times(tx, params) -> tuple[float, float]:
    state = jax.eval_shape(tx.init, params)
    start = time.perf_counter()
    lowered = jax.jit(optimizer_step(tx), donate_argnums=(0, 1)).lower(params, state, params)
    lowered_at = time.perf_counter()
    lowered.compile()
    return lowered_at - start, time.perf_counter() - lowered_at


def run(context: Context) -> dict:
    """Returns ``{"rows": [...]}``, one row per (leaves, optimizer)."""
    rows = []
    mode = context.mode
    for num_leaves, repeats in zip(mode.compile_leaves, mode.compile_repeats):
        params = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), leaves_tree(num_leaves)
        )
        for name in mode.compile_optimizers:
            twin = TWINS_BY_NAME[name]
            context.log(f"compile: {name}, {num_leaves} leaves, {repeats} repeat(s)")
            samples = {"optlib": [], "optax": []}
            for _ in range(repeats):
                samples["optlib"].append(_compile_times(twin.optlib(), params))
                samples["optax"].append(_compile_times(twin.optax(), params))
            row = {"leaves": num_leaves, "optimizer": name, "repeats": repeats}
            for impl, pairs in samples.items():
                best = min(pairs, key=sum)  # load only ever adds time: keep the best repeat
                row[impl] = {
                    "total_s": sum(best),
                    "trace_lower_s": best[0],
                    "xla_compile_s": best[1],
                    "all_totals_s": [sum(pair) for pair in pairs],
                }
            row["optlib_over_optax"] = row["optlib"]["total_s"] / row["optax"]["total_s"]
            row["paired"] = paired_ratio(
                row["optlib"]["all_totals_s"], row["optax"]["all_totals_s"]
            )
            rows.append(row)
            context.log(
                f"  optlib {row['optlib']['total_s']:.2f} s, optax {row['optax']['total_s']:.2f} s"
            )
    return {"rows": rows}
