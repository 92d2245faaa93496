"""The reference-parity harness: run torch / transformers and optlib on the same inputs.

A schedule's reference trace is what a torch training loop sees: ``lrs[k]`` is the learning
rate in the optimizer's param group after ``k`` calls of ``scheduler.step()`` (the rate the
``k``-th update uses; shared/API.md "Step indexing"). optlib's trace is the schedule
evaluated at ``0..n-1`` in one jitted, vmapped call, so each configuration compiles once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optlib
from optlib.optimizers import _torch_classes

torch = pytest.importorskip(
    "torch", reason="parity tests need the reference: pip install -e '.[test]' (torch==2.13.0)"
)

# Tolerances of the "Done when": |ours - ref| <= RTOL*|ref| + ATOL_PEAK*peak.
RTOL_F32 = 2e-5
ATOL_PEAK_F32 = 1e-6
RTOL_F64 = 1e-12
# Optimizer trajectories (parameters after every step): the chains reproduce torch's
# arithmetic, so float64 errors are round-off (~1e-15); 1e-10 also catches a misplaced eps.
OPTIMIZER_RTOL_F64 = 1e-10
OPTIMIZER_RTOL_F32 = 1e-4


def make_torch_optimizer(
    learning_rate: float, optimizer_cls: Any = None, **optimizer_kwargs: Any
) -> Any:
    """A torch optimizer over one dummy parameter, for driving a scheduler."""
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer_cls = optimizer_cls or torch.optim.SGD
    return optimizer_cls([param], lr=learning_rate, **optimizer_kwargs)


def torch_trace(
    make_scheduler: Callable[[Any], Any],
    learning_rate: float,
    steps: int,
    *,
    optimizer_cls: Any = None,
    key: str = "lr",
    **optimizer_kwargs: Any,
) -> np.ndarray:
    """``[group[key] after k scheduler steps for k in range(steps)]`` from a real torch loop.

    ``key`` may be ``"lr"``, ``"momentum"`` or ``"beta1"`` (``betas[0]``).
    """
    optimizer = make_torch_optimizer(learning_rate, optimizer_cls, **optimizer_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = make_scheduler(optimizer)
        values = []
        for _ in range(steps):
            group = optimizer.param_groups[0]
            values.append(group["betas"][0] if key == "beta1" else group[key])
            optimizer.step()
            scheduler.step()
    return np.asarray(values, dtype=np.float64)


def optlib_trace(
    schedule: Callable[[jax.Array], jax.Array], steps: int, start: int = 0
) -> np.ndarray:
    """``schedule(k)`` for ``k`` in ``start..start+steps-1``, one jit of a vmap."""
    counts = jnp.arange(start, start + steps, dtype=jnp.int32)
    return np.asarray(jax.jit(jax.vmap(schedule))(counts), dtype=np.float64)


def assert_trace_close(
    ours: np.ndarray,
    reference: np.ndarray,
    *,
    rtol: float = RTOL_F32,
    atol_peak: float = ATOL_PEAK_F32,
    label: str = "",
) -> float:
    """Asserts ``|ours - ref| <= rtol*|ref| + atol_peak*peak`` everywhere; returns the worst
    relative error (for closing notes)."""
    ours = np.asarray(ours, np.float64)
    reference = np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    peak = float(np.max(np.abs(reference))) if reference.size else 0.0
    bound = rtol * np.abs(reference) + atol_peak * peak
    error = np.abs(ours - reference)
    bad = np.nonzero(~(error <= bound))[0]
    if bad.size:
        k = int(bad[0])
        raise AssertionError(
            f"{label}: {bad.size} step(s) differ; first at step {k}: optlib={ours[k]!r} "
            f"reference={reference[k]!r} (|diff|={error[k]:.3e} > bound {bound[k]:.3e})\n"
            f"optlib[{max(k - 3, 0)}:{k + 4}]={ours[max(k - 3, 0) : k + 4]}\n"
            f"reference[{max(k - 3, 0)}:{k + 4}]={reference[max(k - 3, 0) : k + 4]}"
        )
    scale = np.maximum(np.abs(reference), 1e-300)
    return float(np.max(error / scale)) if reference.size else 0.0


SHAPES = {"scalar": (), "vector": (5,), "matrix": (3, 4), "tensor": (2, 3, 2)}


# ---------------------------------------------------------------------------------------------
# Optimizers: the shared problem and the two loops.


@dataclasses.dataclass(frozen=True)
class Problem:
    """Initial params, loss coefficients and a noise sequence ``noise[k][t]`` (float64)."""

    params: dict
    a: dict
    b: dict
    noise: dict  # leaf -> (steps, micro_batches, *shape)
    sign: float = 1.0

    @property
    def micro_batches(self) -> int:
        return next(iter(self.noise.values())).shape[1]


def make_problem(
    steps: int, *, seed: int = 0, sign: float = 1.0, micro_batches: int = 1, shapes=None
):
    """The problem on ``shapes`` (``{leaf: shape}``, default ``SHAPES``)."""
    shapes = SHAPES if shapes is None else shapes
    rng = np.random.default_rng(seed)
    return Problem(
        params={k: rng.uniform(-1.5, 1.5, s) for k, s in shapes.items()},
        a={k: rng.uniform(0.5, 1.5, s) for k, s in shapes.items()},
        b={k: rng.normal(0.0, 0.5, s) for k, s in shapes.items()},
        noise={k: rng.normal(0.0, 0.5, (steps, micro_batches, *s)) for k, s in shapes.items()},
        sign=sign,
    )


def gradient(p, a, b, c, sign):
    """``sign * d/dp (a p^4/4 + b p^2/2 + c p)``; the same expression for jax and torch."""
    return sign * (a * p * p * p + b * p + c)


def optlib_trajectory(
    tx, problem: Problem, dtype, *, accumulate: bool = False, metrics=None, record=None
):
    """Params after every optimizer step (one jitted scan); and the final optimizer state.

    With ``accumulate``, each step feeds the micro-batch gradients one by one (for
    ``optax.MultiSteps``); otherwise the one micro-batch. ``metrics[k]`` (optional) is passed
    as ``value=`` to every update of step ``k`` (metric-driven schedulers). ``record(params,
    state)`` (optional) gives the dict recorded after each step instead of the params.
    """
    run, params = _trajectory_program(tx, problem, dtype, accumulate, metrics, record)
    trajectory, state = jax.jit(run)(params)
    return {k: np.asarray(v, np.float64) for k, v in trajectory.items()}, state


def _trajectory_program(tx, problem: Problem, dtype, accumulate: bool, metrics, record=None):
    """``optlib_trajectory``'s unjitted ``run(params) -> (trajectory, state)``, and the params."""
    record = record or (lambda params, state: params)
    cast = lambda tree: {k: jnp.asarray(v, dtype) for k, v in tree.items()}
    a, b, noise = cast(problem.a), cast(problem.b), cast(problem.noise)
    steps = next(iter(noise.values())).shape[0]
    extra = (lambda m: {"value": m}) if metrics is not None else (lambda m: {})
    metrics = jnp.zeros(steps) if metrics is None else jnp.asarray(metrics)

    def micro_step(carry, c, metric):
        params, state = carry
        grads = {k: gradient(params[k], a[k], b[k], c[k], problem.sign) for k in params}
        updates, state = tx.update(grads, state, params, **extra(metric))
        return optax.apply_updates(params, updates), state

    def step(carry, xs):
        c_step, metric = xs
        if accumulate:
            carry, _ = jax.lax.scan(lambda cr, c: (micro_step(cr, c, metric), None), carry, c_step)
        else:
            carry = micro_step(carry, {k: v[0] for k, v in c_step.items()}, metric)
        return carry, record(*carry)

    def run(params):
        (_, state), trajectory = jax.lax.scan(step, (params, tx.init(params)), (noise, metrics))
        return trajectory, state

    return run, cast(problem.params)


def optlib_trajectories(txs: dict, problem: Problem, dtype) -> dict:
    """``{name: optlib_trajectory(tx, ...)[0]}`` for several optimizers, in one jitted program
    (one compile for a whole table of configurations)."""
    runs = {name: _trajectory_program(tx, problem, dtype, False, None) for name, tx in txs.items()}
    params = next(iter(runs.values()))[1] if runs else {}
    trajectories = jax.jit(lambda p: {name: run(p)[0] for name, (run, _) in runs.items()})(params)
    return {
        name: {k: np.asarray(v, np.float64) for k, v in trajectory.items()}
        for name, trajectory in trajectories.items()
    }


@contextlib.contextmanager
def torch_default_dtype(dtype):
    """torch's default dtype set to ``dtype`` (float32 or float64) inside the block.

    A float64 torch run is a float64 run only with float64 as torch's default dtype: torch
    keeps scalar optimizer state (``step``, NAdam's ``mu_product``) in the default dtype.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def torch_trajectory(
    make_optimizer,
    problem: Problem,
    dtype,
    *,
    before_step=None,
    scheduler=None,
    metrics=None,
    record=None,
):
    """The same loop in torch: ``p.grad = mean of the micro-batch gradients; opt.step()``.

    ``make_optimizer(params_by_name)`` builds the optimizer; ``before_step(opt, k)`` may set
    group hyperparameters; ``scheduler(opt)`` (optional) is stepped after each step, with
    ``metrics[k]`` if given. torch's default dtype is ``dtype`` during the run
    (``torch_default_dtype``). ``record(opt, params_by_name)`` (optional) gives the dict of
    arrays recorded after each step (and scheduler step) instead of the params.
    """
    with torch_default_dtype(dtype):
        return _torch_trajectory(
            make_optimizer, problem, dtype, before_step, scheduler, metrics, record
        )


def _torch_trajectory(make_optimizer, problem, dtype, before_step, scheduler, metrics, record):
    params = {
        k: torch.nn.Parameter(torch.tensor(v, dtype=dtype)) for k, v in problem.params.items()
    }
    t = lambda x: torch.tensor(x, dtype=dtype)
    a, b = ({k: t(v) for k, v in tree.items()} for tree in (problem.a, problem.b))
    noise = {k: t(v) for k, v in problem.noise.items()}
    optimizer = make_optimizer(params)
    sched = scheduler(optimizer) if scheduler else None
    steps = next(iter(noise.values())).shape[0]
    trajectory: dict = {}
    for step in range(steps):
        if before_step:
            before_step(optimizer, step)
        with torch.no_grad():
            for k, p in params.items():
                p.grad = torch.zeros_like(p)
                k_micro = problem.micro_batches
                for i in range(k_micro):  # (loss / k).backward() per micro-batch
                    p.grad += gradient(p, a[k], b[k], noise[k][step, i], problem.sign) / k_micro
        optimizer.step()
        if sched:
            sched.step(*([] if metrics is None else [float(metrics[step])]))
        if record is None:
            recorded = {k: p.detach().numpy() for k, p in params.items()}
        else:
            recorded = record(optimizer, params)
        for k, value in recorded.items():
            trajectory.setdefault(k, []).append(np.asarray(value, np.float64).copy())
    return {k: np.stack(v) for k, v in trajectory.items()}, optimizer, sched


def optim_db_inputs(optimizer_name: str) -> list[tuple[str, dict]]:
    """``(desc, kwargs)`` of every configuration torch's own test database
    (``torch.testing._internal.common_optimizers.optim_db``) lists for ``optimizer_name``,
    without the implementation switches (foreach, fused, capturable, differentiable).

    torch's module imports ``expecttest`` (a torch test-only dependency) for its TestCase;
    when it is not installed a stand-in module with ``unittest.TestCase`` is registered.
    """
    import sys
    import types
    import unittest

    if "expecttest" not in sys.modules:
        try:
            import expecttest  # noqa: F401
        except ImportError:
            stand_in = types.ModuleType("expecttest")
            stand_in.TestCase = unittest.TestCase
            sys.modules["expecttest"] = stand_in
    from torch.testing._internal.common_optimizers import optim_db

    switches = {"foreach", "fused", "capturable", "differentiable"}
    (info,) = [info for info in optim_db if info.optim_cls.__name__ == optimizer_name]
    cases = []
    for optim_input in info.optim_inputs_func(device="cpu"):
        kwargs = {k: v for k, v in optim_input.kwargs.items() if k not in switches}
        if kwargs not in [existing for _, existing in cases]:
            cases.append((optim_input.desc, kwargs))
    return cases


def max_relative_error(ours: dict, reference: dict) -> float:
    """max over steps and leaves of ``||ours - ref||_inf / ||ref||_inf``."""
    worst = 0.0
    for k, ref in reference.items():
        ref = ref.reshape(ref.shape[0], -1)
        diff = np.abs(ours[k].reshape(ref.shape) - ref).max(axis=1)
        scale = np.maximum(np.abs(ref).max(axis=1), 1e-300)
        assert np.all(np.isfinite(ref)), f"reference diverged in leaf {k}"
        worst = max(worst, float(np.max(diff / scale)))
    return worst


def torch_kwargs_to_optlib(kwargs: dict, class_name: str | None = None) -> dict:
    """torch keywords -> optlib keywords, through the library's one table
    (``optlib.optimizers._torch_classes``); ``class_name`` also checks them."""
    return _torch_classes.torch_kwargs_to_optlib(kwargs, class_name)


# ---------------------------------------------------------------------------------------------
# Where each exported optimizer is compared with its reference (tests/test_completeness.py
# checks that every name in ``optlib.optimizers.__all__`` is here and that the module named
# builds it). Add a row with the parity table of a new optimizer.

PARITY_MODULES: dict[str, str] = {
    "sgd": "test_optimizers_torch",
    "adam": "test_optimizers_torch",
    "adamw": "test_optimizers_torch",
    "adagrad": "test_optimizers_torch",
    "rmsprop": "test_optimizers_torch",
    "adadelta": "test_optimizers_torch",
    "nadam": "test_optimizers_torch",
    "adafactor": "test_adafactor",
    "radam": "test_optimizers_torch_more",
    "adamax": "test_optimizers_torch_more",
    "rprop": "test_optimizers_torch_more",
    "lion": "test_optimizers_extras",
    "ademamix": "test_optimizers_extras",
    "stable_adamw": "test_optimizers_extras",
    "newton": "test_second_order",  # scipy / numpy references
    "bfgs": "test_second_order",
    "asgd": "test_asgd_adafactor_torch",
    "torch_adafactor": "test_asgd_adafactor_torch",
    "schedule_free_adamw": "test_schedule_free",
    "schedule_free_sgd": "test_schedule_free",
    "schedule_free_radam": "test_schedule_free",
    "muon": "test_muon",
    "lbfgs": "test_lbfgs",
}


# ---------------------------------------------------------------------------------------------
# torch schedulers by name, with sub-schedulers for the composites.

COMPOSITES = ("SequentialLR", "ChainedScheduler")


def base_lr_for(schedulers: list, learning_rate: float) -> float:
    """torch's ``group['initial_lr']`` for schedulers built on one optimizer: set by a CyclicLR
    or OneCycleLR built first, else the optimizer's lr."""
    name, kwargs = schedulers[0] if schedulers else (None, None)
    if name == "CyclicLR":
        return kwargs["base_lr"]
    if name == "OneCycleLR":
        return kwargs["max_lr"] / kwargs.get("div_factor", 25.0)
    return learning_rate


def build_torch(name: str, kwargs: dict):
    """``optimizer -> scheduler``, sub-schedulers built first, in order."""

    def make(optimizer):
        kwargs_ = dict(kwargs)
        if name in COMPOSITES:
            subs = [build_torch(n, k)(optimizer) for n, k in kwargs_.pop("schedulers")]
            if name == "ChainedScheduler":
                return torch.optim.lr_scheduler.ChainedScheduler(subs, optimizer=optimizer)
            return torch.optim.lr_scheduler.SequentialLR(optimizer, subs, **kwargs_)
        return getattr(torch.optim.lr_scheduler, name)(optimizer, **kwargs_)

    return make


def build_optlib(name: str, kwargs: dict, learning_rate: float):
    kwargs_ = dict(kwargs)
    if name in COMPOSITES:
        base = base_lr_for(kwargs_["schedulers"], learning_rate)
        kwargs_["schedulers"] = [
            build_optlib(n, k, learning_rate if n in ("CyclicLR", "OneCycleLR") else base)
            for n, k in kwargs_["schedulers"]
        ]
    return optlib.get_scheduler(name, learning_rate=learning_rate, **kwargs_)
