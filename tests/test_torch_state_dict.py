"""Resuming a torch run with optlib: ``from_torch_state_dict`` / ``to_torch_state_dict``.

Each case: torch trains 20 steps in float64 (optimizer + scheduler), saves both state dicts
with ``torch.save`` and reads them back with ``torch.load(weights_only=True)``; optlib loads
them into its twin and both continue 30 steps on the same gradients. The parameters must
agree to float64 rounding at every step and the learning rates must be equal. Then the
optlib state after 10 of those steps goes back to a fresh torch optimizer and scheduler with
``to_torch_state_dict`` and torch's next 20 steps must equal optlib's.

The problem is tests/parity.py's (a scalar, 1-D, 2-D and 3-D leaf, quartic loss plus
noise). Cases with ``layouts`` keep the 2-D and 3-D leaves transposed on the JAX side (as a
Flax ``Dense`` kernel is against a torch ``Linear.weight``).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import transformers.optimization as hf
from parity import (
    OPTIMIZER_RTOL_F64,
    gradient,
    make_problem,
    max_relative_error,
    torch,
    torch_default_dtype,
)

import optlib

BEFORE, AFTER, ROUND_TRIP = 20, 30, 10
STEPS = BEFORE + AFTER
LR = torch.optim.lr_scheduler
KEYS = ("scalar", "vector", "matrix", "tensor")
TRANSPOSED = {"matrix": "transpose", "tensor": (2, 1, 0)}
# Adafactor factors the last two axes: a layout must keep them last (here: swapped).
SWAPPED_LAST = {"matrix": "transpose", "tensor": (0, 2, 1)}


@dataclasses.dataclass
class Case:
    """``torch_optimizer(named params) -> optimizer``, ``torch_scheduler(opt) -> sched``,
    ``optlib_tx() -> tx``; ``metric``: the scheduler steps on ``metric(k)``; ``groups``:
    the torch param groups as lists of keys (one group of every key by default)."""

    torch_optimizer: Callable
    optlib_tx: Callable
    torch_scheduler: Callable | None = None
    metric: Callable | None = None
    groups: tuple = (KEYS,)
    layouts: dict | None = None
    round_trip: bool = True
    shapes: dict | None = None  # the problem's leaves (default: tests/parity.py's four)
    float64_newton_schulz: bool = False  # torch's Muon iterates in float64 (test only)


def _two_groups(cls, decay_kwargs, other_kwargs):
    def build(params):
        return cls(
            [
                {"params": [params["matrix"], params["tensor"]], **decay_kwargs},
                {"params": [params["scalar"], params["vector"]], **other_kwargs},
            ]
        )

    return build


def _one_group(cls, keys=KEYS, **kwargs):
    return lambda params: cls([params[k] for k in keys], **kwargs)


MATRICES = {"square": (4, 4), "wide": (3, 6), "tall": (7, 3)}  # Muon: 2-D parameters only


def _plateau_metric(k):
    return 1.0 if k % 7 else 0.5 - 0.01 * k  # mostly flat, an improvement every 7 steps


CASES = {
    "sgd_nesterov_step_lr": Case(
        _one_group(torch.optim.SGD, lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda: optlib.sgd(
            optlib.step_lr(0.02, step_size=7, gamma=0.5), 0.9, weight_decay=0.01, nesterov=True
        ),
        lambda opt: LR.StepLR(opt, step_size=7, gamma=0.5),
    ),
    "sgd_plain_constant": Case(
        _one_group(torch.optim.SGD, lr=0.01), lambda: optlib.sgd(0.01), layouts=TRANSPOSED
    ),
    "adam_amsgrad_one_cycle": Case(
        _one_group(torch.optim.Adam, lr=0.01, amsgrad=True),
        lambda: optlib.adam(optlib.one_cycle_lr(0.01, max_lr=0.05, total_steps=60), amsgrad=True),
        lambda opt: LR.OneCycleLR(opt, max_lr=0.05, total_steps=60),
        layouts=TRANSPOSED,
    ),
    "adamw_two_groups_sequential": Case(
        _two_groups(
            torch.optim.AdamW, {"weight_decay": 0.1, "lr": 0.01}, {"weight_decay": 0.0, "lr": 0.005}
        ),
        lambda: optlib.param_groups(
            {
                "decay": optlib.adamw(_sequential(0.01), weight_decay=0.1),
                "no_decay": optlib.adamw(_sequential(0.005), weight_decay=0.0),
            },
            optlib.decay_labels,
        ),
        lambda opt: LR.SequentialLR(
            opt,
            [LR.LinearLR(opt, start_factor=0.2, total_iters=5), LR.CosineAnnealingLR(opt, 30)],
            milestones=[5],
        ),
        groups=(("matrix", "tensor"), ("scalar", "vector")),
    ),
    "adagrad_exponential": Case(
        _one_group(torch.optim.Adagrad, lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1),
        lambda: optlib.adagrad(
            optlib.exponential_lr(0.05, gamma=0.97), lr_decay=0.01, initial_accumulator_value=0.1
        ),
        lambda opt: LR.ExponentialLR(opt, gamma=0.97),
    ),
    "rmsprop_centered_one_cycle_momentum": Case(
        _one_group(torch.optim.RMSprop, lr=0.01, momentum=0.9, centered=True),
        lambda: optlib.rmsprop(
            optlib.one_cycle_lr(0.01, max_lr=0.01, total_steps=60), momentum=0.9, centered=True
        ),
        lambda opt: LR.OneCycleLR(opt, max_lr=0.01, total_steps=60),
    ),
    "adadelta_plateau": Case(
        _one_group(torch.optim.Adadelta, lr=1.0, weight_decay=0.01),
        lambda: optlib.adadelta(
            optlib.reduce_lr_on_plateau(1.0, factor=0.5, patience=2, cooldown=1),
            weight_decay=0.01,
        ),
        lambda opt: LR.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1),
        metric=_plateau_metric,
    ),
    "adam_two_groups_plateau": Case(
        _two_groups(torch.optim.Adam, {"lr": 0.01}, {"lr": 0.02}),
        lambda: optlib.param_groups(
            {
                "decay": optlib.adam(optlib.reduce_lr_on_plateau(0.01, factor=0.5, patience=3)),
                "no_decay": optlib.adam(optlib.reduce_lr_on_plateau(0.02, factor=0.5, patience=3)),
            },
            optlib.decay_labels,
        ),
        lambda opt: LR.ReduceLROnPlateau(opt, factor=0.5, patience=3),
        metric=_plateau_metric,
        groups=(("matrix", "tensor"), ("scalar", "vector")),
    ),
    "nadam_hf_linear": Case(
        _one_group(torch.optim.NAdam, lr=0.01),
        lambda: optlib.nadam(optlib.get_linear_schedule_with_warmup(0.01, 5, 60)),
        lambda opt: hf.get_linear_schedule_with_warmup(opt, 5, 60),
    ),
    "radam_cosine": Case(
        _one_group(torch.optim.RAdam, lr=0.01, weight_decay=0.01, decoupled_weight_decay=True),
        lambda: optlib.radam(
            optlib.cosine_annealing_lr(0.01, T_max=25),
            weight_decay=0.01,
            decoupled_weight_decay=True,
        ),
        lambda opt: LR.CosineAnnealingLR(opt, T_max=25),
    ),
    "adamax_chained": Case(
        _one_group(torch.optim.Adamax, lr=0.01),
        lambda: optlib.adamax(
            optlib.chained_scheduler(
                0.01, [optlib.exponential_lr(0.01, gamma=0.98), optlib.step_lr(0.01, step_size=9)]
            )
        ),
        lambda opt: LR.ChainedScheduler(
            [LR.ExponentialLR(opt, gamma=0.98), LR.StepLR(opt, step_size=9)], optimizer=opt
        ),
    ),
    "rprop_greedy": Case(
        _one_group(torch.optim.Rprop, lr=0.01),
        lambda: optlib.rprop(optlib.greedy_lr(0.01, patience=2, min_lr=1e-4)),
        lambda opt: hf.GreedyLR(opt, patience=2, min_lr=1e-4),
        metric=_plateau_metric,
    ),
    "adafactor_relative_step": Case(
        _one_group(hf.Adafactor, lr=None),
        lambda: optlib.adafactor(),
        layouts=SWAPPED_LAST,
    ),
    "adafactor_lr_beta1_linear_lr": Case(
        _one_group(
            hf.Adafactor,
            lr=0.01,
            relative_step=False,
            beta1=0.9,
            weight_decay=0.01,
            scale_parameter=False,
        ),
        lambda: optlib.adafactor(
            optlib.linear_lr(0.01, start_factor=0.5, total_iters=30),
            relative_step=False,
            beta1=0.9,
            weight_decay=0.01,
            scale_parameter=False,
        ),
        lambda opt: LR.LinearLR(opt, start_factor=0.5, total_iters=30),
        layouts=SWAPPED_LAST,
    ),
    "asgd_step_lr": Case(
        _one_group(torch.optim.ASGD, lr=0.02, lambd=1e-3, alpha=0.6, t0=12.0, weight_decay=0.01),
        lambda: optlib.asgd(
            optlib.step_lr(0.02, step_size=7, gamma=0.5),
            lambd=1e-3,
            alpha=0.6,
            t0=12.0,
            weight_decay=0.01,
        ),
        lambda opt: LR.StepLR(opt, step_size=7, gamma=0.5),
        layouts=TRANSPOSED,
    ),
    "asgd_plateau": Case(
        _one_group(torch.optim.ASGD, lr=0.05, t0=25.0),
        lambda: optlib.asgd(optlib.reduce_lr_on_plateau(0.05, factor=0.5, patience=2), t0=25.0),
        lambda opt: LR.ReduceLROnPlateau(opt, factor=0.5, patience=2),
        metric=_plateau_metric,
    ),
    "torch_adafactor_cosine": Case(
        _one_group(torch.optim.Adafactor, lr=0.05, beta2_decay=-0.7, weight_decay=0.01),
        lambda: optlib.torch_adafactor(
            optlib.cosine_annealing_lr(0.05, T_max=25), beta2_decay=-0.7, weight_decay=0.01
        ),
        lambda opt: LR.CosineAnnealingLR(opt, T_max=25),
        layouts=SWAPPED_LAST,
    ),
    "torch_adafactor_plateau_eps": Case(
        _one_group(torch.optim.Adafactor, lr=0.02, eps=(1e-20, 1e-3), d=2.0),
        lambda: optlib.torch_adafactor(
            optlib.reduce_lr_on_plateau(0.02, factor=0.5, patience=2), eps=(1e-20, 1e-3), d=2.0
        ),
        lambda opt: LR.ReduceLROnPlateau(opt, factor=0.5, patience=2),
        metric=_plateau_metric,
    ),
    "muon_one_cycle_momentum": Case(
        _one_group(torch.optim.Muon, tuple(MATRICES), lr=0.02, adjust_lr_fn="original"),
        lambda: optlib.muon(
            optlib.one_cycle_lr(0.02, max_lr=0.05, total_steps=60),
            adjust_lr_fn="original",
            ns_dtype="float64",
        ),
        lambda opt: LR.OneCycleLR(opt, max_lr=0.05, total_steps=60),
        groups=(tuple(MATRICES),),
        shapes=MATRICES,
        float64_newton_schulz=True,
    ),
}


def _sequential(lr):
    return optlib.sequential_lr(
        lr,
        [optlib.linear_lr(lr, start_factor=0.2, total_iters=5), optlib.cosine_annealing_lr(lr, 30)],
        milestones=[5],
    )


# ------------------------------------------------------------------------------- the loops


def _perm(layout, ndim: int) -> tuple[int, ...]:
    return tuple(reversed(range(ndim))) if layout == "transpose" else tuple(layout)


def _jax_view(tree: dict, layouts: dict | None, batch: int = 0, inverse: bool = False) -> dict:
    """torch-layout arrays -> the JAX layout (``inverse``: back), after ``batch`` leading axes."""
    out = {}
    for key, value in tree.items():
        layout = (layouts or {}).get(key)
        if layout is not None:
            perm = _perm(layout, value.ndim - batch)
            if inverse:
                perm = tuple(int(i) for i in np.argsort(perm))
            value = np.transpose(value, (*range(batch), *(batch + axis for axis in perm)))
        out[key] = value
    return out


def _torch_run(
    case: Case, problem, start: int, stop: int, optimizer=None, scheduler=None, params=None
):
    """torch from ``start`` to ``stop`` (building optimizer and scheduler if not given);
    returns the params after every step, the lr of each group before every step, and the
    torch objects."""
    if params is None:
        params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in problem.params.items()}
    if optimizer is None:
        optimizer = case.torch_optimizer(params)
        scheduler = case.torch_scheduler(optimizer) if case.torch_scheduler else None
    a = {k: torch.tensor(v) for k, v in problem.a.items()}
    b = {k: torch.tensor(v) for k, v in problem.b.items()}
    trajectory = {k: [] for k in params}
    lrs = []
    for k in range(start, stop):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        with torch.no_grad():
            for key, p in params.items():
                p.grad = gradient(p, a[key], b[key], torch.tensor(problem.noise[key][k, 0]), 1.0)
        optimizer.step()
        if scheduler is not None:
            scheduler.step(*([case.metric(k)] if case.metric else []))
        for key, p in params.items():
            trajectory[key].append(p.detach().numpy().copy())
    return (
        {k: np.stack(v) for k, v in trajectory.items()},
        np.asarray(lrs),
        optimizer,
        scheduler,
        params,
    )


def _optlib_run(case: Case, tx, state, params: dict, problem, start: int, stop: int):
    """optlib from ``start`` to ``stop`` in one jitted scan (JAX layout throughout)."""
    a, b = (_jax_view(tree, case.layouts) for tree in (problem.a, problem.b))
    noise = _jax_view({k: v[start:stop, 0] for k, v in problem.noise.items()}, case.layouts, 1)
    step = _jitted_step(tx, case.metric is not None)
    trajectory, lrs = [], []
    for k in range(start, stop):
        c = {key: value[k - start] for key, value in noise.items()}
        metric = case.metric(k) if case.metric else 0.0
        lrs.append(optlib.current_learning_rate(state))
        params, state = step(params, state, a, b, c, metric)
        trajectory.append(params)
    stacked = {k: np.stack([np.asarray(p[k]) for p in trajectory]) for k in params}
    return stacked, jax.tree.map(lambda *x: np.stack(x), *lrs), params, state


_STEPS: dict = {}


def _jitted_step(tx, with_metric: bool):
    """One jitted update per ``tx`` (compiled once, reused for every stretch of steps)."""
    if id(tx) not in _STEPS:

        def step(p, s, a, b, c, metric):
            grads = {k: gradient(p[k], a[k], b[k], c[k], 1.0) for k in p}
            extra = {"value": metric} if with_metric else {}
            updates, s = tx.update(grads, s, p, **extra)
            return optax.apply_updates(p, updates), s

        _STEPS[id(tx)] = (tx, jax.jit(step))
    return _STEPS[id(tx)][1]


def _torch_layout(trajectory: dict, layouts: dict | None) -> dict:
    """JAX-layout trajectories (steps first) back to torch's layout."""
    return _jax_view(trajectory, layouts, 1, inverse=True)


def _lr_columns(lrs: Any, groups: tuple) -> np.ndarray:
    """optlib's current_learning_rate per step as (steps, torch groups)."""
    if isinstance(lrs, dict):
        labels = ["decay", "no_decay"] if len(groups) == 2 else list(lrs)
        return np.stack([np.asarray(lrs[label]) for label in labels], axis=1)
    return np.asarray(lrs)[:, None]


def _param_paths(case: Case) -> list[str]:
    return [key for group in case.groups for key in group]


@pytest.mark.parametrize("name", list(CASES))
def test_torch_run_resumes_in_optlib_and_goes_back(name, x64, tmp_path, monkeypatch):
    case = CASES[name]
    problem = make_problem(STEPS, seed=3, shapes=case.shapes)
    if case.float64_newton_schulz:
        # torch's Muon rounds to bfloat16 with grad.bfloat16(): a float64 copy instead (as
        # tests/test_muon.py), against optlib.muon(ns_dtype="float64").
        monkeypatch.setattr(
            torch.Tensor, "bfloat16", lambda self: self.to(torch.float64, copy=True)
        )
    with torch_default_dtype(torch.float64), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, optimizer, scheduler, torch_params = _torch_run(case, problem, 0, BEFORE)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler else None,
            },
            tmp_path / "checkpoint.pt",
        )
        saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
        start = {k: p.detach().numpy().copy() for k, p in torch_params.items()}
        reference, reference_lrs, *_ = _torch_run(
            case, problem, BEFORE, STEPS, optimizer, scheduler, torch_params
        )

    params = {k: jnp.asarray(v) for k, v in _jax_view(start, case.layouts).items()}
    tx = case.optlib_tx()
    state = optlib.from_torch_state_dict(
        tx,
        params,
        saved["optimizer"],
        saved["scheduler"],
        param_paths=_param_paths(case),
        layouts=case.layouts,
    )
    ours, lrs, _, _ = _optlib_run(case, tx, state, params, problem, BEFORE, STEPS)
    error = max_relative_error(_torch_layout(ours, case.layouts), reference)
    assert error <= OPTIMIZER_RTOL_F64, f"{name}: parameters differ by {error:.2e}"
    if not name.startswith("adafactor_relative"):  # HF keeps lr=None in its group
        np.testing.assert_allclose(_lr_columns(lrs, case.groups), reference_lrs, rtol=1e-12)

    if not case.round_trip:
        return
    # optlib 10 steps, then back to a fresh torch optimizer + scheduler for the last 20.
    _, _, mid_params, mid_state = _optlib_run(
        case, tx, state, params, problem, BEFORE, BEFORE + ROUND_TRIP
    )
    with torch_default_dtype(torch.float64), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mid = _jax_view(
            {k: np.asarray(v) for k, v in mid_params.items()}, case.layouts, inverse=True
        )
        fresh = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in mid.items()}
        optimizer = case.torch_optimizer(fresh)
        scheduler = case.torch_scheduler(optimizer) if case.torch_scheduler else None
        dicts = optlib.to_torch_state_dict(
            tx,
            mid_state,
            mid_params,
            param_paths=_param_paths(case),
            layouts=case.layouts,
            param_groups=optimizer.state_dict()["param_groups"],
            scheduler_state_dict=scheduler.state_dict() if scheduler else None,
        )
        torch.save(dicts._asdict(), tmp_path / "back.pt")
        back = torch.load(tmp_path / "back.pt", weights_only=True)
        optimizer.load_state_dict(back["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(back["scheduler"])
        again, again_lrs, *_ = _torch_run(
            case, problem, BEFORE + ROUND_TRIP, STEPS, optimizer, scheduler, fresh
        )
    tail = {k: v[ROUND_TRIP:] for k, v in _torch_layout(ours, case.layouts).items()}
    error = max_relative_error(tail, again)
    assert error <= OPTIMIZER_RTOL_F64, f"{name} round trip: parameters differ by {error:.2e}"
    if not name.startswith("adafactor_relative"):
        np.testing.assert_allclose(
            _lr_columns(lrs, case.groups)[ROUND_TRIP:], again_lrs, rtol=1e-12
        )


def test_asgd_average_resumes_and_goes_back(x64):
    """ASGD's ``ax`` (optlib.averaged_params) and ``eta`` follow torch through both ways; the
    parameters alone would not show a wrong ``ax``."""
    case = CASES["asgd_step_lr"]
    problem = make_problem(STEPS, seed=3)
    ax = lambda optimizer: {
        k: optimizer.state[p]["ax"].numpy().copy()
        for k, p in zip(KEYS, optimizer.param_groups[0]["params"], strict=True)
    }
    with torch_default_dtype(torch.float64), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, optimizer, scheduler, torch_params = _torch_run(case, problem, 0, BEFORE)
        saved = (copy.deepcopy(optimizer.state_dict()), scheduler.state_dict())
        start = {k: p.detach().numpy().copy() for k, p in torch_params.items()}
        _torch_run(case, problem, BEFORE, STEPS, optimizer, scheduler, torch_params)
        reference_ax = ax(optimizer)
        reference_eta = float(optimizer.state[optimizer.param_groups[0]["params"][0]]["eta"])
    params = {k: jnp.asarray(v) for k, v in _jax_view(start, case.layouts).items()}
    tx = case.optlib_tx()
    state = optlib.from_torch_state_dict(
        tx, params, *saved, param_paths=list(KEYS), layouts=case.layouts
    )
    loaded = _torch_layout(
        {k: np.asarray(v)[None] for k, v in optlib.averaged_params(state).items()}, case.layouts
    )
    for k in KEYS:
        np.testing.assert_array_equal(loaded[k][0], saved[0]["state"][KEYS.index(k)]["ax"])
    _, _, final_params, final = _optlib_run(case, tx, state, params, problem, BEFORE, STEPS)
    ours = _torch_layout(
        {k: np.asarray(v)[None] for k, v in optlib.averaged_params(final).items()}, case.layouts
    )
    error = max_relative_error(ours, {k: v[None] for k, v in reference_ax.items()})
    assert error <= OPTIMIZER_RTOL_F64, f"ax differs by {error:.2e}"
    assert float(final["asgd"].eta) == pytest.approx(reference_eta, rel=1e-12)
    with torch_default_dtype(torch.float64):
        fresh = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in start.items()}
        optimizer = case.torch_optimizer(fresh)
        back = optlib.to_torch_state_dict(
            tx,
            final,
            final_params,
            param_paths=list(KEYS),
            layouts=case.layouts,
            param_groups=optimizer.state_dict()["param_groups"],
        ).optimizer
        optimizer.load_state_dict(back)
    for index, k in enumerate(KEYS):
        np.testing.assert_array_equal(back["state"][index]["ax"].numpy(), ours[k][0])
        assert float(back["state"][index]["mu"]) == pytest.approx(1 / (STEPS - 12.0))
        assert float(back["state"][index]["step"]) == STEPS
    with pytest.raises(ValueError, match=r"needs param_groups= .*t0"):
        optlib.to_torch_state_dict(
            tx, final, final_params, param_paths=list(KEYS), layouts=case.layouts
        )


# ------------------------------------------------------------------------------- bad input


def _torch_state(cls, steps: int = 2, scheduler=None, named: bool = False, **kwargs):
    """A small torch optimizer (and scheduler) after ``steps`` steps: (params, dicts)."""
    model = torch.nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.copy_(torch.arange(12.0).reshape(3, 4) / 10)
        model.bias.copy_(torch.arange(3.0) / 10)
    parameters = list(model.named_parameters()) if named else list(model.parameters())
    optimizer = cls(parameters, **kwargs)
    sched = scheduler(optimizer) if scheduler else None
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
        if sched is not None:
            sched.step()
    params = {
        "dense": {
            "kernel": jnp.asarray(model.weight.detach().numpy().T),
            "bias": jnp.asarray(model.bias.detach().numpy()),
        }
    }
    return params, optimizer.state_dict(), sched.state_dict() if sched else None


PATHS = ["dense/kernel", "dense/bias"]
KERNEL_T = {"dense/kernel": "transpose"}


def test_state_dict_of_another_optimizer_is_named():
    params, sd, _ = _torch_state(torch.optim.SGD, lr=0.1, momentum=0.9)
    with pytest.raises(
        ValueError, match=r"not a torch\.optim\.Adam .*looks like torch\.optim\.SGD"
    ):
        optlib.from_torch_state_dict(optlib.adam(), params, sd, param_paths=PATHS, layouts=KERNEL_T)
    params, sd, _ = _torch_state(torch.optim.Adam)
    with pytest.raises(ValueError, match=r"not a torch\.optim\.RAdam"):
        optlib.from_torch_state_dict(
            optlib.radam(), params, sd, param_paths=PATHS, layouts=KERNEL_T
        )


def test_an_option_torch_used_and_tx_lacks_is_named():
    params, sd, _ = _torch_state(torch.optim.Adam, amsgrad=True)
    with pytest.raises(ValueError, match="max_exp_avg_sq"):
        optlib.from_torch_state_dict(optlib.adam(), params, sd, param_paths=PATHS, layouts=KERNEL_T)


def test_wrong_parameter_count_paths_and_shapes_are_named():
    params, sd, _ = _torch_state(torch.optim.Adam)
    with pytest.raises(ValueError, match="param_paths has 1 entries but the torch optimizer has 2"):
        optlib.from_torch_state_dict(optlib.adam(), params, sd, param_paths=PATHS[:1])
    with pytest.raises(ValueError, match="'dense/weight' is not in params"):
        optlib.from_torch_state_dict(
            optlib.adam(), params, sd, param_paths=["dense/weight", "dense/bias"]
        )
    with pytest.raises(ValueError, match=r"'dense/kernel'.*shape \(3, 4\).*expects \(4, 3\)"):
        optlib.from_torch_state_dict(optlib.adam(), params, sd, param_paths=PATHS)
    extra = {**params, "head": jnp.zeros(2)}
    with pytest.raises(ValueError, match=r"does not hold.*head"):
        optlib.from_torch_state_dict(optlib.adam(), extra, sd, param_paths=PATHS, layouts=KERNEL_T)
    with pytest.raises(ValueError, match="param_paths is required"):
        optlib.from_torch_state_dict(optlib.adam(), params, sd)


def test_scheduler_that_does_not_match_tx_is_named(x64):
    step = lambda opt: LR.StepLR(opt, step_size=1, gamma=0.5)
    params, sd, ssd = _torch_state(torch.optim.Adam, scheduler=step, lr=0.1)
    kwargs = dict(param_paths=PATHS, layouts=KERNEL_T)
    with pytest.raises(ValueError, match=r"does not match the torch run.*0\.025"):
        optlib.from_torch_state_dict(
            optlib.adam(optlib.step_lr(0.1, step_size=1, gamma=0.9)), params, sd, ssd, **kwargs
        )
    with pytest.raises(ValueError, match="not a torch ReduceLROnPlateau state dict"):
        optlib.from_torch_state_dict(
            optlib.adam(optlib.reduce_lr_on_plateau(0.1)), params, sd, ssd, **kwargs
        )
    plateau = lambda opt: LR.ReduceLROnPlateau(opt, patience=4)
    params, sd, ssd = _torch_state(torch.optim.Adam, scheduler=None, lr=0.1)
    model_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    plateau_sd = plateau(model_opt).state_dict()
    with pytest.raises(ValueError, match="metric-driven scheduler"):
        optlib.from_torch_state_dict(optlib.adam(0.1), params, sd, plateau_sd, **kwargs)
    with pytest.raises(ValueError, match="patience is 4"):
        optlib.from_torch_state_dict(
            optlib.adam(optlib.reduce_lr_on_plateau(0.1, patience=3)),
            params,
            sd,
            plateau_sd,
            **kwargs,
        )
    # the right schedule loads
    params, sd, ssd = _torch_state(torch.optim.Adam, scheduler=step, lr=0.1)
    state = optlib.from_torch_state_dict(
        optlib.adam(optlib.step_lr(0.1, step_size=1, gamma=0.5)), params, sd, ssd, **kwargs
    )
    assert float(optlib.current_learning_rate(state)) == pytest.approx(0.025)
    assert int(state["adam"].count) == 2 and int(state["learning_rate"].count) == 2


def test_learning_rate_that_does_not_match_the_run_is_named(x64):
    params, sd, _ = _torch_state(torch.optim.Adam, lr=0.1)
    with pytest.raises(
        ValueError, match=r"no scheduler_state_dict given\) is 0\.1, tx's gives 0\.01"
    ):
        optlib.from_torch_state_dict(
            optlib.adam(0.01), params, sd, param_paths=PATHS, layouts=KERNEL_T
        )


def test_torch_groups_with_equal_settings_may_share_one_optimizer():
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam([{"params": [model.weight]}, {"params": [model.bias]}], lr=0.1)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    params = {"dense": {"kernel": jnp.zeros((4, 3)), "bias": jnp.zeros(3)}}
    state = optlib.from_torch_state_dict(
        optlib.adam(0.1), params, optimizer.state_dict(), param_paths=PATHS, layouts=KERNEL_T
    )
    assert int(state["adam"].count) == 1
    optimizer.param_groups[1]["lr"] = 0.2
    with pytest.raises(ValueError, match=r"torch param groups \[0, 1\]"):
        optlib.from_torch_state_dict(
            optlib.adam(0.1), params, optimizer.state_dict(), param_paths=PATHS, layouts=KERNEL_T
        )


def test_param_names_map_by_name_callable_or_default():
    params, sd, _ = _torch_state(torch.optim.Adam, named=True)
    assert sd["param_groups"][0]["param_names"] == ["weight", "bias"]
    by_name = {"weight": ("dense", "kernel"), "bias": "dense/bias"}
    layouts = {("dense", "kernel"): "transpose"}
    first = optlib.from_torch_state_dict(
        optlib.adam(), params, sd, param_paths=by_name, layouts=layouts
    )
    second = optlib.from_torch_state_dict(
        optlib.adam(),
        params,
        sd,
        param_paths=lambda name: "dense/" + {"weight": "kernel"}.get(name, name),
        layouts=KERNEL_T,
    )
    expected = sd["state"][0]["exp_avg_sq"].numpy().T
    for state in (first, second):
        np.testing.assert_array_equal(
            np.asarray(state["adam"].exp_avg_sq["dense"]["kernel"]), expected
        )
    with pytest.raises(ValueError, match=r"no entry for torch parameter\(s\) \['bias'\]"):
        optlib.from_torch_state_dict(
            optlib.adam(), params, sd, param_paths={"weight": "dense/kernel"}, layouts=KERNEL_T
        )


def _lbfgs_problem():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(12, 4)), rng.normal(size=(12, 3))
    initial = {"w": rng.normal(size=(3, 4)), "c": np.zeros(3)}  # torch: w (out, in), c

    def loss(w, c, lib, a, b):
        return 0.5 * lib.sum((a @ w.T + c - b) ** 2) + 0.1 * lib.sum(w**4)

    return a, b, initial, loss


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_lbfgs_run_resumes_in_optlib_and_goes_back(line_search_fn, x64, tmp_path):
    """torch.optim.LBFGS's one record (flat history in torch's parameter order, here with the
    JAX kernel transposed) -> optlib.lbfgs, which continues as torch; and back."""
    a, b, initial, loss = _lbfgs_problem()
    kwargs = {"lr": 0.5, "max_iter": 4, "history_size": 3, "line_search_fn": line_search_fn}
    before, after, back_after = 3, 4, 2
    with torch_default_dtype(torch.float64):
        tp = {k: torch.tensor(v, requires_grad=True) for k, v in initial.items()}
        ta, tb = torch.tensor(a), torch.tensor(b)

        def torch_steps(optimizer, n):
            def closure():
                optimizer.zero_grad()
                value = loss(tp["w"], tp["c"], torch, ta, tb)
                value.backward()
                return value

            out = []
            for _ in range(n):
                optimizer.step(closure)
                out.append({k: p.detach().numpy().copy() for k, p in tp.items()})
            record = optimizer.state[tp["w"]]
            return out, (record["func_evals"], record["n_iter"])

        optimizer = torch.optim.LBFGS([tp["w"], tp["c"]], **kwargs)
        torch_steps(optimizer, before)
        torch.save(optimizer.state_dict(), tmp_path / "lbfgs.pt")
        start = {k: p.detach().numpy().copy() for k, p in tp.items()}
        reference, reference_counts = torch_steps(optimizer, after)
    saved = torch.load(tmp_path / "lbfgs.pt", weights_only=True)

    tx = optlib.lbfgs(0.5, max_iter=4, history_size=3, line_search_fn=line_search_fn)
    paths, layouts = ["kernel", "c"], {"kernel": "transpose"}
    params = {"kernel": jnp.asarray(start["w"].T), "c": jnp.asarray(start["c"])}
    state = optlib.from_torch_state_dict(tx, params, saved, param_paths=paths, layouts=layouts)

    def value_fn(p):
        return loss(p["kernel"].T, p["c"], jnp, jnp.asarray(a), jnp.asarray(b))

    @jax.jit
    def step(p, s):
        value, grads = jax.value_and_grad(value_fn)(p)
        updates, s = tx.update(grads, s, p, value=value, grad=grads, value_fn=value_fn)
        return optax.apply_updates(p, updates), s

    ours, p, s = [], params, state
    for k in range(after):
        p, s = step(p, s)
        ours.append({"w": np.asarray(p["kernel"]).T, "c": np.asarray(p["c"])})
        if k + 1 == back_after:
            mid_params, mid_state = p, s
    stack = lambda steps: {k: np.stack([x[k] for x in steps]) for k in ("w", "c")}
    error = max_relative_error(stack(ours), stack(reference))
    assert error <= OPTIMIZER_RTOL_F64, f"parameters differ by {error:.2e}"
    assert (int(s["lbfgs"].func_evals), int(s["lbfgs"].n_iter)) == reference_counts

    # optlib after 2 of those steps -> a fresh torch LBFGS, which continues as optlib
    with torch_default_dtype(torch.float64):
        tp = {
            "w": torch.tensor(np.asarray(mid_params["kernel"]).T.copy(), requires_grad=True),
            "c": torch.tensor(np.asarray(mid_params["c"]), requires_grad=True),
        }
        optimizer = torch.optim.LBFGS([tp["w"], tp["c"]], **kwargs)
        dicts = optlib.to_torch_state_dict(
            tx,
            mid_state,
            mid_params,
            param_paths=paths,
            layouts=layouts,
            param_groups=optimizer.state_dict()["param_groups"],
        )
        torch.save(dicts.optimizer, tmp_path / "back.pt")
        optimizer.load_state_dict(torch.load(tmp_path / "back.pt", weights_only=True))
        again, again_counts = torch_steps(optimizer, after - back_after)
    error = max_relative_error(stack(ours[back_after:]), stack(again))
    assert error <= OPTIMIZER_RTOL_F64, f"round trip: parameters differ by {error:.2e}"
    assert again_counts == reference_counts


def test_lbfgs_state_dict_of_another_optimizer_is_named():
    params, sd, _ = _torch_state(torch.optim.Adam)
    with pytest.raises(ValueError, match=r"not a torch\.optim\.LBFGS state dict"):
        optlib.from_torch_state_dict(
            optlib.lbfgs(), params, sd, param_paths=PATHS, layouts=KERNEL_T
        )


def test_torch_adafactor_statistics_keep_torchs_size_one_axis():
    params, sd, _ = _torch_state(torch.optim.Adafactor, lr=0.01)
    assert tuple(sd["state"][0]["row_var"].shape) == (3, 1)
    state = optlib.from_torch_state_dict(
        optlib.torch_adafactor(0.01), params, sd, param_paths=PATHS, layouts=KERNEL_T
    )
    factored = state["factored_rms"]
    # the kernel is the transposed weight: torch's rows are optlib's columns
    np.testing.assert_array_equal(
        np.asarray(factored.exp_avg_sq_col["dense"]["kernel"]), sd["state"][0]["row_var"][:, 0]
    )
    np.testing.assert_array_equal(
        np.asarray(factored.exp_avg_sq["dense"]["bias"]), sd["state"][1]["variance"]
    )
    back = optlib.to_torch_state_dict(
        optlib.torch_adafactor(0.01), state, params, param_paths=PATHS, layouts=KERNEL_T
    ).optimizer["state"]
    for key in ("row_var", "col_var"):
        np.testing.assert_array_equal(back[0][key].numpy(), sd["state"][0][key].numpy())
    np.testing.assert_array_equal(back[1]["variance"].numpy(), sd["state"][1]["variance"])
    bad = copy.deepcopy(sd)
    bad["state"][0]["row_var"] = bad["state"][0]["row_var"][:, 0]
    with pytest.raises(ValueError, match=r"'row_var' has shape \(3,\).*size-1 axis -1"):
        optlib.from_torch_state_dict(
            optlib.torch_adafactor(0.01), params, bad, param_paths=PATHS, layouts=KERNEL_T
        )


def test_missing_torch_says_how_to_install(monkeypatch):
    import sys

    from optlib._torch_state import require_torch

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r'pip install "optlib\[torch\]"'):
        require_torch()


# ------------------------------------------------------------------- schedules: last_epoch

LAST_EPOCH_CASES = {
    "StepLR": {"step_size": 4, "gamma": 0.5},
    "MultiStepLR": {"milestones": [3, 9, 12], "gamma": 0.5},
    "ExponentialLR": {"gamma": 0.9},
    "LinearLR": {"start_factor": 0.25, "total_iters": 10},
    "ConstantLR": {"factor": 0.5, "total_iters": 9},
    "PolynomialLR": {"total_iters": 15, "power": 2.0},
    "CosineAnnealingLR": {"T_max": 8, "eta_min": 0.01},
    "CosineAnnealingWarmRestarts": {"T_0": 5, "T_mult": 2},
    "LambdaLR": {"lr_lambda": lambda step: 1.0 / (1.0 + step)},
    "MultiplicativeLR": {"lr_lambda": lambda step: 0.95},
    "CyclicLR": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4},
    "OneCycleLR": {"max_lr": 0.1, "total_steps": 30},
}


@pytest.mark.parametrize("name", list(LAST_EPOCH_CASES))
def test_last_epoch_resumes_the_schedule_as_torch(name, x64):
    kwargs, resume, steps = LAST_EPOCH_CASES[name], 6, 15
    with torch_default_dtype(torch.float64), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = [torch.nn.Parameter(torch.zeros(1))]
        first = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        scheduler = getattr(LR, name)(first, **kwargs)
        for _ in range(resume):
            first.step()
            scheduler.step()
        # a new run: the optimizer from its state dict, the scheduler with last_epoch
        optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        optimizer.load_state_dict(first.state_dict())
        scheduler = getattr(LR, name)(optimizer, **kwargs, last_epoch=resume)
        reference = []
        for _ in range(steps):
            reference.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    schedule = optlib.get_scheduler(name, learning_rate=0.1, **kwargs, last_epoch=resume)
    ours = jax.jit(jax.vmap(schedule))(jnp.arange(steps))
    np.testing.assert_allclose(np.asarray(ours), reference, rtol=1e-12)


HF_LAST_EPOCH_CASES = {
    "get_linear_schedule_with_warmup": {"num_warmup_steps": 4, "num_training_steps": 20},
    "get_cosine_with_hard_restarts_schedule_with_warmup": {
        "num_warmup_steps": 2,
        "num_training_steps": 20,
        "num_cycles": 2,
    },
    "get_inverse_sqrt_schedule": {"num_warmup_steps": 3},
}


@pytest.mark.parametrize("name", list(HF_LAST_EPOCH_CASES))
def test_hf_last_epoch_resumes_the_schedule_as_transformers(name, x64):
    kwargs, resume, steps = HF_LAST_EPOCH_CASES[name], 6, 12
    with torch_default_dtype(torch.float64), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = [torch.nn.Parameter(torch.zeros(1))]
        first = torch.optim.SGD(params, lr=0.1)
        scheduler = getattr(hf, name)(first, **kwargs)
        for _ in range(resume):
            first.step()
            scheduler.step()
        optimizer = torch.optim.SGD(params, lr=0.1)
        optimizer.load_state_dict(first.state_dict())
        scheduler = getattr(hf, name)(optimizer, **kwargs, last_epoch=resume)
        reference = []
        for _ in range(steps):
            reference.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    schedule = getattr(optlib, name)(0.1, **kwargs, last_epoch=resume)
    ours = jax.jit(jax.vmap(schedule))(jnp.arange(steps))
    np.testing.assert_allclose(np.asarray(ours), reference, rtol=1e-12)


def test_last_epoch_is_checked_and_composites_take_it_whole():
    with pytest.raises(ValueError, match="last_epoch"):
        optlib.step_lr(0.1, step_size=2, last_epoch=-2)
    resumed = optlib.step_lr(0.1, step_size=2, last_epoch=3)
    with pytest.raises(ValueError, match="was built with last_epoch"):
        optlib.sequential_lr(0.1, [resumed, optlib.step_lr(0.1, step_size=2)], milestones=[4])
    members = [optlib.linear_lr(0.1, total_iters=4), optlib.step_lr(0.1, step_size=2)]
    with pytest.raises(ValueError, match="SequentialLR does not resume from last_epoch"):
        optlib.sequential_lr(0.1, members, milestones=[4], last_epoch=5)


# ---------------------------------------------------------------------------------- example


def test_resume_example_continues_torch_exactly_and_goes_back():
    import importlib.util
    import pathlib

    path = (
        pathlib.Path(__file__).resolve().parent.parent / "examples" / "resume_torch_checkpoint.py"
    )
    spec = importlib.util.spec_from_file_location("resume_torch_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    previous = jax.config.read("jax_enable_x64")
    try:
        spec.loader.exec_module(module)
        result = module.main(["--torch-steps", "8", "--jax-steps", "6"])
    finally:
        jax.config.update("jax_enable_x64", previous)
    assert result["difference"] <= OPTIMIZER_RTOL_F64
    assert float(result["optimizer"]["state"][0]["step"]) == 14
    assert result["scheduler"]["last_epoch"] == 14
