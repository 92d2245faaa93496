"""optlib.from_torch against the live torch optimizer and scheduler it reads.

Each case builds a torch optimizer (and scheduler) on the shared problem's parameters, turns
it into an optax transformation with ``from_torch``, and runs both for 30 steps in float64 on
the same gradients (tests/parity.py): the parameters agree to 1e-10 relative.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from parity import (
    OPTIMIZER_RTOL_F64,
    make_problem,
    max_relative_error,
    optlib_trajectory,
    torch,
    torch_default_dtype,
    torch_trajectory,
)

import optlib
from optlib.optimizers._torch_classes import TORCH_OPTIMIZERS

STEPS = 30
S = torch.optim.lr_scheduler
PATHS = ["scalar", "vector", "matrix", "tensor"]


def one_group(cls, **kwargs):
    return lambda params: cls(list(params.values()), **kwargs)


def two_groups(cls, first, second, **kwargs):
    """scalar + vector in group 0, matrix + tensor in group 1 (torch order = PATHS)."""

    def make(params):
        values = list(params.values())
        return cls([{"params": values[:2], **first}, {"params": values[2:], **second}], **kwargs)

    return make


def live_pair(problem, make_optimizer, make_scheduler):
    """A torch optimizer (+ scheduler) on fresh float64 copies of the problem's params."""
    with torch_default_dtype(torch.float64), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in problem.params.items()}
        optimizer = make_optimizer(params)
        scheduler = make_scheduler(optimizer) if make_scheduler else None
    return optimizer, scheduler


def compare(make_optimizer, make_scheduler=None, *, metrics=None, sign=1.0):
    problem = make_problem(STEPS, sign=sign)
    optimizer, scheduler = live_pair(problem, make_optimizer, make_scheduler)
    tx = optlib.from_torch(optimizer, scheduler, param_paths=PATHS)
    ours, state = optlib_trajectory(tx, problem, jnp.float64, metrics=metrics)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference, torch_optimizer, _ = torch_trajectory(
            make_optimizer, problem, torch.float64, scheduler=make_scheduler, metrics=metrics
        )
    return max_relative_error(ours, reference), tx, state, torch_optimizer


# One row per optlib torch optimizer (non-default hyperparameters); a new row in
# TORCH_OPTIMIZERS needs a row here (test_every_table_class_has_a_case).
OPTIMIZER_CASES = {
    "SGD": {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
    "Adam": {"lr": 0.05, "betas": (0.8, 0.99), "weight_decay": 0.1, "amsgrad": True},
    "AdamW": {"lr": 0.05, "weight_decay": 0.1, "maximize": True},
    "Adagrad": {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
    "RMSprop": {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.01},
    "Adadelta": {"lr": 0.5, "rho": 0.8, "weight_decay": 0.01},
    "NAdam": {"lr": 0.02, "momentum_decay": 0.005, "decoupled_weight_decay": True},
    "RAdam": {"lr": 0.05, "weight_decay": 0.1},
    "Adamax": {"lr": 0.05, "betas": (0.8, 0.99)},
    "Rprop": {"lr": 0.02, "etas": (0.4, 1.3), "step_sizes": (1e-5, 10.0)},
    "ASGD": {"lr": 0.02, "lambd": 1e-3, "alpha": 0.6, "t0": 10.0, "weight_decay": 0.01},
    "Adafactor": {"lr": 0.05, "beta2_decay": -0.7, "eps": (1e-20, 1e-3), "weight_decay": 0.01},
    "transformers.Adafactor": {"lr": 0.05, "relative_step": False, "weight_decay": 0.01},
    "lion_pytorch.Lion": {"lr": 0.01, "betas": (0.9, 0.95), "weight_decay": 0.1},
}


def optimizer_class(key):
    if "." not in key:
        return getattr(torch.optim, key)
    package, name = key.split(".")
    return getattr(pytest.importorskip(package), name)


# Table classes that do not fit the shared problem, each with its own test below.
DEDICATED_CASES = {
    "Muon": "test_muon_on_matrices_reproduces_torch",  # 2-D parameters only
    "LBFGS": "test_lbfgs_reproduces_torch_closure_steps",  # step(closure)
}


def test_every_table_class_has_a_case():
    assert set(OPTIMIZER_CASES) | set(DEDICATED_CASES) == set(TORCH_OPTIMIZERS)
    assert not set(OPTIMIZER_CASES) & set(DEDICATED_CASES)
    assert all(name in globals() for name in DEDICATED_CASES.values())


@pytest.mark.parametrize("name", sorted(OPTIMIZER_CASES))
def test_every_optimizer_reproduces_torch(name, x64):
    kwargs = OPTIMIZER_CASES[name]
    if "." not in name:
        kwargs = {**kwargs, "foreach": False}
    sign = -1.0 if kwargs.get("maximize") else 1.0
    error, *_ = compare(one_group(optimizer_class(name), **kwargs), sign=sign)
    assert error < OPTIMIZER_RTOL_F64, error


MUON_SHAPES = {"square": (4, 4), "wide": (3, 6), "tall": (7, 3)}


def test_muon_on_matrices_reproduces_torch(x64, monkeypatch):
    """Both Newton–Schulz iterations in float64: torch's ``grad.bfloat16()`` returns a float64
    copy (test only, as tests/test_muon.py), and the table's optlib.muon runs with
    ``ns_dtype="float64"``; everything else is what from_torch reads from the groups."""
    import functools

    from optlib.optimizers._torch_classes import TorchOptimizer

    monkeypatch.setattr(torch.Tensor, "bfloat16", lambda self: self.to(torch.float64, copy=True))
    float64_muon = functools.wraps(optlib.muon)(functools.partial(optlib.muon, ns_dtype="float64"))
    monkeypatch.setitem(TORCH_OPTIMIZERS, "Muon", TorchOptimizer(float64_muon))
    kwargs = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "adjust_lr_fn": "original"}
    make_optimizer = one_group(torch.optim.Muon, **kwargs)
    problem = make_problem(STEPS, shapes=MUON_SHAPES)
    optimizer, _ = live_pair(problem, make_optimizer, None)
    tx = optlib.from_torch(optimizer, param_paths=list(MUON_SHAPES))
    ours, _ = optlib_trajectory(tx, problem, jnp.float64)
    reference, *_ = torch_trajectory(make_optimizer, problem, torch.float64)
    error = max_relative_error(ours, reference)
    assert error < OPTIMIZER_RTOL_F64, error


def test_lbfgs_reproduces_torch_closure_steps(x64):
    """One optlib update with ``value_fn`` per torch ``step(closure)``, on least squares."""
    import jax

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(12, 4)), rng.normal(size=(12, 2))
    initial = {"w": np.zeros((4, 2)), "c": np.zeros(2)}  # torch order: w, c
    kwargs = {"lr": 0.5, "max_iter": 5, "history_size": 3, "line_search_fn": "strong_wolfe"}

    def loss(params, lib, a, b):
        return 0.5 * lib.sum((a @ params["w"] + params["c"] - b) ** 2)

    with torch_default_dtype(torch.float64):
        tp = {k: torch.tensor(v, requires_grad=True) for k, v in initial.items()}
        ta, tb = torch.tensor(a), torch.tensor(b)
        optimizer = torch.optim.LBFGS([tp["w"], tp["c"]], **kwargs)
        tx = optlib.from_torch(optimizer, param_paths=["w", "c"])

        def closure():
            optimizer.zero_grad()
            value = loss(tp, torch, ta, tb)
            value.backward()
            return value

        reference = []
        for _ in range(4):
            optimizer.step(closure)
            reference.append({k: p.detach().numpy().copy() for k, p in tp.items()})

    def value_fn(params):
        return loss(params, jnp, jnp.asarray(a), jnp.asarray(b))

    def step(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(value_fn)(params)
        updates, state = tx.update(grads, state, params, value=value, grad=grads, value_fn=value_fn)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        return (params, state), params

    params = {k: jnp.asarray(v) for k, v in initial.items()}
    _, ours = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=4))(params)
    stacked = {k: np.stack([r[k] for r in reference]) for k in initial}
    error = max_relative_error({k: np.asarray(v) for k, v in ours.items()}, stacked)
    assert error < OPTIMIZER_RTOL_F64, error


def lam(step):
    return 1.0 / (1.0 + 0.1 * step)


SGD_M = one_group(torch.optim.SGD, lr=0.1, momentum=0.9)
ADAM = one_group(torch.optim.Adam, lr=0.05)

# (optimizer, scheduler) per torch scheduler class, composites and transformers' LambdaLRs.
SCHEDULER_CASES = {
    "StepLR": (SGD_M, lambda o: S.StepLR(o, step_size=7, gamma=0.5)),
    "MultiStepLR": (SGD_M, lambda o: S.MultiStepLR(o, milestones=[5, 12, 12], gamma=0.5)),
    "ConstantLR": (SGD_M, lambda o: S.ConstantLR(o, factor=0.25, total_iters=6)),
    "LinearLR": (ADAM, lambda o: S.LinearLR(o, start_factor=0.1, total_iters=10)),
    "ExponentialLR": (ADAM, lambda o: S.ExponentialLR(o, gamma=0.93)),
    "PolynomialLR": (ADAM, lambda o: S.PolynomialLR(o, total_iters=20, power=2.0)),
    "CosineAnnealingLR": (SGD_M, lambda o: S.CosineAnnealingLR(o, T_max=12, eta_min=0.01)),
    "CosineAnnealingWarmRestarts": (
        ADAM,
        lambda o: S.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=0.001),
    ),
    "LambdaLR": (SGD_M, lambda o: S.LambdaLR(o, lam)),
    "MultiplicativeLR": (SGD_M, lambda o: S.MultiplicativeLR(o, lambda step: 0.95)),
    "CyclicLR": (
        SGD_M,
        lambda o: S.CyclicLR(o, 0.01, 0.1, step_size_up=4, step_size_down=6, mode="triangular2"),
    ),
    "OneCycleLR": (ADAM, lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=STEPS)),
    "OneCycleLR_three_phase": (
        SGD_M,
        lambda o: S.OneCycleLR(
            o, 0.2, total_steps=STEPS, three_phase=True, anneal_strategy="linear"
        ),
    ),
    "SequentialLR": (
        SGD_M,
        lambda o: S.SequentialLR(
            o, [S.LinearLR(o, 0.1, total_iters=5), S.ExponentialLR(o, 0.9)], milestones=[5]
        ),
    ),
    "ChainedScheduler": (
        ADAM,
        lambda o: S.ChainedScheduler(
            [S.ConstantLR(o, factor=0.5, total_iters=4), S.ExponentialLR(o, 0.95)], optimizer=o
        ),
    ),
    "SWALR": (SGD_M, lambda o: torch.optim.swa_utils.SWALR(o, swa_lr=0.02, anneal_epochs=8)),
    "SequentialLR_SWALR_linear": (
        SGD_M,
        lambda o: S.SequentialLR(
            o,
            [
                S.ExponentialLR(o, 0.9),
                torch.optim.swa_utils.SWALR(
                    o, swa_lr=0.01, anneal_epochs=5, anneal_strategy="linear"
                ),
            ],
            milestones=[10],
        ),
    ),
    "hf_cosine": (
        ADAM,
        lambda o: transformers.get_scheduler(
            "cosine", o, num_warmup_steps=4, num_training_steps=STEPS
        ),
    ),
    "hf_polynomial": (
        SGD_M,
        lambda o: transformers.get_scheduler(
            "polynomial",
            o,
            num_warmup_steps=3,
            num_training_steps=STEPS,
            scheduler_specific_kwargs={"power": 2.0, "lr_end": 1e-3},
        ),
    ),
    "hf_wsd": (
        ADAM,
        lambda o: transformers.get_scheduler(
            "warmup_stable_decay",
            o,
            num_warmup_steps=3,
            num_training_steps=STEPS,
            scheduler_specific_kwargs={"num_decay_steps": 10},
        ),
    ),
}


@pytest.mark.parametrize("name", list(SCHEDULER_CASES))
def test_every_scheduler_reproduces_torch(name, x64):
    make_optimizer, make_scheduler = SCHEDULER_CASES[name]
    error, *_ = compare(make_optimizer, make_scheduler)
    assert error < OPTIMIZER_RTOL_F64, error


def test_reduce_lr_on_plateau_steps_on_the_metric(x64):
    metrics = np.concatenate([np.linspace(1.0, 0.5, 10), np.full(20, 0.6)])
    error, _, state, torch_optimizer = compare(
        SGD_M, lambda o: S.ReduceLROnPlateau(o, factor=0.5, patience=2), metrics=metrics
    )
    assert error < OPTIMIZER_RTOL_F64, error
    lr = float(optlib.current_learning_rate(state))
    assert lr == pytest.approx(torch_optimizer.param_groups[0]["lr"], rel=1e-12)
    assert lr < 0.1


def test_transformers_greedy_lr_steps_on_the_metric(x64):
    metrics = np.concatenate([np.linspace(1.0, 0.2, 12), np.full(18, 0.5)])
    error, _, state, torch_optimizer = compare(
        SGD_M,
        lambda o: transformers.optimization.GreedyLR(o, patience=2, min_lr=0.01, max_lr=0.5),
        metrics=metrics,
    )
    assert error < OPTIMIZER_RTOL_F64, error
    lr = float(optlib.current_learning_rate(state))
    assert lr == pytest.approx(torch_optimizer.param_groups[0]["lr"], rel=1e-12)
    assert lr != 0.1


def test_hf_adafactor_with_its_relative_step_defaults_reproduces_transformers(x64):
    error, *_ = compare(one_group(transformers.Adafactor, lr=None))
    assert error < OPTIMIZER_RTOL_F64, error


def test_describe_notes_momentum_cycling():
    optimizer = torch.optim.SGD(params_list(1), lr=0.1, momentum=0.9)
    scheduler = S.OneCycleLR(optimizer, max_lr=0.5, total_steps=10)
    text = optlib.describe(optlib.from_torch(optimizer, scheduler, param_paths=["a"]))
    assert "OneCycleLR(" in text and "momentum cycle" in text


GROUP_CASES = {
    "adamw_one_cycle_per_group_max_lr": (
        two_groups(torch.optim.AdamW, {"weight_decay": 0.1}, {"weight_decay": 0.0, "lr": 0.01}),
        lambda o: S.OneCycleLR(o, max_lr=[0.05, 0.2], total_steps=STEPS),
    ),
    "sgd_step_lr_per_group_lr_and_momentum": (
        two_groups(torch.optim.SGD, {"lr": 0.05, "weight_decay": 0.01}, {"momentum": 0.5}, lr=0.1),
        lambda o: S.StepLR(o, step_size=5, gamma=0.5),
    ),
    "adam_sequential_per_group_lr": (
        two_groups(torch.optim.Adam, {"lr": 0.02}, {"lr": 0.05, "weight_decay": 0.1}),
        lambda o: S.SequentialLR(
            o, [S.ConstantLR(o, 0.5, total_iters=3), S.CosineAnnealingLR(o, T_max=20)], [3]
        ),
    ),
    "rmsprop_no_scheduler": (
        two_groups(torch.optim.RMSprop, {"lr": 0.01}, {"lr": 0.003, "alpha": 0.9}),
        None,
    ),
}


@pytest.mark.parametrize("name", list(GROUP_CASES))
def test_param_groups_with_different_lr_and_weight_decay_reproduce_torch(name, x64):
    make_optimizer, make_scheduler = GROUP_CASES[name]
    error, _, state, _ = compare(make_optimizer, make_scheduler)
    assert error < OPTIMIZER_RTOL_F64, error
    assert set(optlib.current_learning_rate(state)) == {"group_0", "group_1"}


def test_an_advanced_scheduler_gives_the_same_recipe_as_a_fresh_one(x64):
    """The transformation always starts at step 0: progress is state, not recipe."""
    problem = make_problem(STEPS)
    make_optimizer, make_scheduler = GROUP_CASES["adamw_one_cycle_per_group_max_lr"]
    fresh = optlib.from_torch(
        *live_pair(problem, make_optimizer, make_scheduler), param_paths=PATHS
    )
    optimizer, scheduler = live_pair(problem, make_optimizer, make_scheduler)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    advanced = optlib.from_torch(optimizer, scheduler, param_paths=PATHS)
    ours_fresh, _ = optlib_trajectory(fresh, problem, jnp.float64)
    ours_advanced, _ = optlib_trajectory(advanced, problem, jnp.float64)
    assert max_relative_error(ours_advanced, ours_fresh) == 0.0


def test_nested_paths_as_strings_or_tuples_label_the_groups():
    params = {"enc": {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}, "head": jnp.ones(3)}
    tensors = [torch.nn.Parameter(torch.zeros(1)) for _ in range(3)]
    optimizer = torch.optim.SGD(
        [{"params": tensors[:2], "lr": 0.1}, {"params": tensors[2:], "lr": 0.0}], lr=0.1
    )
    tx = optlib.from_torch(optimizer, param_paths=["enc/w", ("enc", "b"), "head"])
    state = tx.init(params)
    updates, _ = tx.update(params, state, params)
    assert float(updates["head"].sum()) == 0.0
    assert float(updates["enc"]["w"].sum()) == pytest.approx(-0.4)
    text = optlib.describe(tx)
    assert "group_1" in text and "head" in text and "optlib.sgd" in text


# ---------------------------------------------------------------------------------------------
# Bad input.


def params_list(n=2):
    return [torch.nn.Parameter(torch.zeros(2)) for _ in range(n)]


def test_param_paths_of_the_wrong_length_raise_naming_the_counts():
    optimizer = torch.optim.SGD(params_list(2), lr=0.1)
    with pytest.raises(ValueError, match="param_paths has 3 entries but the optimizer has 2"):
        optlib.from_torch(optimizer, param_paths=["a", "b", "c"])


def test_param_paths_that_miss_a_leaf_raise_at_init():
    optimizer = torch.optim.SGD(params_list(2), lr=0.1)
    tx = optlib.from_torch(optimizer, param_paths=["a", "b"])
    with pytest.raises(ValueError, match=r"leaves not in param_paths.*'c'"):
        tx.init({"a": jnp.ones(2), "b": jnp.ones(2), "c": jnp.ones(2)})


def test_unsupported_optimizer_class_raises_naming_it():
    optimizer = torch.optim.SparseAdam(params_list(1), lr=0.1)
    with pytest.raises(ValueError, match=r"torch.optim.SparseAdam is not supported.*supported"):
        optlib.from_torch(optimizer, param_paths=["a"])


def test_unsupported_option_raises_naming_it():
    optimizer = torch.optim.AdamW(params_list(1), lr=0.1)
    optimizer.param_groups[0]["decoupled_weight_decay"] = False  # what torch's Adam would use
    with pytest.raises(ValueError, match="decoupled_weight_decay=False"):
        optlib.from_torch(optimizer, param_paths=["a"])


def test_implementation_switches_are_ignored():
    optimizer = torch.optim.Adam(params_list(1), lr=0.1, foreach=True, capturable=False)
    optlib.from_torch(optimizer, param_paths=["a"])


def test_non_traceable_lambda_raises_naming_the_scheduler():
    import math

    optimizer = torch.optim.SGD(params_list(1), lr=0.1)
    scheduler = S.LambdaLR(optimizer, lambda step: math.exp(-step))
    with pytest.raises(ValueError, match=r"LambdaLR's lr_lambda .* is not jax-traceable"):
        optlib.from_torch(optimizer, scheduler, param_paths=["a"])


class HandWrittenLR(S.LRScheduler):
    def get_lr(self):
        return [0.5 * lr for lr in self.base_lrs]


def test_unsupported_scheduler_raises_naming_it():
    optimizer = torch.optim.SGD(params_list(1), lr=0.1)
    scheduler = HandWrittenLR(optimizer)
    with pytest.raises(ValueError, match="HandWrittenLR is not supported"):
        optlib.from_torch(optimizer, scheduler, param_paths=["a"])


def test_scheduler_of_another_optimizer_raises():
    optimizer = torch.optim.SGD(params_list(1), lr=0.1)
    other = torch.optim.SGD(params_list(1), lr=0.1)
    with pytest.raises(ValueError, match="another optimizer"):
        optlib.from_torch(optimizer, S.StepLR(other, 3), param_paths=["a"])


def test_describe_of_a_plain_optimizer_shows_its_arguments_and_links():
    text = optlib.describe(optlib.adamw(1e-3, weight_decay=0.05))
    assert "optlib.adamw(learning_rate=0.001" in text and "weight_decay=0.05" in text
    assert "adam -> decoupled_weight_decay -> learning_rate" in text
    assert "no recorded recipe" in optlib.describe(__import__("optax").sgd(0.1))
