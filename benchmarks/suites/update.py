"""Update time of every optlib optimizer against its optax twin and torch, and the roofline.

For each problem and optimizer, five steppers run in interleaved rounds: optlib, optax, a
second optax (the A/A control), torch (``foreach=True``) and the copy reference (``x <- -x``
on one flat buffer as large as the problem). Each JAX step is one jitted ``update`` +
``apply_updates`` with params and state donated; gradients are fixed inputs.

**optlib / optax** is the median over rounds of the two times measured in the same round
(``timing.paired_ratio``), with a sign test of how often optlib was the slower one. The A/A
control times optax's compiled step on a second set of buffers in the same rounds: its ratio
is what noise alone does to a ratio of identical programs on this machine.

**Roofline.** An update must at least read params, grads and state and write params and
state: ``bytes = 2 * params + grads + 2 * state`` (each implementation's own state). The
achieved bandwidth ``bytes / time`` divided by the copy bandwidth ``2 * buffer / time_copy``
measured in the same rounds is the fraction of the roofline; 1.0 means the update runs as
fast as a copy of its data. (Adafactor's reductions need more than one pass over the
gradient, so its floor is higher than this one-pass count.)

**What XLA really moves.** The compiled program's own traffic (``benchmarks.hlo``: every
kernel's operands and result) over the one-pass bytes says how far the program is from one
pass (XLA:CPU has no multi-output fusion: Adam's three outputs are three loops, 1.43x the
one-pass bytes); its bandwidth over the copy's says whether the program is memory-bound
(~1) or compute-bound (< 1).
"""

from __future__ import annotations

import gc

import jax

from benchmarks.context import Context
from benchmarks.hlo import entry_traffic
from benchmarks.problems import tree_leaves
from benchmarks.timing import (
    CopyStepper,
    JaxStepper,
    TorchStepper,
    interleaved,
    paired_ratio,
    tree_nbytes,
)


def _bandwidth_fraction(bytes_moved: int, seconds: float, copy_bandwidth: float) -> float:
    return bytes_moved / seconds / copy_bandwidth


def run(context: Context) -> dict:
    """Returns ``{"rows": [...], "copy_bandwidth_gbs": {problem: GB/s}}``."""
    rows = []
    copy_bandwidths: dict[str, list[float]] = {}
    for problem in context.problems:
        twins = [twin for twin in context.twins if problem.name in twin.problems]
        if not twins:
            continue
        grads = jax.device_put(problem.grads)
        for twin in twins:
            context.log(f"update: {twin.name} on {problem.description}")
            optax_stepper = JaxStepper(twin.optax(), problem.params, grads)
            steppers = {
                "optlib": JaxStepper(twin.optlib(), problem.params, grads),
                "optax": optax_stepper,
                "optax_again": JaxStepper(twin.optax(), problem.params, grads, like=optax_stepper),
            }
            if context.torch_device is not None:
                steppers["torch"] = TorchStepper(
                    twin.torch,
                    tree_leaves(problem.params),
                    tree_leaves(problem.grads),
                    context.torch_device,
                )
            copy = CopyStepper(problem.num_params)
            steppers["copy"] = copy
            times = interleaved(
                steppers,
                context.mode.warmup,
                context.mode.steps,
                max_steps={"torch": context.mode.torch_steps},
            )

            copy_bandwidth = copy.bytes_moved / times["copy"]["median_s"]
            copy_bandwidths.setdefault(problem.name, []).append(copy_bandwidth)
            param_bytes = problem.nbytes
            state_bytes = {
                "optlib": tree_nbytes(steppers["optlib"].state),
                "optax": tree_nbytes(steppers["optax"].state),
            }
            if "torch" in steppers:
                state_bytes["torch"] = steppers["torch"].state_bytes()
            bytes_per_update = {
                impl: 3 * param_bytes + 2 * state for impl, state in state_bytes.items()
            }
            impls = {name: times[name] for name in steppers if name not in ("copy", "optax_again")}
            xla_bytes = {
                impl: entry_traffic(steppers[impl].compiled.as_text())["bytes"]
                for impl in ("optlib", "optax")
            }
            optlib_time = times["optlib"]["median_s"]
            optlib_vs_optax = paired_ratio(
                times["optlib"]["samples_s"], times["optax"]["samples_s"]
            )
            control = paired_ratio(times["optax_again"]["samples_s"], times["optax"]["samples_s"])
            row = {
                "problem": problem.name,
                "optimizer": twin.name,
                "same_math": twin.same_math,
                "note": twin.note,
                "stand_in": twin.stand_in,
                "torch_label": twin.torch_label if "torch" in steppers else None,
                "times": impls,
                "copy": times["copy"],
                "copy_bandwidth_gbs": copy_bandwidth / 1e9,
                "param_bytes": param_bytes,
                "state_bytes": state_bytes,
                "bytes_per_update": bytes_per_update,
                "roofline": {
                    impl: _bandwidth_fraction(
                        bytes_per_update[impl], times[impl]["median_s"], copy_bandwidth
                    )
                    for impl in impls
                },
                # What the compiled program really moves (XLA:CPU writes each output in its
                # own loop), and its bandwidth against the copy's: ~1 = memory-bound there.
                "xla_bytes": xla_bytes,
                "xla_over_one_pass": {
                    impl: xla_bytes[impl] / bytes_per_update[impl] for impl in xla_bytes
                },
                "program_bandwidth": {
                    impl: _bandwidth_fraction(
                        xla_bytes[impl], times[impl]["median_s"], copy_bandwidth
                    )
                    for impl in xla_bytes
                },
                "optlib_over_optax": optlib_vs_optax["ratio"],
                "optlib_vs_optax": optlib_vs_optax,
                "optlib_over_optax_of_medians": optlib_time / times["optax"]["median_s"],
                "aa_control": control,  # optax against a second optax: noise alone
            }
            if "torch" in times:
                row["torch_over_optlib"] = times["torch"]["median_s"] / optlib_time
            rows.append(row)
            context.log(
                f"  optlib {optlib_time * 1e3:.2f} ms, optax {times['optax']['median_s'] * 1e3:.2f}"
                f" ms, torch {times.get('torch', {}).get('median_s', float('nan')) * 1e3:.2f} ms,"
                f" roofline {row['roofline']['optlib']:.2f},"
                f" optlib/optax {row['optlib_over_optax']:.3f}"
                f" (A/A {control['ratio']:.3f})"
            )
            del steppers, copy
            gc.collect()
    return {
        "rows": rows,
        "copy_bandwidth_gbs": {
            name: sorted(values)[len(values) // 2] / 1e9 for name, values in copy_bandwidths.items()
        },
    }
