"""optlib.lbfgs against torch.optim.LBFGS: one ``update`` is one ``step(closure)``.

Every case runs the same problem in torch (float64, a real closure loop) and in optlib (one
jitted ``lax.scan`` over the outer steps, all cases in one compile). After every outer step
the parameters agree to 1e-9 relative, and the total numbers of objective evaluations
(``state["func_evals"]``) and of inner iterations (``state["n_iter"]``) are equal. Problems:
2-D and 10-D Rosenbrock, a least-squares problem and a small MLP on generated data, for
``line_search_fn=None`` and ``"strong_wolfe"`` with several ``max_iter`` / ``max_eval`` /
``history_size`` / tolerances, a schedule as ``lr``. The early-stopping cases check that torch
does stop before ``max_iter`` there (on ``tolerance_grad``, ``tolerance_change``, a step
that starts at an optimum), so equal counts mean the same inner iteration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from parity import OPTIMIZER_RTOL_F32, torch

import optlib

RTOL_F64 = 1e-9


# ---------------------------------------------------------------------------- problems
# Each objective is written once for both libraries (``lib`` is jax.numpy or torch).


def rosenbrock(params, lib):
    x = params["x"]
    return lib.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def least_squares(params, lib, a, b):
    residual = a @ params["w"] + params["b"] - b
    return 0.5 * lib.sum(residual**2)


def mlp(params, lib, x, y):
    hidden = lib.tanh(x @ params["w1"] + params["b1"])
    return lib.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)


def problems() -> dict[str, tuple[Callable, dict[str, np.ndarray], tuple]]:
    """``{name: (objective(params, lib, *data), initial params, data)}`` in float64."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 5))
    ls_data = (a, a @ rng.normal(size=(5, 2)) + 0.1 * rng.normal(size=(20, 2)))
    x = rng.normal(size=(16, 3))
    mlp_data = (x, np.sin(x @ rng.normal(size=(3, 2))))
    return {
        "rosenbrock2": (rosenbrock, {"x": np.array([-1.2, 1.0])}, ()),
        "rosenbrock10": (rosenbrock, {"x": np.linspace(-1.5, 1.2, 10)}, ()),
        "least_squares": (
            least_squares,
            {"w": np.zeros((5, 2)), "b": np.zeros(2)},
            ls_data,
        ),
        "mlp": (
            mlp,
            {
                "w1": rng.normal(size=(3, 6)) / np.sqrt(3),
                "b1": np.zeros(6),
                "w2": rng.normal(size=(6, 2)) / np.sqrt(6),
                "b2": np.zeros(2),
            },
            mlp_data,
        ),
    }


PROBLEMS = problems()


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    problem: str
    kwargs: dict  # torch's
    steps: int = 6
    stops_early: bool = False  # torch must stop some step before max_iter / max_eval
    gamma: float | None = None  # lr follows torch's ExponentialLR(gamma)


CASES = (
    Case("rosenbrock2_fixed_step", "rosenbrock2", dict(lr=0.5)),
    Case("rosenbrock2_strong_wolfe", "rosenbrock2", dict(line_search_fn="strong_wolfe")),
    Case(
        "rosenbrock10_strong_wolfe_short_history",
        "rosenbrock10",
        dict(lr=0.5, max_iter=7, history_size=3, line_search_fn="strong_wolfe"),
    ),
    Case(
        "rosenbrock10_strong_wolfe_max_eval",
        "rosenbrock10",
        dict(max_iter=20, max_eval=9, history_size=5, line_search_fn="strong_wolfe"),
    ),
    Case(
        "rosenbrock10_fixed_step_history_1",
        "rosenbrock10",
        dict(lr=0.01, max_iter=7, history_size=1),
        steps=8,
    ),
    Case(
        "rosenbrock10_fixed_step_exponential_lr",
        "rosenbrock10",
        dict(lr=0.02, max_iter=5, history_size=4),
        gamma=0.8,
    ),
    Case(
        "least_squares_fixed_step",
        "least_squares",
        dict(lr=0.1, max_iter=4, history_size=2),
    ),
    # converges within the first steps: stops on tolerance_grad, then steps that start at the
    # optimum evaluate once and do nothing
    Case(
        "least_squares_strong_wolfe_tolerance_grad",
        "least_squares",
        dict(max_iter=30, tolerance_grad=1e-6, line_search_fn="strong_wolfe"),
        stops_early=True,
    ),
    Case(
        "mlp_fixed_step",
        "mlp",
        dict(lr=0.3, max_iter=10, history_size=5),
    ),
    Case(
        "mlp_strong_wolfe",
        "mlp",
        dict(max_iter=10, history_size=4, line_search_fn="strong_wolfe"),
    ),
    Case(
        "mlp_strong_wolfe_tolerance_change",
        "mlp",
        dict(max_iter=40, tolerance_change=1e-5, line_search_fn="strong_wolfe"),
        stops_early=True,
    ),
    Case(
        "mlp_fixed_step_tolerance_change",
        "mlp",
        dict(lr=0.3, max_iter=40, tolerance_change=1e-4),
        stops_early=True,
    ),
)


def torch_run(case: Case, dtype=torch.float64):
    """torch's parameters, ``func_evals`` and ``n_iter`` after each ``step(closure)``."""
    objective, initial, data = PROBLEMS[case.problem]
    names = sorted(initial)  # the order of ravel_pytree (sorted dict keys)
    params = {k: torch.tensor(initial[k], dtype=dtype, requires_grad=True) for k in names}
    data = tuple(torch.tensor(part, dtype=dtype) for part in data)
    optimizer = torch.optim.LBFGS([params[k] for k in names], **case.kwargs)
    scheduler = (
        None
        if case.gamma is None
        else torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=case.gamma)
    )

    def closure():
        optimizer.zero_grad()
        loss = objective(params, torch, *data)
        loss.backward()
        return loss

    trajectory, func_evals, n_iter = [], [], []
    for _ in range(case.steps):
        optimizer.step(closure)
        if scheduler is not None:
            scheduler.step()
        state = optimizer.state[optimizer._params[0]]
        trajectory.append(
            {k: p.detach().numpy().astype(np.float64).copy() for k, p in params.items()}
        )
        func_evals.append(state["func_evals"])
        n_iter.append(state["n_iter"])
    return trajectory, np.asarray(func_evals), np.asarray(n_iter)


def optlib_optimizer(case: Case) -> optax.GradientTransformation:
    kwargs = dict(case.kwargs)
    learning_rate = kwargs.pop("lr", 1.0)
    if case.gamma is not None:
        learning_rate = optlib.get_scheduler(
            "ExponentialLR", learning_rate=learning_rate, gamma=case.gamma
        )
    return optlib.lbfgs(learning_rate, **kwargs)


def optlib_runs(cases, dtype=jnp.float64) -> dict[str, Any]:
    """Every case's (params, func_evals, n_iter) after each update, in one compile."""
    optimizers = {case.name: optlib_optimizer(case) for case in cases}

    def run(case: Case, initial, data):
        objective = PROBLEMS[case.problem][0]
        tx = optimizers[case.name]

        def value_fn(params, batch):  # the batch as an extra argument, like a training step
            return objective(params, jnp, *batch)

        def body(carry, _):
            params, state = carry
            value, grads = jax.value_and_grad(value_fn)(params, data)
            updates, state = tx.update(
                grads, state, params, value=value, grad=grads, value_fn=value_fn, batch=data
            )
            params = optax.apply_updates(params, updates)
            inner = state["lbfgs"]
            return (params, state), (params, inner.func_evals, inner.n_iter)

        return jax.lax.scan(body, (initial, tx.init(initial)), None, length=case.steps)[1]

    inputs = {
        case.name: jax.tree.map(lambda x: jnp.asarray(x, dtype), PROBLEMS[case.problem][1:])
        for case in cases
    }
    by_name = {case.name: case for case in cases}
    return jax.jit(
        lambda inputs: {name: run(by_name[name], *pair) for name, pair in inputs.items()}
    )(inputs)


def relative_errors(ours: dict, reference: list[dict]) -> np.ndarray:
    """Per step: ``max|ours - ref| / max|ref|`` over all parameters."""
    errors = []
    for step, ref in enumerate(reference):
        diff = max(np.max(np.abs(np.asarray(ours[k][step]) - ref[k])) for k in ref)
        scale = max(np.max(np.abs(ref[k])) for k in ref)
        errors.append(diff / scale)
    return np.asarray(errors)


def test_every_step_matches_torch_lbfgs_parameters_and_evaluation_counts(x64):
    results = optlib_runs(CASES)
    failures, report = [], []
    for case in CASES:
        trajectory, func_evals, n_iter = torch_run(case)
        params, our_evals, our_iters = results[case.name]
        errors = relative_errors(params, trajectory)
        report.append(f"{case.name}: max relative error {errors.max():.1e}")
        try:
            assert np.all(np.isfinite([np.max(np.abs(p[k])) for p in trajectory for k in p]))
            np.testing.assert_array_equal(np.asarray(our_evals), func_evals, "func_evals")
            np.testing.assert_array_equal(np.asarray(our_iters), n_iter, "n_iter")
            assert errors.max() <= RTOL_F64, f"relative errors per step {errors}"
            max_iter = case.kwargs.get("max_iter", 20)
            iterations = np.diff(n_iter, prepend=0)
            if case.stops_early:
                assert np.any(iterations < max_iter), f"torch never stopped early: {iterations}"
        except AssertionError as error:
            failures.append(f"{case.name}: {error}")
    print("\n".join(report))
    assert not failures, "\n".join(failures)


def test_float32_parameters_follow_torch_on_least_squares():
    """float32: the same arithmetic in float32 (torch mixes in Python doubles for the loss),
    so only close, on a well-conditioned problem over three steps."""
    case = Case(
        "least_squares_f32",
        "least_squares",
        dict(max_iter=6, history_size=3, line_search_fn="strong_wolfe"),
        steps=3,
    )
    params, func_evals, n_iter = optlib_runs([case], jnp.float32)[case.name]
    trajectory, torch_evals, torch_iters = torch_run(case, torch.float32)
    errors = relative_errors(params, trajectory)
    print(f"float32 max relative error {errors.max():.1e}")
    assert errors.max() <= OPTIMIZER_RTOL_F32
    # near the optimum float32 round-off decides the tolerance stops: counts may differ there
    assert int(n_iter[0]) == int(torch_iters[0]) and int(func_evals[0]) == int(torch_evals[0])


# ------------------------------------------------------------------------- behaviour


def test_a_step_at_an_optimum_evaluates_once_and_leaves_the_state_alone():
    tx = optlib.lbfgs(line_search_fn="strong_wolfe")
    params = {"x": jnp.ones(3)}
    state = tx.init(params)

    def value_fn(params):
        return jnp.sum((params["x"] - 1.0) ** 2)

    value, grads = jax.value_and_grad(value_fn)(params)
    updates, new_state = jax.jit(tx.update, static_argnames="value_fn")(
        grads, state, params, value=value, grad=grads, value_fn=value_fn
    )
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    assert int(new_state["lbfgs"].func_evals) == 1
    assert int(new_state["lbfgs"].n_iter) == 0


def test_value_is_computed_when_omitted_and_current_learning_rate_reads_the_state():
    schedule = optlib.get_scheduler("ExponentialLR", learning_rate=0.5, gamma=0.5)
    tx = optlib.lbfgs(schedule, max_iter=3)
    params = {"x": jnp.array([3.0, -2.0])}

    def value_fn(params):
        return jnp.sum(params["x"] ** 2)

    state = tx.init(params)
    assert float(optlib.current_learning_rate(state)) == 0.5
    grads = jax.grad(value_fn)(params)
    with_value, _ = tx.update(grads, state, params, value=value_fn(params), value_fn=value_fn)
    without, state = tx.update(grads, state, params, value_fn=value_fn)
    np.testing.assert_array_equal(with_value["x"], without["x"])
    assert float(optlib.current_learning_rate(state)) == 0.25


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_parameters_keep_their_dtype_and_float32_state(dtype):
    tx = optlib.lbfgs(line_search_fn="strong_wolfe", history_size=4)
    params = {"x": jnp.array([-1.2, 1.0], dtype)}

    def value_fn(params):
        return rosenbrock(params, jnp)

    state = tx.init(params)
    value, grads = jax.value_and_grad(value_fn)(params)
    updates, state = tx.update(grads, state, params, value=value, value_fn=value_fn)
    assert updates["x"].dtype == dtype
    assert state["lbfgs"].old_dirs.dtype == jnp.float32
    assert float(value_fn(optax.apply_updates(params, updates))) < float(value)


# ----------------------------------------------------------------------------- bad input

BAD_INPUTS = [
    (dict(max_iter=0), ValueError, "max_iter"),
    (dict(max_iter=2.5), TypeError, "max_iter"),
    (dict(history_size=0), ValueError, "history_size"),
    (dict(max_eval=0), ValueError, "max_eval"),
    (dict(tolerance_grad=-1e-7), ValueError, "tolerance_grad"),
    (dict(tolerance_change=-1.0), ValueError, "tolerance_change"),
    (dict(line_search_fn="backtracking"), ValueError, "only 'strong_wolfe' is supported"),
    (dict(line_search_fn="Strong_Wolfe"), ValueError, "line_search_fn"),
    (dict(learning_rate=-1.0), ValueError, "learning_rate"),
    (
        dict(learning_rate=optlib.reduce_lr_on_plateau(0.1)),
        TypeError,
        "metric-driven",
    ),
    (
        dict(
            learning_rate=optlib.get_scheduler(
                "OneCycleLR", learning_rate=0.1, max_lr=0.1, total_steps=10
            )
        ),
        ValueError,
        "momentum",
    ),
]


@pytest.mark.parametrize(
    "kwargs, error, match", BAD_INPUTS, ids=[next(iter(k)) + "-" + m for k, _, m in BAD_INPUTS]
)
def test_bad_input_is_rejected_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        optlib.lbfgs(**kwargs)
    torch_kwargs = {("lr" if k == "learning_rate" else k): v for k, v in kwargs.items()}
    if "line_search_fn" in kwargs:  # torch says so at the first step
        param = torch.nn.Parameter(torch.ones(1))
        optimizer = torch.optim.LBFGS([param], **torch_kwargs)
        with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
            optimizer.step(lambda: (param**2 - 1).sum().backward() or (param**2 - 1).sum())
