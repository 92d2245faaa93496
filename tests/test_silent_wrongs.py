"""Inputs that used to give a silently wrong result or a failure far from its cause.

Each test pins one behaviour: torch's numbers where torch has them, otherwise an error at
construction (or ``init``) that names the parameter and says what is wrong.
"""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from parity import OPTIMIZER_RTOL_F32, OPTIMIZER_RTOL_F64, torch, torch_default_dtype

import optlib

# ------------------------------------------------------------------ complex parameters

# torch optimizers that treat a complex parameter as ``view_as_real(p)`` (SGD's arithmetic is
# the same on complex numbers), with a configuration that exercises their options.
COMPLEX_CASES = {
    "SGD": (torch.optim.SGD, optlib.sgd, dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
    "Adam": (torch.optim.Adam, optlib.adam, dict(lr=0.05, weight_decay=0.1)),
    "AMSGrad": (torch.optim.Adam, optlib.adam, dict(lr=0.05, amsgrad=True)),
    "AdamW": (torch.optim.AdamW, optlib.adamw, dict(lr=0.05, weight_decay=0.1)),
    "Adagrad": (torch.optim.Adagrad, optlib.adagrad, dict(lr=0.1, lr_decay=0.01)),
    "RMSprop": (
        torch.optim.RMSprop,
        optlib.rmsprop,
        dict(lr=0.01, centered=True, momentum=0.5),
    ),
    "Adadelta": (torch.optim.Adadelta, optlib.adadelta, dict(lr=1.0, weight_decay=0.1)),
    "NAdam": (torch.optim.NAdam, optlib.nadam, dict(lr=0.05)),
    "RAdam": (torch.optim.RAdam, optlib.radam, dict(lr=0.05)),
    "Adamax": (torch.optim.Adamax, optlib.adamax, dict(lr=0.05)),
    "Rprop": (torch.optim.Rprop, optlib.rprop, dict(lr=0.05)),
    "ASGD": (torch.optim.ASGD, optlib.asgd, dict(lr=0.05, t0=5, weight_decay=0.1)),
}
COMPLEX_STEPS = 30


def _complex_problem(dtype):
    rng = np.random.default_rng(0)

    def draw(*shape):
        return rng.normal(size=shape) + 1j * rng.normal(size=shape)

    shapes = {"v": (3,), "m": (2, 2)}
    params = {k: draw(*s).astype(dtype) for k, s in shapes.items()}
    scale = {k: (1.0 + rng.uniform(size=s) + 0.5j * rng.normal(size=s)) for k, s in shapes.items()}
    noise = {k: 0.1 * draw(COMPLEX_STEPS, *s) for k, s in shapes.items()}
    return params, scale, noise


def _complex_gradient(p, scale, noise_t):
    # Not holomorphic in p (|p|**2 term): real and imaginary parts interact.
    return scale * p + 0.3 * p * (p.real**2 + p.imag**2) + noise_t


def _optlib_complex(tx, params, scale, noise):
    def step(carry, noise_t):
        p, state = carry
        g = jax.tree.map(_complex_gradient, p, scale, noise_t)
        updates, state = tx.update(g, state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), p

    noise = jax.tree.map(lambda n: jnp.asarray(n, params["v"].dtype), noise)
    scale = jax.tree.map(lambda s: jnp.asarray(s, params["v"].dtype), scale)
    params = jax.tree.map(jnp.asarray, params)
    _, trajectory = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), noise))(params)
    return jax.tree.map(np.asarray, trajectory)


def _torch_complex(torch_cls, kwargs, params, scale, noise):
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    optimizer = torch_cls(list(tensors.values()), **kwargs)
    dtype = tensors["v"].dtype
    trajectory = {k: [] for k in tensors}
    for t in range(COMPLEX_STEPS):
        for k, p in tensors.items():
            with torch.no_grad():
                p.grad = _complex_gradient(
                    p.detach(),
                    torch.tensor(scale[k], dtype=dtype),
                    torch.tensor(noise[k][t], dtype=dtype),
                )
        optimizer.step()
        for k, p in tensors.items():
            trajectory[k].append(p.detach().numpy().copy())
    return {k: np.stack(v) for k, v in trajectory.items()}


def _max_complex_relative_error(ours, reference):
    worst = 0.0
    for k, ref in reference.items():
        assert np.all(np.isfinite(ours[k])), f"optlib's trajectory of {k} is not finite"
        diff = np.abs(ours[k] - ref).reshape(len(ref), -1).max(axis=1)
        size = np.abs(ref).reshape(len(ref), -1).max(axis=1)
        worst = max(worst, float(np.max(diff / size)))
    return worst


@pytest.mark.parametrize("name", list(COMPLEX_CASES))
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_parameters_are_optimized_as_torch_view_as_real_pairs(name, dtype, request):
    if dtype == "complex128":
        request.getfixturevalue("x64")
    torch_cls, optlib_fn, kwargs = COMPLEX_CASES[name]
    params, scale, noise = _complex_problem(dtype)
    optlib_kwargs = {("learning_rate" if k == "lr" else k): v for k, v in kwargs.items()}
    ours = _optlib_complex(optlib_fn(**optlib_kwargs), params, scale, noise)
    assert ours["v"].dtype == np.dtype(dtype)
    with torch_default_dtype(torch.float64 if dtype == "complex128" else torch.float32):
        reference = _torch_complex(torch_cls, kwargs, params, scale, noise)
    rtol = OPTIMIZER_RTOL_F64 if dtype == "complex128" else OPTIMIZER_RTOL_F32
    assert _max_complex_relative_error(ours, reference) <= rtol


def test_complex_adam_first_step_moves_both_parts():
    p = jnp.array([1 + 1j], jnp.complex64)
    g = jnp.array([1 + 2j], jnp.complex64)
    tx = optlib.adam(0.1)
    update = tx.update(g, tx.init(p), p)[0]
    np.testing.assert_allclose(np.asarray(update), [-0.1 - 0.1j], rtol=1e-5)


COMPLEX_REFUSED = {
    "adafactor": lambda: optlib.adafactor(),
    "lion": lambda: optlib.lion(),
    "ademamix": lambda: optlib.ademamix(),
    "stable_adamw": lambda: optlib.stable_adamw(1e-3),
    "newton": lambda: optlib.newton(),
    "bfgs": lambda: optlib.bfgs(),
}


@pytest.mark.parametrize("name", list(COMPLEX_REFUSED))
def test_complex_parameters_are_refused_at_init_where_the_reference_does_not_pair_them(name):
    tx = COMPLEX_REFUSED[name]()
    params = {"real": jnp.zeros((2, 3)), "z": jnp.zeros((2, 3), jnp.complex64)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning on the way to the error
        with pytest.raises(TypeError, match=r"\['z'\].*complex"):
            tx.init(params)
    tx.init({"real": params["real"]})  # real leaves are fine


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_clip_grad_norm_of_complex_gradients_matches_torch(norm_type):
    g = np.array([3 + 4j, 1 - 2j, 0.5j], np.complex64)
    r = np.array([1.0, -2.0], np.float32)
    complex_param = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    real_param = torch.nn.Parameter(torch.zeros(2))
    complex_param.grad, real_param.grad = torch.tensor(g), torch.tensor(r)
    norm = torch.nn.utils.clip_grad_norm_([complex_param, real_param], 1.0, norm_type)
    tx = optlib.clip_grad_norm(1.0, norm_type)
    grads = {"g": jnp.asarray(g), "r": jnp.asarray(r)}
    clipped, state = tx.update(grads, tx.init(grads))
    assert state.total_norm.dtype == jnp.float32
    np.testing.assert_allclose(state.total_norm, norm.item(), rtol=1e-6)
    np.testing.assert_allclose(clipped["g"], complex_param.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(clipped["r"], real_param.grad.numpy(), rtol=1e-6)


# ------------------------------------------------------------- learning_rate transforms


def test_an_arbitrary_optax_transformation_is_refused_as_learning_rate():
    with pytest.raises(TypeError, match=r"learning_rate.*second optimizer"):
        optlib.adam(learning_rate=optax.adam(1e-3))
    with pytest.raises(TypeError, match="learning_rate"):
        optlib.sgd(learning_rate=optax.scale(-0.1))
    # the metric-driven rates are the transformations that may stand there
    optlib.adam(learning_rate=optlib.reduce_lr_on_plateau(1e-3)).init(jnp.zeros(2))


# ------------------------------------------------------------------------ unusual leaves


def test_a_python_float_leaf_is_accepted_like_optax():
    tx = optlib.adam(0.1)
    state = tx.init({"s": 1.0, "w": jnp.ones(2)})
    updates, _ = tx.update({"s": 2.0, "w": jnp.ones(2)}, state, {"s": 1.0, "w": jnp.ones(2)})
    # taken as the 0-d array it becomes, as optax does
    as_arrays = {"s": jnp.asarray(1.0), "w": jnp.ones(2)}
    expected, _ = tx.update(
        {"s": jnp.asarray(2.0), "w": jnp.ones(2)}, tx.init(as_arrays), as_arrays
    )
    np.testing.assert_array_equal(updates["s"], expected["s"])
    reference, _ = optax.adam(0.1).update(
        {"s": 2.0, "w": jnp.ones(2)}, optax.adam(0.1).init({"s": 1.0, "w": jnp.ones(2)})
    )
    # optax's float32 bias corrections cancel in 1 - 0.999**t: ~7e-6 off torch's -0.1
    np.testing.assert_allclose(updates["s"], reference["s"], rtol=1e-5)


@pytest.mark.parametrize("leaf", [jnp.zeros(3, jnp.int32), np.zeros(2, np.int64), 3, True])
def test_integer_parameters_are_refused_at_init_naming_the_leaf(leaf):
    with pytest.raises(TypeError, match=r"\['b'\]\['i'\].*(int|bool).*floating"):
        optlib.sgd(0.1).init({"a": jnp.zeros(2), "b": {"i": leaf}})


# --------------------------------------------------------------- step counts >= 2**31

TOO_MANY_STEPS = {
    "T_max": lambda n: optlib.cosine_annealing_lr(0.1, T_max=n),
    "total_iters": lambda n: optlib.linear_lr(0.1, total_iters=n),
    "total_iters ": lambda n: optlib.polynomial_lr(0.1, total_iters=n),
    "step_size_up": lambda n: optlib.cyclic_lr(0.1, base_lr=0.01, max_lr=0.1, step_size_up=n),
    "step_size_down": lambda n: optlib.cyclic_lr(0.1, base_lr=0.01, max_lr=0.1, step_size_down=n),
    "T_0": lambda n: optlib.cosine_annealing_warm_up_restarts(0.1, T_0=n),
    "steps_per_epoch": lambda n: optlib.per_epoch(optlib.step_lr(0.1, 2), steps_per_epoch=n),
}


@pytest.mark.parametrize("name", list(TOO_MANY_STEPS))
def test_step_counts_beyond_int32_raise_at_construction_naming_the_parameter(name):
    build = TOO_MANY_STEPS[name]
    with pytest.raises(ValueError, match=rf"^{name.strip()} must be <= 2\*\*31 - 1.*2147483648"):
        build(2**31)
    assert np.isfinite(float(build(2**31 - 1)(jnp.int32(7))))  # the largest count still works


# ------------------------------------------------------------- Adafactor's logged rate


def test_adafactor_logged_rate_is_per_parameter_and_matches_adafactor_schedule(x64):
    """torch's first parameter (``w_out``, as the model defines it) is not JAX's first leaf
    (``a_bias`` sorts first); the two have different RMS, so HF's rates differ."""
    from transformers import optimization as hf

    rng = np.random.default_rng(0)
    init = {"w_out": 2.0 * rng.normal(size=(3, 4)), "a_bias": 0.1 * rng.normal(size=4)}
    grads = [{k: rng.normal(size=v.shape) for k, v in init.items()} for _ in range(5)]
    torch_order = ["w_out", "a_bias"]
    assert jax.tree_util.tree_leaves(init)[0].shape == (4,)  # a_bias first in JAX

    tensors = {k: torch.nn.Parameter(torch.tensor(init[k])) for k in torch_order}
    optimizer = hf.Adafactor([tensors[k] for k in torch_order])  # relative_step, scale_parameter
    schedule = hf.AdafactorSchedule(optimizer)
    tx = optlib.adafactor()
    params = jax.tree.map(jnp.asarray, init)
    state = tx.init(params)
    for g in grads:
        for k, p in tensors.items():
            p.grad = torch.tensor(g[k])
        optimizer.step()
        schedule.step()
        updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
        params = optax.apply_updates(params, updates)
        rates = optlib.current_learning_rate(state)
        np.testing.assert_allclose(rates["w_out"], schedule.get_last_lr()[0], rtol=1e-12)
        for k, p in tensors.items():  # every parameter's rate is HF's _get_lr for it
            expected = optimizer._get_lr(optimizer.param_groups[0], optimizer.state[p])
            np.testing.assert_allclose(rates[k], expected, rtol=1e-12)
    assert not np.isclose(rates["w_out"], rates["a_bias"])


# ----------------------------------------------------------------- lambda schedulers


@pytest.mark.parametrize("build", [optlib.lambda_lr, optlib.multiplicative_lr])
def test_lr_lambda_is_traced_at_construction(build):
    with pytest.raises(TypeError, match=r"lr_lambda must be jax-traceable.*jnp\.where"):
        build(0.1, lambda epoch: 0.5 if epoch < 3 else 0.1)
    with pytest.raises(ValueError, match=r"lr_lambda must return one real scalar.*float32\[3\]"):
        build(0.1, lambda epoch: jnp.full(3, 0.9))
    schedule = build(0.1, lambda epoch: jnp.where(epoch < 3, 0.9, 0.5))
    assert np.isfinite(float(jax.jit(schedule)(jnp.int32(4))))


# ---------------------------------------------------------- carry_over_state, param_groups


def test_carry_over_state_refuses_an_unrelated_state():
    params = {"w": jnp.ones(3), "b": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"carry_over_state.*not a state of the new optimizer"):
        optlib.carry_over_state(optlib.adamw(1e-3), params, optax.sgd(0.1, 0.9).init(params))
    # a group whose optimizer changed (its Adam moments would be lost)
    groups = {"head": optlib.adamw(1e-3), "frozen": optax.set_to_zero()}
    old = optlib.param_groups(groups, {"w": "head", "b": "frozen"}).init(params)
    changed = optlib.param_groups(
        {"head": optlib.sgd(1e-3, momentum=0.9), "bb": optlib.adamw(1e-4)},
        {"w": "head", "b": "bb"},
    )
    with pytest.raises(ValueError, match=r"group .*'head'.*ScaleByAdamState would be lost"):
        optlib.carry_over_state(changed, params, old)
    unfrozen = optlib.param_groups(
        {"head": optlib.adamw(1e-3), "bb": optlib.adamw(1e-4)}, {"w": "head", "b": "bb"}
    )
    optlib.carry_over_state(unfrozen, params, old)  # the documented use still works


def test_param_groups_names_labels_without_a_group():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"labels 'no_decay' have no optimizer.*'decay'"):
        optlib.param_groups({"decay": optlib.adamw()}, {"w": "decay", "b": "no_decay"})
    tx = optlib.param_groups({"decay": optlib.adamw()}, optlib.decay_labels)
    with pytest.raises(ValueError, match=r"labels 'no_decay' have no optimizer"):
        tx.init(params)


# ------------------------------------------------------------ clip_grad_norm under jit


def test_clip_grad_norm_error_if_nonfinite_under_jit_fails_at_trace_time_saying_why(capfd):
    tx = optlib.clip_grad_norm(1.0, error_if_nonfinite=True)
    grads = {"w": jnp.array([1.0, jnp.inf])}
    with pytest.raises(RuntimeError, match=r"cannot raise from inside jit.*isfinite"):
        jax.jit(tx.update)(grads, tx.init(grads))
    assert "CpuCallback" not in capfd.readouterr().err
    with pytest.raises(RuntimeError, match="non-finite"):
        tx.update(grads, tx.init(grads))  # eagerly: torch's error


# ------------------------------------------------ integer arguments, inject_hyperparams


def test_integral_arguments_are_accepted_in_every_concrete_form_and_fractions_refused():
    reference = optlib.step_lr(0.1, step_size=5)
    steps = jnp.arange(12)
    for value in (np.int64(5), np.array(5), jnp.array(5), 5.0, np.float32(5.0)):
        schedule = optlib.step_lr(0.1, step_size=value)
        np.testing.assert_array_equal(jax.vmap(schedule)(steps), jax.vmap(reference)(steps))
    for value in (5.5, jnp.array(5.5), np.array([5]), True, float("nan")):
        with pytest.raises(TypeError, match="step_size must be an integer"):
            optlib.step_lr(0.1, step_size=value)
    optlib.bfgs(max_size=jnp.array(50)).init(jnp.ones(3))


def _quadratic(x):
    return jnp.sum((x - 2.0) ** 2)


@pytest.mark.parametrize(
    "factory, static_args, kwargs",
    [
        (optlib.newton, ("dense_max_size", "cg_maxiter"), dict(damping=0.1, min_curvature=1e-3)),
        (optlib.bfgs, ("max_size",), {}),
    ],
    ids=["newton", "bfgs"],
)
def test_inject_hyperparams_of_second_order_optimizers(factory, static_args, kwargs):
    plain = optax.inject_hyperparams(factory)(learning_rate=0.5, **kwargs)
    with pytest.raises(TypeError, match=rf"static_args={re.escape(repr(static_args))}"):
        jax.jit(lambda s, p: plain.update(p, s, p, value=_quadratic(p), value_fn=_quadratic))(
            plain.init(jnp.ones(3)), jnp.ones(3)
        )
    injected = optax.inject_hyperparams(factory, static_args=static_args)(
        learning_rate=0.5, **kwargs
    )
    direct = factory(learning_rate=0.5, **kwargs)

    def run(tx):
        params, state = jnp.ones(3), tx.init(jnp.ones(3))

        @jax.jit
        def step(params, state):
            value, grad = jax.value_and_grad(_quadratic)(params)
            updates, state = tx.update(
                grad, state, params, value=value, grad=grad, value_fn=_quadratic
            )
            return optax.apply_updates(params, updates), state

        for _ in range(3):
            params, state = step(params, state)
        return params, state

    params, state = run(injected)
    np.testing.assert_allclose(params, run(direct)[0], rtol=1e-6)
    assert "learning_rate" in state.hyperparams


# --------------------------------------------------------------------- plot_schedule


def test_plot_schedule_bad_schedules_or_steps_are_clear_errors(tmp_path):
    pytest.importorskip("matplotlib")
    schedule = optlib.step_lr(0.1, step_size=3)
    path = str(tmp_path / "lr.png")
    with pytest.raises(TypeError, match=r"schedules must be .*0\.1.*constant_schedule"):
        optlib.plot_schedule(0.1, path=path)
    with pytest.raises(ValueError, match="schedules must hold at least one"):
        optlib.plot_schedule([], path=path)
    for steps in (0, -5):
        with pytest.raises(ValueError, match=rf"steps must be an integer >= 1, got {steps}"):
            optlib.plot_schedule(schedule, steps=steps, path=path)
    with pytest.raises(ValueError, match="non-empty"):
        optlib.plot_schedule(schedule, steps=[], path=path)
    with pytest.raises(TypeError, match="steps must be"):
        optlib.plot_schedule(schedule, steps=[0.5, 1.5], path=path)
    with pytest.raises(ValueError, match=r"steps must be in \[0, 2\*\*31 - 1\]"):
        optlib.plot_schedule(schedule, steps=[-1, 3], path=path)
    ax = optlib.plot_schedule(schedule, steps=jnp.array(10), path=path)
    assert len(ax.lines[0].get_xdata()) == 10


# ----------------------------------------------------------- Adafactor's compiled step


def _compiled_kernels(tx, params) -> int:
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = jax.eval_shape(tx.init, params)
    text = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile().as_text()
    return text[text.index("ENTRY") :].count(" fusion(")


def test_adafactor_compiles_to_fewer_kernels_than_optax_adafactor():
    """XLA's compile time of a large tree grows with the kernels it emits per leaf; optlib's
    Adafactor (with per-parameter logged rates) must stay below optax.adafactor's count."""
    params = {
        f"leaf_{i:02d}": jax.ShapeDtypeStruct((64,) if i % 3 == 2 else (32, 64), jnp.float32)
        for i in range(12)
    }
    ours = _compiled_kernels(optlib.adafactor(), params)
    theirs = _compiled_kernels(optax.adafactor(1e-2, min_dim_size_to_factor=1), params)
    assert ours <= 0.95 * theirs, (ours, theirs)


def test_the_compile_time_suite_measures_adafactor():
    from benchmarks.config import FULL

    assert "adafactor" in FULL.compile_optimizers
