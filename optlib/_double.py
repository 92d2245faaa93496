"""torch's Python-double scalar arithmetic, evaluated on the device in pairs of float32s.

torch computes the per-step scalars of its optimizers (bias corrections ``1 - beta**step``,
RAdam's rectification term, ...) in Python doubles and converts each to float32 where a tensor
op takes it. A float32 evaluation of the same expression is often one float32 unit off, and
one unit is enough to flip a bf16/fp16 rounding now and then (``TorchRounding``). A ``Double``
holds a value as the unevaluated sum ``hi + lo`` of two float32 scalars (about 44 significant
bits: Dekker's and Knuth's "double-float" arithmetic), so ``Double.hi`` is the value rounded to
float32: torch's float32 number except where the exact value lies within ~2**-44 (relative) of
a float32 rounding boundary. Under ``jax_enable_x64`` ``hi`` is a float64 and ``lo`` zero, and
the arithmetic is plain float64, torch's own.

The error-free transformations are written so that XLA cannot change them: a product is split
by masking the low 12 bits of the significands (a bit operation; the classic ``4097 * a``
split would not survive XLA's contraction of ``a * b + c`` into an FMA), and its partial
products are exact, so contracting any of them into an FMA rounds to the same number.

The other rewrites of XLA are kept away the same way everywhere: the constants a ``Double``
starts from (``Double.of``, ``Double.exact``) sit behind an optimization barrier, as XLA
reassociates sums with constants (``(x + c) - c`` becomes ``x``, ``(1 - h) - 1`` becomes
``-h``); per-update scalars are computed once in a conditional (``settled``: XLA:CPU removes
barriers before fusion and would copy the unrolled scalar chains into every leaf's kernel);
powers by a traced step run in a ``fori_loop`` (``Double.power``). This is the one home of the
Python-double scalars of the optimizers that round like torch (``torch_one_minus_power``,
``torch_bias_corrections``; ``optlib._numerics.one_minus_power`` stays the default paths'
float32 form), and ``TorchRounding.divide`` keeps the divisions of tensors by them real.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from optlib._numerics import float_dtype

__all__ = ["Double", "settled", "torch_bias_corrections", "torch_one_minus_power"]

_T = TypeVar("_T")


def _plain() -> bool:
    """Whether the default float dtype is float64 (then a ``Double`` is a plain float64)."""
    return float_dtype() == jnp.float64


def _opaque(hi, lo):
    """``(hi, lo)`` hidden from XLA's constant folding: it reassociates sums with constants
    (``(x + c) - c`` becomes ``x``), which would undo the error-free transformations."""
    return jax.lax.optimization_barrier((hi, lo))


def _two_sum(a, b):
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e = a + b`` exactly (Knuth)."""
    s = a + b
    b_virtual = s - a
    return s, (a - (s - b_virtual)) + (b - b_virtual)


def _fast_two_sum(a, b):
    """``_two_sum`` for ``|a| >= |b|`` (Dekker)."""
    s = a + b
    return s, b - (s - a)


def _split(a):
    """``(hi, lo)``, ``a = hi + lo`` exactly, ``hi`` the top 12 bits of the significand."""
    bits = jax.lax.bitcast_convert_type(a, jnp.uint32) & jnp.uint32(0xFFFFF000)
    hi = jax.lax.bitcast_convert_type(bits, jnp.float32)
    return hi, a - hi


def _two_prod(a, b):
    """``(p, e)``: ``p + e = a * b`` up to ~2**-48 relative, from exact partial products."""
    a_hi, a_lo = _split(a)
    b_hi, b_lo = _split(b)
    s, e1 = _two_sum(a_hi * b_hi, a_hi * b_lo)
    s, e2 = _two_sum(s, a_lo * b_hi)
    return _fast_two_sum(s, (e1 + e2) + a_lo * b_lo)


class Double(NamedTuple):
    """A scalar ``hi + lo`` (two float32s; float64 and 0 under ``jax_enable_x64``).

    Build one with ``Double.of`` (a Python float, split on the host: exactly the double) or
    ``Double.exact`` (an array value, taken as it is), combine with ``+ - * /``,
    ``sqrt``, ``maximum``, ``minimum`` and ``power``, and read ``hi``: the value in the
    default float dtype, as torch converts its double.
    """

    hi: jax.Array
    lo: jax.Array

    @classmethod
    def of(cls, value) -> Double:
        """A Python float (torch's double), or a numpy array of them, as a pair:
        ``hi = float32(value)``, ``lo`` the rest."""
        value = np.asarray(value, np.float64)
        if _plain():
            return cls(jnp.asarray(value), jnp.zeros(value.shape, jnp.float64))
        hi = value.astype(np.float32)
        lo = (value - hi.astype(np.float64)).astype(np.float32)
        return cls(*_opaque(jnp.asarray(hi), jnp.asarray(lo)))

    @classmethod
    def exact(cls, value) -> Double:
        """An array (or a number) taken as exactly its value in the default float dtype."""
        value = jnp.asarray(value, float_dtype())
        if _plain():
            return cls(value, jnp.zeros_like(value))
        return cls(*_opaque(value, jnp.zeros_like(value)))

    @staticmethod
    def lift(value) -> Double:
        """A ``Double``, a Python float (``of``) or an array (``exact``) as a ``Double``."""
        if isinstance(value, Double):
            return value
        if isinstance(value, (int, float, np.ndarray)):
            return Double.of(value)
        return Double.exact(value)

    def __neg__(self) -> Double:
        return Double(-self.hi, -self.lo)

    def __add__(self, other) -> Double:
        other = Double.lift(other)
        if _plain():
            return Double(self.hi + other.hi, self.lo)
        s, e = _two_sum(self.hi, other.hi)
        t, f = _two_sum(self.lo, other.lo)
        s, e = _fast_two_sum(s, e + t)
        return Double(*_fast_two_sum(s, e + f))

    def __radd__(self, other) -> Double:
        return self + other

    def __sub__(self, other) -> Double:
        return self + (-Double.lift(other))

    def __rsub__(self, other) -> Double:
        return Double.lift(other) - self

    def __mul__(self, other) -> Double:
        other = Double.lift(other)
        if _plain():
            return Double(self.hi * other.hi, self.lo)
        p, e = _two_prod(self.hi, other.hi)
        return Double(*_fast_two_sum(p, e + (self.hi * other.lo + self.lo * other.hi)))

    def __rmul__(self, other) -> Double:
        return self * other

    def __truediv__(self, other) -> Double:
        other = Double.lift(other)
        if _plain():
            return Double(self.hi / other.hi, self.lo)
        q1 = self.hi / other.hi
        rest = self - other * q1
        q2 = rest.hi / other.hi
        rest = rest - other * q2
        q3 = rest.hi / other.hi
        q, e = _fast_two_sum(q1, q2)
        return Double(*_fast_two_sum(q, e + q3))

    def __rtruediv__(self, other) -> Double:
        return Double.lift(other) / self

    def sqrt(self) -> Double:
        """The square root (0 for 0)."""
        if _plain():
            return Double(jnp.sqrt(self.hi), self.lo)
        root = jnp.sqrt(self.hi)
        safe = jnp.where(root > 0, root, 1)
        rest = self - Double.exact(root) * root
        correction = jnp.where(root > 0, rest.hi / (2 * safe), 0)
        return Double(*_fast_two_sum(root, correction))

    def where(self, condition, other) -> Double:
        """``self`` where ``condition`` holds, else ``other`` (``jnp.where`` on both parts)."""
        other = Double.lift(other)
        return Double(
            jnp.where(condition, self.hi, other.hi), jnp.where(condition, self.lo, other.lo)
        )

    def _greater(self, other: Double):
        return (self.hi > other.hi) | ((self.hi == other.hi) & (self.lo > other.lo))

    def maximum(self, other) -> Double:
        """Python's ``max(self, other)``."""
        other = Double.lift(other)
        return self.where(self._greater(other), other)

    def minimum(self, other) -> Double:
        """Python's ``min(self, other)``."""
        other = Double.lift(other)
        return other.where(self._greater(other), self)

    def power(self, exponent, bits: int = 25) -> Double:
        """``self ** n`` for an integer-valued ``n >= 0``, by repeated squaring.

        A Python int ``exponent`` is unrolled (its few bits, known while tracing). An array
        ``exponent`` (torch's ``beta ** step``: a float step, exact as a float up to 2**24,
        or an int32 one) must lie in ``[0, 2**bits)``; its squarings run in a ``fori_loop``
        (one small loop body, not ``bits`` copies of it). The relative error grows as
        ``n * 2**-48``, like that of the repeated squaring itself.
        """
        if isinstance(exponent, (int, np.integer)) and not _plain():
            result, base, remaining = Double.of(1.0), self, int(exponent)
            while remaining:
                if remaining & 1:
                    result = result * base
                remaining >>= 1
                if remaining:
                    base = base * base
            return result
        if _plain():
            return Double(self.hi ** jnp.asarray(exponent, jnp.float64), self.lo)
        n = jnp.asarray(exponent).astype(jnp.int32)

        def body(bit, carry):
            result, base = Double(*carry[0]), Double(*carry[1])
            taken = (result * base).where((n >> bit) & 1 == 1, result)
            return tuple(taken), tuple(base * base)

        one = Double.exact(jnp.ones([], jnp.float32))
        result, _ = jax.lax.fori_loop(0, bits, body, (tuple(one), tuple(self)))
        return Double(*result)

    @staticmethod
    def one_minus_power(beta, step: jax.Array) -> Double:
        """torch's bias correction ``1 - beta**step`` for a float (or traced) ``beta`` in
        [0, 1) and the int32 (or float) 1-based ``step``, in Python's double precision."""
        return 1 - Double.lift(beta).power(step, bits=31)

    def exp(self) -> Double:
        """``exp(self)`` (for results in float32's normal range): ``2**k * (1 + e)`` with
        ``e = expm1(r / 256)`` from its Taylor series, doubled eight times as
        ``e <- e * (e + 2)`` (``expm1(2 x) = expm1(x) (expm1(x) + 2)``, no cancellation)."""
        if _plain():
            return Double(jnp.exp(self.hi), self.lo)
        k = jnp.round(self.hi / np.float32(math.log(2)))
        reduced = (self - Double.of(math.log(2)) * k).scaled(-8)
        series = Double.of(1 / 120)
        for coefficient in (1 / 24, 1 / 6, 1 / 2, 1.0):
            series = series * reduced + coefficient
        expm1 = series * reduced
        for _ in range(8):
            expm1 = expm1 * (expm1 + 2)
        return (expm1 + 1).scaled(k)

    def log(self) -> Double:
        """``log(self)`` for ``self > 0``: float32's ``log`` refined by one Newton step
        ``y <- y + self * exp(-y) - 1``."""
        if _plain():
            return Double(jnp.log(self.hi), self.lo)
        guess = Double.exact(jnp.log(self.hi))
        return guess + (self * (-guess).exp() - 1)

    def real_power(self, exponent: float) -> Double:
        """``self ** exponent`` for ``self > 0`` and a Python float ``exponent`` (Python's
        ``step ** beta2_decay``), as ``exp(exponent * log(self))``."""
        if _plain():
            return Double(self.hi**exponent, self.lo)
        return (self.log() * exponent).exp()

    def scaled(self, k) -> Double:
        """``self * 2**k`` for an integer(-valued) ``k`` (exact while in the normal range)."""
        k = jnp.asarray(k).astype(jnp.int32)
        factor = jax.lax.bitcast_convert_type((k + 127) << 23, jnp.float32)
        return Double(self.hi * factor, self.lo * factor)


def settled(compute: Callable[[], _T], flag: jax.Array) -> _T:
    """``compute()`` (per-update scalars of ``Double`` arithmetic), computed once.

    XLA copies cheap scalar producers into each fused consumer, here every parameter leaf's
    kernel, and the hundreds of additions and multiplications of ``Double`` arithmetic copied
    into each of many leaves would multiply the compile time (an optimization barrier does not
    prevent it: XLA:CPU removes barriers before fusion). Computed in a branch of a conditional
    on ``flag``, which is true at run time but not known to XLA (e.g. ``t > 0`` for the step
    number ``t``), the results are opaque to fusion. The other branch gives zeros.
    """
    shapes = jax.eval_shape(compute)
    return jax.lax.cond(
        flag, compute, lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    )


def torch_one_minus_power(beta, step: jax.Array) -> jax.Array:
    """torch's ``1 - beta**step`` (a Python double) converted to the default float dtype, as a
    bf16/fp16 tensor op takes it: the exact form of ``optlib._numerics.one_minus_power``
    (a float32 ``expm1``, one unit off in many steps), for the paths that round like torch.

    Args:
      beta: a float in [0, 1) or a traced scalar (a schedule's value).
      step: the 1-based step (int32, or an integer-valued float), at least 1 at run time.
    """
    return settled(lambda: Double.one_minus_power(beta, step).hi, step > 0)


def torch_bias_corrections(beta1, beta2, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Adam's ``(1 - beta1**step, sqrt(1 - beta2**step))`` as torch computes them in Python
    doubles, converted to the default float dtype (``torch_one_minus_power``), computed once
    per update (``settled``).

    Args:
      beta1: a float in [0, 1) or a traced scalar (a schedule's value).
      beta2: likewise.
      step: the 1-based step (int32, or an integer-valued float), at least 1 at run time.
    """
    return settled(
        lambda: (
            Double.one_minus_power(beta1, step).hi,
            Double.one_minus_power(beta2, step).sqrt().hi,
        ),
        step > 0,
    )
