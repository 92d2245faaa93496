"""optlib.muon against torch.optim.Muon, step by step, on the same gradients.

The problem is tests/parity.py's quartic loss with noise, on three matrices: square (4x4),
wide (3x6) and tall (7x3, which Newton–Schulz transposes and torch's "original" lr ratio
scales by sqrt(7/3)).

Two comparisons:

* **float64**: torch's ``_zeropower_via_newtonschulz`` starts with ``grad.bfloat16()``. The
  ``torch_newton_schulz_in_float64`` fixture monkeypatches ``torch.Tensor.bfloat16`` (for
  the test only) to return a float64 *copy* (a copy, as ``bfloat16()`` of a float32 tensor
  is: the helper divides it in place), so torch's own helper runs unchanged in float64;
  optlib runs with ``ns_dtype="float64"``. The two agree to float64 round-off (<= 1e-10).
* **the default bfloat16 path**: float32 parameters, both sides' Newton–Schulz in bfloat16.
  Both round the same operations to bfloat16, but the float32 sums inside the products are
  accumulated in different orders, so now and then one element rounds to the neighbouring
  bfloat16 value (a relative 2**-8) and the trajectories drift apart by that much. Measured
  over 30 steps: ~1e-6 where every element rounds alike (most configurations), up to 2.1e-3
  where one does not (seen in a wider table of 19 configurations); ``BF16_RTOL`` = 1e-2.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from parity import (
    OPTIMIZER_RTOL_F64,
    make_problem,
    max_relative_error,
    optlib_trajectories,
    optlib_trajectory,
    torch,
    torch_kwargs_to_optlib,
    torch_trajectory,
)

import optlib

STEPS = 30
SHAPES = {"square": (4, 4), "wide": (3, 6), "tall": (7, 3)}
BF16_RTOL = 1e-2
ADJUST = {"none": None, "original": "original", "match_rms_adamw": "match_rms_adamw"}

# nesterov x adjust_lr_fn (weight decay and momentum varying), then the defaults
# (adjust_lr_fn=None), the Newton–Schulz keywords with eps, and a zero momentum.
CONFIGS = {
    f"nesterov={nesterov},adjust={adjust}": dict(
        lr=0.05, nesterov=nesterov, adjust_lr_fn=adjust, weight_decay=wd, momentum=momentum
    )
    for (nesterov, adjust), wd, momentum in zip(
        itertools.product((True, False), ("original", "match_rms_adamw")),
        (0.0, 0.1, 0.1, 0.0),
        (0.95, 0.5, 0.8, 0.9),
    )
}
CONFIGS |= {
    "defaults": dict(),
    "ns_steps=3": dict(lr=0.05, ns_steps=3),
    "ns_steps=1,no_nesterov": dict(lr=0.05, ns_steps=1, nesterov=False),
    "ns_coefficients,ns_steps=8,eps": dict(
        lr=0.03, ns_coefficients=(3.0, -3.2, 1.2), ns_steps=8, eps=1e-3, adjust_lr_fn="original"
    ),
    "momentum=0,no_nesterov": dict(lr=0.05, momentum=0.0, nesterov=False, weight_decay=0.3),
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """torch on one thread: on a shared 2-core machine its two threads make each small step
    ~25x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def torch_newton_schulz_in_float64(monkeypatch):
    """torch's Muon with its Newton–Schulz helper in float64 (see the module docstring);
    yields a list that counts the helper's conversions, to prove the patch was used."""
    calls = []

    def to_float64(self):
        calls.append(self.dtype)
        return self.to(torch.float64, copy=True)

    monkeypatch.setattr(torch.Tensor, "bfloat16", to_float64)
    yield calls


def torch_muon(kwargs):
    return lambda params: torch.optim.Muon(list(params.values()), **kwargs)


def run_table(dtype_jax, dtype_torch, ns_dtype) -> dict[str, float]:
    """Max relative parameter error of every configuration (optlib: one compile)."""
    problem = make_problem(STEPS, shapes=SHAPES)
    txs = {
        name: optlib.muon(**torch_kwargs_to_optlib(kwargs), ns_dtype=ns_dtype)
        for name, kwargs in CONFIGS.items()
    }
    ours = optlib_trajectories(txs, problem, dtype_jax)
    errors = {}
    for name, kwargs in CONFIGS.items():
        reference, _, _ = torch_trajectory(torch_muon(kwargs), problem, dtype_torch)
        errors[name] = max_relative_error(ours[name], reference)
    return errors


def test_float64_newton_schulz_matches_torch_muon_to_rounding(x64, torch_newton_schulz_in_float64):
    errors = run_table(jnp.float64, torch.float64, "float64")
    assert set(torch_newton_schulz_in_float64) == {torch.float64}
    print({name: f"{error:.1e}" for name, error in errors.items()})
    bad = {name: error for name, error in errors.items() if not error <= OPTIMIZER_RTOL_F64}
    assert not bad, f"max relative parameter errors above {OPTIMIZER_RTOL_F64}: {bad}"


def test_default_bfloat16_newton_schulz_matches_torch_muon_within_bf16_rounding():
    errors = run_table(jnp.float32, torch.float32, "bfloat16")
    print({name: f"{error:.1e}" for name, error in errors.items()})
    bad = {name: error for name, error in errors.items() if not error <= BF16_RTOL}
    assert not bad, f"max relative parameter errors above {BF16_RTOL}: {bad}"


def test_one_cycle_lr_drives_muon_momentum_like_torch(x64, torch_newton_schulz_in_float64):
    """torch's OneCycleLR (cycle_momentum=True) sets Muon's lr and ``momentum`` every step;
    a ``MomentumSchedule`` learning rate does the same; the buffers agree at the end."""
    schedule = optlib.one_cycle_lr(max_lr=0.05, total_steps=STEPS + 1)
    problem = make_problem(STEPS, shapes=SHAPES)
    ours, state = optlib_trajectory(optlib.muon(schedule, ns_dtype="float64"), problem, jnp.float64)
    reference, optimizer, _ = torch_trajectory(
        torch_muon(dict(lr=0.05)),
        problem,
        torch.float64,
        scheduler=lambda opt: torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=0.05, total_steps=STEPS + 1
        ),
    )
    error = max_relative_error(ours, reference)
    assert error <= OPTIMIZER_RTOL_F64, f"max relative parameter error {error:.3e}"
    params = list(optimizer.param_groups[0]["params"])
    for name, param in zip(SHAPES, params):
        np.testing.assert_allclose(
            state["momentum"].momentum_buffer[name],
            optimizer.state[param]["momentum_buffer"].numpy(),
            rtol=1e-10,
        )
    np.testing.assert_allclose(
        float(optlib.current_learning_rate(state)), optimizer.param_groups[0]["lr"], rtol=1e-12
    )


def test_newton_schulz_output_is_nearly_orthogonal_for_every_aspect_ratio():
    """The singular values land in torch's documented band (roughly 0.5 to 1.5), in bf16."""
    keys = jax.random.split(jax.random.key(0), 3)
    shapes = ((16, 16), (8, 24), (24, 8))
    matrices = {shape: jax.random.normal(key, shape) for key, shape in zip(keys, shapes)}
    outputs = jax.jit(lambda xs: {k: optlib.newton_schulz(x) for k, x in xs.items()})(matrices)
    for shape, o in outputs.items():
        assert o.dtype == jnp.bfloat16 and o.shape == shape
        singular = np.linalg.svd(np.asarray(o, np.float32), compute_uv=False)
        assert 0.5 < singular.min() and singular.max() < 1.5, (shape, singular)


def test_tall_matrix_gets_torch_lr_ratio_and_weight_decay_uses_the_plain_lr():
    """``p <- p (1 - lr wd) - lr ratio O``: with a zero gradient (O = 0) only the plain-lr
    decay moves the parameters, whatever ``adjust_lr_fn``; the ratios are torch's."""
    lr, wd = 0.1, 0.5
    params = {"tall": jnp.ones((8, 2)), "wide": jnp.ones((2, 8))}
    grads = jax.tree.map(jnp.zeros_like, params)
    txs = {k: optlib.muon(lr, weight_decay=wd, adjust_lr_fn=fn) for k, fn in ADJUST.items()}
    updates = jax.jit(
        lambda: {k: tx.update(grads, tx.init(params), params)[0] for k, tx in txs.items()}
    )()
    for per_adjust in updates.values():
        for name in params:
            np.testing.assert_allclose(per_adjust[name], -lr * wd * params[name], rtol=1e-6)
    assert optlib.adjusted_lr_ratio((8, 2)) == 2.0
    assert optlib.adjusted_lr_ratio((8, 2), "original") == 2.0
    assert optlib.adjusted_lr_ratio((2, 8)) == 1.0
    assert optlib.adjusted_lr_ratio((2, 8), "match_rms_adamw") == pytest.approx(0.2 * 8**0.5)


def test_state_is_reachable_by_name():
    params = {"w": jnp.ones((3, 4))}
    state = optlib.muon().init(params)
    assert state["momentum"].momentum_buffer["w"].shape == (3, 4)
    assert set(state) == {
        "momentum",
        "newton_schulz",
        "adjust_lr",
        "decoupled_weight_decay",
        "learning_rate",
    }


# ---------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("shape", [(5,), (), (2, 3, 4)])
def test_a_parameter_that_is_not_2d_is_rejected_at_init_with_torch_message(shape):
    params = {"layer": {"w": jnp.ones((3, 4)), "bad": jnp.ones(shape)}}
    with pytest.raises(ValueError, match="Muon only supports 2D parameters") as raised:
        optlib.muon().init(params)
    assert str(shape) in str(raised.value) and "['bad']" in str(raised.value)
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        torch.optim.Muon([torch.nn.Parameter(torch.ones(shape))])  # torch rejects it too


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        (dict(learning_rate=-1e-3), "learning_rate"),
        (dict(momentum=-0.1), "momentum"),
        (dict(momentum=1.0), "momentum"),
        (dict(momentum=1.5), "momentum"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(eps=-1e-7), "eps"),
        (dict(ns_steps=0), "ns_steps"),
        (dict(ns_steps=100), "ns_steps"),
        (dict(ns_steps=2.5), "ns_steps"),
        (dict(adjust_lr_fn="unknown"), "adjust_lr_fn"),
        (dict(ns_coefficients=(3.4, -4.7)), "ns_coefficients"),
        (dict(ns_coefficients=(3.4, "b", 2.0)), "ns_coefficients[1]"),
        (dict(nesterov="yes"), "nesterov"),
        (dict(ns_dtype="int32"), "ns_dtype"),
    ],
)
def test_bad_arguments_raise_naming_the_parameter(kwargs, parameter):
    with pytest.raises((ValueError, TypeError)) as raised:
        optlib.muon(**kwargs)
    assert parameter in str(raised.value)
    value = next(iter(kwargs.values()))
    if parameter == "ns_coefficients[1]":
        value = value[1]
    assert repr(value) in str(raised.value), raised.value


def test_a_momentum_cycling_rate_is_accepted_and_injected_ns_steps_is_explained():
    optlib.muon(optlib.one_cycle_lr(max_lr=0.02, total_steps=10)).init({"w": jnp.ones((2, 2))})
    injected = optax.inject_hyperparams(optlib.muon)(learning_rate=0.02)
    params = {"w": jnp.ones((2, 2))}
    state = injected.init(params)  # a concrete ns_steps array is an integer like any other
    with pytest.raises(TypeError, match="static_args=\\('ns_steps',\\)"):
        jax.jit(injected.update)(params, state, params)  # traced: it sets the loop length
