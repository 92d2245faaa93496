"""Newton's method and BFGS against scipy / numpy on quadratics, least squares and Rosenbrock.

The references: ``scipy.optimize.minimize`` (``method="BFGS"`` for iteration counts,
``"trust-exact"`` for the local minimum a Newton method reaches), ``numpy.linalg`` for exact
minimizers of quadratics and least squares, and scipy's BFGS update formula written out with
numpy. All runs use float64 (``x64``).
"""

from __future__ import annotations

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optlib

scipy_optimize = pytest.importorskip("scipy.optimize", reason="scipy is the BFGS reference")

GTOL = 1e-6


def rosenbrock(x):
    """The same function as ``scipy.optimize.rosen``."""
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def standard_start(n: int) -> np.ndarray:
    return np.array([-1.2, 1.0] * (n // 2))


def minimize(solver, objective, params, *, max_steps: int = 300, **objective_kwargs):
    """Runs ``solver`` inside one jitted ``lax.while_loop`` until ``||grad|| < GTOL``.

    The value and gradient at each new point come from the line search's state
    (``optax.value_and_grad_from_state``), as in ``optax.lbfgs``' documentation.

    Returns:
      ``(params, number of updates, final gradient norm, solver state)``.
    """
    value_and_grad = optax.value_and_grad_from_state(objective)

    def not_done(carry):
        _, _, steps, _, grad = carry
        return (optax.tree.norm(grad) >= GTOL) & (steps < max_steps)

    def step(carry):
        params, state, steps, value, grad = carry
        updates, state = solver.update(
            grad, state, params, value=value, grad=grad, value_fn=objective, **objective_kwargs
        )
        params = optax.apply_updates(params, updates)
        value, grad = value_and_grad(params, state=state, **objective_kwargs)
        return params, state, steps + 1, value, grad

    @jax.jit
    def run(params):
        value, grad = jax.value_and_grad(objective)(params, **objective_kwargs)
        carry = (params, solver.init(params), jnp.zeros([], jnp.int32), value, grad)
        return jax.lax.while_loop(not_done, step, carry)

    params, state, steps, _, grad = run(params)
    return params, int(steps), float(optax.tree.norm(grad)), state


def least_squares_problem(seed: int = 0):
    """``f(w) = 1/2 mean((X w_kernel + w_bias - y)^2)``: a strictly convex quadratic in the
    7 numbers of a parameter pytree, its data passed as extra ``update`` arguments."""
    rng = np.random.default_rng(seed)
    features, targets = rng.normal(size=(40, 6)), rng.normal(size=40)
    design = np.concatenate([features, np.ones((40, 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, targets, rcond=None)
    start = {"bias": jnp.asarray(rng.normal()), "kernel": jnp.asarray(rng.normal(size=(3, 2)))}

    def objective(params, features, targets):
        predictions = features @ params["kernel"].reshape(-1) + params["bias"]
        return 0.5 * jnp.mean((predictions - targets) ** 2)

    data = dict(features=jnp.asarray(features), targets=jnp.asarray(targets))
    expected = {"bias": solution[-1], "kernel": solution[:-1].reshape(3, 2)}
    return objective, start, data, expected


NEWTON_MODES = [
    pytest.param(dict(hessian="dense"), id="dense"),
    pytest.param(dict(hessian="cg", cg_tol=1e-14), id="cg"),
]


@pytest.mark.parametrize("newton_kwargs", NEWTON_MODES)
def test_one_newton_step_lands_on_the_minimum_of_a_convex_quadratic(x64, newton_kwargs):
    objective, start, data, expected = least_squares_problem()
    solver = optlib.newton(**newton_kwargs)

    @jax.jit
    def one_step(params):
        value, grad = jax.value_and_grad(objective)(params, **data)
        updates, _ = solver.update(
            grad, solver.init(params), params, value=value, grad=grad, value_fn=objective, **data
        )
        return optax.apply_updates(params, updates)

    jax.tree.map(
        lambda landed, exact: np.testing.assert_allclose(landed, exact, rtol=0, atol=1e-10),
        one_step(start),
        expected,
    )


@pytest.mark.parametrize("dimension", [2, 10])
def test_bfgs_needs_at_most_1_5x_the_iterations_of_scipy_on_rosenbrock(x64, dimension):
    start = standard_start(dimension)
    reference = scipy_optimize.minimize(
        scipy_optimize.rosen,
        start,
        jac=scipy_optimize.rosen_der,
        method="BFGS",
        options=dict(gtol=GTOL, norm=2),
    )
    assert reference.success

    found, steps, grad_norm, state = minimize(optlib.bfgs(), rosenbrock, jnp.asarray(start))

    assert grad_norm < GTOL
    assert steps <= 1.5 * reference.nit, (steps, reference.nit)
    # A minimum at least as low as scipy's (in 10-D scipy stops in the local minimum near
    # x_1 = -1; either basin is a valid answer), with a positive-definite Hessian.
    assert float(rosenbrock(found)) <= reference.fun + 1e-9
    assert np.linalg.eigvalsh(scipy_optimize.rosen_hess(np.asarray(found))).min() > 0
    assert int(state["bfgs"].count) == steps


@pytest.mark.parametrize("dimension, hessian", [(2, "dense"), (10, "dense"), (10, "cg")])
def test_newton_with_line_search_converges_on_rosenbrock(x64, dimension, hessian):
    start = standard_start(dimension)
    reference = scipy_optimize.minimize(
        scipy_optimize.rosen,
        start,
        jac=scipy_optimize.rosen_der,
        hess=scipy_optimize.rosen_hess,
        method="trust-exact",
        options=dict(gtol=GTOL),
    )
    assert reference.success

    found, steps, grad_norm, state = minimize(
        optlib.newton(hessian=hessian), rosenbrock, jnp.asarray(start)
    )

    assert grad_norm < GTOL
    # The same local minimum as scipy's trust-region Newton (the global one in 2-D, the
    # one near x_1 = -1 in 10-D).
    np.testing.assert_allclose(np.asarray(found), reference.x, atol=1e-5)
    assert int(state["newton"].fallbacks) == 0
    assert steps <= 2 * reference.nit, (steps, reference.nit)


@pytest.mark.parametrize("newton_kwargs", NEWTON_MODES)
def test_modified_newton_leaves_the_saddle_plain_newton_converges_to(x64, newton_kwargs):
    """``f = x^2 + (y^2 - 1)^2 / 4``: saddle at the origin, minima at ``(0, +-1)``."""

    def objective(w):
        return w[0] ** 2 + 0.25 * (w[1] ** 2 - 1.0) ** 2

    gradient, hessian = jax.jit(jax.grad(objective)), jax.jit(jax.hessian(objective))
    start = np.array([1.0, 1e-3])
    plain = start.copy()
    for _ in range(20):  # the textbook iteration w <- w - H^{-1} g, with numpy
        plain = plain - np.linalg.solve(np.asarray(hessian(plain)), np.asarray(gradient(plain)))
    assert np.linalg.eigvalsh(np.asarray(hessian(plain))).min() < 0  # it found the saddle

    found, _, grad_norm, _ = minimize(optlib.newton(**newton_kwargs), objective, jnp.asarray(start))

    assert grad_norm < GTOL
    assert np.linalg.eigvalsh(np.asarray(hessian(found))).min() > 0
    assert float(objective(found)) < float(objective(jnp.asarray(plain)))


def numpy_bfgs_update(inverse_hessian, s, y):
    """scipy's ``_minimize_bfgs`` update, ``A1 H A2 + rho s s^T``, in numpy."""
    rho = 1.0 / np.dot(y, s)
    identity = np.eye(len(s))
    left = identity - rho * np.outer(s, y)
    right = identity - rho * np.outer(y, s)
    return left @ inverse_hessian @ right + rho * np.outer(s, s)


def test_bfgs_update_matches_scipy_formula_and_skips_non_positive_curvature(x64):
    transform = optlib.scale_by_bfgs()
    update = jax.jit(transform.update)
    rng = np.random.default_rng(2)
    points = [rng.normal(size=4) for _ in range(4)]
    grads = [rng.normal(size=4) for _ in range(4)]
    # Step 1 -> 2 has y^T s < 0 (skipped), step 2 -> 3 has y^T s > 0 (accepted).
    grads[2] = grads[1] - (points[2] - points[1])
    grads[3] = grads[2] + 2.0 * (points[3] - points[2])

    state = transform.init(jnp.asarray(points[0]))
    inverses = []
    for point, grad in zip(points, grads):
        direction, state = update(jnp.asarray(grad), state, jnp.asarray(point))
        inverses.append(np.asarray(state.inverse_hessian))

    np.testing.assert_array_equal(inverses[2], inverses[1])  # skipped: y^T s <= 0
    s, y = points[3] - points[2], grads[3] - grads[2]
    np.testing.assert_allclose(inverses[3], numpy_bfgs_update(inverses[2], s, y), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(direction), inverses[3] @ grads[3], rtol=1e-12)
    assert int(state.count) == 4
    assert int(state.curvature_pairs) == 2  # steps 0 -> 1 and 2 -> 3


@pytest.mark.parametrize("solver_factory", [optlib.newton, optlib.bfgs], ids=["newton", "bfgs"])
def test_state_is_a_checkpointable_pytree_of_arrays(solver_factory):
    """Default (float32) JAX: two jitted steps on a pytree, then flatten and serialize.

    The objective also takes a batch (``shift``) through the extra ``update`` arguments.
    """
    params = {"a": jnp.array([-1.2, 1.0]), "b": jnp.array([[0.5]])}

    def objective(params, shift):
        return rosenbrock(params["a"]) + jnp.sum((params["b"] - shift) ** 2)

    found, steps, _, state = minimize(
        solver_factory(), objective, params, max_steps=2, shift=jnp.ones(())
    )
    assert steps == 2
    assert jax.tree.map(lambda leaf: leaf.dtype, found) == jax.tree.map(
        lambda leaf: leaf.dtype, params
    )
    leaves, treedef = jax.tree.flatten(state)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    assert all(leaf.dtype != jnp.float64 for leaf in leaves)
    assert next(iter(state.values())).count.dtype == jnp.int32
    rebuilt = jax.tree.unflatten(treedef, leaves)
    template = solver_factory().init(params)
    restored = flax.serialization.from_bytes(template, flax.serialization.to_bytes(rebuilt))
    restored_dict = flax.serialization.from_state_dict(
        template, flax.serialization.to_state_dict(state)
    )
    for copy in (restored, restored_dict):
        assert jax.tree.structure(copy) == treedef
        jax.tree.map(np.testing.assert_array_equal, copy, state)


def test_bfgs_refuses_more_than_max_size_parameters_and_points_to_lbfgs():
    solver = optlib.bfgs(max_size=10)
    solver.init(jnp.zeros(10))
    with pytest.raises(ValueError, match=r"max_size=10.*optax\.lbfgs"):
        solver.init({"w": jnp.zeros((3, 4))})


def test_update_without_the_objective_says_how_to_pass_it():
    solver = optlib.newton()
    params = jnp.zeros(2)
    with pytest.raises(TypeError, match="value_fn"):
        solver.update(params, solver.init(params), params, value=0.0, grad=params)


@pytest.mark.parametrize(
    "factory, kwargs, error, name",
    [
        (optlib.newton, dict(hessian="exact"), ValueError, "hessian"),
        (optlib.newton, dict(dense_max_size=0), ValueError, "dense_max_size"),
        (optlib.newton, dict(min_curvature=0.0), ValueError, "min_curvature"),
        (optlib.newton, dict(damping=-1.0), ValueError, "damping"),
        (optlib.newton, dict(cg_tol=0.0), ValueError, "cg_tol"),
        (optlib.newton, dict(cg_maxiter=0), ValueError, "cg_maxiter"),
        (optlib.newton, dict(cg_maxiter=2.5), TypeError, "cg_maxiter"),
        (optlib.newton, dict(learning_rate=-1.0), ValueError, "learning_rate"),
        (optlib.newton, dict(linesearch="armijo"), TypeError, "linesearch"),
        (optlib.bfgs, dict(max_size=0), ValueError, "max_size"),
        (optlib.bfgs, dict(max_size=1e4 + 0.5), TypeError, "max_size"),
        (optlib.bfgs, dict(scale_init_hess=1), TypeError, "scale_init_hess"),
        (optlib.bfgs, dict(learning_rate=float("nan")), ValueError, "learning_rate"),
        (optlib.bfgs, dict(linesearch=optax.sgd), TypeError, "linesearch"),
    ],
)
def test_bad_arguments_raise_naming_the_parameter(factory, kwargs, error, name):
    with pytest.raises(error, match=name):
        factory(**kwargs)
