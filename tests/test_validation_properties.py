"""Every public constructor rejects invalid arguments when it is called (issue 9.1).

One table per family (optimizers, transforms, schedulers through ``get_scheduler``, the
other public constructors) gives, for each constructor, a valid baseline configuration and
the **domain** of each of its parameters (a real in an interval, an integer with a minimum,
a choice of strings, a bool, a callable, a pair, a list of integers, ...). For every
``(constructor, parameter)`` hypothesis draws invalid values for that domain: out of range,
NaN, +-inf, integers too big for a float, wrong types (``str``, ``None`` where it is
required, lists, tuples, dicts, complex numbers, ``bool`` for a number, floats for an
integer, callables for a number, numpy arrays), mistyped mode strings, and builds the
constructor with the baseline plus that one value. Each must raise ``ValueError`` or
``TypeError`` whose message names the parameter and shows the bad value; nothing is
accepted silently. Each test counts the invalid inputs it tried and prints the count.

Meta-tests keep the tables complete: every parameter of every listed constructor has a
domain (or a stated reason to be left out), and every registered scheduler name is covered.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import reprlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_cases import schedule_kwargs

import optlib
from optlib._registry import scheduler_entry
from optlib.transforms.moments import in_statistics_dtype

MAX_EXAMPLES = 25
HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
INT32_MAX = 2**31 - 1


def _schedule(step):
    return 0.1


class _Opaque:
    """An object of no expected type."""

    def __repr__(self) -> str:
        return "<opaque>"


# Wrong types for any scalar parameter (``None`` is added when the parameter is required).
WRONG_TYPES = (
    "0.1",
    b"1",
    [0.1],
    (0.1,),
    {"value": 0.1},
    1j,
    np.complex128(0.5),  # a complex number with zero imaginary part is still not a real
    _Opaque(),
    np.array([0.1, 0.2]),
)


# ------------------------------------------------------------------------------- domains


@dataclasses.dataclass(frozen=True)
class Real:
    """A real number in an interval; ``callable_ok``: a schedule is valid too."""

    low: float = -math.inf
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = True
    inf_ok: bool = False
    optional: bool = False
    callable_ok: bool = False
    numeric_string_ok: bool = False  # torch's float(norm_type) takes "inf", "2"

    def invalid(self) -> st.SearchStrategy:
        options = [
            st.just(math.nan),
            st.just(np.float64("nan")),
            st.sampled_from([10**400, -(10**400)]),  # too big for a float
            st.sampled_from(WRONG_TYPES + (True, False)),
        ]
        if not self.inf_ok:
            options.append(st.sampled_from([math.inf, -math.inf]))
        if self.low > -math.inf:
            below = st.floats(max_value=self.low, exclude_max=self.low_closed, allow_nan=False)
            options += [below, below.map(np.float64)]
            if self.low_closed and float(self.low).is_integer():
                options.append(st.integers(max_value=int(self.low) - 1))
        if self.high < math.inf:
            above = st.floats(min_value=self.high, exclude_min=self.high_closed, allow_nan=False)
            above32 = st.floats(
                min_value=self.high, exclude_min=self.high_closed, allow_nan=False, width=32
            )
            options += [above, above32.map(np.float32)]
        if not self.optional:
            options.append(st.none())
        if not self.callable_ok:
            options.append(st.just(_schedule))
        return st.one_of(options).filter(lambda value: not self.contains(value))

    def contains(self, value) -> bool:
        """Guards the strategies above (e.g. float32 rounding a value back into range)."""
        if isinstance(value, str) and self.numeric_string_ok:
            try:
                return self.contains(float(value))
            except ValueError:
                return False
        if isinstance(value, (bool, complex, str, bytes)) or value is None:
            return value is None and self.optional
        try:
            number = float(value)
        except OverflowError:
            number = math.inf if value > 0 else -math.inf
        except (TypeError, ValueError):
            return False
        if math.isnan(number) or (math.isinf(number) and not self.inf_ok):
            return False
        above = number >= self.low if self.low_closed else number > self.low
        below = number <= self.high if self.high_closed else number < self.high
        return above and below


def non_negative(**kwargs) -> Real:
    return Real(low=0.0, **kwargs)


def positive(**kwargs) -> Real:
    return Real(low=0.0, low_closed=False, **kwargs)


def unit(**kwargs) -> Real:
    """``[0, 1]``."""
    return Real(low=0.0, high=1.0, **kwargs)


def beta(**kwargs) -> Real:
    """``[0, 1)``."""
    return Real(low=0.0, high=1.0, high_closed=False, **kwargs)


LR = non_negative(callable_ok=True)  # an optimizer's rate: a number >= 0 or a schedule
BASE_LR = non_negative()  # a scheduler's base lr: a number
OWN_LR = non_negative(callable_ok=True, optional=True)  # a transform's own rate, or None


@dataclasses.dataclass(frozen=True)
class Int:
    """An integer of at least ``minimum`` (not a bool; an integral float such as ``3.0`` or a
    0-d integer array is one, as torch takes them; a fractional float is not)."""

    minimum: int = 0
    maximum: int | None = None
    optional: bool = False

    def invalid(self) -> st.SearchStrategy:
        options = [
            st.integers(max_value=self.minimum - 1),
            st.floats(allow_nan=True).filter(lambda x: not float(x).is_integer()),
            st.sampled_from(WRONG_TYPES + (True, False, "3")),
        ]
        if self.maximum is not None:
            options.append(st.integers(min_value=self.maximum + 1))
        if not self.optional:
            options.append(st.none())
        return st.one_of(options)


STEP_COUNT = Int(0, INT32_MAX)  # a number of steps (optax's count is an int32)


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a few strings (or ``None`` when ``optional``)."""

    options: tuple[str, ...]
    optional: bool = False

    def invalid(self) -> st.SearchStrategy:
        typos = st.sampled_from(self.options).flatmap(
            lambda option: st.sampled_from([option.upper(), option + " ", option[:-1], ""])
        )
        return st.one_of(
            typos,
            st.text(max_size=12),
            st.sampled_from([None, 1, 0.5, True, [self.options[0]], (self.options[0],)]),
        ).filter(
            lambda value: (
                not (isinstance(value, str) and value in self.options)
                and not (value is None and self.optional)
            )
        )


@dataclasses.dataclass(frozen=True)
class Bool:
    """``True`` or ``False`` (a string such as ``"False"`` would silently be true)."""

    def invalid(self) -> st.SearchStrategy:
        return st.sampled_from(["True", "False", "", 0, 1, 0.0, None, [True], np.array([True])])


@dataclasses.dataclass(frozen=True)
class Function:
    """A callable (``lr_lambda``, ``scale_fn``, a schedule)."""

    optional: bool = False

    def invalid(self) -> st.SearchStrategy:
        values = [0.5, 1, "lambda e: 0.5", [_schedule], _Opaque()]
        return st.sampled_from(values if self.optional else values + [None])


@dataclasses.dataclass(frozen=True)
class Pair:
    """A pair of values of the given domains (``betas``, Adafactor's ``eps``)."""

    first: Any
    second: Any
    valid: tuple

    def invalid(self) -> st.SearchStrategy:
        return st.one_of(
            st.tuples(self.first.invalid(), st.just(self.valid[1])),
            st.tuples(st.just(self.valid[0]), self.second.invalid()),
            st.sampled_from([None, 0.9, "ab", (self.valid[0],), self.valid + (self.valid[1],), ()]),
        )


@dataclasses.dataclass(frozen=True)
class Triple:
    """Three values of the given domains (AdEMAMix's ``betas``)."""

    domains: tuple
    valid: tuple

    def invalid(self) -> st.SearchStrategy:
        def one_bad(index):
            parts = [st.just(value) for value in self.valid]
            parts[index] = self.domains[index].invalid()
            return st.tuples(*parts)

        return st.one_of(
            *(one_bad(index) for index in range(3)),
            st.sampled_from([None, 0.9, "abc", self.valid[:2], self.valid + (0.9,), ()]),
        )


@dataclasses.dataclass(frozen=True)
class IntList:
    """A list of integers >= ``minimum`` (milestones)."""

    minimum: int = 0

    def invalid(self) -> st.SearchStrategy:
        element = Int(self.minimum).invalid()
        return st.one_of(
            st.tuples(st.lists(st.integers(self.minimum, 50), max_size=3), element).map(
                lambda pair: pair[0] + [pair[1]]
            ),
            st.sampled_from([None, 3, "3", 2.5]),
        )


@dataclasses.dataclass(frozen=True)
class Transform:
    """An ``optax.GradientTransformation``."""

    optional: bool = False

    def invalid(self) -> st.SearchStrategy:
        values = [0.1, "adam", _schedule, (optax.identity(),), {"a": 1}, _Opaque()]
        return st.sampled_from(values if self.optional else values + [None])


@dataclasses.dataclass(frozen=True)
class Schedules:
    """A list of optlib torch schedules (``SequentialLR``/``ChainedScheduler``)."""

    def invalid(self) -> st.SearchStrategy:
        step = optlib.step_lr(0.1, step_size=3)
        return st.sampled_from(
            [None, [], step, [0.1], ["StepLR"], [step, 0.1], [_schedule], "StepLR"]
        )


@dataclasses.dataclass(frozen=True)
class Groups:
    """``param_groups``'s ``{label: optimizer}``."""

    def invalid(self) -> st.SearchStrategy:
        return st.sampled_from(
            [None, {}, [optax.identity()], {"a": 0.1}, {"a": optax.identity(), "b": None}, "adam"]
        )


# ------------------------------------------------------------------------------- the tables


@dataclasses.dataclass(frozen=True)
class Row:
    """A public constructor, a valid baseline, and the domain of each parameter.

    Attributes:
      name: test id.
      build: ``**kwargs -> object``.
      baseline: keywords that build successfully.
      domains: ``{parameter: domain}``.
      overrides: ``{parameter: keywords}`` replacing baseline ones when that parameter is
        tested (mutually exclusive options, options only read in some mode).
      signature_of: the function whose parameters ``domains`` must cover.
      not_checked: ``{parameter: reason}`` for parameters without a domain.
    """

    name: str
    build: Callable[..., Any]
    baseline: dict
    domains: dict
    overrides: dict = dataclasses.field(default_factory=dict)
    signature_of: Callable[..., Any] | None = None
    not_checked: dict = dataclasses.field(default_factory=dict)


def row(function, baseline=None, overrides=None, not_checked=None, **domains) -> Row:
    return Row(
        function.__name__,
        function,
        baseline or {},
        domains,
        overrides or {},
        function,
        not_checked or {},
    )


NORM_TYPE = positive(inf_ok=True, numeric_string_ok=True)
BETAS = Pair(beta(callable_ok=True), beta(), (0.9, 0.999))  # beta1 may be a schedule
MAXIMIZE = {"maximize": Bool()}
ADEMAMIX_BETAS = Triple((beta(callable_ok=True), beta(), beta()), (0.9, 0.999, 0.9999))
# Rprop: torch's 0 < etaminus < 1 < etaplus; step sizes (min, max), 0 <= min <= max.
ETAS = Pair(
    Real(low=0.0, high=1.0, low_closed=False, high_closed=False),
    Real(low=1.0, low_closed=False, inf_ok=True),
    (0.5, 1.2),
)
STEP_SIZES = Pair(non_negative(), Real(low=1e-6, inf_ok=True), (1e-6, 50.0))
# schedule-free: x is recovered through 1 / beta1, so beta1 is in (0, 1)
SCHEDULE_FREE_BETAS = Pair(
    Real(0.0, 1.0, low_closed=False, high_closed=False, callable_ok=True), beta(), (0.9, 0.999)
)

OPTIMIZERS = [
    row(
        optlib.sgd,
        learning_rate=LR,
        momentum=non_negative(callable_ok=True),
        dampening=unit(),
        weight_decay=non_negative(),
        nesterov=Bool(),
        **MAXIMIZE,
        baseline=dict(momentum=0.9),
    ),
    row(
        optlib.adam,
        learning_rate=LR,
        betas=BETAS,
        eps=non_negative(),
        weight_decay=non_negative(),
        amsgrad=Bool(),
        decoupled_weight_decay=Bool(),
        **MAXIMIZE,
    ),
    row(
        optlib.adamw,
        learning_rate=LR,
        betas=BETAS,
        eps=non_negative(),
        weight_decay=non_negative(),
        amsgrad=Bool(),
        **MAXIMIZE,
    ),
    row(
        optlib.adagrad,
        learning_rate=LR,
        lr_decay=non_negative(),
        weight_decay=non_negative(),
        initial_accumulator_value=non_negative(),
        eps=non_negative(),
        **MAXIMIZE,
    ),
    row(
        optlib.rmsprop,
        learning_rate=LR,
        alpha=unit(),
        eps=non_negative(),
        weight_decay=non_negative(),
        momentum=non_negative(callable_ok=True),
        centered=Bool(),
        **MAXIMIZE,
    ),
    row(
        optlib.adadelta,
        learning_rate=LR,
        rho=unit(),
        eps=non_negative(),
        weight_decay=non_negative(),
        **MAXIMIZE,
    ),
    row(
        optlib.nadam,
        learning_rate=LR,
        betas=BETAS,
        eps=non_negative(),
        weight_decay=non_negative(),
        momentum_decay=non_negative(),
        decoupled_weight_decay=Bool(),
        **MAXIMIZE,
    ),
    row(
        optlib.adafactor,
        baseline=dict(learning_rate=1e-3, relative_step=False),
        learning_rate=LR,
        eps=Pair(non_negative(), non_negative(), (1e-30, 1e-3)),
        clip_threshold=positive(inf_ok=True),
        decay_rate=Real(high=0.0),
        beta1=beta(optional=True),
        weight_decay=non_negative(),
        scale_parameter=Bool(),
        relative_step=Bool(),
        warmup_init=Bool(),
        overrides={
            "relative_step": dict(learning_rate=None, relative_step=True),
            "warmup_init": dict(learning_rate=None, relative_step=True),
        },
    ),
    row(
        optlib.newton,
        learning_rate=LR,
        hessian=Choice(("auto", "dense", "cg")),
        dense_max_size=Int(1),
        min_curvature=positive(),
        damping=non_negative(),
        cg_tol=positive(),
        cg_maxiter=Int(1, optional=True),
        linesearch=Transform(optional=True),
    ),
    row(
        optlib.bfgs,
        learning_rate=LR,
        max_size=Int(1),
        scale_init_hess=Bool(),
        linesearch=Transform(optional=True),
    ),
    row(optlib.lion, learning_rate=LR, betas=BETAS, weight_decay=non_negative()),
    row(
        optlib.ademamix,
        learning_rate=LR,
        betas=ADEMAMIX_BETAS,
        alpha=non_negative(),
        t_alpha=Int(0, optional=True),
        t_beta3=Int(0, optional=True),
        eps=non_negative(),
        weight_decay=non_negative(),
    ),
    row(
        optlib.stable_adamw,
        baseline=dict(learning_rate=1e-3),
        learning_rate=LR,
        betas=BETAS,
        weight_decay=non_negative(),
        eps=non_negative(),
        decouple_lr=Bool(),
        max_lr=positive(optional=True),
    ),
    row(
        optlib.radam,
        learning_rate=LR,
        betas=BETAS,
        eps=non_negative(),
        weight_decay=non_negative(),
        decoupled_weight_decay=Bool(),
        **MAXIMIZE,
    ),
    row(
        optlib.adamax,
        learning_rate=LR,
        betas=BETAS,
        eps=non_negative(),
        weight_decay=non_negative(),
        **MAXIMIZE,
    ),
    row(optlib.rprop, learning_rate=LR, etas=ETAS, step_sizes=STEP_SIZES, **MAXIMIZE),
    row(
        optlib.asgd,
        learning_rate=LR,
        lambd=non_negative(),
        alpha=Real(),
        t0=Real(),
        weight_decay=non_negative(),
        **MAXIMIZE,
    ),
    row(
        optlib.torch_adafactor,
        learning_rate=LR,
        beta2_decay=Real(high=0.0),
        eps=Pair(non_negative(optional=True), non_negative(), (None, 1e-3)),
        d=Real(low=1.0, inf_ok=True),
        weight_decay=non_negative(),
        **MAXIMIZE,
    ),
    row(
        optlib.schedule_free_adamw,
        learning_rate=LR,
        betas=SCHEDULE_FREE_BETAS,
        eps=non_negative(),
        weight_decay=non_negative(),
        warmup_steps=Int(0),
        r=Real(),
        weight_lr_power=non_negative(),
    ),
    row(
        optlib.schedule_free_sgd,
        learning_rate=LR,
        momentum=Real(0.0, 1.0, low_closed=False, high_closed=False, callable_ok=True),
        weight_decay=non_negative(),
        warmup_steps=Int(0),
        r=Real(),
        weight_lr_power=non_negative(),
    ),
    row(
        optlib.schedule_free_radam,
        learning_rate=LR,
        betas=SCHEDULE_FREE_BETAS,
        eps=non_negative(),
        weight_decay=non_negative(),
        r=Real(),
        weight_lr_power=non_negative(),
        silent_sgd_phase=Bool(),
    ),
    row(
        optlib.muon,
        learning_rate=LR,
        weight_decay=non_negative(),
        momentum=beta(callable_ok=True),
        nesterov=Bool(),
        eps=non_negative(),
        ns_steps=Int(1, maximum=99),
        adjust_lr_fn=Choice(("original", "match_rms_adamw"), optional=True),
        not_checked={
            "ns_coefficients": "three reals; tests/test_muon.py rejects a wrong length or entry",
            "ns_dtype": "a floating dtype or None; tests/test_muon.py rejects an integer one",
        },
    ),
    row(
        optlib.lbfgs,
        learning_rate=LR,
        max_iter=Int(1),
        max_eval=Int(1, optional=True),
        tolerance_grad=non_negative(),
        tolerance_change=non_negative(),
        history_size=Int(1),
        line_search_fn=Choice(("strong_wolfe",), optional=True),
    ),
]

TRANSFORMS = [
    row(
        optlib.scale_by_learning_rate,
        learning_rate=LR,
        flip_sign=Bool(),
        baseline=dict(learning_rate=0.1),
    ),
    row(optlib.apply_learning_rate, learning_rate=LR, baseline=dict(learning_rate=0.1)),
    row(
        optlib.torch_parameter_step,
        learning_rate=LR,
        rate_rounded=Bool(),
        decoupled_weight_decay=non_negative(optional=True),
        rate_applied=Bool(),
        quotients=Bool(),
        baseline=dict(learning_rate=0.1),
    ),
    row(
        optlib.scale_by_adagrad,
        lr_decay=non_negative(),
        initial_accumulator_value=non_negative(),
        eps=non_negative(),
        quotients=Bool(),
    ),
    row(optlib.scale_by_rms, alpha=unit(), eps=non_negative(), centered=Bool(), quotients=Bool()),
    row(optlib.scale_by_adadelta, rho=unit(), eps=non_negative()),
    row(optlib.scale_by_adam, betas=BETAS, eps=non_negative(), amsgrad=Bool()),
    row(
        optlib.scale_by_nadam,
        betas=BETAS,
        eps=non_negative(),
        momentum_decay=non_negative(),
        quotients=Bool(),
    ),
    row(
        optlib.trace_momentum,
        momentum=non_negative(callable_ok=True),
        dampening=unit(),
        nesterov=Bool(),
        baseline=dict(momentum=0.9),
    ),
    row(optlib.add_weight_decay, weight_decay=non_negative()),
    row(optlib.add_decoupled_weight_decay, weight_decay=non_negative()),
    row(
        optlib.clip_grad_norm,
        max_norm=non_negative(),
        norm_type=NORM_TYPE,
        error_if_nonfinite=Bool(),
        baseline=dict(max_norm=1.0),
    ),
    row(optlib.clip_grad_value, clip_value=non_negative(), baseline=dict(clip_value=1.0)),
    row(
        optlib.global_grad_norm,
        norm_type=NORM_TYPE,
        baseline=dict(grads={"a": np.ones(3, np.float32)}),
        not_checked={"grads": "any pytree of arrays"},
    ),
    row(optlib.scale_by_factored_rms, eps=non_negative(), decay_rate=Real(high=0.0)),
    row(optlib.clip_by_update_rms, clip_threshold=positive(inf_ok=True)),
    row(optlib.scale_by_param_rms, eps=non_negative(), report_scale=Bool()),
    row(optlib.relative_step_size, warmup_init=Bool()),
    row(optlib.scale_by_relative_step_size, warmup_init=Bool()),
    row(optlib.ema_of_updates, decay=beta(), baseline=dict(decay=0.9)),
    row(
        optlib.add_decayed_weights_scaled_by_learning_rate,
        weight_decay=non_negative(),
        learning_rate=LR,
        param_scale_eps=non_negative(optional=True),
        baseline=dict(weight_decay=0.1, learning_rate=0.1),
    ),
    row(
        optlib.scale_by_newton,
        hessian=Choice(("auto", "dense", "cg")),
        dense_max_size=Int(1),
        min_curvature=positive(),
        damping=non_negative(),
        cg_tol=positive(),
        cg_maxiter=Int(1, optional=True),
    ),
    row(optlib.scale_by_bfgs, max_size=Int(1), scale_init_hess=Bool()),
    row(
        in_statistics_dtype,
        inner=Transform(),
        cast_like_params=Bool(),
        baseline=dict(inner=optax.identity()),
    ),
    row(optlib.scale_by_lion, betas=BETAS),
    row(
        optlib.scale_by_ademamix,
        betas=ADEMAMIX_BETAS,
        alpha=non_negative(),
        t_alpha=Int(0, optional=True),
        t_beta3=Int(0, optional=True),
        eps=non_negative(),
        weight_decay=non_negative(),
        learning_rate=OWN_LR,
    ),
    row(
        optlib.scale_by_stable_adam,
        betas=BETAS,
        eps=non_negative(),
        weight_decay=non_negative(),
        learning_rate=OWN_LR,
    ),
    row(optlib.scale_by_radam, betas=BETAS, eps=non_negative(), learning_rate=OWN_LR),
    row(optlib.scale_by_adamax, betas=BETAS, eps=non_negative()),
    row(optlib.scale_by_rprop, learning_rate=LR, etas=ETAS, step_sizes=STEP_SIZES),
    row(optlib.track_learning_rate, learning_rate=LR, baseline=dict(learning_rate=0.1)),
    row(
        optlib.average_params,
        avg_fn=Choice(("swa", "ema")),
        decay=unit(),
        start_step=Int(0),
        every_n_steps=Int(1),
    ),
    row(optlib.asgd_average, t0=Real()),
    row(
        optlib.scale_by_asgd_step_size,
        learning_rate=LR,
        lambd=non_negative(),
        alpha=Real(),
        torch_step=Bool(),
    ),
    row(
        optlib.scale_by_torch_factored_rms,
        beta2_decay=Real(high=0.0),
        eps=non_negative(optional=True),
    ),
    row(
        optlib.scale_by_capped_relative_step,
        learning_rate=LR,
        weight_decay=non_negative(),
        not_checked={
            "torch_step": "None or torch_adafactor's checked (d, eps[1]); "
            "test_torch_exact_low_precision_torch_more rejects a bad pair",
        },
    ),
    row(optlib.scale_by_second_moment, beta2=beta(), eps=non_negative(), rectify=Bool()),
    row(
        optlib.apply_schedule_free,
        learning_rate=LR,
        beta1=Real(0.0, 1.0, low_closed=False, callable_ok=True),
        warmup_steps=Int(0),
        r=Real(),
        weight_lr_power=non_negative(),
    ),
    row(optlib.trace_ema_momentum, momentum=beta(callable_ok=True), nesterov=Bool()),
    row(
        optlib.scale_by_newton_schulz,
        ns_steps=Int(1, maximum=99),
        eps=non_negative(),
        keep_ns_dtype=Bool(),
        not_checked={
            "ns_coefficients": "three reals; tests/test_muon.py rejects a wrong length or entry",
            "ns_dtype": "a floating dtype or None; tests/test_muon.py rejects an integer one",
        },
    ),
    row(
        optlib.scale_by_shape,
        adjust_lr_fn=Choice(("original", "match_rms_adamw"), optional=True),
    ),
    row(
        optlib.scale_by_torch_lbfgs,
        learning_rate=LR,
        max_iter=Int(1),
        max_eval=Int(1, optional=True),
        tolerance_grad=non_negative(),
        tolerance_change=non_negative(),
        history_size=Int(1),
        line_search_fn=Choice(("strong_wolfe",), optional=True),
    ),
]

OTHERS = [
    row(
        optlib.per_epoch,
        schedule=Function(),
        steps_per_epoch=Int(1, INT32_MAX),
        baseline=dict(schedule=_schedule, steps_per_epoch=10),
    ),
    row(
        optlib.param_groups,
        groups=Groups(),
        baseline=dict(groups={"a": optax.identity()}, labels=lambda params: "a"),
        not_checked={"labels": "any pytree of labels or a function (optax.partition)"},
    ),
]


# statistics_dtype: every optimizer and statistics transform that takes it gets the domain
# (None or a floating dtype), so a new one is covered without an edit here.
@dataclasses.dataclass(frozen=True)
class StatisticsDtype:
    """None (the parameters' dtype) or a floating dtype."""

    def invalid(self) -> st.SearchStrategy:
        return st.sampled_from(
            ["int32", "bf16", np.int8, np.bool_, np.complex64, 3, 0.5, True, [None], _Opaque()]
        )


def _with_statistics_dtype(rows: list[Row]) -> list[Row]:
    return [
        dataclasses.replace(row_, domains={**row_.domains, "statistics_dtype": StatisticsDtype()})
        if "statistics_dtype" in inspect.signature(row_.signature_of).parameters
        else row_
        for row_ in rows
    ]


OPTIMIZERS = _with_statistics_dtype(OPTIMIZERS)
TRANSFORMS = _with_statistics_dtype(TRANSFORMS)


# Constructors of the public API deliberately left out (not constructors, or plain records).
NOT_CONSTRUCTORS = {
    "negate_gradients": "takes no arguments",
    "decay_labels": "labels any pytree",
    "MomentumSchedule": "a record built by cyclic_lr / one_cycle_lr",
    "averaged_params": "reads a state",
    "current_learning_rate": "reads a state",
    "carry_over_state": "maps a state onto new parameters (tested in test_unfreeze.py)",
    "state_shardings": "lays out a state (tested in test_sharding.py)",
    "plot_schedule": "draws a schedule (tested in test_plotting_cli.py)",
    "register_learning_rate_state": "registers a state type",
    "register_state_partition": "registers a state type's sharding rules",
    "scheduler_names": "lists the registry",
    "describe": "reads a transformation (tested in test_from_torch.py)",
    "from_torch": "reads a live torch optimizer (bad input: test_from_torch.py)",
    "from_training_args": "reads a Trainer config (bad input: test_from_training_args.py)",
    "hf_no_decay_labels": "labels a parameter tree (tested in test_from_training_args.py)",
    "from_torch_state_dict": "reads a state dict (bad input: test_torch_state_dict.py)",
    "to_torch_state_dict": "writes a state dict (tested in test_torch_state_dict.py)",
    "load_hf_trainer_checkpoint": "reads a folder (tested in test_hf_trainer_checkpoint.py)",
    "schedule_free_eval_params": "reads a state (tested in test_schedule_free.py)",
    "newton_schulz": "a function of a matrix; scale_by_newton_schulz checks its arguments",
    "adjusted_lr_ratio": "a function of a shape; scale_by_shape checks adjust_lr_fn",
}


# Schedulers, through ``get_scheduler``: domains of each factory's parameters.
def _scheduler_domains() -> dict[str, tuple[dict, dict]]:
    """``{factory name: (domains, overrides)}``; ``learning_rate`` is tested for each."""
    cosine_floor = dict(min_lr=unit(), min_lr_rate=unit())
    floor_overrides = {
        "min_lr_rate": dict(min_lr=None, min_lr_rate=0.1),
        "min_lr": dict(min_lr=1e-3, min_lr_rate=None),
    }
    plateau = dict(
        mode=Choice(("min", "max")),
        threshold=non_negative(),
        threshold_mode=Choice(("rel", "abs")),
        patience=Int(0),
        cooldown=Int(0),
        min_lr=non_negative(),
        eps=non_negative(),
    )
    return {
        "step_lr": (dict(step_size=Int(1), gamma=positive()), {}),
        "multi_step_lr": (dict(milestones=IntList(0), gamma=positive()), {}),
        "exponential_lr": (dict(gamma=positive()), {}),
        "cosine_annealing_lr": (dict(T_max=Int(1, INT32_MAX), eta_min=non_negative()), {}),
        "linear_lr": (
            dict(
                start_factor=Real(0.0, 1.0, low_closed=False),
                end_factor=unit(),
                total_iters=Int(1, INT32_MAX),
            ),
            {},
        ),
        "lambda_lr": (dict(lr_lambda=Function()), {}),
        "multiplicative_lr": (dict(lr_lambda=Function()), {}),
        "constant_lr": (dict(factor=unit(), total_iters=Int(0)), {}),
        "polynomial_lr": (dict(total_iters=Int(1, INT32_MAX), power=non_negative()), {}),
        "cosine_annealing_warm_restarts": (
            dict(T_0=Int(1), T_mult=Int(1), eta_min=non_negative()),
            {},
        ),
        "cyclic_lr": (
            dict(
                base_lr=non_negative(),
                max_lr=non_negative(),
                step_size_up=Int(1, INT32_MAX),
                step_size_down=Int(0, INT32_MAX, optional=True),
                mode=Choice(("triangular", "triangular2", "exp_range")),
                gamma=positive(),
                scale_fn=Function(optional=True),
                scale_mode=Choice(("cycle", "iterations")),
                cycle_momentum=Bool(),
                base_momentum=non_negative(),
                max_momentum=non_negative(),
            ),
            # torch reads scale_mode only with a scale_fn (and ignores mode then)
            {"scale_mode": dict(scale_fn=lambda x: 1.0)},
        ),
        "one_cycle_lr": (
            dict(
                max_lr=non_negative(),
                total_steps=Int(1, optional=True),
                epochs=Int(1),
                steps_per_epoch=Int(1),
                pct_start=unit(),
                anneal_strategy=Choice(("cos", "linear")),
                cycle_momentum=Bool(),
                base_momentum=non_negative(),
                max_momentum=non_negative(),
                div_factor=positive(),
                final_div_factor=positive(),
                three_phase=Bool(),
            ),
            # torch reads epochs/steps_per_epoch only without total_steps
            {
                "epochs": dict(total_steps=None, epochs=10, steps_per_epoch=10),
                "steps_per_epoch": dict(total_steps=None, epochs=10, steps_per_epoch=10),
            },
        ),
        "sequential_lr": (dict(schedulers=Schedules(), milestones=IntList(0)), {}),
        "chained_scheduler": (dict(schedulers=Schedules()), {}),
        "reduce_lr_on_plateau": (dict(plateau, factor=beta()), {}),
        "greedy_lr": (
            dict(
                plateau,
                factor=Real(0.0, 1.0, low_closed=False, high_closed=False),
                warmup=Int(0),
                max_lr=non_negative(),
                verbose=Bool(),
                smooth=Bool(),
                window_size=Int(1),
                reset_start=Int(0),
            ),
            {},
        ),
        "get_constant_schedule": ({}, {}),
        "get_constant_schedule_with_warmup": (dict(num_warmup_steps=STEP_COUNT), {}),
        "get_linear_schedule_with_warmup": (
            dict(num_warmup_steps=STEP_COUNT, num_training_steps=STEP_COUNT),
            {},
        ),
        "get_cosine_schedule_with_warmup": (
            dict(num_warmup_steps=STEP_COUNT, num_training_steps=STEP_COUNT, num_cycles=Real()),
            {},
        ),
        "get_cosine_with_hard_restarts_schedule_with_warmup": (
            dict(
                num_warmup_steps=STEP_COUNT,
                num_training_steps=STEP_COUNT,
                num_cycles=non_negative(),
            ),
            {},
        ),
        "get_polynomial_decay_schedule_with_warmup": (
            dict(
                num_warmup_steps=STEP_COUNT,
                num_training_steps=STEP_COUNT,
                lr_end=non_negative(),
                power=non_negative(),
            ),
            {},
        ),
        "get_inverse_sqrt_schedule": (
            dict(num_warmup_steps=STEP_COUNT, timescale=positive(optional=True)),
            {},
        ),
        "get_cosine_with_min_lr_schedule_with_warmup": (
            dict(
                num_warmup_steps=STEP_COUNT,
                num_training_steps=STEP_COUNT,
                num_cycles=Real(),
                **cosine_floor,
            ),
            floor_overrides,
        ),
        "get_cosine_with_min_lr_schedule_with_warmup_lr_rate": (
            dict(
                num_warmup_steps=STEP_COUNT,
                num_training_steps=STEP_COUNT,
                num_cycles=Real(),
                warmup_lr_rate=unit(optional=True),
                **cosine_floor,
            ),
            floor_overrides,
        ),
        "get_wsd_schedule": (
            dict(
                num_warmup_steps=STEP_COUNT,
                num_decay_steps=STEP_COUNT,
                num_training_steps=STEP_COUNT,
                num_stable_steps=STEP_COUNT,
                warmup_type=Choice(("linear", "cosine", "1-sqrt")),
                decay_type=Choice(("linear", "cosine", "1-sqrt")),
                min_lr_ratio=unit(),
                num_cycles=Real(),
            ),
            {
                "num_stable_steps": dict(num_training_steps=None, num_stable_steps=50),
                "num_training_steps": dict(num_stable_steps=None),
            },
        ),
        "cosine_annealing_warm_up_restarts": (
            dict(
                T_0=Int(1, INT32_MAX),
                T_mult=Int(1),
                eta_max=non_negative(),
                T_up=Int(0, INT32_MAX),
                gamma=non_negative(),
            ),
            {},
        ),
        "linear_decay": (
            dict(
                final_learning_rate=non_negative(),
                num_training_steps=STEP_COUNT,
                num_hold_steps=STEP_COUNT,
            ),
            {},
        ),
        "swa_lr": (
            dict(
                swa_lr=non_negative(),
                anneal_epochs=Int(0),
                anneal_strategy=Choice(("cos", "linear")),
            ),
            {},
        ),
    }


SCHEDULER_DOMAINS = _scheduler_domains()


def _scheduler_lr_domain(factory) -> Real:
    """Schedules whose ``learning_rate`` may itself be a schedule (HF passes it through)."""
    hf_pass_through = factory.__module__ == "optlib.schedules.hf" and factory is not (
        optlib.get_polynomial_decay_schedule_with_warmup
    )
    optional = factory in (optlib.cyclic_lr, optlib.one_cycle_lr)  # torch overwrites it
    return non_negative(callable_ok=hf_pass_through, optional=optional)


def _scheduler_row(name: str) -> Row:
    entry = scheduler_entry(name)
    domains, overrides = SCHEDULER_DOMAINS[entry.factory.__name__]
    domains = {"learning_rate": _scheduler_lr_domain(entry.factory), **domains}
    if "last_epoch" in inspect.signature(entry.factory).parameters:  # torch's resume keyword
        domains["last_epoch"] = Int(-1, INT32_MAX - 1)
    baseline = dict(learning_rate=0.01, **schedule_kwargs(name))

    def build(**kwargs):
        return optlib.get_scheduler(name, **kwargs)

    return Row(f"get_scheduler[{name}]", build, baseline, domains, overrides, entry.factory)


SCHEDULERS = [_scheduler_row(name) for name in optlib.scheduler_names()]
ROWS = OPTIMIZERS + TRANSFORMS + OTHERS + SCHEDULERS
CASES = [(row_, parameter) for row_ in ROWS for parameter in row_.domains]


# ------------------------------------------------------------------------------- the checks


def _mentions(message: str, value: Any) -> bool:
    """Whether ``message`` shows ``value`` (or, for a container, one of its elements)."""
    if value is None or (isinstance(value, (list, tuple, dict, str)) and not value):
        return True  # "X requires `param`" / "got none": naming the parameter is the message
    texts = {repr(value), str(value)}
    if isinstance(value, (float, np.floating)) and not math.isnan(value):
        texts.add(repr(float(value)))
    if isinstance(value, int) and not isinstance(value, bool):
        # shown as a float, or as +-inf when beyond the float range (10**400)
        texts.add(repr(float(value)) if abs(value) < 2**1000 else ("inf" if value > 0 else "-inf"))
    if any(text in message for text in texts):
        return True
    if isinstance(value, (list, tuple, dict)):
        items = value.values() if isinstance(value, dict) else value
        return any(_mentions(message, item) for item in items)
    return False


def _names(message: str, parameter: str) -> bool:
    pattern = rf"(?<![A-Za-z0-9_]){re.escape(parameter)}(?![A-Za-z0-9_])"
    return re.search(pattern, message) is not None


def assert_rejected(row_: Row, parameter: str, value: Any) -> None:
    shown = reprlib.repr(value)
    kwargs = {**row_.baseline, **row_.overrides.get(parameter, {}), parameter: value}
    try:
        built = row_.build(**kwargs)
    except (ValueError, TypeError) as error:
        message = str(error)
        assert _names(message, parameter), (
            f"{row_.name}({parameter}={shown}): message does not name {parameter!r}: {message!r}"
        )
        assert _mentions(message, value), (
            f"{row_.name}({parameter}={shown}): message does not show the value: {message!r}"
        )
    except Exception as error:
        raise AssertionError(
            f"{row_.name}({parameter}={shown}) raised {type(error).__name__}: {error}"
        ) from error
    else:
        raise AssertionError(
            f"{row_.name}({parameter}={shown}) was accepted silently: {built!r:.200}"
        )


@pytest.mark.parametrize(
    "row_, parameter", CASES, ids=[f"{row_.name}-{parameter}" for row_, parameter in CASES]
)
def test_invalid_value_is_rejected_at_construction(row_, parameter, record_property):
    row_.build(**{**row_.baseline, **row_.overrides.get(parameter, {})})  # the baseline is valid
    tried = []

    @HYPOTHESIS
    @given(value=row_.domains[parameter].invalid())
    def check(value):
        tried.append(value)
        assert_rejected(row_, parameter, value)

    check()
    record_property("invalid_inputs", len(tried))
    print(f"{row_.name}.{parameter}: {len(tried)} invalid inputs")
    assert len(tried) >= 5


# ------------------------------------------------------------------- coupled arguments

COUPLED = [
    ("sgd nesterov without momentum", optlib.sgd, dict(nesterov=True, momentum=0.0), "nesterov"),
    (
        "sgd nesterov with dampening",
        optlib.sgd,
        dict(nesterov=True, momentum=0.9, dampening=0.1),
        "nesterov",
    ),
    (
        "adafactor lr with relative_step",
        optlib.adafactor,
        dict(learning_rate=1e-3),
        "learning_rate",
    ),
    (
        "adafactor warmup_init without relative_step",
        optlib.adafactor,
        dict(learning_rate=1e-3, relative_step=False, warmup_init=True),
        "warmup_init",
    ),
    (
        "adagrad with a momentum-cycling lr",
        optlib.adagrad,
        dict(learning_rate=optlib.one_cycle_lr(max_lr=0.1, total_steps=10)),
        "momentum",
    ),
    (
        "greedy min_lr > max_lr",
        optlib.greedy_lr,
        dict(learning_rate=0.1, min_lr=0.5, max_lr=0.1),
        "min_lr",
    ),
    (
        "polynomial lr_end >= lr",
        optlib.get_polynomial_decay_schedule_with_warmup,
        dict(learning_rate=0.1, num_warmup_steps=0, num_training_steps=10, lr_end=0.1),
        "lr_end",
    ),
    (
        "cosine_with_min_lr both floors",
        optlib.get_cosine_with_min_lr_schedule_with_warmup,
        dict(
            learning_rate=0.1,
            num_warmup_steps=0,
            num_training_steps=10,
            min_lr=0.01,
            min_lr_rate=0.1,
        ),
        "min_lr",
    ),
    (
        "cosine_with_min_lr no floor",
        optlib.get_cosine_with_min_lr_schedule_with_warmup,
        dict(learning_rate=0.1, num_warmup_steps=0, num_training_steps=10),
        "min_lr",
    ),
    (
        "min_lr above the lr",
        optlib.get_cosine_with_min_lr_schedule_with_warmup,
        dict(learning_rate=0.1, num_warmup_steps=0, num_training_steps=10, min_lr=0.2),
        "min_lr",
    ),
    (
        "wsd warmup + decay > total",
        optlib.get_wsd_schedule,
        dict(learning_rate=0.1, num_warmup_steps=60, num_decay_steps=60, num_training_steps=100),
        "num_training_steps",
    ),
    (
        "wsd without a length",
        optlib.get_wsd_schedule,
        dict(learning_rate=0.1, num_warmup_steps=6, num_decay_steps=6),
        "num_stable_steps",
    ),
    (
        "linear_decay hold > total",
        optlib.linear_decay,
        dict(learning_rate=0.1, final_learning_rate=0.0, num_training_steps=10, num_hold_steps=11),
        "num_hold_steps",
    ),
    (
        "warm-up restarts T_up >= T_0",
        optlib.cosine_annealing_warm_up_restarts,
        dict(learning_rate=0.0, T_0=5, T_up=5),
        "T_up",
    ),
    ("one_cycle without a length", optlib.one_cycle_lr, dict(max_lr=0.1), "total_steps"),
    (
        "one_cycle zero-length phase",
        optlib.one_cycle_lr,
        dict(max_lr=0.1, total_steps=10, pct_start=0.1),
        "pct_start",
    ),
    (
        "constant_lr factor 0 with total_iters",
        optlib.constant_lr,
        dict(learning_rate=0.1, factor=0.0, total_iters=3),
        "factor",
    ),
    (
        "sequential_lr milestones count",
        optlib.sequential_lr,
        dict(learning_rate=0.1, schedulers=[optlib.step_lr(0.1, step_size=2)], milestones=[3]),
        "milestones",
    ),
    (
        "ademamix t_beta3 with beta1 0",
        optlib.ademamix,
        dict(betas=(0.0, 0.999, 0.9999), t_beta3=10),
        "t_beta3",
    ),
    (
        "stable_adamw decouple_lr with a schedule and no max_lr",
        optlib.stable_adamw,
        dict(learning_rate=optlib.step_lr(0.1, step_size=2), decouple_lr=True),
        "max_lr",
    ),
    (
        "stable_adamw with a momentum-cycling lr",
        optlib.stable_adamw,
        dict(learning_rate=optlib.one_cycle_lr(max_lr=0.1, total_steps=10)),
        "momentum",
    ),
]


@pytest.mark.parametrize(
    "label, factory, kwargs, parameter", COUPLED, ids=[case[0] for case in COUPLED]
)
def test_invalid_combination_is_rejected(label, factory, kwargs, parameter):
    with pytest.raises((ValueError, TypeError)) as error:
        factory(**kwargs)
    assert parameter in str(error.value), str(error.value)


# ------------------------------------------------------------------------- get_scheduler

_GET_SCHEDULER_OWN = set(inspect.signature(optlib.get_scheduler).parameters)


@HYPOTHESIS
@given(name=st.text(max_size=20).filter(lambda text: text not in optlib.scheduler_names()))
def test_get_scheduler_unknown_name_lists_valid_names(name):
    with pytest.raises(ValueError, match="Valid names") as error:
        optlib.get_scheduler(name, learning_rate=0.1)
    assert "StepLR" in str(error.value) and "cosine" in str(error.value)


@pytest.mark.parametrize("name", optlib.scheduler_names())
def test_get_scheduler_junk_keyword_is_a_type_error_naming_it(name):
    accepted = set(inspect.signature(scheduler_entry(name).factory).parameters)
    identifiers = st.from_regex(r"[a-z][a-z0-9_]{0,14}", fullmatch=True).filter(
        lambda key: key not in accepted | _GET_SCHEDULER_OWN
    )
    tried = []

    @HYPOTHESIS
    @given(key=identifiers, value=st.sampled_from([0, 1.5, "x", None]), nested=st.booleans())
    def check(key, value, nested):
        tried.append(key)
        kwargs = dict(learning_rate=0.01, **schedule_kwargs(name))
        if nested:
            kwargs["scheduler_specific_kwargs"] = {key: value}
        else:
            kwargs[key] = value
        with pytest.raises(TypeError) as error:
            optlib.get_scheduler(name, **kwargs)
        assert repr(key) in str(error.value) or key in str(error.value)

    check()
    print(f"get_scheduler[{name}] junk keywords: {len(tried)}")
    assert len(tried) >= 5


@pytest.mark.parametrize("name", optlib.scheduler_names())
def test_get_scheduler_without_learning_rate_is_a_value_error(name):
    with pytest.raises(ValueError, match="learning_rate"):
        optlib.get_scheduler(name, **schedule_kwargs(name))


@pytest.mark.parametrize(
    "name", [name for name in optlib.scheduler_names() if scheduler_entry(name).family == "torch"]
)
def test_get_scheduler_torch_name_rejects_hf_standard_arguments(name):
    with pytest.raises(TypeError, match="num_training_steps"):
        optlib.get_scheduler(
            name, learning_rate=0.01, num_training_steps=100, **schedule_kwargs(name)
        )


# ---------------------------------------------------------------------- the tables are complete


@pytest.mark.parametrize("row_", ROWS, ids=[row_.name for row_ in ROWS])
def test_every_parameter_has_a_domain(row_):
    parameters = set(inspect.signature(row_.signature_of).parameters)
    covered = set(row_.domains) | set(row_.not_checked)
    assert parameters == covered, (
        f"{row_.name}: without a domain: {sorted(parameters - covered)}; "
        f"unknown: {sorted(covered - parameters)}"
    )


def test_every_public_constructor_is_in_a_table():
    tabled = {row_.build.__name__ for row_ in OPTIMIZERS + TRANSFORMS + OTHERS}
    factories = {scheduler_entry(name).factory.__name__ for name in optlib.scheduler_names()}
    public = {name for name in optlib.__all__ if inspect.isfunction(getattr(optlib, name))}
    hf_aliases = {name for name in public if name.startswith("get_")}  # the registry's HF rows
    missing = (
        public
        - tabled
        - factories
        - hf_aliases
        - set(NOT_CONSTRUCTORS)
        - {
            "report_metric"  # steps a state; not a constructor (tested in test_metric.py)
        }
    )
    assert not missing, f"public constructors without a validation row: {sorted(missing)}"


# ------------------------------------------------- integral arguments in every concrete form

# Metric-driven schedulers keep their counts in the state and refuse array arguments with a
# message about optax.inject_hyperparams (tests/test_metric.py); every other integer argument
# takes any concrete integral scalar.
_ARRAYS_REFUSED = {"patience", "cooldown", "warmup", "window_size", "reset_start"}
INTEGRAL_FORMS = {
    "numpy-int64": np.int64,
    "numpy-0d": np.array,
    "jnp-int": lambda value: jnp.asarray(value),
    "python-float": float,
    "jnp-float": lambda value: jnp.asarray(float(value)),
}
INT_CASES = [
    (row_, parameter)
    for row_ in ROWS
    for parameter, domain in row_.domains.items()
    if isinstance(domain, Int)
]


def _valid_int(row_: Row, parameter: str) -> int:
    kwargs = {**row_.baseline, **row_.overrides.get(parameter, {})}
    value = kwargs.get(parameter)
    if value is None:
        default = inspect.signature(row_.signature_of).parameters[parameter].default
        value = default if isinstance(default, int) else None
    domain = row_.domains[parameter]
    return max(domain.minimum, 1) + 2 if value is None else value


def _same_build(reference: Any, built: Any) -> None:
    if callable(reference) and not isinstance(reference, optax.GradientTransformation):
        steps = jnp.asarray([0, 1, 5, 17, 40])
        np.testing.assert_array_equal(
            np.asarray(jax.vmap(built)(steps)), np.asarray(jax.vmap(reference)(steps))
        )


@pytest.mark.parametrize(
    "row_, parameter", INT_CASES, ids=[f"{row_.name}-{parameter}" for row_, parameter in INT_CASES]
)
def test_integral_arguments_are_accepted_in_every_concrete_form(row_, parameter):
    value = _valid_int(row_, parameter)
    kwargs = {**row_.baseline, **row_.overrides.get(parameter, {})}
    reference = row_.build(**{**kwargs, parameter: value})
    for form, convert in INTEGRAL_FORMS.items():
        if parameter in _ARRAYS_REFUSED and form.startswith("jnp"):
            with pytest.raises(TypeError, match=parameter):
                row_.build(**{**kwargs, parameter: convert(value)})
            continue
        _same_build(reference, row_.build(**{**kwargs, parameter: convert(value)}))
    with pytest.raises(TypeError, match=rf"{parameter} must be an integer, got {value + 0.5}"):
        row_.build(**{**kwargs, parameter: value + 0.5})


# ---------------------------------------------------- unusual parameter leaves, every optimizer

# torch optimizes a complex parameter as view_as_real(p) in these; the others refuse it.
COMPLEX_AS_PAIRS = {
    "sgd",
    "adam",
    "adamw",
    "adagrad",
    "rmsprop",
    "adadelta",
    "nadam",
    "radam",
    "adamax",
    "rprop",
    "asgd",  # linear in p and g: torch's complex arithmetic is the pairs'
    "schedule_free_sgd",  # linear in p and g, as SGDScheduleFree's
}
NEEDS_VALUE_FN = {"newton", "bfgs", "lbfgs"}  # update takes the objective: init-only checks
MATRICES_ONLY = {"muon"}  # torch's Muon refuses other leaves


def _real_pair(z):
    return jnp.stack([jnp.real(z), jnp.imag(z)], axis=-1)


@pytest.mark.parametrize("row_", OPTIMIZERS, ids=[row_.name for row_ in OPTIMIZERS])
def test_complex_leaves_are_real_pairs_or_refused_at_init(row_):
    tx = row_.build(**row_.baseline)
    z = jnp.asarray([1.0 + 1.0j, -0.5 + 2.0j, 0.25 - 0.75j], jnp.complex64)
    g = jnp.asarray([1.0 + 2.0j, 0.3 - 0.1j, -1.0 + 0.5j], jnp.complex64)
    params = {"r": jnp.ones(2), "z": z}
    if row_.name not in COMPLEX_AS_PAIRS:
        with pytest.raises(TypeError, match=r"\['z'\] is complex"):
            tx.init(params)
        return
    updates, _ = tx.update({"r": jnp.ones(2), "z": g}, tx.init(params), params)
    assert updates["z"].dtype == jnp.complex64
    pairs = {"r": jnp.ones(2), "z": _real_pair(z)}
    expected, _ = tx.update({"r": jnp.ones(2), "z": _real_pair(g)}, tx.init(pairs), pairs)
    np.testing.assert_array_equal(_real_pair(updates["z"]), expected["z"])
    np.testing.assert_array_equal(updates["r"], expected["r"])


@pytest.mark.parametrize("row_", OPTIMIZERS, ids=[row_.name for row_ in OPTIMIZERS])
def test_python_float_leaves_are_taken_as_arrays(row_):
    tx = row_.build(**row_.baseline)
    if row_.name in MATRICES_ONLY:
        return
    params = {"s": 1.5, "w": jnp.ones(2)}
    state = tx.init(params)
    if row_.name in NEEDS_VALUE_FN:
        return
    updates, _ = tx.update({"s": 0.5, "w": jnp.ones(2)}, state, params)
    as_array = {"s": jnp.asarray(1.5), "w": jnp.ones(2)}
    expected, _ = tx.update({"s": jnp.asarray(0.5), "w": jnp.ones(2)}, tx.init(as_array), as_array)
    np.testing.assert_array_equal(updates["s"], expected["s"])


@pytest.mark.parametrize("row_", OPTIMIZERS, ids=[row_.name for row_ in OPTIMIZERS])
@pytest.mark.parametrize(
    "leaf",
    [jnp.zeros(2, jnp.int32), np.zeros(2, np.uint8), jnp.zeros(2, bool), 3, True],
    ids=["int32", "uint8", "bool", "python-int", "python-bool"],
)
def test_integer_parameters_are_refused_at_init_naming_the_leaf(row_, leaf):
    tx = row_.build(**row_.baseline)
    with pytest.raises(TypeError, match=r"parameter \['n'\] has dtype .*floating-point"):
        tx.init({"n": leaf, "w": jnp.ones(2)})
