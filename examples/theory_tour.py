"""A tour of classic gradient-based optimizers, Newton and BFGS on Rosenbrock and least squares.

Runs gradient descent (full batch, stochastic, mini-batch), momentum, Nesterov, AdaGrad,
RMSProp, AdaDelta, Adam, NAdam (optlib's torch-parity optimizers), Newton's method and BFGS
(``optlib.newton`` / ``optlib.bfgs`` with their line searches) on two 2-D problems, prints a
table (iterations until ``f - f* <= tol``, final ``f - f*``) and writes a PNG with the loss
curves and the trajectories over the contours::

    python examples/theory_tour.py                      # writes out/theory_tour.png
    python examples/theory_tour.py -o tour.png --steps 500

Both problems are finite sums ``f(w) = mean_i f_i(w)``, so the stochastic variants use real
per-sample gradients:

* Rosenbrock: ``f_i(x, y) = (a_i - x)^2 + 100 (y - x^2)^2`` with ``mean(a_i) = 1``, i.e. the
  Rosenbrock function plus the constant ``var(a)``; started at the standard (-1.2, 1).
* Least squares: fit ``t = w x + b`` to generated noisy data (``f_i = (w x_i + b - t_i)^2 / 2``),
  with features away from zero so the problem is ill-conditioned (a long, narrow valley).

Each optimizer's whole run is one jitted ``lax.scan``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optlib

TOLERANCE = 1e-6  # on f - f*
GAP_FLOOR = 1e-18  # f - f* is drawn no lower than this (it reaches 0 within rounding)
NUM_SAMPLES = 256
MINI_BATCH = 16


@dataclass(frozen=True)
class Problem:
    """A finite-sum objective ``mean_i sample_loss(w, data_i)`` on 2 parameters."""

    name: str
    sample_loss: Callable[[jax.Array, jax.Array], jax.Array]
    data: jax.Array
    start: jax.Array
    minimum: float  # f* (float64, from the closed form)
    minimizer: tuple[float, float]
    plot_box: tuple[float, float, float, float]  # x_min, x_max, y_min, y_max
    learning_rates: dict[str, float]

    def loss(self, params: jax.Array, data: jax.Array | None = None) -> jax.Array:
        data = self.data if data is None else data
        return jnp.mean(jax.vmap(self.sample_loss, in_axes=(None, 0))(params, data))


def rosenbrock_problem(rng: np.random.Generator) -> Problem:
    offsets = rng.normal(scale=0.3, size=NUM_SAMPLES)
    offsets = 1.0 + offsets - offsets.mean()  # mean(a_i) = 1: the minimum stays at (1, 1)

    def sample_loss(params, a):
        x, y = params
        return (a - x) ** 2 + 100.0 * (y - x**2) ** 2

    return Problem(
        name="Rosenbrock",
        sample_loss=sample_loss,
        data=jnp.asarray(offsets),
        start=jnp.array([-1.2, 1.0]),
        minimum=float(offsets.var()),
        minimizer=(1.0, 1.0),
        plot_box=(-1.6, 1.6, -0.6, 1.8),
        learning_rates={
            "GD (full batch)": 1.5e-3,
            "SGD": 1.5e-3,
            "mini-batch SGD": 1.5e-3,
            "momentum": 1e-3,
            "Nesterov": 1e-3,
            "AdaGrad": 1.0,
            "RMSProp": 2e-3,
            "AdaDelta": 1.0,
            "Adam": 0.05,
            "NAdam": 0.02,
        },
    )


def least_squares_problem(rng: np.random.Generator) -> Problem:
    features = rng.normal(loc=2.0, scale=0.5, size=NUM_SAMPLES)
    targets = 1.5 * features - 2.0 + rng.normal(scale=0.3, size=NUM_SAMPLES)
    design = np.stack([features, np.ones_like(features)], axis=1)
    solution, *_ = np.linalg.lstsq(design, targets, rcond=None)
    minimum = 0.5 * np.mean((design @ solution - targets) ** 2)

    def sample_loss(params, sample):
        slope, intercept = params
        feature, target = sample
        return 0.5 * (slope * feature + intercept - target) ** 2

    return Problem(
        name="least squares",
        sample_loss=sample_loss,
        data=jnp.asarray(np.stack([features, targets], axis=1)),
        start=jnp.array([-1.0, 2.0]),
        minimum=float(minimum),
        minimizer=(float(solution[0]), float(solution[1])),
        plot_box=(-1.5, 2.5, -3.5, 2.5),
        learning_rates={
            "GD (full batch)": 0.2,
            "SGD": 0.03,
            "mini-batch SGD": 0.05,
            "momentum": 0.1,
            "Nesterov": 0.1,
            "AdaGrad": 1.0,
            "RMSProp": 0.01,
            "AdaDelta": 1.0,
            "Adam": 0.1,
            "NAdam": 0.1,
        },
    )


# (label, optlib factory of the learning rate, samples per gradient: None = all)
FIRST_ORDER: list[tuple[str, Callable[[float], optax.GradientTransformation], int | None]] = [
    ("GD (full batch)", lambda lr: optlib.sgd(learning_rate=lr), None),
    ("SGD", lambda lr: optlib.sgd(learning_rate=lr), 1),
    ("mini-batch SGD", lambda lr: optlib.sgd(learning_rate=lr), MINI_BATCH),
    ("momentum", lambda lr: optlib.sgd(learning_rate=lr, momentum=0.9), None),
    ("Nesterov", lambda lr: optlib.sgd(learning_rate=lr, momentum=0.9, nesterov=True), None),
    ("AdaGrad", lambda lr: optlib.adagrad(learning_rate=lr), None),
    ("RMSProp", lambda lr: optlib.rmsprop(learning_rate=lr), None),
    ("AdaDelta", lambda lr: optlib.adadelta(learning_rate=lr), None),
    ("Adam", lambda lr: optlib.adam(learning_rate=lr), None),
    ("NAdam", lambda lr: optlib.nadam(learning_rate=lr), None),
]
SECOND_ORDER: list[tuple[str, Callable[[], optax.GradientTransformationExtraArgs]]] = [
    ("Newton", optlib.newton),
    ("BFGS", optlib.bfgs),
]
LABELS = [label for label, *_ in FIRST_ORDER] + [label for label, _ in SECOND_ORDER]


def run_first_order(problem: Problem, optimizer, batch_size: int | None, steps: int, seed: int):
    """``steps`` updates in one ``lax.scan``; returns the ``steps + 1`` iterates and losses.

    ``batch_size=None`` uses the full-batch gradient; otherwise each step averages the
    per-sample gradients of ``batch_size`` samples drawn with replacement.
    """
    samples = np.random.default_rng(seed).integers(
        0, problem.data.shape[0], size=(steps, batch_size or 0)
    )

    def gradient(params, indices):
        if batch_size is None:
            return jax.grad(problem.loss)(params)
        return jax.grad(problem.loss)(params, problem.data[indices])

    def step(carry, indices):
        params, state = carry
        updates, state = optimizer.update(gradient(params, indices), state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), params

    @jax.jit
    def run(params, samples):
        _, path = jax.lax.scan(step, (params, optimizer.init(params)), samples)
        path = jnp.concatenate([params[None], path])
        return path, jax.vmap(problem.loss)(path)

    return run(problem.start, samples)


def run_second_order(problem: Problem, solver, steps: int, gtol: float = 1e-5):
    """Line-search driven ``steps`` updates; stops moving once ``||grad|| < gtol``."""
    objective = problem.loss
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry, _):
        params, state, value, grad = carry
        updates, new_state = solver.update(
            grad, state, params, value=value, grad=grad, value_fn=objective
        )
        new_params = optax.apply_updates(params, updates)
        new_value, new_grad = value_and_grad(new_params, state=new_state)
        # Converged (or broken down): stay put, so the path and losses stop there.
        moving = (optax.tree.norm(grad) >= gtol) & jnp.isfinite(new_value)
        new_carry = (new_params, new_state, new_value, new_grad)
        carry = jax.tree.map(lambda new, old: jnp.where(moving, new, old), new_carry, carry)
        return carry, carry[0]

    @jax.jit
    def run(params):
        value, grad = jax.value_and_grad(objective)(params)
        carry = (params, solver.init(params), value, grad)
        _, path = jax.lax.scan(step, carry, None, length=steps)
        path = jnp.concatenate([params[None], path])
        return path, jax.vmap(objective)(path)

    return run(problem.start)


def iterations_to_tolerance(gaps: np.ndarray) -> int | None:
    """The first update count ``k`` with ``f(w_k) - f* <= TOLERANCE`` (None if never)."""
    reached = np.flatnonzero(gaps <= TOLERANCE)
    return int(reached[0]) if reached.size else None


def run_problem(problem: Problem, steps: int, second_order_steps: int, seed: int):
    """``{label: (path, f - f*)}`` for every optimizer on ``problem``."""
    results = {}
    for label, factory, batch_size in FIRST_ORDER:
        optimizer = factory(problem.learning_rates[label])
        path, losses = run_first_order(problem, optimizer, batch_size, steps, seed)
        results[label] = (np.asarray(path), np.asarray(losses, np.float64) - problem.minimum)
    for label, factory in SECOND_ORDER:
        path, losses = run_second_order(problem, factory(), second_order_steps)
        results[label] = (np.asarray(path), np.asarray(losses, np.float64) - problem.minimum)
    return results


def format_table(problems: list[Problem], results: list[dict], budgets: dict[str, int]) -> str:
    """One row per optimizer; per problem: iterations to tolerance and final ``f - f*``."""
    header = f"{'optimizer':<17}" + "".join(
        f" | {problem.name + ' iters':>20} {'final f-f*':>11}" for problem in problems
    )
    lines = [header, "-" * len(header)]
    for label in LABELS:
        cells = []
        for problem_results in results:
            _, gaps = problem_results[label]
            reached = iterations_to_tolerance(gaps)
            iters = str(reached) if reached is not None else f"> {budgets[label]}"
            cells.append(f" | {iters:>20} {max(gaps[-1], 0.0):>11.3e}")
        lines.append(f"{label:<17}" + "".join(cells))
    return "\n".join(lines)


def plot(problems: list[Problem], results: list[dict], output: Path) -> None:
    """Loss curves (left) and trajectories over contours (right), one row per problem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(problems), 2, figsize=(15, 6 * len(problems)))
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, len(LABELS)))
    for row, (problem, problem_results) in enumerate(zip(problems, results)):
        curves, paths = axes[row]
        x_min, x_max, y_min, y_max = problem.plot_box
        grid_x, grid_y = np.meshgrid(np.linspace(x_min, x_max, 150), np.linspace(y_min, y_max, 150))
        grid = jnp.asarray(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1))
        surface = np.asarray(jax.jit(jax.vmap(problem.loss))(grid)).reshape(grid_x.shape)
        surface = np.maximum(surface - problem.minimum, GAP_FLOOR)
        paths.contour(grid_x, grid_y, np.log10(surface), levels=25, cmap="Greys", linewidths=0.6)
        for label, color in zip(LABELS, colors):
            path, gaps = problem_results[label]
            curves.semilogy(np.maximum(gaps, GAP_FLOOR), color=color, label=label)
            paths.plot(path[:, 0], path[:, 1], ".-", color=color, markersize=2, linewidth=0.8)
        paths.plot(*problem.minimizer, "r*", markersize=14)
        paths.plot(*np.asarray(problem.start), "ko", markersize=6)
        paths.set(xlim=(x_min, x_max), ylim=(y_min, y_max), title=f"{problem.name}: trajectories")
        curves.axhline(TOLERANCE, color="k", linestyle=":", linewidth=0.8)
        curves.set_xscale("symlog", linthresh=1.0)
        curves.set(xlim=(0, None), xlabel="iteration", ylabel="f - f*")
        curves.set_title(f"{problem.name}: loss")
        curves.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=90)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("out/theory_tour.png"),
        help="where to write the PNG (default: out/theory_tour.png)",
    )
    parser.add_argument(
        "--steps", type=int, default=3000, help="updates per first-order optimizer (default: 3000)"
    )
    parser.add_argument(
        "--second-order-steps",
        type=int,
        default=100,
        help="updates for Newton and BFGS (default: 100)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.second_order_steps < 1:
        parser.error("--steps and --second-order-steps must be >= 1")

    started = time.perf_counter()
    with jax.enable_x64(True):  # float64 so the tolerance sits far above rounding noise
        rng = np.random.default_rng(args.seed)
        problems = [rosenbrock_problem(rng), least_squares_problem(rng)]
        results = [
            run_problem(problem, args.steps, args.second_order_steps, args.seed)
            for problem in problems
        ]
        budgets = {label: args.steps for label, *_ in FIRST_ORDER}
        budgets.update({label: args.second_order_steps for label, _ in SECOND_ORDER})
        print(f"iterations until f - f* <= {TOLERANCE:g} (float64; final f - f* after the budget)")
        print(format_table(problems, results, budgets))
        plot(problems, results, args.output)
    print(f"wrote {args.output} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
