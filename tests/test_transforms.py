"""Transforms: torch's gradient clipping, precision of the statistics, edge cases of the chains."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from parity import torch, torch_default_dtype

import optlib
from optlib.optimizers._links import momentum_from

SHAPES = {"scalar": (), "vector": (5,), "matrix": (3, 4), "tensor": (2, 3, 2)}
OPTIMIZERS = [
    optlib.sgd,
    optlib.adam,
    optlib.adamw,
    optlib.adagrad,
    optlib.rmsprop,
    optlib.adadelta,
    optlib.nadam,
    optlib.radam,
    optlib.adamax,
    optlib.rprop,
]


def _grads(seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: scale * rng.normal(size=s) for k, s in SHAPES.items()}


def _torch_clip(grads: dict, clip, dtype=torch.float64):
    """Runs a torch clipping function on parameters whose ``.grad`` are ``grads``."""
    params = []
    for g in grads.values():
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=dtype))
        p.grad = torch.tensor(g, dtype=dtype)
        params.append(p)
    result = clip(params)
    return {k: p.grad.numpy() for k, p in zip(grads, params)}, result


def _optlib_clip(grads: dict, tx, dtype=jnp.float64):
    grads = {k: jnp.asarray(v, dtype) for k, v in grads.items()}
    updates, state = jax.jit(tx.update)(grads, tx.init(grads))
    return {k: np.asarray(v) for k, v in updates.items()}, state


# ---------------------------------------------------------------------------------------------
# clip_grad_norm_ / clip_grad_value_.

CLIP_NORM_CASES = [
    # (max_norm, norm_type, gradient scale)
    (0.5, 2.0, 1.0),  # clipped
    (100.0, 2.0, 1.0),  # not clipped: torch multiplies by exactly 1
    (1.0, 1.0, 1.0),
    (0.3, float("inf"), 1.0),
    (0.3, "inf", 1.0),
    (0.7, 3.0, 1.0),
    (1e-4, 2.0, 1e-4),  # tiny norm: torch's +1e-6 matters
]


@pytest.mark.parametrize("max_norm, norm_type, scale", CLIP_NORM_CASES)
def test_clip_grad_norm_matches_torch(max_norm, norm_type, scale, x64):
    grads = _grads(scale=scale)
    reference, total_norm = _torch_clip(
        grads, lambda ps: torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type)
    )
    ours, state = _optlib_clip(grads, optlib.clip_grad_norm(max_norm, norm_type))
    for k in grads:
        np.testing.assert_allclose(ours[k], reference[k], rtol=1e-14, atol=0, err_msg=k)
    np.testing.assert_allclose(float(state.total_norm), float(total_norm), rtol=1e-14)


def test_clip_grad_norm_matches_torch_in_float32():
    grads = _grads(seed=1)
    reference, total_norm = _torch_clip(
        grads, lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.5), dtype=torch.float32
    )
    ours, state = _optlib_clip(grads, optlib.clip_grad_norm(0.5), dtype=jnp.float32)
    for k in grads:
        assert ours[k].dtype == np.float32
        np.testing.assert_allclose(ours[k], reference[k], rtol=1e-6, err_msg=k)
    np.testing.assert_allclose(float(state.total_norm), float(total_norm), rtol=1e-6)


def test_optax_clip_by_global_norm_misses_torchs_epsilon(x64):
    """Why optlib has its own: optax scales by max_norm / n, torch by max_norm / (n + 1e-6)."""
    grads = _grads(scale=1e-4)
    reference, _ = _torch_clip(grads, lambda ps: torch.nn.utils.clip_grad_norm_(ps, 1e-4))
    optax_result, _ = _optlib_clip(grads, optax.clip_by_global_norm(1e-4))
    ours, _ = _optlib_clip(grads, optlib.clip_grad_norm(1e-4))
    relative = lambda a: max(
        np.max(np.abs(a[k] - reference[k])) / np.max(np.abs(reference[k])) for k in grads
    )
    assert relative(ours) < 1e-14
    assert relative(optax_result) > 1e-5


def test_clip_grad_norm_with_nonfinite_norm_scales_by_nan_like_torch_or_raises(x64):
    grads = _grads()
    grads["vector"][2] = np.inf
    reference, _ = _torch_clip(grads, lambda ps: torch.nn.utils.clip_grad_norm_(ps, 1.0))
    ours, _ = _optlib_clip(grads, optlib.clip_grad_norm(1.0))
    for k in grads:
        np.testing.assert_array_equal(np.isnan(ours[k]), np.isnan(reference[k]))
    with pytest.raises(RuntimeError, match="non-finite"):
        _torch_clip(
            grads, lambda ps: torch.nn.utils.clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)
        )
    checked = optlib.clip_grad_norm(1.0, error_if_nonfinite=True)
    as_arrays = lambda tree: {k: jnp.asarray(v) for k, v in tree.items()}
    with pytest.raises(RuntimeError, match="non-finite"):  # eagerly, as torch
        checked.update(as_arrays(grads), checked.init(as_arrays(grads)))
    finite, _ = checked.update(as_arrays(_grads()), checked.init(as_arrays(_grads())))
    assert all(np.all(np.isfinite(v)) for v in finite.values())


@pytest.mark.parametrize("clip_value", [0.0, 0.25, 1.0, 10.0])
def test_clip_grad_value_matches_torch(clip_value, x64):
    grads = _grads()
    grads["matrix"][0, 0] = np.nan
    reference, _ = _torch_clip(grads, lambda ps: torch.nn.utils.clip_grad_value_(ps, clip_value))
    ours, _ = _optlib_clip(grads, optlib.clip_grad_value(clip_value))
    for k in grads:
        np.testing.assert_array_equal(ours[k], reference[k], err_msg=k)


@pytest.mark.parametrize(
    "factory, kwargs, parameter",
    [
        (optlib.clip_grad_norm, {"max_norm": -1.0}, "max_norm"),
        (optlib.clip_grad_norm, {"max_norm": 1.0, "norm_type": 0.0}, "norm_type"),
        (optlib.clip_grad_norm, {"max_norm": 1.0, "norm_type": "fro"}, "norm_type"),
        (optlib.clip_grad_value, {"clip_value": -0.5}, "clip_value"),
        (optlib.trace_momentum, {"momentum": 0.9, "dampening": -0.1}, "dampening"),
        (optlib.scale_by_adam, {"betas": (0.9,)}, "betas"),
        (optlib.add_decoupled_weight_decay, {"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_transform_arguments_are_checked(factory, kwargs, parameter):
    with pytest.raises(ValueError, match=parameter):
        factory(**kwargs)


# ---------------------------------------------------------------------------------------------
# Precision: float32 statistics for bf16/fp16 parameters, updates in the parameter dtype.


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda f: f.__name__)
def test_low_precision_params_get_float32_statistics_and_own_dtype_updates(optimizer, dtype):
    params = {k: jnp.ones(s, dtype) for k, s in SHAPES.items()}
    with_momentum = optimizer in (optlib.sgd, optlib.rmsprop)
    tx = optimizer(0.1, momentum=0.9) if with_momentum else optimizer(0.1)
    state = tx.init(params)
    updates, new_state = jax.eval_shape(tx.update, params, state, params)
    assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
    shaped = [x for x in jax.tree.leaves(new_state) if x.shape in SHAPES.values() and x.ndim]
    assert shaped and all(x.dtype == jnp.float32 for x in shaped)
    assert jax.tree.map(lambda x: x.dtype, state) == jax.tree.map(lambda x: x.dtype, new_state)


def test_bf16_update_is_the_float32_update_rounded_once():
    """Statistics and arithmetic in float32; only the returned update is rounded to bf16."""
    grads = {k: jnp.asarray(v, jnp.bfloat16) for k, v in _grads().items()}
    grads32 = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
    tx = optlib.scale_by_adam()
    state, state32 = tx.init(grads), tx.init(grads32)
    update = jax.jit(tx.update)
    for _ in range(3):
        updates, state = update(grads, state)
        updates32, state32 = update(grads32, state32)
        for k in grads:
            assert updates[k].dtype == jnp.bfloat16
            np.testing.assert_array_equal(
                np.asarray(updates[k], np.float32),
                np.asarray(updates32[k].astype(jnp.bfloat16), np.float32),
            )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nadam_mu_product_follows_the_parameter_dtype_like_torch_default_dtype(dtype, x64):
    """torch keeps ``mu_product`` in its default dtype; optlib in the statistics dtype. With
    torch's default dtype equal to the parameters' dtype the two are the same number."""
    tx = optlib.scale_by_nadam()
    params = {"w": jnp.ones(3, dtype)}
    _, state = jax.jit(tx.update)(params, tx.init(params))
    assert state.mu_product.dtype == jnp.dtype(dtype)
    with torch_default_dtype(getattr(torch, dtype)):
        param = torch.nn.Parameter(torch.ones(3))
        optimizer = torch.optim.NAdam([param])
        param.grad = torch.ones(3)
        optimizer.step()
    mu_product = optimizer.state[param]["mu_product"]
    assert mu_product.dtype == getattr(torch, dtype)
    assert float(state.mu_product) == float(mu_product)


# ---------------------------------------------------------------------------------------------
# Edge cases of the chains.


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda f: f.__name__)
def test_optimizer_accepts_a_tree_with_no_leaves(optimizer):
    """An empty parameter group (e.g. no biases) must not break ``param_groups``."""
    tx = optimizer(0.1)
    updates, _ = tx.update({}, tx.init({}), {})
    assert updates == {}


def test_constant_zero_momentum_keeps_no_buffer_like_torch():
    assert optlib.trace_momentum(0.0).init({"w": jnp.ones(3)}) == optax.EmptyState()
    state = optlib.trace_momentum(0.9).init({"w": jnp.ones(3)})
    assert state.momentum_buffer["w"].shape == (3,)


def test_momentum_from_prefers_the_schedules_momentum():
    schedule = optlib.MomentumSchedule(lambda step: 0.1, lambda step: 0.8)
    assert momentum_from(schedule, 0.9) is schedule.momentum
    assert momentum_from(0.1, 0.9) == 0.9
