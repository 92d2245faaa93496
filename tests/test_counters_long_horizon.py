"""Counters saturate at 2**31 - 1 and schedules stay exact at steps >= 10**9 (issue 9.3).

* **Every optimizer**: its int32 counters (``count``, Newton's ``fallbacks``, BFGS's
  ``curvature_pairs``, the metric schedulers' ``count`` and bad/good-epoch counts) set to
  ``2**31 - 3`` after 1000 steps, four more steps end at ``2**31 - 1``, never negative, with
  finite parameters. That check runs in ``test_no_retrace.py``, in the very step compiled
  for its 1000-step run, so that it costs no compile of its own and also shows that the
  saturation does not recompile.
* **Against the references at the limit** (float64): torch's Adam, AdamW (AMSGrad), NAdam,
  Adagrad (with ``lr_decay``) and HF's Adafactor, their ``step`` preset to ``2**31 - 3`` with
  zero statistics, and optlib with its counts at the same value, take three steps on the
  same gradients: the parameters agree. The first two steps are exact step numbers
  (``2**31 - 2``, ``2**31 - 1``); at the third torch goes on to ``2**31`` while optlib's count
  saturates, a difference of ``1 / 2**31`` in a step number that only enters through
  ``beta**t`` (``0`` either way) or Adagrad's ``1 + (t - 1) * lr_decay``.
* **Metric-driven schedulers** with ``count`` and the bad-epoch count near the limit reduce
  the rate exactly when torch's ``ReduceLROnPlateau`` / HF's ``GreedyLR`` (attributes set
  to the same values) do.
* **Schedules across libraries** (the schedule tests have their own fixed long-horizon rows;
  this is a property check on top): hypothesis draws configurations of every torch schedule
  with a closed form and every Hugging Face schedule, with periods and horizons up to
  ``2**31 - 1``, and steps in ``[10**9, 2**31 - 1]``; optlib (float32) must equal the
  reference's own float64 closed form at those steps (torch: ``_get_closed_form_lr`` /
  ``get_lr`` with ``last_epoch`` set; HF: its ``lr_lambda``). Not covered here:
  MultiplicativeLR (O(step) by definition), SequentialLR/ChainedScheduler (no closed form in
  torch), CosineAnnealingWarmRestarts with ``T_mult > 1`` (torch's epoch formula uses a
  float log) -- the fixed rows of ``test_torch_schedules_long_horizon.py`` cover them.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parity import ATOL_PEAK_F32, RTOL_F32, make_torch_optimizer, torch, torch_default_dtype
from reliability_cases import HF_NAMES, INT32_MAX, counters, set_counters

import optlib

transformers = pytest.importorskip("transformers", reason="HF references need transformers")
schedulefree = pytest.importorskip("schedulefree", reason="schedule-free references")

NEAR = INT32_MAX - 2  # start: two exact steps, then saturation


# ------------------------------------------------------------ optimizers vs the references

GRADIENT_STEPS = 3


def reference_params():
    """``{name: float64 array}`` (an MLP's shapes) and three gradient pytrees."""
    rng = np.random.default_rng(0)
    shapes = {"w1": (3, 6), "b1": (6,), "w2": (6, 2), "b2": (2,)}
    params = {name: rng.normal(size=shape) for name, shape in shapes.items()}
    grads = [
        {name: rng.normal(size=shape) for name, shape in shapes.items()}
        for _ in range(GRADIENT_STEPS)
    ]
    return params, grads


def _torch_state(kind: str, shape, step: int) -> dict:
    zeros = torch.zeros(shape, dtype=torch.float64)
    step_t = torch.tensor(float(step), dtype=torch.float64)
    if kind in ("adam", "adamw"):
        return {
            "step": step_t,
            "exp_avg": zeros.clone(),
            "exp_avg_sq": zeros.clone(),
            "max_exp_avg_sq": zeros.clone(),
        }
    if kind == "nadam":
        return {
            "step": step_t,
            "mu_product": torch.tensor(1.0, dtype=torch.float64),
            "exp_avg": zeros.clone(),
            "exp_avg_sq": zeros.clone(),
        }
    if kind == "adagrad":
        return {"step": step_t, "sum": zeros.clone()}
    if kind == "lion":
        return {"exp_avg": zeros.clone()}
    if kind == "ademamix":  # bitsandbytes' _ReferenceAdEMAMix; its step is the group's
        return {"m1_m2": torch.zeros((2, *shape), dtype=torch.float64), "nu": zeros.clone()}
    if kind == "stable":  # optimi; its step is the group's
        eps_sq = torch.tensor(1e-6**2, dtype=torch.float64)
        return {
            "exp_avg": zeros.clone(),
            "exp_avg_sq": zeros.clone(),
            "eps_sq": eps_sq,
            "kahan_comp": None,
        }
    if kind == "radam":
        return {"step": step_t, "exp_avg": zeros.clone(), "exp_avg_sq": zeros.clone()}
    if kind == "adamax":
        return {"step": step_t, "exp_avg": zeros.clone(), "exp_inf": zeros.clone()}
    if kind == "rprop":  # Rprop's step counts only; its sizes start at lr (1e-2 below)
        return {
            "step": step_t,
            "prev": zeros.clone(),
            "step_size": torch.full(shape, 1e-2, dtype=torch.float64),
        }
    if kind == "asgd":  # lr 1e-2 and t0 1e6 (the defaults): eta and mu as optlib's init implies
        scalar = lambda value: torch.tensor(value, dtype=torch.float64)
        return {
            "step": step_t,
            "eta": scalar(1e-2),
            "mu": scalar(1 / max(1, step - 1e6)),
            "ax": zeros.clone(),
        }
    if kind == "torch":  # torch.optim.Adafactor
        if len(shape) < 2:
            return {"step": step_t, "variance": zeros.clone()}
        row, col = list(shape), list(shape)
        row[-1], col[-2] = 1, 1
        return {
            "step": step_t,
            "row_var": torch.zeros(row, dtype=torch.float64),
            "col_var": torch.zeros(col, dtype=torch.float64),
        }
    factored = len(shape) >= 2
    state = {"step": step, "RMS": 0}
    if factored:
        state["exp_avg_sq_row"] = torch.zeros(shape[:-1], dtype=torch.float64)
        state["exp_avg_sq_col"] = torch.zeros(shape[:-2] + shape[-1:], dtype=torch.float64)
    else:
        state["exp_avg_sq"] = zeros.clone()
    return state


REFERENCE_CASES = [
    (
        "adam",
        lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
        lambda: optlib.adam(1e-2, weight_decay=1e-3),
    ),
    (
        "adamw_amsgrad",
        lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True),
        lambda: optlib.adamw(1e-2, amsgrad=True),
    ),
    ("nadam", lambda p: torch.optim.NAdam(p, lr=1e-2), lambda: optlib.nadam(1e-2)),
    (
        "adagrad",
        lambda p: torch.optim.Adagrad(p, lr=1e-1, lr_decay=1e-3),
        lambda: optlib.adagrad(1e-1, lr_decay=1e-3),
    ),
    (
        "adafactor",
        lambda p: transformers.optimization.Adafactor(p, lr=None),
        lambda: optlib.adafactor(),
    ),
    (
        "lion",
        lambda p: _lion_pytorch().Lion(p, lr=1e-3, weight_decay=1e-2),
        lambda: optlib.lion(1e-3, weight_decay=1e-2),
    ),
    (
        "ademamix",
        lambda p: _group_step(
            _reference_ademamix()(p, lr=1e-2, t_alpha=100, t_beta3=100), NEAR - 1
        ),
        lambda: optlib.ademamix(1e-2, t_alpha=100, t_beta3=100),
    ),
    (
        # optimi's step is an int32 tensor that would wrap on the step after 2**31 - 1 (and
        # its debiased betas turn NaN); preset as int64 it goes on to 2**31 like torch's.
        "stable_adamw",
        lambda p: _group_step(
            _optimi().StableAdamW(p, lr=1e-2, foreach=False, triton=False),
            torch.tensor(NEAR - 1, dtype=torch.int64),
            setup=True,
        ),
        lambda: optlib.stable_adamw(1e-2),
    ),
    (
        "radam",
        lambda p: torch.optim.RAdam(p, lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True),
        lambda: optlib.radam(1e-2, weight_decay=1e-2, decoupled_weight_decay=True),
    ),
    (
        "adamax",
        lambda p: torch.optim.Adamax(p, lr=1e-2, weight_decay=1e-3),
        lambda: optlib.adamax(1e-2, weight_decay=1e-3),
    ),
    ("rprop", lambda p: torch.optim.Rprop(p, lr=1e-2), lambda: optlib.rprop(1e-2)),
    ("asgd", lambda p: torch.optim.ASGD(p, lr=1e-2), lambda: optlib.asgd(1e-2)),
    (
        "torch_adafactor",
        lambda p: torch.optim.Adafactor(p, lr=1e-2, weight_decay=0.1),
        lambda: optlib.torch_adafactor(1e-2, weight_decay=0.1),
    ),
    (
        "schedulefree_adamw",
        lambda p: schedulefree.AdamWScheduleFree(p, lr=1e-2, warmup_steps=5, weight_decay=1e-2),
        lambda: optlib.schedule_free_adamw(1e-2, warmup_steps=5, weight_decay=1e-2),
    ),
    (
        "schedulefree_sgd",
        lambda p: schedulefree.SGDScheduleFree(p, lr=1e-2, r=1.0),
        lambda: optlib.schedule_free_sgd(1e-2, r=1.0),
    ),
    (
        "schedulefree_radam",
        lambda p: schedulefree.RAdamScheduleFree(p, lr=1e-2),
        lambda: optlib.schedule_free_radam(1e-2),
    ),
]


def _lion_pytorch():
    return pytest.importorskip("lion_pytorch")


def _reference_ademamix():
    return pytest.importorskip("bitsandbytes.optim.ademamix")._ReferenceAdEMAMix


def _optimi():
    return pytest.importorskip("optimi")


def _group_step(optimizer, step, **group):
    """``optimizer`` with its param groups' ``step`` preset (and other group entries)."""
    for param_group in optimizer.param_groups:
        param_group.update(step=step, **group)
    return optimizer


@pytest.mark.parametrize(
    "name, make_reference, make_ours", REFERENCE_CASES, ids=[case[0] for case in REFERENCE_CASES]
)
def test_steps_at_the_int32_limit_match_the_reference(name, make_reference, make_ours, x64):
    start, grads = reference_params()
    kind = name.split("_")[0]
    tensors = {
        key: torch.tensor(value, dtype=torch.float64, requires_grad=True)
        for key, value in start.items()
    }
    optimizer = make_reference(list(tensors.values()))
    if kind == "schedulefree":  # the count is the group's k; z and exp_avg_sq start lazily
        for group in optimizer.param_groups:
            group["k"] = NEAR - 1
        optimizer.train()
    else:
        for tensor in tensors.values():
            optimizer.state[tensor] = _torch_state(kind, tuple(tensor.shape), NEAR - 1)

    tx = make_ours()
    params = jax.tree.map(jnp.asarray, start)
    state = set_counters(tx.init(params), NEAR - 1)
    update = jax.jit(tx.update)
    for index, grad in enumerate(grads):
        for key, tensor in tensors.items():
            tensor.grad = torch.tensor(grad[key], dtype=torch.float64)
        with warnings.catch_warnings(), torch_default_dtype(torch.float64):
            warnings.simplefilter("ignore")  # float64 default: ASGD's new eta is float64
            optimizer.step()
        updates, state = update(jax.tree.map(jnp.asarray, grad), state, params)
        params = optax.apply_updates(params, updates)
        rtol = 1e-12 if index < 2 else 1e-9  # third step: torch's step 2**31, ours saturated
        for key, tensor in tensors.items():
            np.testing.assert_allclose(
                np.asarray(params[key]),
                tensor.detach().numpy(),
                rtol=rtol,
                atol=1e-15,
                err_msg=f"{name} step {index} {key}",
            )
    assert all(value == INT32_MAX for value in counters(state).values())


# --------------------------------------------------------------- metric-driven schedulers

METRICS = [5.0, 5.0, 5.0, 4.0, 4.0, 4.0, 4.0, 3.0]


def test_plateau_counters_near_the_limit_match_torch():
    optimizer = make_torch_optimizer(0.1)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=3, factor=0.5)
    reference.step(6.0)  # a best to compare with
    reference.num_bad_epochs, reference.last_epoch = INT32_MAX - 2, INT32_MAX - 2
    tx = optlib.reduce_lr_on_plateau(0.1, patience=3, factor=0.5)
    state = optlib.report_metric(tx.init(jnp.zeros([])), 6.0)
    state = state._replace(num_bad_epochs=jnp.int32(INT32_MAX - 2), count=jnp.int32(INT32_MAX - 2))
    report = jax.jit(optlib.report_metric)
    for metric in METRICS:
        reference.step(metric)
        state = report(state, jnp.float32(metric))
        assert float(state.learning_rate) == pytest.approx(optimizer.param_groups[0]["lr"])
        assert int(state.num_bad_epochs) == reference.num_bad_epochs
        assert 0 <= int(state.count) <= INT32_MAX


def test_greedy_counters_near_the_limit_match_hf():
    optimizer = make_torch_optimizer(0.1)
    reference = transformers.optimization.GreedyLR(
        optimizer, patience=3, factor=0.5, min_lr=1e-3, max_lr=1.0
    )
    reference.step(6.0)
    reference.num_good_epochs, reference.last_epoch = INT32_MAX - 2, INT32_MAX - 2
    tx = optlib.greedy_lr(0.1, patience=3, factor=0.5, min_lr=1e-3, max_lr=1.0)
    state = optlib.report_metric(tx.init(jnp.zeros([])), 6.0)
    state = state._replace(num_good_epochs=jnp.int32(INT32_MAX - 2), count=jnp.int32(INT32_MAX - 2))
    report = jax.jit(optlib.report_metric)
    for metric in [5.5, 5.4, 5.3, 5.3, 5.3, 5.3, 5.3, 5.2]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference.step(metric)
        state = report(state, jnp.float32(metric))
        assert float(state.learning_rate) == pytest.approx(optimizer.param_groups[0]["lr"])
        assert 0 <= int(state.count) <= INT32_MAX


# -------------------------------------------------------------- schedules across libraries

HYPOTHESIS = settings(max_examples=8, deadline=None, derandomize=True, database=None)
LR = 0.1
BIG = st.integers(1, INT32_MAX)
FAR_STEPS = st.lists(  # always six steps: one shape, so eager ops compile once
    st.integers(10**9 + 1, INT32_MAX - 1), min_size=4, max_size=4, unique=True
).map(lambda steps: sorted(steps + [10**9, INT32_MAX]))
GAMMA = st.floats(0.5, 1.0)


def _lambda(e):
    return 1.0 / (1.0 + 1e-9 * e)


TORCH_CONFIGS = {
    "StepLR": st.fixed_dictionaries(dict(step_size=BIG, gamma=GAMMA)),
    "MultiStepLR": st.fixed_dictionaries(
        dict(milestones=st.lists(st.integers(0, INT32_MAX), max_size=5), gamma=GAMMA)
    ),
    "ExponentialLR": st.fixed_dictionaries(dict(gamma=st.floats(1 - 1e-8, 1.0))),
    "CosineAnnealingLR": st.fixed_dictionaries(
        dict(T_max=BIG, eta_min=st.sampled_from([0.0, 1e-3]))
    ),
    "LinearLR": st.fixed_dictionaries(
        dict(start_factor=st.floats(0.01, 1.0), end_factor=st.floats(0.0, 1.0), total_iters=BIG)
    ),
    "ConstantLR": st.fixed_dictionaries(  # total_iters=0: optlib follows torch's loop, which
        # keeps the factor, where torch's closed form would not (see constant_lr)
        dict(factor=st.floats(0.01, 1.0), total_iters=st.integers(1, INT32_MAX))
    ),
    "PolynomialLR": st.fixed_dictionaries(dict(total_iters=BIG, power=st.floats(0.0, 3.0))),
    "CyclicLR": st.sampled_from(["triangular", "triangular2", "exp_range"]).flatmap(
        # torch's triangular2 computes 2.0 ** cycle in Python floats: OverflowError beyond
        # ~1000 cycles, so its half cycles are at least 2**21 steps
        lambda mode: st.fixed_dictionaries(
            dict(
                base_lr=st.just(0.01),
                max_lr=st.just(0.1),
                mode=st.just(mode),
                step_size_up=st.integers(2**21 if mode == "triangular2" else 1, 2**30),
                step_size_down=st.integers(2**21 if mode == "triangular2" else 1, 2**30),
                gamma=st.floats(1 - 1e-9, 1.0),
                cycle_momentum=st.just(False),
            )
        )
    ),
    "OneCycleLR": st.fixed_dictionaries(
        dict(
            max_lr=st.just(0.1),
            total_steps=st.integers(2 * 10**9, INT32_MAX),
            pct_start=st.floats(0.05, 0.95),
            anneal_strategy=st.sampled_from(["cos", "linear"]),
            three_phase=st.booleans(),
            cycle_momentum=st.just(False),
        )
    ),
    "LambdaLR": st.just(dict(lr_lambda=_lambda)),
    "CosineAnnealingWarmRestarts": st.fixed_dictionaries(
        dict(T_0=BIG, eta_min=st.sampled_from([0.0, 1e-3]))
    ),
}


def torch_closed_form(name: str, kwargs: dict, steps: list[int]) -> np.ndarray:
    """torch's own float64 closed form at ``steps`` (``last_epoch`` set, no loop)."""
    optimizer = make_torch_optimizer(LR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = getattr(torch.optim.lr_scheduler, name)(optimizer, **kwargs)
        values = []
        for step in steps:
            scheduler.last_epoch = step
            if name == "CosineAnnealingWarmRestarts":
                scheduler.T_cur, scheduler.T_i = step % kwargs["T_0"], kwargs["T_0"]
            if hasattr(scheduler, "_get_closed_form_lr"):
                values.append(scheduler._get_closed_form_lr()[0])
            else:
                values.append(scheduler.get_lr()[0])
    return np.asarray(values, np.float64)


def assert_close_far_out(ours, reference, label: str) -> None:
    """The parity tolerances of ``tests/parity.py``, the absolute one relative to the base lr
    (far out a decayed reference may hold only tiny values)."""
    np.testing.assert_allclose(
        ours, reference, rtol=RTOL_F32, atol=ATOL_PEAK_F32 * LR, err_msg=label
    )


def ours_at(schedule, steps: list[int]) -> np.ndarray:
    return np.asarray(jax.vmap(schedule)(jnp.asarray(steps, jnp.int32)), np.float64)


@pytest.mark.parametrize("name", sorted(TORCH_CONFIGS))
def test_torch_schedules_far_out_equal_torch_closed_form(name):
    @HYPOTHESIS
    @given(kwargs=TORCH_CONFIGS[name], steps=FAR_STEPS)
    def check(kwargs, steps):
        if name == "OneCycleLR":
            steps = [min(step, kwargs["total_steps"]) for step in steps]
        schedule = optlib.get_scheduler(name, learning_rate=LR, **kwargs)
        assert_close_far_out(
            ours_at(schedule, steps), torch_closed_form(name, kwargs, steps), f"{name} {kwargs}"
        )

    check()


@st.composite
def hf_configs(draw, name: str) -> dict:
    total = draw(st.integers(10**9, INT32_MAX))
    warmup = draw(st.sampled_from([0, 1, 10**6, 10**9 - 1]))
    config = dict(num_warmup_steps=warmup, num_training_steps=total)
    cycles = draw(st.sampled_from([0.5, 1.0, 2.5, 7.0]))
    if name in ("cosine", "cosine_with_min_lr", "cosine_warmup_with_min_lr"):
        config["num_cycles"] = cycles
    if name == "cosine_with_restarts":
        config["num_cycles"] = draw(st.integers(1, 50))
    if name == "polynomial":
        config.update(lr_end=1e-4, power=draw(st.floats(0.5, 3.0)))
    if name == "inverse_sqrt":
        config = dict(num_warmup_steps=warmup, timescale=draw(st.integers(1, 10**6)))
    if name in ("cosine_with_min_lr", "cosine_warmup_with_min_lr"):
        config["min_lr_rate"] = draw(st.sampled_from([0.0, 0.1]))
    if name == "warmup_stable_decay":
        config.update(
            num_decay_steps=draw(st.integers(0, total - warmup)),
            decay_type=draw(st.sampled_from(["linear", "cosine", "1-sqrt"])),
            min_lr_ratio=draw(st.sampled_from([0.0, 0.05])),
        )
    if name == "constant":
        config = {}
    if name == "constant_with_warmup":
        config = dict(num_warmup_steps=warmup)
    return config


def hf_lambda(name: str, config: dict):
    """HF's own ``lr_lambda`` (a Python float64 closed form of the step)."""
    standard = {
        key: config[key] for key in ("num_warmup_steps", "num_training_steps") if key in config
    }
    specific = {key: value for key, value in config.items() if key not in standard}
    scheduler = transformers.get_scheduler(
        name, make_torch_optimizer(LR), scheduler_specific_kwargs=specific or None, **standard
    )
    return scheduler.lr_lambdas[0]


@pytest.mark.parametrize("name", HF_NAMES)
def test_hf_schedules_far_out_equal_transformers_lambda(name):
    @HYPOTHESIS
    @given(config=hf_configs(name), steps=FAR_STEPS)
    def check(config, steps):
        standard = {
            key: config[key] for key in ("num_warmup_steps", "num_training_steps") if key in config
        }
        specific = {key: value for key, value in config.items() if key not in standard}
        schedule = optlib.get_scheduler(name, learning_rate=LR, **standard, **specific)
        lr_lambda = hf_lambda(name, config)
        reference = np.asarray([LR * lr_lambda(step) for step in steps])
        assert_close_far_out(ours_at(schedule, steps), reference, f"{name} {config}")

    check()
