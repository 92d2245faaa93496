"""L-BFGS: optlib.lbfgs against optax.lbfgs and torch.optim.LBFGS on one least-squares problem.

The problem is ``f(w) = |A w - b|^2 / (2 m)`` with ``A`` of shape ``(m, n)``,
``m = matrix``, ``n = matrix // 4`` of the mode, float32. One *step* is what torch's
``optimizer.step(closure)`` does with ``max_iter=20, history_size=10,
line_search_fn="strong_wolfe"``: up to 20 L-BFGS iterations.

* ``optlib``: ``optlib.lbfgs`` with that configuration, one jitted ``init`` + ``update`` +
  ``apply_updates`` per step; evaluations from ``state.func_evals``.
* ``optax``: ``optax.lbfgs(memory_size=10)`` (its zoom line search, also strong Wolfe)
  iterated 20 times in one jitted ``fori_loop`` per step, the value and gradient reused
  from the line search's state as optax documents; evaluations: its line-search steps. Not
  the same iterates (a different line search and first step), the same kind of work.
* ``torch``: ``torch.optim.LBFGS`` with that configuration, ``step(closure)``; evaluations
  from ``state["func_evals"]``.

Per step: the median time of a step (implementations interleaved in rounds) and of one
objective evaluation (step time / evaluations in that step, median over rounds). The
problem is started afresh for every round so that each step does the same work (an L-BFGS
run at its optimum stops at once).
"""

from __future__ import annotations

import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optlib
from benchmarks.context import Context
from benchmarks.timing import interleaved, summarize

MAX_ITER = 20
HISTORY_SIZE = 10


def _problem(matrix: int):
    rng = np.random.default_rng(0)
    m, n = matrix, max(2, matrix // 4)
    a = (rng.normal(size=(m, n)) / np.sqrt(n)).astype(np.float32)
    b = rng.normal(size=(m,)).astype(np.float32)
    return a, b, np.zeros(n, np.float32)


def _objective(params, a, b):
    residual = a @ params["w"] - b
    return 0.5 * jnp.mean(residual**2)


class _Stepper:
    """One step from the initial point per call; ``evals`` holds the evaluations per call."""

    def __init__(self):
        self.evals: list[int] = []


class _OptlibStepper(_Stepper):
    def __init__(self, a, b, w0):
        super().__init__()
        self.tx = optlib.lbfgs(
            max_iter=MAX_ITER, history_size=HISTORY_SIZE, line_search_fn="strong_wolfe"
        )
        self.a, self.b, self.w0 = jnp.asarray(a), jnp.asarray(b), w0

        def step(params, a, b):  # from a fresh state, as a new torch optimizer
            state = self.tx.init(params)
            value, grads = jax.value_and_grad(_objective)(params, a, b)
            updates, state = self.tx.update(
                grads, state, params, value=value, grad=grads, value_fn=_objective, a=a, b=b
            )
            return optax.apply_updates(params, updates), state

        params = {"w": jnp.asarray(w0)}
        self.step = jax.jit(step, donate_argnums=0).lower(params, self.a, self.b).compile()

    def __call__(self) -> None:
        params, state = self.step({"w": jnp.array(self.w0)}, self.a, self.b)
        jax.block_until_ready(params)
        self.evals.append(int(state["lbfgs"].func_evals))


class _OptaxStepper(_Stepper):
    def __init__(self, a, b, w0):
        super().__init__()
        tx = optax.lbfgs(memory_size=HISTORY_SIZE)
        self.a, self.b, self.w0 = jnp.asarray(a), jnp.asarray(b), w0

        def run(params, a, b):
            value_and_grad = optax.value_and_grad_from_state(_objective)

            def iteration(_, carry):
                params, state, evals = carry
                value, grad = value_and_grad(params, a, b, state=state)
                updates, state = tx.update(
                    grad, state, params, value=value, grad=grad, value_fn=_objective, a=a, b=b
                )
                linesearch = optax.tree.get(state, "info")
                return (
                    optax.apply_updates(params, updates),
                    state,
                    evals + (linesearch.num_linesearch_steps),
                )

            start = (params, tx.init(params), jnp.ones([], jnp.int32))  # the first evaluation
            params, _, evals = jax.lax.fori_loop(0, MAX_ITER, iteration, start)
            return params, evals

        self.run = jax.jit(run).lower({"w": jnp.asarray(w0)}, self.a, self.b).compile()

    def __call__(self) -> None:
        params, evals = self.run({"w": jnp.array(self.w0)}, self.a, self.b)
        jax.block_until_ready(params)
        self.evals.append(int(evals))


class _TorchStepper(_Stepper):
    def __init__(self, a, b, w0, device):
        super().__init__()
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.a = torch.tensor(a, device=self.device)
        self.b = torch.tensor(b, device=self.device)
        self.w0 = w0

    def __call__(self) -> None:
        torch = self.torch
        w = torch.tensor(self.w0, device=self.device, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [w], max_iter=MAX_ITER, history_size=HISTORY_SIZE, line_search_fn="strong_wolfe"
        )

        def closure():
            optimizer.zero_grad()
            loss = 0.5 * torch.mean((self.a @ w - self.b) ** 2)
            loss.backward()
            return loss

        optimizer.step(closure)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.evals.append(int(optimizer.state[w]["func_evals"]))


def run(context: Context) -> dict:
    """Returns ``{"problem": {...}, "rows": [...]}``, one row per implementation."""
    a, b, w0 = _problem(context.mode.matrix)
    context.log(f"lbfgs: least squares {a.shape[0]} x {a.shape[1]}")
    steppers: dict[str, _Stepper] = {
        "optlib": _OptlibStepper(a, b, w0),
        "optax": _OptaxStepper(a, b, w0),
    }
    if context.torch_device is not None:
        steppers["torch"] = _TorchStepper(a, b, w0, context.torch_device)
    times = interleaved(steppers, context.mode.warmup, context.mode.steps)
    rows = []
    for name, stepper in steppers.items():
        samples = times[name]["samples_s"]
        evals = stepper.evals[-len(samples) :]
        per_eval = [seconds / count for seconds, count in zip(samples, evals)]
        rows.append(
            {
                "implementation": name,
                "times": times[name],
                "evals_per_step": statistics.median(evals),
                "per_eval": summarize(per_eval),
            }
        )
    context.log(
        "  "
        + ", ".join(
            f"{row['implementation']} {row['times']['median_s'] * 1e3:.2f} ms/step "
            f"({row['evals_per_step']:g} evals)"
            for row in rows
        )
    )
    return {
        "problem": {"m": int(a.shape[0]), "n": int(a.shape[1])},
        "max_iter": MAX_ITER,
        "history_size": HISTORY_SIZE,
        "rows": rows,
    }
