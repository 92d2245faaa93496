"""optlib's lion / ademamix / stable_adamw against their reference packages, step by step.

The references are the classes Hugging Face Trainer builds for ``optim="lion_32bit"``,
``"ademamix"`` and ``"stable_adamw"``: ``bitsandbytes.optim.Lion`` / ``AdEMAMix`` with
``optim_bits=32`` and ``optimi.StableAdamW``. bitsandbytes' 32-bit optimizers run on CPU
here (its CPU kernel) but compute in float32 whatever the parameter dtype, so they are
compared in float32 (within float32 rounding, ``OPTIMIZER_RTOL_F32``); in float64 the same
math is checked against ``lion_pytorch.Lion`` and against bitsandbytes' own pure-torch
``_ReferenceAdEMAMix`` (one parameter per group: that class re-applies its alpha / beta3
schedules to every further parameter of a group). optimi runs in float64.
The problem is tests/parity.py's multi-tensor quartic with per-step noise.
"""

from __future__ import annotations

import warnings

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

bitsandbytes = pytest.importorskip("bitsandbytes", reason="the Lion / AdEMAMix reference")
lion_pytorch = pytest.importorskip("lion_pytorch", reason="the float64 Lion reference")
optimi = pytest.importorskip("optimi", reason="the StableAdamW reference (torch-optimi)")
from bitsandbytes.optim.ademamix import _ReferenceAdEMAMix  # noqa: E402

STEPS = 40


def _bnb(cls):
    def make(params, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(list(params.values()), optim_bits=32, **kwargs)

    return make


def _one_group_per_tensor(cls):
    return lambda params, **kwargs: cls([{"params": [p]} for p in params.values()], **kwargs)


def _optimi(params, **kwargs):
    return optimi.StableAdamW(list(params.values()), foreach=False, triton=False, **kwargs)


REFERENCES = {  # (name, dtype) -> (reference factory, optlib optimizer)
    ("lion", "float64"): (
        lambda params, **kw: lion_pytorch.Lion(list(params.values()), **kw),
        optlib.lion,
    ),
    ("lion", "float32"): (_bnb(bitsandbytes.optim.Lion), optlib.lion),
    ("ademamix", "float64"): (_one_group_per_tensor(_ReferenceAdEMAMix), optlib.ademamix),
    ("ademamix", "float32"): (_bnb(bitsandbytes.optim.AdEMAMix), optlib.ademamix),
    ("stable_adamw", "float64"): (_optimi, optlib.stable_adamw),
    ("stable_adamw", "float32"): (_optimi, optlib.stable_adamw),
}
DTYPES = {"float64": (jnp.float64, torch.float64), "float32": (jnp.float32, torch.float32)}


def run_case(name, dtype, kwargs, *, learning_rate=None, torch_hooks=None):
    make_reference, optlib_fn = REFERENCES[name, dtype]
    jax_dtype, torch_dtype = DTYPES[dtype]
    problem = make_problem(STEPS)
    optlib_kwargs = torch_kwargs_to_optlib(kwargs)
    if learning_rate is not None:
        optlib_kwargs["learning_rate"] = learning_rate
    ours, state = optlib_trajectory(optlib_fn(**optlib_kwargs), problem, jax_dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference, optimizer, _ = torch_trajectory(
            lambda params: make_reference(params, **kwargs),
            problem,
            torch_dtype,
            **(torch_hooks or {}),
        )
    return max_relative_error(ours, reference), state, optimizer


LION = [
    {},
    {"lr": 3e-3, "betas": (0.8, 0.95)},
    {"lr": 1e-2, "weight_decay": 0.5},
    {"lr": 5e-3, "betas": (0.95, 0.98), "weight_decay": 0.1},
]
ADEMAMIX = [
    {},
    {"lr": 1e-2, "betas": (0.8, 0.99, 0.999), "alpha": 2.0, "eps": 1e-6, "weight_decay": 0.1},
    {"lr": 1e-2, "alpha": 8.0, "t_alpha": 15},
    {"lr": 1e-2, "betas": (0.9, 0.999, 0.999), "t_beta3": 25, "weight_decay": 0.0},
    {"lr": 5e-3, "betas": (0.7, 0.95, 0.99), "alpha": 3.0, "t_alpha": 30, "t_beta3": 10},
]
STABLE_ADAMW = [
    {"lr": 1e-3},
    {"lr": 3e-2, "betas": (0.8, 0.95), "eps": 1e-3, "weight_decay": 0.1},
    {"lr": 5e-2, "weight_decay": 0.0, "eps": 1e-8},
    {"lr": 2e-2, "weight_decay": 1e-4, "decouple_lr": True},
    {"lr": 2e-2, "weight_decay": 1e-4, "decouple_lr": True, "max_lr": 0.1},
]
CASES = (
    [("lion", kw) for kw in LION]
    + [("ademamix", kw) for kw in ADEMAMIX]
    + [("stable_adamw", kw) for kw in STABLE_ADAMW]
)
F32_CASES = [
    ("lion", LION[1]),
    ("lion", LION[3]),
    ("ademamix", ADEMAMIX[1]),
    ("ademamix", ADEMAMIX[4]),
    ("stable_adamw", STABLE_ADAMW[1]),
    ("stable_adamw", STABLE_ADAMW[3]),
]


def _case_id(case) -> str:
    name, kwargs = case
    return name + ("-" + ",".join(f"{k}={v}" for k, v in kwargs.items()) if kwargs else "-defaults")


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_float64_trajectory_matches_the_reference(case, x64):
    name, kwargs = case
    error, *_ = run_case(name, "float64", kwargs)
    print(f"{_case_id(case)}: float64 max relative error {error:.3e}")
    assert error <= OPTIMIZER_RTOL_F64, f"{_case_id(case)}: max relative error {error:.3e}"


@pytest.mark.parametrize("case", F32_CASES, ids=[_case_id(c) for c in F32_CASES])
def test_float32_trajectory_matches_bitsandbytes_and_optimi(case):
    name, kwargs = case
    error, *_ = run_case(name, "float32", kwargs)
    print(f"{_case_id(case)}: float32 max relative error {error:.3e}")
    assert error <= OPTIMIZER_RTOL_F32, f"{_case_id(case)}: max relative error {error:.3e}"


# ---------------------------------------------------------------------------------------------
# Schedules: an lr schedule, and betas[0] driven like torch's cycle_momentum.


def _learning_rate(base):
    return lambda step: base * (0.5 + 0.5 * jnp.cos(jnp.pi * step / 25.0))


def _cycled_beta1(step):
    return 0.9 - 0.1 * jnp.sin(jnp.pi * step / 30.0) ** 2


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["lion", "stable_adamw"])
def test_nonfinite_gradients_follow_the_reference(name, dtype, x64):
    """Lion's references step by torch's ``sign``, 0 for NaN: a NaN gradient entry does not
    move, and the NaN it leaves in the momentum freezes that entry afterwards. optimi's
    StableAdamW clips its rate by Python's ``max(1, rms)``, which is 1 for a NaN rms: only
    the non-finite entries of the tensor go NaN, not the whole tensor."""
    make_reference, optimizer_fn = REFERENCES[(name, dtype)]
    jax_dtype, torch_dtype = DTYPES[dtype]
    rtol = {"float32": 1e-6, "float64": 1e-13}[dtype]
    p0 = np.array([1.0, -2.0, 0.5, 3.0])
    nan, inf = np.nan, np.inf
    gradients = [[0.1, -0.2, 0.3, 0.5], [nan, 0.2, inf, 0.5], [0.1, 0.2, 0.3, -inf]]
    reference = torch.tensor(p0, dtype=torch_dtype, requires_grad=True)
    optimizer = make_reference({"w": reference}, lr=1e-2, weight_decay=0.1)
    tx = optimizer_fn(1e-2, weight_decay=0.1)
    params = jnp.asarray(p0, jax_dtype)
    state = tx.init(params)
    for gradient in gradients:
        reference.grad = torch.tensor(gradient, dtype=torch_dtype)
        optimizer.step()
        updates, state = tx.update(jnp.asarray(gradient, jax_dtype), state, params)
        params = optax.apply_updates(params, updates)
        expected, ours = reference.detach().numpy(), np.asarray(params)
        assert not np.isnan(expected).all()
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
        # equal up to the rounding of the decay's order (p (1 - lr wd) first, in both)
        np.testing.assert_allclose(ours, expected, rtol=rtol, atol=0)


@pytest.mark.parametrize(
    "name, kwargs",
    [("lion", {"lr": 1e-2, "weight_decay": 0.1}), ("ademamix", {"lr": 1e-2, "t_beta3": 20})],
)
def test_momentum_schedule_drives_lr_and_beta1_like_cycle_momentum(name, kwargs, x64):
    learning_rate = _learning_rate(kwargs["lr"])

    def set_group(optimizer, step):  # what OneCycleLR / CyclicLR do before each step
        for group in optimizer.param_groups:
            group["lr"] = float(learning_rate(step))
            group["betas"] = (float(_cycled_beta1(step)), *group["betas"][1:])

    error, state, optimizer = run_case(
        name,
        "float64",
        kwargs,
        learning_rate=optlib.MomentumSchedule(learning_rate, _cycled_beta1),
        torch_hooks={"before_step": set_group},
    )
    assert error <= OPTIMIZER_RTOL_F64, f"{name}: max relative error {error:.3e}"
    set_group(optimizer, STEPS)
    np.testing.assert_allclose(
        float(optlib.current_learning_rate(state)), optimizer.param_groups[0]["lr"], rtol=1e-12
    )


def test_stable_adamw_with_an_lr_schedule_and_max_lr_matches_optimi(x64):
    learning_rate = _learning_rate(2e-2)
    kwargs = {"lr": 2e-2, "weight_decay": 1e-4, "decouple_lr": True, "max_lr": 2e-2}
    error, *_ = run_case(
        "stable_adamw",
        "float64",
        kwargs,
        learning_rate=learning_rate,
        torch_hooks={
            "scheduler": lambda opt: torch.optim.lr_scheduler.LambdaLR(
                opt, lambda step: float(learning_rate(step)) / 2e-2
            )
        },
    )
    assert error <= OPTIMIZER_RTOL_F64, f"max relative error {error:.3e}"


def test_optimi_kahan_sum_leaves_float32_and_float64_numbers_unchanged():
    """Why ``stable_adamw`` takes no ``kahan_sum``: optimi applies it to fp16/bf16 only."""
    problem = make_problem(10)
    for dtype in (torch.float32, torch.float64):
        runs = [
            torch_trajectory(lambda p, k=k: _optimi(p, lr=1e-2, kahan_sum=k), problem, dtype)[0]
            for k in (False, True)
        ]
        for key in runs[0]:
            np.testing.assert_array_equal(runs[0][key], runs[1][key])


# ---------------------------------------------------------------------------------------------
# Invalid arguments: the references raise ValueError (or fail later); so do we, at once.

INVALID = [
    (optlib.lion, {"learning_rate": -1e-4}, "learning_rate"),
    (optlib.lion, {"betas": (1.0, 0.99)}, r"betas\[0\]"),
    (optlib.lion, {"betas": (0.9, -0.1)}, r"betas\[1\]"),
    (optlib.lion, {"betas": (0.9, 0.99, 0.9)}, "betas"),
    (optlib.lion, {"weight_decay": -0.1}, "weight_decay"),
    (optlib.ademamix, {"betas": (0.9, 0.999)}, "betas"),
    (optlib.ademamix, {"betas": (0.9, 0.999, 1.0)}, r"betas\[2\]"),
    (optlib.ademamix, {"alpha": -1.0}, "alpha"),
    (optlib.ademamix, {"t_alpha": -3}, "t_alpha"),
    (optlib.ademamix, {"t_alpha": 2.5}, "t_alpha"),
    (optlib.ademamix, {"t_beta3": "10"}, "t_beta3"),
    (optlib.ademamix, {"t_beta3": 10, "betas": (0.0, 0.999, 0.9999)}, "t_beta3"),
    (optlib.ademamix, {"eps": -1e-8}, "eps"),
    (optlib.ademamix, {"weight_decay": float("nan")}, "weight_decay"),
    (optlib.stable_adamw, {"learning_rate": -1.0}, "learning_rate"),
    (optlib.stable_adamw, {"learning_rate": 1e-3, "betas": (0.9, 1.5)}, r"betas\[1\]"),
    (optlib.stable_adamw, {"learning_rate": 1e-3, "eps": -1.0}, "eps"),
    (optlib.stable_adamw, {"learning_rate": 1e-3, "weight_decay": -1.0}, "weight_decay"),
    (optlib.stable_adamw, {"learning_rate": 1e-3, "decouple_lr": "yes"}, "decouple_lr"),
    (optlib.stable_adamw, {"learning_rate": 1e-3, "max_lr": -1.0}, "max_lr"),
    (
        optlib.stable_adamw,
        {"learning_rate": lambda step: 1e-3, "decouple_lr": True},
        "max_lr",
    ),
    (
        optlib.stable_adamw,
        {"learning_rate": optlib.one_cycle_lr(max_lr=0.1, total_steps=10)},
        "momentum or beta1",
    ),
]


@pytest.mark.parametrize(
    "factory, kwargs, parameter",
    INVALID,
    ids=[f"{f.__name__}-{','.join(map(str, kw))}" for f, kw, _ in INVALID],
)
def test_invalid_argument_raises_at_construction_naming_it(factory, kwargs, parameter):
    with pytest.raises((ValueError, TypeError), match=parameter):
        factory(**kwargs)


def test_references_reject_what_torch_style_checks_reject():
    """The bitsandbytes / optimi constructors raise ValueError for the same bad values."""
    param = [torch.nn.Parameter(torch.zeros(1))]
    for make in (
        lambda: bitsandbytes.optim.Lion(param, lr=-1.0),
        lambda: bitsandbytes.optim.Lion(param, betas=(1.0, 0.99)),
        lambda: bitsandbytes.optim.AdEMAMix(param, betas=(0.9, 0.999, 1.0)),
        lambda: bitsandbytes.optim.AdEMAMix(param, eps=-1.0),
        lambda: optimi.StableAdamW(param, lr=1e-3, betas=(0.9, 1.5)),
        lambda: optimi.StableAdamW(param, lr=1e-3, weight_decay=-1.0),
    ):
        with pytest.raises(ValueError):
            make()
    with pytest.raises(ValueError, match="momentum or beta1"):
        torch.optim.lr_scheduler.OneCycleLR(
            optimi.StableAdamW(param, lr=1e-3), max_lr=0.1, total_steps=10
        )
