"""Small numeric conventions used across optlib (one place for each)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optlib._validation import check_float_dtype

__all__ = [
    "DEFAULT_STATISTICS_DTYPE",
    "INT32_MAX",
    "as_float",
    "cast",
    "check_statistics_dtype",
    "ema",
    "float_dtype",
    "safe_increment",
    "statistics_dtype",
    "update_number",
]

INT32_MAX = 2**31 - 1
"""Where optax's (and optlib's) int32 update counts saturate."""


def float_dtype() -> jnp.dtype:
    """The default float dtype: float32, or float64 under ``jax_enable_x64``."""
    return jnp.result_type(float)


def as_float(value) -> jax.Array:
    """``value`` as an array of the default float dtype."""
    return jnp.asarray(value, dtype=float_dtype())


def cast(x: jax.Array, dtype) -> jax.Array:
    """``x.astype(dtype)``, or ``x`` itself when it already has that dtype.

    The same value either way; skipping the no-op conversion keeps per-leaf tracing of large
    trees (thousands of leaves) as cheap as optax's.
    """
    return x if x.dtype == dtype else x.astype(dtype)


DEFAULT_STATISTICS_DTYPE = jnp.dtype("float32")
"""The ``statistics_dtype`` every optimizer and statistics transform defaults to (a dtype
instance, not the callable ``jnp.float32``: ``optax.inject_hyperparams`` would take a callable
default for a schedule and call it with the step count)."""


def statistics_dtype(dtype, minimum=DEFAULT_STATISTICS_DTYPE) -> jnp.dtype:
    """Dtype for optimizer statistics of a parameter of ``dtype``.

    With the default ``minimum=float32``: at least float32 (bf16/fp16 parameters keep float32
    statistics, as HF Adafactor computes in float32), float64 parameters keep float64. With
    ``minimum=None``: the parameter's own dtype, as torch keeps its optimizer state (and
    computes its step) in the parameter's dtype. This is what an optimizer's
    ``statistics_dtype`` option means.
    """
    if minimum is None:
        return jnp.dtype(dtype)
    return jnp.promote_types(dtype, minimum)


def check_statistics_dtype(value):
    """The ``statistics_dtype`` option checked: ``None`` or a floating dtype.

    Raises:
      TypeError: naming ``statistics_dtype`` and the bad value.
    """
    return check_float_dtype(
        "statistics_dtype", value, none_means="the parameters' dtype, as torch"
    )


def safe_increment(count: jax.Array, amount=1) -> jax.Array:
    """Adds ``amount`` (default one; a non-negative int32) to an int32 counter, saturating at
    2**31 - 1 instead of wrapping.

    The values of ``optax.safe_int32_increment``, written as ``min(count, 2**31 - 2) + 1``:
    optax's ``jnp.where`` lowers to a nested call that XLA must inline, and a call anywhere
    in a step makes XLA:CPU's compile of a large tree measurably slower (SGD with 300 leaves:
    +~0.15 s; see ``benchmarks``), while ``min`` and ``add`` are plain elementwise ops.
    """
    return jnp.minimum(count, INT32_MAX - amount) + amount


def update_number(count: jax.Array) -> jax.Array:
    """torch's / HF's 1-based ``step`` of the update made at optax count ``count``, as a float.

    The increment is on the int32 count (exact) and saturates with it; the one rounding is the
    conversion to the default float dtype.
    """
    return safe_increment(count).astype(float_dtype())


def ema(average: jax.Array, value: jax.Array, decay: jax.Array) -> jax.Array:
    """``decay * average + (1 - decay) * value``, torch's ``mul_(decay).add_(v, alpha=1-decay)``.

    torch's ``lerp_`` (Adam's first moment) and ``addcmul_`` (``(1 - decay) * g * g``) round
    the same average differently and keep their own forms where torch uses them."""
    return decay * average + (1 - decay) * value


def torch_sign(x: jax.Array) -> jax.Array:
    """``torch.sign``: -1, 0 or 1, and 0 for NaN (``jnp.sign`` keeps NaN).

    Where a reference steps by a sign (Rprop, Lion), a NaN gradient entry therefore does not
    move its parameter in torch; this gives optlib the same behaviour.
    """
    return jnp.where(jnp.isnan(x), jnp.zeros_like(x), jnp.sign(x))
