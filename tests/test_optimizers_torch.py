"""optlib's torch optimizers against torch.optim, step by step, on the same gradients.

The problem: a parameter tree with a scalar, 1-D, 2-D and 3-D leaf and the gradient of a
quartic loss plus per-step noise, ``g = sign * (a*p**3 + b*p + c_t)`` (``sign = -1`` for
``maximize=True``, so that ascent on ``-loss`` stays bounded). Both frameworks compute the
gradient at their own parameters; optlib runs the whole loop as one jitted ``lax.scan``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from parity import (
    OPTIMIZER_RTOL_F32,
    OPTIMIZER_RTOL_F64,
    SHAPES,
    make_problem,
    max_relative_error,
    optlib_trajectory,
    torch,
    torch_kwargs_to_optlib,
    torch_trajectory,
)

import optlib

STEPS_F64 = 40
STEPS_F32 = 100
RTOL_F64 = OPTIMIZER_RTOL_F64
RTOL_F32 = OPTIMIZER_RTOL_F32

OPTIMIZERS = {
    "SGD": (torch.optim.SGD, optlib.sgd),
    "Adam": (torch.optim.Adam, optlib.adam),
    "AdamW": (torch.optim.AdamW, optlib.adamw),
    "Adagrad": (torch.optim.Adagrad, optlib.adagrad),
    "RMSprop": (torch.optim.RMSprop, optlib.rmsprop),
    "Adadelta": (torch.optim.Adadelta, optlib.adadelta),
    "NAdam": (torch.optim.NAdam, optlib.nadam),
}


def run_case(name, kwargs, dtype_jax, dtype_torch, steps, *, learning_rate=None, torch_hooks=None):
    torch_cls, optlib_fn = OPTIMIZERS[name]
    problem = make_problem(steps, sign=-1.0 if kwargs.get("maximize") else 1.0)
    optlib_kwargs = torch_kwargs_to_optlib(kwargs)
    if learning_rate is not None:
        optlib_kwargs["learning_rate"] = learning_rate
    ours, state = optlib_trajectory(optlib_fn(**optlib_kwargs), problem, dtype_jax)
    reference, optimizer, sched = torch_trajectory(
        lambda params: torch_cls(list(params.values()), **kwargs),
        problem,
        dtype_torch,
        **(torch_hooks or {}),
    )
    return max_relative_error(ours, reference), state, optimizer, sched


# ---------------------------------------------------------------------------------------------
# One row per reference configuration.

CASES = [
    ("SGD", {"lr": 0.05, "dampening": 0.5}),  # dampening without momentum does nothing
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.03, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05}),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "maximize": True}),
    ("Adam", {}),
    ("Adam", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.02, "amsgrad": True, "weight_decay": 0.01, "maximize": True}),
    ("Adam", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("AdamW", {}),
    (
        "AdamW",
        {"lr": 0.05, "betas": (0.5, 0.9), "weight_decay": 0.1, "amsgrad": True, "maximize": True},
    ),
    ("Adagrad", {}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-3, "maximize": True}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.005, "alpha": 0.9, "momentum": 0.5, "eps": 1e-4, "maximize": True}),
    ("Adadelta", {}),
    ("Adadelta", {"lr": 0.5, "rho": 0.5, "eps": 1e-4, "weight_decay": 0.1, "maximize": True}),
    ("NAdam", {}),
    ("NAdam", {"lr": 0.05, "momentum_decay": 0.1, "weight_decay": 0.1, "maximize": True}),
    (
        "NAdam",
        {"lr": 0.05, "betas": (0.8, 0.95), "weight_decay": 0.1, "decoupled_weight_decay": True},
    ),
]

# One float32 configuration per optimizer, exercising its main options.
F32_CASES = [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    ("Adam", {"lr": 0.02, "amsgrad": True, "weight_decay": 0.01}),
    ("AdamW", {"lr": 0.02, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.01}),
    ("RMSprop", {"lr": 0.005, "momentum": 0.5, "centered": True}),
    ("Adadelta", {"lr": 0.5, "weight_decay": 0.01}),
    ("NAdam", {"lr": 0.02, "weight_decay": 0.01, "decoupled_weight_decay": True}),
]


def _case_id(case) -> str:
    name, kwargs = case
    return name + ("-" + ",".join(f"{k}={v}" for k, v in kwargs.items()) if kwargs else "-defaults")


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_float64_trajectory_matches_torch(case, x64):
    name, kwargs = case
    error, *_ = run_case(name, kwargs, jnp.float64, torch.float64, STEPS_F64)
    assert error <= RTOL_F64, f"{_case_id(case)}: max relative parameter error {error:.3e}"


@pytest.mark.parametrize("case", F32_CASES, ids=[_case_id(c) for c in F32_CASES])
def test_float32_trajectory_matches_torch(case):
    name, kwargs = case
    error, *_ = run_case(name, kwargs, jnp.float32, torch.float32, STEPS_F32)
    assert error <= RTOL_F32, f"{_case_id(case)}: max relative parameter error {error:.3e}"


# ---------------------------------------------------------------------------------------------
# Schedules: a LambdaLR-driven lr, and momentum cycling (torch's cycle_momentum).


def _lr_factor(step):
    return 0.5 + 0.5 * jnp.cos(jnp.pi * step / 25.0)


def _cycled_momentum(step):
    return 0.95 - 0.1 * jnp.sin(jnp.pi * step / 40.0) ** 2


def _momentum_off_for_three_steps(step):
    return jnp.where(step < 3, 0.0, 0.9)


SCHEDULE_CASES = [
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05}),
]


@pytest.mark.parametrize("case", SCHEDULE_CASES, ids=[_case_id(c) for c in SCHEDULE_CASES])
def test_schedule_drives_lr_like_lambda_lr_and_current_learning_rate_reads_it(case, x64):
    name, kwargs = case
    base = kwargs["lr"]
    error, state, optimizer, _ = run_case(
        name,
        kwargs,
        jnp.float64,
        torch.float64,
        STEPS_F64,
        learning_rate=lambda step: base * _lr_factor(step),
        torch_hooks={
            "scheduler": lambda opt: torch.optim.lr_scheduler.LambdaLR(
                opt, lambda step: float(_lr_factor(step))
            )
        },
    )
    assert error <= RTOL_F64, f"{name}: max relative parameter error {error:.3e}"
    np.testing.assert_allclose(
        float(optlib.current_learning_rate(state)), optimizer.param_groups[0]["lr"], rtol=1e-12
    )


CYCLING_CASES = [  # SGD and Adam also run under torch's own OneCycleLR below
    (
        "SGD",
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.05},
        _cycled_momentum,
    ),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}, _momentum_off_for_three_steps),
    ("NAdam", {"weight_decay": 0.1}, _cycled_momentum),
    ("RMSprop", {"momentum": 0.5, "centered": True}, _cycled_momentum),
]


@pytest.mark.parametrize(
    "case", CYCLING_CASES, ids=[_case_id(c[:2]) + "-" + c[2].__name__ for c in CYCLING_CASES]
)
def test_momentum_schedule_drives_momentum_or_beta1_step_by_step(case, x64):
    name, kwargs, momentum_fn = case
    base = kwargs.get("lr", 0.01)

    def learning_rate(step):
        return base * _lr_factor(step)

    def set_group(optimizer, step):  # what OneCycleLR/CyclicLR do before each step
        for group in optimizer.param_groups:
            group["lr"] = float(learning_rate(step))
            if "betas" in group:
                group["betas"] = (float(momentum_fn(step)), group["betas"][1])
            else:
                group["momentum"] = float(momentum_fn(step))

    error, state, optimizer, _ = run_case(
        name,
        kwargs,
        jnp.float64,
        torch.float64,
        STEPS_F64,
        learning_rate=optlib.MomentumSchedule(learning_rate, momentum_fn),
        torch_hooks={"before_step": set_group},
    )
    assert error <= RTOL_F64, f"{name}: max relative parameter error {error:.3e}"
    # The rate for the next step, as the torch loop would set it.
    set_group(optimizer, STEPS_F64)
    np.testing.assert_allclose(
        float(optlib.current_learning_rate(state)), optimizer.param_groups[0]["lr"], rtol=1e-12
    )


@pytest.mark.parametrize("name", ["Adagrad", "Adadelta"])
def test_momentum_schedule_rejected_where_torch_has_no_momentum(name):
    torch_cls, optlib_fn = OPTIMIZERS[name]
    optimizer = torch_cls([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="momentum or beta1"):
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    schedule = optlib.MomentumSchedule(lambda step: 0.1, lambda step: 0.9)
    with pytest.raises(ValueError, match="momentum or beta1"):
        optlib_fn(schedule)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
        ("Adam", {"amsgrad": True}),
    ],
)
def test_one_cycle_lr_drives_sgd_and_adam_like_torch(name, kwargs, x64):
    """torch's OneCycleLR sets lr and momentum / betas[0] every step (cycle_momentum=True)."""
    schedule = optlib.one_cycle_lr(max_lr=0.1, total_steps=STEPS_F64 + 1)
    assert isinstance(schedule, optlib.MomentumSchedule)
    error, state, optimizer, _ = run_case(
        name,
        {"lr": 0.1, **kwargs},
        jnp.float64,
        torch.float64,
        STEPS_F64,
        learning_rate=schedule,
        torch_hooks={
            "scheduler": lambda opt: torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=0.1, total_steps=STEPS_F64 + 1
            )
        },
    )
    assert error <= RTOL_F64, f"{name} + OneCycleLR: max relative parameter error {error:.3e}"
    np.testing.assert_allclose(
        float(optlib.current_learning_rate(state)), optimizer.param_groups[0]["lr"], rtol=1e-12
    )


# ---------------------------------------------------------------------------------------------
# Invalid hyperparameters: torch raises ValueError, so do we, naming the parameter.

INVALID = [
    ("SGD", {"lr": -0.1}, "learning_rate"),
    ("SGD", {"momentum": -0.5}, "momentum"),
    ("SGD", {"weight_decay": -1e-4}, "weight_decay"),
    ("SGD", {"nesterov": True}, "nesterov"),
    ("SGD", {"momentum": 0.9, "dampening": 0.1, "nesterov": True}, "nesterov"),
    ("Adam", {"lr": -1e-3}, "learning_rate"),
    ("Adam", {"eps": -1e-8}, "eps"),
    ("Adam", {"betas": (1.0, 0.999)}, r"betas\[0\]"),
    ("Adam", {"betas": (-0.1, 0.999)}, r"betas\[0\]"),
    ("Adam", {"betas": (0.9, 1.0)}, r"betas\[1\]"),
    ("Adam", {"weight_decay": -0.1}, "weight_decay"),
    ("AdamW", {"weight_decay": -0.1}, "weight_decay"),
    ("AdamW", {"betas": (0.9, 1.5)}, r"betas\[1\]"),
    ("Adagrad", {"lr_decay": -0.1}, "lr_decay"),
    ("Adagrad", {"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
    ("Adagrad", {"eps": -1.0}, "eps"),
    ("RMSprop", {"alpha": -0.1}, "alpha"),
    ("RMSprop", {"momentum": -0.1}, "momentum"),
    ("RMSprop", {"eps": -1.0}, "eps"),
    ("Adadelta", {"rho": 1.5}, "rho"),
    ("Adadelta", {"rho": -0.1}, "rho"),
    ("Adadelta", {"weight_decay": -1.0}, "weight_decay"),
    ("NAdam", {"momentum_decay": -1e-3}, "momentum_decay"),
    ("NAdam", {"betas": (0.9, -0.5)}, r"betas\[1\]"),
]


@pytest.mark.parametrize("case", INVALID, ids=[_case_id(c[:2]) for c in INVALID])
def test_invalid_hyperparameter_raises_like_torch(case):
    name, kwargs, parameter = case
    torch_cls, optlib_fn = OPTIMIZERS[name]
    with pytest.raises(ValueError):
        torch_cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    with pytest.raises(ValueError, match=parameter):
        optlib_fn(**torch_kwargs_to_optlib(kwargs))


@pytest.mark.parametrize(
    "factory, kwargs, parameter",
    [
        (optlib.sgd, {"momentum": 0.9, "dampening": 1.5}, "dampening"),
        (optlib.rmsprop, {"alpha": 1.5}, "alpha"),
    ],
)
def test_values_torch_accepts_but_that_make_no_sense_raise(factory, kwargs, parameter):
    with pytest.raises(ValueError, match=parameter):
        factory(**kwargs)


# ---------------------------------------------------------------------------------------------
# Shape of the chains.


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_current_learning_rate_is_the_float_learning_rate(name):
    _, optlib_fn = OPTIMIZERS[name]
    tx = optlib_fn(0.125)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    _, state = tx.update(params, state, params)
    assert float(optlib.current_learning_rate(state)) == 0.125


def test_float32_params_keep_float32_state_under_x64(x64):
    """A jitted scan needs the state dtypes to stay put; float64 scalars must not leak."""
    params = {k: jnp.ones(s, jnp.float32) for k, s in SHAPES.items()}
    for _, optlib_fn in OPTIMIZERS.values():
        tx = optlib_fn(0.1)
        state = tx.init(params)
        updates, new_state = jax.eval_shape(tx.update, params, state, params)
        before = jax.tree.map(lambda x: x.dtype, state)
        after = jax.tree.map(lambda x: x.dtype, new_state)
        assert before == after
        assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("scheduled", [False, True])
def test_sgd_momentum_first_step_copy_keeps_signed_zeros_like_torch(nesterov, scheduled):
    """torch's first momentum step copies the gradient (b_1 = g); optlib's buffer starts at -0.0
    so that mu * b + g gives the same bits, -0.0 gradients and parameters included."""
    values = np.array([0.0, -0.0, 0.0, -0.0, 1.5, -2.0], np.float32)
    grads = np.array([0.0, -0.0, -0.0, 0.0, -0.0, 0.25], np.float32)
    grad_sequence = [grads, grads[::-1].copy(), -grads]
    param = torch.tensor(values.copy(), requires_grad=True)
    reference = torch.optim.SGD([param], lr=0.5, momentum=0.9, nesterov=nesterov)
    momentum = (lambda count: jnp.asarray(0.9)) if scheduled else 0.9
    tx = optlib.sgd(0.5, momentum=momentum, nesterov=nesterov)
    params = jnp.asarray(values)
    state = tx.init(params)
    step = jax.jit(
        lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p))
    )
    for g in grad_sequence:
        param.grad = torch.tensor(g)
        reference.step()
        params, state = step(params, state, jnp.asarray(g))
        expected = param.detach().numpy()
        buffer = reference.state[param]["momentum_buffer"].numpy()
        np.testing.assert_array_equal(np.asarray(params), expected)
        np.testing.assert_array_equal(np.signbit(np.asarray(params)), np.signbit(expected))
        ours = np.asarray(state["momentum"].momentum_buffer)
        np.testing.assert_array_equal(np.signbit(ours), np.signbit(buffer))
