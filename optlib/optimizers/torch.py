"""torch.optim's optimizers, each one ``optax.chain`` of optlib transforms.

Arguments are torch's names and defaults, with ``learning_rate`` for ``lr``. The chains mirror
torch's order of operations: ``maximize`` negates the gradient first, coupled ``weight_decay``
adds ``wd * p`` to the gradient before any statistics, decoupled decay adds ``wd * p`` to the
finished update, and ``apply_learning_rate`` multiplies by ``-lr`` last.

``learning_rate`` may be a float, an ``optax.Schedule``, a ``MomentumSchedule`` (torch's
``OneCycleLR`` / ``CyclicLR`` with ``cycle_momentum=True``: its ``.momentum`` then drives
SGD's and RMSprop's ``momentum`` / the Adam family's ``betas[0]``, exactly as torch's
scheduler overwrites them), or a metric-driven learning-rate transform
(``optlib.reduce_lr_on_plateau(...)``). torch's implementation switches (``foreach``,
``fused``, ``capturable``, ``differentiable``) have no meaning here and are not taken.
"""

from __future__ import annotations

from typing import Any

import optax

from optlib._numerics import DEFAULT_STATISTICS_DTYPE, rounds_like_torch
from optlib._validation import check_non_negative
from optlib.optimizers._links import (
    cycled_betas,
    learning_rate_link,
    maximize_link,
    momentum_from,
    named_chain,
    recorded_optimizer,
    reject_momentum_schedule,
    weight_decay_links,
)
from optlib.transforms.averaging import asgd_average, scale_by_asgd_step_size
from optlib.transforms.learning_rate import (
    LearningRate,
    torch_parameter_step,
    track_learning_rate,
)
from optlib.transforms.moments import (
    scale_by_adadelta,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_nadam,
    scale_by_rms,
)
from optlib.transforms.momentum import check_momentum, trace_momentum
from optlib.transforms.regularization import add_weight_decay
from optlib.transforms.torch_adaptive import scale_by_adamax, scale_by_radam, scale_by_rprop

__all__ = [
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "asgd",
    "nadam",
    "radam",
    "rmsprop",
    "rprop",
    "sgd",
]


@recorded_optimizer
def sgd(
    learning_rate: LearningRate = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Stochastic gradient descent with torch's momentum (torch.optim.SGD).

    ``chain(maximize?, add_weight_decay, trace_momentum, apply_learning_rate)``::

        g <- -g (maximize);  g <- g + weight_decay * p
        b_1 = g_1;  b_t = momentum * b_{t-1} + (1 - dampening) * g_t
        p <- p - lr * (g_t + momentum * b_t  if nesterov else  b_t)

    optax.sgd has no dampening (its first step also dampens nothing, but later ones differ).

    Args:
      learning_rate: lr (>= 0): float, schedule, ``MomentumSchedule`` or lr transform.
      momentum: momentum factor (>= 0); ignored for a ``MomentumSchedule`` learning rate,
        whose ``.momentum`` is used instead (torch's ``cycle_momentum``).
      dampening: dampening for momentum, in [0, 1].
      weight_decay: coupled L2 penalty (>= 0).
      nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
      maximize: maximize the objective instead of minimizing.
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as torch does.

    Returns:
      An ``optax.GradientTransformation``.
    """
    check_momentum(momentum, dampening, nesterov)
    return named_chain(
        maximize_link(maximize),
        ("weight_decay", add_weight_decay(weight_decay)),
        (
            "momentum",
            trace_momentum(
                momentum_from(learning_rate, momentum),
                dampening,
                nesterov,
                statistics_dtype=statistics_dtype,
            ),
        ),
        learning_rate_link(learning_rate, statistics_dtype=statistics_dtype, rate_rounded=True),
    )


@recorded_optimizer
def adam(
    learning_rate: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Adam (torch.optim.Adam).

    ``chain(maximize?, add_weight_decay, scale_by_adam, add_decoupled_weight_decay,
    apply_learning_rate)``, one of the two decays being 0: torch's Adam adds
    ``weight_decay * p`` to the gradient (L2, through the moments); with
    ``decoupled_weight_decay=True`` (= AdamW) it decays the parameters by ``lr * weight_decay``.

    Args:
      learning_rate: lr (>= 0): float, schedule, ``MomentumSchedule`` (drives ``betas[0]``) or
        lr transform.
      betas: ``(beta1, beta2)``, each in [0, 1).
      eps: added to the denominator (>= 0).
      weight_decay: weight decay coefficient (>= 0).
      amsgrad: use AMSGrad's running maximum of the second moment.
      maximize: maximize the objective instead of minimizing.
      decoupled_weight_decay: AdamW-style decay instead of L2.
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as torch does.

    Returns:
      An ``optax.GradientTransformation``.
    """
    coupled, decoupled = weight_decay_links(weight_decay, decoupled_weight_decay, statistics_dtype)
    return named_chain(
        maximize_link(maximize),
        coupled,
        (
            "adam",
            scale_by_adam(
                cycled_betas(learning_rate, betas), eps, amsgrad, statistics_dtype=statistics_dtype
            ),
        ),
        decoupled,
        learning_rate_link(
            learning_rate,
            statistics_dtype=statistics_dtype,
            decoupled_weight_decay=weight_decay if decoupled_weight_decay else None,
        ),
    )


@recorded_optimizer
def adamw(
    learning_rate: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """AdamW (torch.optim.AdamW): Adam with decoupled weight decay, default 1e-2.

    ``chain(maximize?, scale_by_adam, add_decoupled_weight_decay, apply_learning_rate)``::

        p <- p * (1 - lr * weight_decay) - lr * m_hat / (sqrt(v_hat) + eps)

    torch defines AdamW as ``Adam(..., decoupled_weight_decay=True)``; so does this.

    Args:
      learning_rate: lr (>= 0): float, schedule, ``MomentumSchedule`` (drives ``betas[0]``) or
        lr transform.
      betas: ``(beta1, beta2)``, each in [0, 1).
      eps: added to the denominator (>= 0).
      weight_decay: decoupled weight decay coefficient (>= 0).
      amsgrad: use AMSGrad's running maximum of the second moment.
      maximize: maximize the objective instead of minimizing.
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as torch does.

    Returns:
      An ``optax.GradientTransformation``.
    """
    return adam(
        learning_rate,
        betas,
        eps,
        weight_decay,
        amsgrad,
        maximize=maximize,
        decoupled_weight_decay=True,
        statistics_dtype=statistics_dtype,
    )


@recorded_optimizer
def adagrad(
    learning_rate: LearningRate = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    maximize: bool = False,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Adagrad (torch.optim.Adagrad).

    ``chain(maximize?, add_weight_decay, scale_by_adagrad, apply_learning_rate)``::

        s_t = s_{t-1} + g_t**2;  p <- p - lr / (1 + (t - 1) * lr_decay) * g_t / (sqrt(s_t) + eps)

    ``optax.adagrad`` differs: eps inside the square root, accumulator starting at 0.1, no
    ``lr_decay``.

    Args:
      learning_rate: lr (>= 0): float, schedule or lr transform.
      lr_decay: learning-rate decay (>= 0).
      weight_decay: coupled L2 penalty (>= 0).
      initial_accumulator_value: starting value of the sum of squares (>= 0).
      eps: added to the denominator (>= 0).
      maximize: maximize the objective instead of minimizing.
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as torch does.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: for bad values, or a momentum-cycling ``learning_rate`` (Adagrad has no
        momentum; torch's ``cycle_momentum`` raises too).
    """
    reject_momentum_schedule(learning_rate, "adagrad")
    # torch's step is p.addcdiv_(g, std, value=-clr): with statistics rounded like torch's,
    # the transform hands its operands to the last link
    quotients = rounds_like_torch(statistics_dtype)
    return named_chain(
        maximize_link(maximize),
        ("weight_decay", add_weight_decay(weight_decay)),
        (
            "adagrad",
            scale_by_adagrad(
                lr_decay,
                initial_accumulator_value,
                eps,
                statistics_dtype=statistics_dtype,
                quotients=quotients,
            ),
        ),
        (
            ("learning_rate", torch_parameter_step(learning_rate, quotients=True))
            if quotients
            else learning_rate_link(learning_rate, statistics_dtype=statistics_dtype)
        ),
    )


@recorded_optimizer
def rmsprop(
    learning_rate: LearningRate = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    *,
    maximize: bool = False,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """RMSprop (torch.optim.RMSprop).

    ``chain(maximize?, add_weight_decay, scale_by_rms, trace_momentum, apply_learning_rate)``::

        v_t = alpha * v_{t-1} + (1 - alpha) * g_t**2;  a_t = lerp(a_{t-1}, g_t, 1 - alpha)
        d_t = g_t / (sqrt(v_t - a_t**2 if centered else v_t) + eps)
        b_t = momentum * b_{t-1} + d_t;  p <- p - lr * b_t

    ``optax.rmsprop`` differs: eps inside the square root.

    Args:
      learning_rate: lr (>= 0): float, schedule, ``MomentumSchedule`` (drives ``momentum``)
        or lr transform.
      alpha: smoothing constant, in [0, 1].
      eps: added to the denominator (>= 0).
      weight_decay: coupled L2 penalty (>= 0).
      momentum: momentum factor (>= 0).
      centered: normalise by the estimated variance of the gradient.
      maximize: maximize the objective instead of minimizing.
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as torch does.

    Returns:
      An ``optax.GradientTransformation``.
    """
    check_momentum(momentum)
    momentum = momentum_from(learning_rate, momentum)
    # torch steps by p.add_(buf, alpha=-lr) with momentum, else by p.addcdiv_(g, avg,
    # value=-lr), whose operands the transform hands to the last link when the statistics
    # are rounded like torch's
    with_momentum = not (isinstance(momentum, (int, float)) and momentum == 0)
    quotients = rounds_like_torch(statistics_dtype) and not with_momentum
    return named_chain(
        maximize_link(maximize),
        ("weight_decay", add_weight_decay(weight_decay)),
        (
            "rms",
            scale_by_rms(
                alpha, eps, centered, statistics_dtype=statistics_dtype, quotients=quotients
            ),
        ),
        ("momentum", trace_momentum(momentum, statistics_dtype=statistics_dtype)),
        (
            ("learning_rate", torch_parameter_step(learning_rate, quotients=True))
            if quotients
            else learning_rate_link(
                learning_rate, statistics_dtype=statistics_dtype, rate_rounded=with_momentum
            )
        ),
    )


@recorded_optimizer
def adadelta(
    learning_rate: LearningRate = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Adadelta (torch.optim.Adadelta); torch's lr (default 1.0) multiplies the delta.

    ``chain(maximize?, add_weight_decay, scale_by_adadelta, apply_learning_rate)``.

    Args:
      learning_rate: lr (>= 0): float, schedule or lr transform.
      rho: coefficient of the running averages, in [0, 1].
      eps: added inside the square roots (>= 0).
      weight_decay: coupled L2 penalty (>= 0).
      maximize: maximize the objective instead of minimizing.
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as torch does.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: for bad values, or a momentum-cycling ``learning_rate``.
    """
    reject_momentum_schedule(learning_rate, "adadelta")
    return named_chain(
        maximize_link(maximize),
        ("weight_decay", add_weight_decay(weight_decay)),
        ("adadelta", scale_by_adadelta(rho, eps, statistics_dtype=statistics_dtype)),
        # torch's p.add_(delta, alpha=-lr)
        learning_rate_link(learning_rate, statistics_dtype=statistics_dtype, rate_rounded=True),
    )


@recorded_optimizer
def nadam(
    learning_rate: LearningRate = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """NAdam (torch.optim.NAdam), with torch's momentum-decay schedule ``mu_t``.

    ``chain(maximize?, add_weight_decay, scale_by_nadam, add_decoupled_weight_decay,
    apply_learning_rate)``, one of the two decays being 0 (``decoupled_weight_decay`` picks).
    ``optax.nadam`` is a different algorithm (no ``momentum_decay``).

    Args:
      learning_rate: lr (>= 0): float, schedule, ``MomentumSchedule`` (drives ``betas[0]``) or
        lr transform.
      betas: ``(beta1, beta2)``, each in [0, 1).
      eps: added to the denominator (>= 0).
      weight_decay: weight decay coefficient (>= 0).
      momentum_decay: ``psi`` of ``mu_t = beta1 * (1 - 0.5 * 0.96**(t * psi))`` (>= 0).
      decoupled_weight_decay: AdamW-style decay instead of L2.
      maximize: maximize the objective instead of minimizing.
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as torch does.

    Returns:
      An ``optax.GradientTransformation``.
    """
    coupled, decoupled = weight_decay_links(weight_decay, decoupled_weight_decay, statistics_dtype)
    decay = weight_decay if decoupled_weight_decay else None
    # torch steps by two p.addcdiv_(...), whose operands the transform hands to the last
    # link when the statistics are rounded like torch's
    quotients = rounds_like_torch(statistics_dtype)
    return named_chain(
        maximize_link(maximize),
        coupled,
        (
            "nadam",
            scale_by_nadam(
                cycled_betas(learning_rate, betas),
                eps,
                momentum_decay,
                statistics_dtype=statistics_dtype,
                quotients=quotients,
            ),
        ),
        decoupled,
        (
            (
                "learning_rate",
                torch_parameter_step(learning_rate, decoupled_weight_decay=decay, quotients=True),
            )
            if quotients
            else learning_rate_link(
                learning_rate, statistics_dtype=statistics_dtype, decoupled_weight_decay=decay
            )
        ),
    )


@recorded_optimizer
def radam(
    learning_rate: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """RAdam (torch.optim.RAdam), rectified from torch's step exactly (``rho_t > 5``).

    ``chain(maximize?, add_weight_decay, scale_by_radam, add_decoupled_weight_decay,
    apply_learning_rate)``, one of the two decays being 0 (``decoupled_weight_decay`` picks).
    With ``statistics_dtype=None`` (bf16/fp16 statistics) a float or scheduled rate is
    multiplied in by ``scale_by_radam``, where torch multiplies it into its rounded product
    (``exp_avg / bc1 * lr * ...``), and the last link ``torch_parameter_step(...,
    rate_applied=True)`` follows it and applies the decoupled decay as torch rounds it;
    a metric-driven rate stays in the last link and scales the finished product (in bf16/fp16
    then not bit for bit torch's).

    ``optax.radam`` differs: ``eps`` is added to the bias-corrected ``sqrt(v_hat)`` (torch
    adds it to ``sqrt(v)`` and rescales by ``sqrt(1 - b2**t)``), which changes every update
    from the first rectified step on (step 6 with the default betas), and it rectifies from
    ``rho_t >= 5``.

    Args:
      learning_rate: lr (>= 0): float, schedule, ``MomentumSchedule`` (drives ``betas[0]``) or
        lr transform.
      betas: ``(beta1, beta2)``, each in [0, 1).
      eps: added to the denominator (>= 0).
      weight_decay: weight decay coefficient (>= 0).
      decoupled_weight_decay: AdamW-style decay instead of L2.
      maximize: maximize the objective instead of minimizing.
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as torch does.

    Returns:
      An ``optax.GradientTransformation``.
    """
    coupled, decoupled = weight_decay_links(weight_decay, decoupled_weight_decay, statistics_dtype)
    decay = weight_decay if decoupled_weight_decay else None
    # torch's RAdam multiplies lr into its rounded product (exp_avg / bc1 * lr * ...): with
    # statistics rounded like torch's, the transform applies a float or scheduled rate there
    # and the last link only follows it (a metric-driven rate stays in the last link)
    inside = rounds_like_torch(statistics_dtype) and not isinstance(
        learning_rate, optax.GradientTransformation
    )
    if inside:
        last = (
            "learning_rate",
            torch_parameter_step(learning_rate, rate_applied=True, decoupled_weight_decay=decay),
        )
    else:
        last = learning_rate_link(
            learning_rate, statistics_dtype=statistics_dtype, decoupled_weight_decay=decay
        )
    return named_chain(
        maximize_link(maximize),
        coupled,
        (
            "radam",
            scale_by_radam(
                cycled_betas(learning_rate, betas),
                eps,
                statistics_dtype=statistics_dtype,
                learning_rate=learning_rate if inside else None,
            ),
        ),
        decoupled,
        last,
    )


@recorded_optimizer
def adamax(
    learning_rate: LearningRate = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Adamax (torch.optim.Adamax), Adam with an infinity norm.

    ``chain(maximize?, add_weight_decay, scale_by_adamax, apply_learning_rate)``::

        p <- p - lr / (1 - b1**t) * m_t / max(b2 * u_{t-1}, |g_t| + eps)

    ``optax.adamax`` computes the same update (up to round-off).

    Args:
      learning_rate: lr (>= 0): float, schedule, ``MomentumSchedule`` (drives ``betas[0]``) or
        lr transform.
      betas: ``(beta1, beta2)``, each in [0, 1).
      eps: added to ``|g|`` (>= 0).
      weight_decay: coupled L2 penalty (>= 0).
      maximize: maximize the objective instead of minimizing.
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as torch does.

    Returns:
      An ``optax.GradientTransformation``.
    """
    return named_chain(
        maximize_link(maximize),
        ("weight_decay", add_weight_decay(weight_decay)),
        (
            "adamax",
            scale_by_adamax(
                cycled_betas(learning_rate, betas), eps, statistics_dtype=statistics_dtype
            ),
        ),
        learning_rate_link(learning_rate, statistics_dtype=statistics_dtype),
    )


@recorded_optimizer
def rprop(
    learning_rate: LearningRate = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50),
    *,
    maximize: bool = False,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Rprop (torch.optim.Rprop): per-element step sizes adapted by the gradient's sign.

    ``chain(maximize?, scale_by_rprop, track_learning_rate)``::

        s <- clip(s * (etas[1] | etas[0] | 1), *step_sizes)   (same sign | flipped | else)
        p <- p - s * sign(g)   (g taken as 0 where its sign flipped)

    ``learning_rate`` is the initial step size, read once, as torch reads ``lr`` only when it
    creates the state (the first step): a schedule contributes its value at count 0, a
    metric-driven rate its initial rate; what a scheduler does to the rate later changes
    ``current_learning_rate`` (torch's ``group['lr']``) but not the steps, exactly as in
    torch. ``optax.rprop`` differs from the first step on (it applies the previous step's
    size and sign, so its first update is 0; torch moves by ``lr``).

    Args:
      learning_rate: initial step size (>= 0): float, schedule or lr transform (see above).
      etas: ``(etaminus, etaplus)``, ``0 < etaminus < 1 < etaplus``.
      step_sizes: ``(minimum, maximum)`` step size, ``0 <= minimum <= maximum``.
      maximize: maximize the objective instead of minimizing.
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as torch does.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: for bad values, or a momentum-cycling ``learning_rate`` (Rprop has no
        momentum; torch's ``cycle_momentum`` raises too).
    """
    reject_momentum_schedule(learning_rate, "rprop")
    return named_chain(
        maximize_link(maximize),
        (
            "rprop",
            scale_by_rprop(learning_rate, etas, step_sizes, statistics_dtype=statistics_dtype),
        ),
        ("learning_rate", track_learning_rate(learning_rate)),
    )


@recorded_optimizer
def asgd(
    learning_rate: LearningRate = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Averaged stochastic gradient descent (torch.optim.ASGD).

    ``chain(maximize?, add_weight_decay(weight_decay), add_weight_decay(lambd),
    scale_by_asgd_step_size, asgd_average)`` (with ``statistics_dtype=None``: no ``lambd``
    link, and ``scale_by_asgd_step_size(..., torch_step=True)`` applies torch's two rounded
    in-place ops, the decay and the step, to the parameter); at torch step ``t``::

        g <- -g (maximize);  g <- g + weight_decay * p
        p <- p * (1 - lambd * eta) - eta * g                  (= p - eta * (g + lambd * p))
        ax <- p  if mu == 1  else  ax + mu * (p - ax)
        eta <- lr / (1 + lambd * lr * t)**alpha;  mu <- 1 / max(1, t - t0)

    with ``eta = lr`` and ``mu = 1`` before the first step. ``eta`` is computed from the
    learning rate of the step just taken, so a schedule (or a metric-driven rate) reaches the
    parameters one step late, exactly as torch's ``group["lr"]`` does.
    ``optlib.averaged_params(opt_state)`` is torch's ``ax`` (zeros before the first step);
    ``optlib.current_learning_rate`` is torch's group ``lr``, ``opt_state["asgd"].eta``
    torch's ``eta``. torch keeps ``eta``/``mu`` in its default dtype (float32 unless
    ``torch.set_default_dtype(torch.float64)``); here they are in JAX's default float dtype.

    Args:
      learning_rate: lr (>= 0): float, schedule or lr transform.
      lambd: decay term (>= 0), also in ``eta``'s decay.
      alpha: power for the ``eta`` update.
      t0: the step at which averaging starts.
      weight_decay: coupled L2 penalty (>= 0).
      maximize: maximize the objective instead of minimizing.
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as torch does.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: for bad values, or a momentum-cycling ``learning_rate`` (ASGD has no
        momentum).
    """
    reject_momentum_schedule(learning_rate, "asgd")
    check_non_negative("lambd", lambd)
    # with statistics rounded like torch's, the decay and the step are torch's two rounded
    # in-place ops on the parameter (scale_by_asgd_step_size's torch_step), not L2 decay
    torch_step = rounds_like_torch(statistics_dtype)
    return named_chain(
        maximize_link(maximize),
        ("weight_decay", add_weight_decay(weight_decay)),
        None if torch_step else ("lambd", add_weight_decay(lambd)),
        (
            "asgd",
            scale_by_asgd_step_size(learning_rate, lambd, alpha, torch_step=torch_step),
        ),
        ("average", asgd_average(t0, statistics_dtype=statistics_dtype)),
    )
