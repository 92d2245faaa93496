"""optlib's schedule-free optimizers against the ``schedulefree`` package, step by step.

The reference runs in train mode (``optimizer.train()`` once before the loop), both take the
gradient at their train-mode parameters ``y`` (tests/parity.py's quartic problem), and after
every step the reference's evaluation parameters are read the way a user reads them
(``optimizer.eval()``, read the parameters, ``optimizer.train()``) and compared with
``optlib.schedule_free_eval_params(params, opt_state)``.
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
    make_problem,
    max_relative_error,
    optlib_trajectory,
    torch,
    torch_kwargs_to_optlib,
    torch_trajectory,
)

import optlib

schedulefree = pytest.importorskip("schedulefree", reason="the reference: pip install schedulefree")

STEPS_F64 = 40
STEPS_F32 = 60
# current_learning_rate against the reference's ``scheduled_lr``. RAdam's rectification
# ``rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)`` cancels ~3 digits in the reference's
# Python doubles (3e-12 relative at t = 5 for beta2 = 0.999, against mpmath); optlib's
# cancellation-free form is exact to 1e-16 there.
LR_RTOL = 1e-11
# float32: the step-only scalars avoid float32 cancellation (bias correction via expm1,
# RAdam's rho_t), so the parameters stay within ~1e-6 of the float32 reference over 60 steps,
# tighter than the shared OPTIMIZER_RTOL_F32.
RTOL_F32 = min(OPTIMIZER_RTOL_F32, 1e-5)

OPTIMIZERS = {
    "AdamW": (schedulefree.AdamWScheduleFree, optlib.schedule_free_adamw),
    "SGD": (schedulefree.SGDScheduleFree, optlib.schedule_free_sgd),
    "RAdam": (schedulefree.RAdamScheduleFree, optlib.schedule_free_radam),
}


def _optlib_kwargs(kwargs: dict) -> dict:
    return {k: v for k, v in torch_kwargs_to_optlib(kwargs).items() if k != "foreach"}


def _record_optlib(params, state):
    x = optlib.schedule_free_eval_params(params, state)
    recorded = {f"y/{k}": v for k, v in params.items()}
    recorded.update({f"x/{k}": v for k, v in x.items()})
    rate = optlib.current_learning_rate(state)  # the rate of the next update
    recorded["lr"] = rate if not isinstance(rate, dict) else rate["a"]
    return recorded


def _record_torch(optimizer, params):
    recorded = {f"y/{k}": p.detach().numpy().copy() for k, p in params.items()}
    optimizer.eval()
    recorded.update({f"x/{k}": p.detach().numpy().copy() for k, p in params.items()})
    optimizer.train()
    recorded["lr"] = np.asarray(optimizer.param_groups[0]["scheduled_lr"])  # this step's rate
    return recorded


def _split(trajectory: dict) -> tuple[dict, dict, np.ndarray]:
    y = {k[2:]: v for k, v in trajectory.items() if k.startswith("y/")}
    x = {k[2:]: v for k, v in trajectory.items() if k.startswith("x/")}
    return y, x, trajectory["lr"]


def run_case(name, kwargs, dtype_jax, dtype_torch, steps, *, learning_rate=None, scheduler=None):
    """``(y error, x error, lr error, final state)`` of optlib against the reference."""
    reference_cls, optlib_fn = OPTIMIZERS[name]
    problem = make_problem(steps)
    optlib_kwargs = _optlib_kwargs(kwargs)
    if learning_rate is not None:
        optlib_kwargs["learning_rate"] = learning_rate
    ours, state = optlib_trajectory(
        optlib_fn(**optlib_kwargs), problem, dtype_jax, record=_record_optlib
    )

    def make_optimizer(params):
        optimizer = reference_cls(list(params.values()), **kwargs)
        optimizer.train()
        return optimizer

    reference, *_ = torch_trajectory(
        make_optimizer, problem, dtype_torch, scheduler=scheduler, record=_record_torch
    )
    (y, x, lr), (y_ref, x_ref, lr_ref) = _split(ours), _split(reference)
    lr_error = float(np.max(np.abs(lr[:-1] - lr_ref[1:]) / np.maximum(np.abs(lr_ref[1:]), 1e-300)))
    return max_relative_error(y, y_ref), max_relative_error(x, x_ref), lr_error, state


CASES = [
    ("AdamW", {}),
    ("AdamW", {"lr": 0.05, "warmup_steps": 10, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-4, "r": 1.0, "weight_lr_power": 0.0}),
    ("AdamW", {"lr": 0.02, "warmup_steps": 5, "r": 0.5, "weight_lr_power": 2.0, "foreach": False}),
    ("AdamW", {"lr": 0.05, "betas": (0.5, 0.9), "weight_decay": 0.05, "warmup_steps": 3}),
    ("SGD", {"lr": 0.05}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.1, "warmup_steps": 8}),
    ("SGD", {"lr": 0.03, "momentum": 0.5, "r": 2.0, "weight_lr_power": 0.0, "foreach": False}),
    ("SGD", {"lr": 0.05, "momentum": 0.95, "warmup_steps": 4, "r": 0.5}),
    ("RAdam", {}),
    ("RAdam", {"lr": 0.05, "weight_decay": 0.1}),
    ("RAdam", {"lr": 0.05, "betas": (0.8, 0.99), "silent_sgd_phase": False, "eps": 1e-4}),
    ("RAdam", {"lr": 0.05, "r": 1.0, "weight_lr_power": 0.0, "foreach": False}),
    ("RAdam", {"lr": 0.02, "betas": (0.6, 0.9), "weight_decay": 0.05, "r": 0.5}),
]

F32_CASES = [
    ("AdamW", {"lr": 0.05, "warmup_steps": 10, "weight_decay": 0.1, "r": 0.5}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.1, "warmup_steps": 8}),
    ("RAdam", {"lr": 0.05, "weight_decay": 0.1, "weight_lr_power": 0.0}),
]


def _case_id(case) -> str:
    name, kwargs = case
    return name + ("-" + ",".join(f"{k}={v}" for k, v in kwargs.items()) if kwargs else "-defaults")


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_float64_params_and_eval_params_match_the_reference(case, x64):
    name, kwargs = case
    y_error, x_error, lr_error, _ = run_case(name, kwargs, jnp.float64, torch.float64, STEPS_F64)
    print(f"{_case_id(case)}: y {y_error:.2e}, x {x_error:.2e}, lr {lr_error:.2e}")
    assert y_error <= OPTIMIZER_RTOL_F64, f"train-mode params (y): {y_error:.3e}"
    assert x_error <= OPTIMIZER_RTOL_F64, f"eval params (x): {x_error:.3e}"
    assert lr_error <= LR_RTOL, f"current_learning_rate vs scheduled_lr: {lr_error:.3e}"


@pytest.mark.parametrize("case", F32_CASES, ids=[_case_id(c) for c in F32_CASES])
def test_float32_params_and_eval_params_match_the_reference(case):
    name, kwargs = case
    y_error, x_error, _, _ = run_case(name, kwargs, jnp.float32, torch.float32, STEPS_F32)
    print(f"{_case_id(case)} float32: y {y_error:.2e}, x {x_error:.2e}")
    assert y_error <= RTOL_F32, f"train-mode params (y): {y_error:.3e}"
    assert x_error <= RTOL_F32, f"eval params (x): {x_error:.3e}"


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules: the reference reads its group's lr at every step.


def _lr_factor(step):
    return 0.5 + 0.5 * jnp.cos(jnp.pi * step / 25.0)


@pytest.mark.parametrize(
    "case",
    [("AdamW", {"lr": 0.05, "warmup_steps": 5}), ("SGD", {"lr": 0.05}), ("RAdam", {"lr": 0.05})],
    ids=lambda case: case[0],
)
def test_schedule_multiplies_lr_like_a_torch_scheduler(case, x64):
    name, kwargs = case
    base = kwargs["lr"]
    y_error, x_error, lr_error, _ = run_case(
        name,
        kwargs,
        jnp.float64,
        torch.float64,
        STEPS_F64,
        learning_rate=lambda step: base * _lr_factor(step),
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: float(_lr_factor(step))
        ),
    )
    assert max(y_error, x_error) <= OPTIMIZER_RTOL_F64, (y_error, x_error)
    assert lr_error <= LR_RTOL, lr_error


@pytest.mark.parametrize("name", ["AdamW", "SGD"])
def test_one_cycle_momentum_drives_beta1_like_torch_cycle_momentum(name, x64):
    steps = 30
    schedule = optlib.get_scheduler(
        "OneCycleLR", learning_rate=0.05, max_lr=0.05, total_steps=steps + 1
    )
    y_error, x_error, _, _ = run_case(
        name,
        {"lr": 0.05},
        jnp.float64,
        torch.float64,
        steps,
        learning_rate=schedule,
        scheduler=lambda opt: torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=0.05, total_steps=steps + 1
        ),
    )
    assert max(y_error, x_error) <= OPTIMIZER_RTOL_F64, (y_error, x_error)


# ---------------------------------------------------------------------------------------------
# Evaluation parameters in combinators.


def test_eval_params_equal_params_before_the_first_update():
    params = {"w": jnp.arange(3.0), "b": jnp.ones(2)}
    state = optlib.schedule_free_adamw().init(params)
    x = optlib.schedule_free_eval_params(params, state)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), x, params))


def test_param_groups_each_recover_x_with_their_own_beta1(x64):
    """Two reference param groups with different betas and lr == optlib.param_groups."""
    problem = make_problem(STEPS_F64)
    group_of = {"scalar": "a", "vector": "a", "matrix": "b", "tensor": "b"}
    groups = {
        "a": dict(lr=0.05, betas=(0.9, 0.999), warmup_steps=4),
        "b": dict(lr=0.02, betas=(0.6, 0.99), warmup_steps=4, weight_decay=0.1),
    }
    tx = optlib.param_groups(
        {label: optlib.schedule_free_adamw(**_optlib_kwargs(kw)) for label, kw in groups.items()},
        lambda params: {k: group_of[k] for k in params},
    )
    ours, _ = optlib_trajectory(tx, problem, jnp.float64, record=_record_optlib)

    def make_optimizer(params):
        optimizer = schedulefree.AdamWScheduleFree(
            [
                {"params": [p for k, p in params.items() if group_of[k] == label], **kw}
                for label, kw in groups.items()
            ]
        )
        optimizer.train()
        return optimizer

    reference, *_ = torch_trajectory(make_optimizer, problem, torch.float64, record=_record_torch)
    (y, x, _), (y_ref, x_ref, _) = _split(ours), _split(reference)
    assert max_relative_error(y, y_ref) <= OPTIMIZER_RTOL_F64
    assert max_relative_error(x, x_ref) <= OPTIMIZER_RTOL_F64


def test_eval_params_inside_inject_hyperparams_and_jit():
    tx = optax.inject_hyperparams(optlib.schedule_free_sgd, static_args=("warmup_steps",))(
        learning_rate=0.1, momentum=0.9, warmup_steps=2
    )
    params = {"w": jnp.array([1.0, -2.0])}
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(jax.tree.map(lambda p: 2 * p, params), state, params)
        params = optax.apply_updates(params, updates)
    x = jax.jit(optlib.schedule_free_eval_params)(params, state)
    z = state.inner_state["schedule_free"].z
    np.testing.assert_allclose(x["w"], (params["w"] - 0.1 * z["w"]) / 0.9, rtol=1e-6)


def test_eval_params_without_a_schedule_free_state_is_a_value_error():
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="ScheduleFreeState"):
        optlib.schedule_free_eval_params(params, optlib.adam().init(params))


# ---------------------------------------------------------------------------------------------
# The optax twin: the same arithmetic without warm-up, one step off with it.


def _optax_trajectory(tx, problem):
    return optlib_trajectory(
        tx,
        problem,
        jnp.float64,
        record=lambda params, state: optax.contrib.schedule_free_eval_params(state, params),
    )[0]


@pytest.mark.parametrize(
    "reference_cls, optax_fn, kwargs",
    [
        (schedulefree.AdamWScheduleFree, optax.contrib.schedule_free_adamw, {"weight_decay": 0.1}),
        (schedulefree.SGDScheduleFree, optax.contrib.schedule_free_sgd, {}),
    ],
    ids=["adamw", "sgd"],
)
def test_optax_contrib_matches_without_warmup_and_is_one_step_off_with_it(
    reference_cls, optax_fn, kwargs, x64
):
    """The benchmarks' ``same_math`` twin, and the difference the docstrings describe."""
    problem = make_problem(STEPS_F64)

    def reference_x(**more):
        def make_optimizer(params):
            optimizer = reference_cls(list(params.values()), lr=0.05, **kwargs, **more)
            optimizer.train()
            return optimizer

        reference, *_ = torch_trajectory(
            make_optimizer, problem, torch.float64, record=_record_torch
        )
        return _split(reference)[1]

    plain = _optax_trajectory(optax_fn(0.05, **kwargs), problem)
    assert max_relative_error(plain, reference_x()) <= 1e-9
    warm = _optax_trajectory(optax_fn(0.05, warmup_steps=5, **kwargs), problem)
    assert max_relative_error(warm, reference_x(warmup_steps=5)) > 1e-3


# ---------------------------------------------------------------------------------------------
# Bad input, at construction.

BAD_INPUTS = [
    (optlib.schedule_free_adamw, dict(learning_rate=-1.0), "learning_rate"),
    (optlib.schedule_free_adamw, dict(betas=(0.0, 0.999)), "betas[0]"),
    (optlib.schedule_free_adamw, dict(betas=(1.0, 0.999)), "betas[0]"),
    (optlib.schedule_free_adamw, dict(betas=(0.9, 1.0)), "betas[1]"),
    (optlib.schedule_free_adamw, dict(eps=-1e-8), "eps"),
    (optlib.schedule_free_adamw, dict(weight_decay=-0.1), "weight_decay"),
    (optlib.schedule_free_adamw, dict(warmup_steps=-1), "warmup_steps"),
    (optlib.schedule_free_adamw, dict(warmup_steps=2.5), "warmup_steps"),
    (optlib.schedule_free_adamw, dict(r=float("nan")), "r"),
    (optlib.schedule_free_adamw, dict(weight_lr_power=-1.0), "weight_lr_power"),
    (optlib.schedule_free_sgd, dict(momentum=0.0), "momentum"),
    (optlib.schedule_free_sgd, dict(momentum=1.0), "momentum"),
    (optlib.schedule_free_sgd, dict(learning_rate="0.1"), "learning_rate"),
    (optlib.schedule_free_radam, dict(silent_sgd_phase="False"), "silent_sgd_phase"),
    (optlib.schedule_free_radam, dict(betas=(0.9,)), "betas"),
    (
        optlib.schedule_free_adamw,
        dict(learning_rate=optlib.reduce_lr_on_plateau(1e-3)),
        "learning_rate",
    ),
    (optlib.schedule_free_sgd, dict(learning_rate=optlib.greedy_lr(1e-3)), "learning_rate"),
]


@pytest.mark.parametrize(
    "factory, kwargs, parameter",
    BAD_INPUTS,
    ids=[f"{f.__name__}-{next(iter(kw))}-{kw[next(iter(kw))]!r:.20}" for f, kw, _ in BAD_INPUTS],
)
def test_bad_input_is_rejected_at_construction_naming_the_parameter(factory, kwargs, parameter):
    with pytest.raises((ValueError, TypeError)) as error:
        factory(**kwargs)
    assert parameter in str(error.value), str(error.value)


def test_momentum_wording_is_the_reference_one():
    with pytest.raises(ValueError, match="between 0 and 1 exclusive"):
        optlib.schedule_free_sgd(momentum=1.5)
    with pytest.raises(ValueError, match="between 0 and 1 exclusive"):
        schedulefree.SGDScheduleFree([torch.nn.Parameter(torch.zeros(1))], momentum=1.5)
