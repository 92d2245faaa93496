"""Steppers (one optimizer step per call, blocking) and interleaved timing.

Every measurement here times one step per call with ``time.perf_counter`` after blocking on
the result, and reports the median. The implementations being compared are timed in
*interleaved rounds* (A, B, C, A, B, C, ...): on a shared machine the load changes over
seconds, and interleaving makes every implementation see the same load, so their ratios stay
meaningful even when the absolute times drift.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def tree_nbytes(tree: Any) -> int:
    """Bytes of all array leaves of ``tree`` (concrete arrays or ShapeDtypeStructs)."""
    return sum(
        int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
        for leaf in jax.tree.leaves(tree)
        if hasattr(leaf, "shape")
    )


def device_tree(tree: Any) -> Any:
    """A fresh device copy of a numpy tree (safe to donate)."""
    return jax.tree.map(lambda a: jnp.array(a, copy=True), tree)


def optimizer_step(tx: optax.GradientTransformation, with_metric: bool = False) -> Callable:
    """``(params, state, grads[, metric]) -> (params, state)``: one update, applied.

    With ``with_metric`` the metric is passed as ``value=`` (metric-driven schedulers);
    the step without it still takes the metric argument, so both compile the same inputs.
    """
    if with_metric:

        def step(params, state, grads, metric):
            updates, state = tx.update(grads, state, params, value=metric)
            return optax.apply_updates(params, updates), state

    else:

        def step(params, state, grads, metric=None):
            del metric
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

    return step


class JaxStepper:
    """Runs a jitted optimizer step with donated params and state, one step per call.

    The step is compiled once, ahead of time (``compile_s``); ``compiled`` is kept for
    inspection (``compiled.as_text()``).

    Args:
      tx: the optimizer.
      params: numpy tree (copied to the device).
      grads: device tree of gradients (shared, not donated).
      metric: a device scalar passed as ``value=`` when not None.
      like: another stepper of the same optimizer whose compiled program this one reuses
        (its own params and state): the A/A control times one program on two sets of buffers.
    """

    def __init__(self, tx, params, grads, metric=None, like: JaxStepper | None = None):
        self.params = device_tree(params)
        self.state = tx.init(self.params)
        self.grads = grads
        self.metric = metric
        self.first_call_s = None
        if like is not None:
            self.compiled, self.compile_s = like.compiled, 0.0
            return
        step = jax.jit(optimizer_step(tx, metric is not None), donate_argnums=(0, 1))
        start = time.perf_counter()
        self.compiled = step.lower(self.params, self.state, grads, metric).compile()
        self.compile_s = time.perf_counter() - start

    def __call__(self) -> None:
        start = time.perf_counter()
        self.params, self.state = self.compiled(self.params, self.state, self.grads, self.metric)
        jax.block_until_ready((self.params, self.state))
        if self.first_call_s is None:
            self.first_call_s = time.perf_counter() - start


class CopyStepper:
    """The memory-bandwidth reference: ``x <- -x`` on one flat buffer, jitted, donated.

    It reads and writes every byte once (``2 * nbytes`` per call), the least traffic any
    in-place update of a buffer of that size can have. ``-x`` rather than ``x * 1.0`` so that
    XLA cannot simplify the computation away.
    """

    def __init__(self, num_elements: int):
        self.buffer = jnp.ones((num_elements,), jnp.float32)
        self.step = jax.jit(jnp.negative, donate_argnums=0)
        self.bytes_moved = 2 * self.buffer.nbytes
        self.first_call_s = None

    def __call__(self) -> None:
        self.buffer = self.step(self.buffer)
        self.buffer.block_until_ready()


class TorchStepper:
    """``optimizer.step()`` of a torch optimizer on copies of the problem (``.grad`` set)."""

    def __init__(self, build, params: list[np.ndarray], grads: list[np.ndarray], device="cpu"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.params = []
        for value, grad in zip(params, grads):
            tensor = torch.tensor(value, device=self.device, requires_grad=True)
            tensor.grad = torch.tensor(grad, device=self.device)
            self.params.append(tensor)
        self.optimizer = build(self.params)
        self.first_call_s = None

    def __call__(self) -> None:
        start = time.perf_counter()
        with self.torch.no_grad():
            self.optimizer.step()
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
        if self.first_call_s is None:
            self.first_call_s = time.perf_counter() - start

    def state_bytes(self) -> int:
        return sum(
            value.numel() * value.element_size()
            for per_param in self.optimizer.state.values()
            for value in per_param.values()
            if isinstance(value, self.torch.Tensor)
        )


def summarize(times: list[float]) -> dict[str, float]:
    """Median, quartiles and minimum of per-step times (seconds)."""
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {
        "median_s": statistics.median(times),
        "q25_s": quartiles[0],
        "q75_s": quartiles[2],
        "min_s": min(times),
        "steps": len(times),
    }


def sign_test_p(slower: int, rounds: int) -> float:
    """One-sided sign test: the chance of ``slower`` or more heads in ``rounds`` fair tosses.

    Under "both implementations take the same time", each paired round is slower for the
    first one with probability 1/2; a small value means the first one is measurably slower.
    """
    return sum(math.comb(rounds, k) for k in range(slower, rounds + 1)) / 2**rounds


def paired_ratio(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Median over rounds of ``numerator[i] / denominator[i]``, timed in the same round.

    Pairing within a round cancels the load drifts that a ratio of two medians keeps (on a
    shared 2-core machine the same program's median moves by ~10 % between runs).

    Returns:
      ``{"ratio", "rounds", "slower_rounds", "p_slower"}``: the median ratio, the number of
      paired rounds, how many of them had ``numerator`` slower, and the sign test's p-value
      of that count (< 0.05: measurably slower).
    """
    ratios = [a / b for a, b in zip(numerator, denominator)]
    slower = sum(ratio > 1 for ratio in ratios)
    return {
        "ratio": statistics.median(ratios),
        "rounds": len(ratios),
        "slower_rounds": slower,
        "p_slower": sign_test_p(slower, len(ratios)),
    }


def interleaved(
    steppers: dict[str, Callable[[], None]],
    warmup: int,
    steps: int,
    max_steps: dict[str, int] | None = None,
    call: Callable[[str, Callable[[], None]], None] | None = None,
) -> dict:
    """Times ``steps`` calls of each stepper in interleaved rounds after ``warmup`` calls.

    The order rotates from round to round, so that each stepper is equally often the first
    one of a round: the step that runs right after another program's (torch's threads still
    spinning, caches holding another buffer) is measurably slower, and a fixed order would
    charge that to one implementation. ``max_steps`` caps the timed calls of slow steppers
    (e.g. torch on the largest problem): they take part in the first rounds only.

    Args:
      steppers: name -> one blocking step.
      warmup: untimed calls of each stepper first.
      steps: timed rounds.
      max_steps: per-name cap on the timed calls.
      call: runs one step, ``call(name, stepper)`` (default ``stepper()``), e.g. under a guard.

    Returns:
      ``{name: summarize(times)}`` with the per-round times in ``samples_s`` (round order,
      for ``paired_ratio``), plus ``compile_s`` and ``first_call_s`` for steppers that record
      them.
    """
    run = call or (lambda name, stepper: stepper())
    for _ in range(warmup):
        for name, stepper in steppers.items():
            run(name, stepper)
    names = list(steppers)
    limits = {name: min(steps, (max_steps or {}).get(name, steps)) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(steps):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if len(times[name]) >= limits[name]:
                continue
            start = time.perf_counter()
            run(name, steppers[name])
            times[name].append(time.perf_counter() - start)
    results = {}
    for name, stepper in steppers.items():
        results[name] = summarize(times[name]) | {"samples_s": times[name]}
        for key in ("compile_s", "first_call_s"):
            value = getattr(stepper, key, None)
            if value is not None:
                results[name][key] = value
    return results
