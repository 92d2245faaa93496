"""Runs of one optimizer in torch and in optlib on bf16/fp16 parameters, for the tests that
compare them (``test_statistics_dtype``, ``test_torch_exact_low_precision*``).

The problem: a 64x32 matrix and a 32-vector, uniform in [-1.5, 1.5], and ``STEPS`` float32
gradients (scaled normal noise) rounded once to the parameters' dtype, the same on both
sides. The gradients do not depend on the parameters, so a difference does not feed back
through the loss: what is compared is the optimizers' arithmetic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

STEPS = 100
SHAPES = {"w": (64, 32), "b": (32,)}
DTYPES = {"bfloat16": (jnp.bfloat16, torch.bfloat16), "float16": (jnp.float16, torch.float16)}


def problem(steps: int = STEPS):
    """``(params, grads)`` as float32 numpy arrays; ``grads[k]`` has a leading step axis."""
    rng = np.random.default_rng(0)
    params = {k: rng.uniform(-1.5, 1.5, s).astype(np.float32) for k, s in SHAPES.items()}
    scale = {k: rng.uniform(0.5, 1.5, s).astype(np.float32) for k, s in SHAPES.items()}
    noise = {k: rng.normal(0, 0.5, (STEPS, *s)).astype(np.float32) for k, s in SHAPES.items()}
    grads = {k: (scale[k] * noise[k])[:steps] for k in SHAPES}
    return params, grads


def torch_run(make, dtype, steps: int = STEPS, tensors_of=None):
    """``(params, state)`` after ``steps`` steps of ``make(list_of_parameters)`` in torch:
    float32 numpy arrays, and each parameter's parameter-shaped state tensors by name.
    ``tensors_of(optimizer, k, p)`` replaces the state read-out (schedulefree's ``z``...)."""
    params, grads = problem(steps)
    tensors = {k: torch.nn.Parameter(torch.tensor(v).to(dtype)) for k, v in params.items()}
    optimizer = make(list(tensors.values()))
    for step in range(steps):
        for k, p in tensors.items():
            p.grad = torch.tensor(grads[k][step]).to(dtype)
        optimizer.step()
    state = {
        k: {
            name: value.float().numpy()
            for name, value in optimizer.state[p].items()
            if torch.is_tensor(value) and value.shape == p.shape
        }
        for k, p in tensors.items()
    }
    if tensors_of is not None:
        for k, p in tensors.items():
            state[k].update(tensors_of(optimizer, k, p))
    return {k: p.detach().float().numpy() for k, p in tensors.items()}, state


def optlib_run(tx, dtype, steps: int = STEPS, value_fn=None):
    """``(params, state)`` after ``steps`` jitted steps of ``tx`` (one ``lax.scan``): the
    parameters as float32 numpy arrays and the final optlib state."""
    params, grads = problem(steps)

    @jax.jit
    def run(params, grads):
        def step(carry, g):
            params, state = carry
            g = jax.tree.map(lambda x: x.astype(dtype), g)
            updates, state = tx.update(g, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, state), _ = jax.lax.scan(step, (params, tx.init(params)), grads)
        return params, state

    out, state = run(jax.tree.map(lambda x: jnp.asarray(x).astype(dtype), params), grads)
    return {k: np.asarray(v.astype(jnp.float32)) for k, v in out.items()}, state


def as_float32(leaf) -> np.ndarray:
    """A state leaf as a float32 numpy array."""
    return np.asarray(jnp.asarray(leaf).astype(jnp.float32))


def assert_same_bits(name: str, ours: dict, reference: dict, ours_state=None, fields=None):
    """Parameters (and the state ``fields``: ``{torch name: (state, k) -> optlib leaf}``)
    equal torch's bit for bit (NaN where torch has NaN, infinities where it has them)."""
    for k in SHAPES:
        np.testing.assert_array_equal(ours[k], reference[0][k], err_msg=f"{name}: params[{k}]")
        for field, leaf in (fields or {}).items():
            np.testing.assert_array_equal(
                as_float32(leaf(ours_state, k)),
                reference[1][k][field],
                err_msg=f"{name}: {field}[{k}]",
            )


def check_case(
    label: str, dtype: str, make_reference, make_optlib, fields: dict, *, all_fields: bool = False
) -> None:
    """One table row: ``STEPS`` steps of the reference (``make_reference(params)``) and of
    ``make_optlib()`` in ``dtype`` (a key of ``DTYPES``), then ``assert_same_bits``; with
    ``all_fields``, ``fields`` must name every parameter-shaped state tensor of the
    reference."""
    jax_dtype, torch_dtype = DTYPES[dtype]
    reference = torch_run(make_reference, torch_dtype)
    if all_fields:
        assert set(fields) == set(reference[1]["w"]), "every parameter-shaped state tensor"
    ours, state = optlib_run(make_optlib(), jax_dtype)
    assert_same_bits(f"{label} {dtype} ({STEPS} steps)", ours, reference, state, fields)
