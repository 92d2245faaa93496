"""Small numeric conventions used across optlib (one place for each)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from optlib._validation import check_float_dtype

__all__ = [
    "DEFAULT_STATISTICS_DTYPE",
    "INT32_MAX",
    "TorchRounding",
    "as_float",
    "cast",
    "check_statistics_dtype",
    "ema",
    "float_dtype",
    "log_of",
    "one_minus_power",
    "parameter_move",
    "rounds_like_torch",
    "safe_increment",
    "statistics_dtype",
    "torch_sign",
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


def rounds_like_torch(option) -> bool:
    """Whether a ``statistics_dtype`` option can keep statistics narrower than float32
    (``None``, or bf16/fp16 itself): then bf16/fp16 parameters' statistics and steps are
    rounded where torch rounds them (``TorchRounding``, ``torch_parameter_step``)."""
    option = check_statistics_dtype(option)
    return option is None or jnp.dtype(option).itemsize < 4


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


def one_minus_power(beta, t: jax.Array) -> jax.Array:
    """``1 - beta**t`` (a bias correction) as torch computes it, in the default float dtype.

    torch computes ``1 - beta**step`` in Python (double) and converts it to float32 where a
    float32 (or bf16/fp16) tensor op takes it. In float32, ``1 - beta**t`` cancels: with
    ``beta = 0.999`` and ``t = 5`` it keeps only ~16 bits, enough to move a bf16/fp16
    statistic's rounding in a few steps in 100. ``-expm1(t * log(beta))`` (``log`` taken in
    double for a float ``beta``) gives the double value rounded to float32 up to an ulp. Under
    ``jax_enable_x64`` (float64) it is torch's expression itself.

    Args:
      beta: a float in [0, 1) or a traced scalar (a schedule's value).
      t: the 1-based step, a float scalar.
    """
    if float_dtype() == jnp.float64:
        return 1 - beta**t
    return -jnp.expm1(t * log_of(beta))


def log_of(beta) -> jax.Array | np.ndarray:
    """``log(beta)``: in double precision on the host for a Python float, then converted to
    the default float dtype (``log(float32(0.999))`` would be off by 6e-5 relative), else
    traced."""
    if isinstance(beta, (int, float)):
        return np.asarray(np.log(beta) if beta > 0 else -np.inf, float_dtype())
    return jnp.log(jnp.asarray(beta))


def parameter_move(new: jax.Array, old: jax.Array) -> jax.Array:
    """``new - old``, the move of a parameter that a torch in-place step took from ``old`` to
    ``new`` (both the parameter's bf16/fp16 values in float32, so the difference is exact and
    ``optax.apply_updates`` lands on ``new``); exactly 0 where the value is unchanged, so an
    infinite parameter moves by 0 and stays infinite, as in torch, instead of ``inf - inf``."""
    return jnp.where(new == old, 0, new - old)


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


@dataclasses.dataclass(frozen=True)
class TorchRounding:
    """Where torch rounds a statistic kept in ``stored`` and computed in ``compute``.

    torch keeps a bf16/fp16 parameter's optimizer state in bf16/fp16 and runs each in-place
    op (``exp_avg_sq.mul_(b2)``, ``.addcmul_(g, g, 1 - b2)``, ...) in float32, its
    ``opmath`` type, rounding the result into the tensor after every op. A transform written
    as torch's sequence of ops calls ``keep`` on each op's result: with ``stored`` narrower
    than ``compute`` (``statistics_dtype=None`` on bf16/fp16 parameters) that is torch's
    rounding, and with the default float32-or-wider statistics it is the identity (no op is
    emitted), so the default numbers do not depend on where ``keep`` is called.

    Attributes:
      stored: the dtype the statistic is kept in.
      compute: the dtype its ops run in (float32 or wider).
    """

    stored: jnp.dtype
    compute: jnp.dtype

    @classmethod
    def of(cls, stored) -> TorchRounding:
        """The rounding for a statistic kept in ``stored`` (computed in float32 or wider)."""
        stored = jnp.dtype(stored)
        return cls(stored, statistics_dtype(stored))

    @property
    def narrow(self) -> bool:
        """Whether the statistic is kept narrower than it is computed (torch's bf16/fp16)."""
        return self.stored != self.compute

    def keep(self, x: jax.Array) -> jax.Array:
        """``x`` (the result of one torch op) rounded to the stored dtype, in the compute
        dtype; the identity when nothing is narrower."""
        x = cast(x, self.compute)
        return x.astype(self.stored).astype(self.compute) if self.narrow else x

    def alpha(self, value) -> jax.Array | np.ndarray:
        """A scalar as torch's ``add_(other, alpha=value)`` / ``add_(value)`` applies it to a
        tensor of the stored dtype: rounded to that dtype (``mul_``, ``div_``, ``lerp_``,
        ``addcmul_`` and ``addcdiv_`` take their scalars in float32 instead), in the compute
        dtype."""
        if isinstance(value, (int, float)):
            return np.asarray(np.asarray(value, self.stored), self.compute)
        return self.keep(value)

    def update(self, u: jax.Array, like: jax.Array) -> jax.Array:
        """A transform's output update: in ``like``'s dtype (the incoming gradient's), or in
        the compute dtype when the statistics are narrower, so that ``optax.apply_updates``
        rounds the parameter once, as torch's in-place step (``p.addcdiv_(m, d, value=-lr)``)
        computes in float32 and rounds once."""
        return cast(u, self.compute if self.narrow else like.dtype)

    def add_scalar(self, x: jax.Array, value) -> jax.Array:
        """torch's ``x.add_(value)``: ``value`` rounded as ``add_`` rounds it (``alpha``), the
        sum rounded (``keep``). A value that rounds to zero on a narrow statistic (fp16's
        ``eps=1e-8``) still turns -0.0 into +0.0, as IEEE's and torch's ``-0.0 + 0.0`` do
        (XLA folds ``x + 0`` into ``x``)."""
        scalar = self.alpha(value)
        if self.narrow and isinstance(scalar, np.ndarray) and scalar == 0:
            return jnp.where(x == 0, jnp.zeros_like(x), x)
        return self.keep(x + scalar)

    @staticmethod
    def divide(x: jax.Array, scalar) -> jax.Array:
        """``x / scalar`` for a scalar (converted to ``x``'s dtype, as torch converts a Python
        float), correctly rounded as torch's ``x.div(scalar)`` divides.

        XLA rewrites a division by a broadcast scalar into a multiplication by its
        reciprocal, one unit off in a good part of the entries (fp16 ``v / 0.3``: 1.5% of
        the quotients move by one unit after rounding to fp16). Dividing by a select between
        the scalar and an opaque copy of it (the same value) keeps the division a division:
        a compare and a select per entry, where an opaque broadcast would be a whole array.
        """
        scalar = jnp.asarray(scalar).astype(x.dtype)
        return x / jnp.where(x == x, scalar, jax.lax.optimization_barrier(scalar))
