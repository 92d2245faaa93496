"""Unfreezing mid-training vs torch's ``optimizer.add_param_group``.

torch: the backbone is frozen (``requires_grad_(False)``, not in the optimizer) and added as a
new param group at step ``UNFREEZE_AT``. optlib: ``optlib.param_groups`` with a ``"frozen"``
group (``optax.set_to_zero()``), then a ``"backbone"`` group and ``optlib.carry_over_state``.
Frozen parameters get no updates and hold no optimizer state; once unfrozen they train with
fresh state (their own step count) while the head keeps its moments and counts; parameters
match torch at every step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from parity import torch, torch_default_dtype

import optlib

STEPS, UNFREEZE_AT = 8, 3
HEAD_LR, BACKBONE_LR = 0.05, 0.02

# (torch optimizer class, optlib optimizer, kwargs): torch names and defaults on both sides.
CASES = [
    (torch.optim.SGD, optlib.sgd, {"momentum": 0.9, "dampening": 0.2, "weight_decay": 1e-2}),
    (torch.optim.Adam, optlib.adam, {"betas": (0.8, 0.95), "amsgrad": True}),
    (torch.optim.AdamW, optlib.adamw, {"weight_decay": 0.1}),
    (torch.optim.NAdam, optlib.nadam, {}),
]


def make_torch_model(dtype):
    torch.manual_seed(0)
    return torch.nn.ModuleDict(
        {
            "backbone": torch.nn.Linear(4, 6),
            "head": torch.nn.Linear(6, 2),
        }
    ).to(dtype)


def forward_torch(model, x):
    return model["head"](torch.tanh(model["backbone"](x)))


def to_numpy(model):
    """``{"backbone": {"kernel", "bias"}, "head": {...}}`` (float64, kernels as (in, out))."""
    return {
        name: {
            "kernel": layer.weight.detach().numpy().T.astype(np.float64),
            "bias": layer.bias.detach().numpy().astype(np.float64),
        }
        for name, layer in model.items()
    }


def loss_fn(params, x, y):
    hidden = jnp.tanh(x @ params["backbone"]["kernel"] + params["backbone"]["bias"])
    out = hidden @ params["head"]["kernel"] + params["head"]["bias"]
    return jnp.mean((out - y) ** 2)


def batches(dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(STEPS, 8, 4)).astype(dtype)
    return x, np.sin(x[..., :2] * 2).astype(dtype)


def torch_trajectory(optimizer_cls, kwargs, dtype):
    """Params after every step of a torch loop that unfreezes the backbone at UNFREEZE_AT."""
    model = make_torch_model(dtype)
    initial = to_numpy(model)
    model["backbone"].requires_grad_(False)
    optimizer = optimizer_cls(model["head"].parameters(), lr=HEAD_LR, **kwargs)
    xs, ys = batches(np.float64)
    trajectory = []
    with torch_default_dtype(dtype):  # torch's scalar state (NAdam's mu_product) in dtype
        for step in range(STEPS):
            if step == UNFREEZE_AT:
                model["backbone"].requires_grad_(True)
                optimizer.add_param_group(
                    {"params": model["backbone"].parameters(), "lr": BACKBONE_LR}
                )
            optimizer.zero_grad()
            x, y = (torch.as_tensor(a, dtype=dtype) for a in (xs[step], ys[step]))
            torch.nn.functional.mse_loss(forward_torch(model, x), y).backward()
            optimizer.step()
            trajectory.append(to_numpy(model))
    return initial, trajectory


def frozen_optimizer(make, kwargs):
    labels = {"backbone": "frozen", "head": "head"}
    return optlib.param_groups(
        {"head": make(HEAD_LR, **kwargs), "frozen": optax.set_to_zero()}, labels
    )


def unfrozen_optimizer(make, kwargs):
    labels = {"backbone": "backbone", "head": "head"}
    return optlib.param_groups(
        {
            "head": make(HEAD_LR, **kwargs),
            "backbone": make(BACKBONE_LR, **kwargs),
            "frozen": optax.set_to_zero(),
        },
        labels,
    )


def make_step(tx):
    @jax.jit
    def step(params, opt_state, x, y):
        grads = jax.grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return step


def state_paths(state) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(state)]


def group_count(state, group: str) -> int:
    """The step count of a group's learning-rate transform (the last element of its chain)."""
    return int(state.inner_states[group].inner_state["learning_rate"].count)


# Every optimizer in float64 (tight), Adam in float32 as well.
PARITY = [
    pytest.param(*case, np.float64, 1e-12, id=f"{case[0].__name__}-float64") for case in CASES
]
PARITY.append(pytest.param(*CASES[1], np.float32, 1e-6, id="Adam-float32"))


@pytest.mark.parametrize(("torch_cls", "make", "kwargs", "dtype", "atol"), PARITY)
def test_unfreezing_matches_torch_add_param_group(torch_cls, make, kwargs, dtype, atol):
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    initial, expected = torch_trajectory(torch_cls, kwargs, torch_dtype)
    xs, ys = batches(dtype)

    with jax.enable_x64(dtype == np.float64):
        params = jax.tree.map(lambda a: jnp.asarray(a, dtype), initial)
        tx = frozen_optimizer(make, kwargs)
        opt_state = tx.init(params)
        assert not any("backbone" in path for path in state_paths(opt_state)), (
            "frozen parameters must carry no optimizer state"
        )
        step = make_step(tx)
        for index in range(STEPS):
            if index == UNFREEZE_AT:
                for a, b in zip(
                    jax.tree.leaves(params["backbone"]), jax.tree.leaves(initial["backbone"])
                ):
                    np.testing.assert_array_equal(np.asarray(a), np.asarray(b, dtype))
                tx = unfrozen_optimizer(make, kwargs)
                opt_state = optlib.carry_over_state(tx, params, opt_state)
                assert group_count(opt_state, "head") == UNFREEZE_AT  # kept
                assert group_count(opt_state, "backbone") == 0  # fresh
                step = make_step(tx)
            params, opt_state = step(params, opt_state, xs[index], ys[index])
            for (path, ours), ref in zip(
                jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(expected[index])
            ):
                np.testing.assert_allclose(
                    np.asarray(ours, np.float64),
                    ref,
                    rtol=0,
                    atol=atol,
                    err_msg=f"step {index}: {jax.tree_util.keystr(path)}",
                )
        assert group_count(opt_state, "backbone") == STEPS - UNFREEZE_AT
        assert group_count(opt_state, "head") == STEPS


def test_carry_over_state_keeps_matching_leaves_and_initialises_the_rest():
    old_params = {"a": jnp.ones(2), "b": jnp.ones(3)}
    tx = optlib.adam(0.1)
    old_state = tx.init(old_params)
    _, old_state = tx.update(jax.tree.map(jnp.ones_like, old_params), old_state, old_params)

    new_params = {"a": jnp.ones(2), "b": jnp.ones(4), "c": jnp.ones(())}  # b resized, c new
    carried = jax.jit(optlib.carry_over_state, static_argnums=0)(tx, new_params, old_state)
    fresh = tx.init(new_params)
    moments = carried["adam"]
    np.testing.assert_array_equal(moments.exp_avg["a"], old_state["adam"].exp_avg["a"])
    assert int(moments.count) == 1
    for name in ("b", "c"):
        np.testing.assert_array_equal(moments.exp_avg[name], fresh["adam"].exp_avg[name])
        np.testing.assert_array_equal(moments.exp_avg_sq[name], fresh["adam"].exp_avg_sq[name])


def test_unfreeze_example_trains_the_backbone_only_after_unfreezing():
    import importlib.util
    import pathlib
    import sys

    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "unfreeze.py"
    spec = importlib.util.spec_from_file_location("unfreeze", path)
    example = importlib.util.module_from_spec(spec)
    sys.modules["unfreeze"] = example  # flax.linen modules look their module up there
    spec.loader.exec_module(example)

    history = example.main(["--epochs", "8", "--unfreeze-at", "3", "--samples", "512", "--quiet"])
    assert history["backbone_unchanged_while_frozen"]
    before, after = history["state_size"]
    backbone = {"kernel": jnp.zeros((4, 32)), "bias": jnp.zeros(32)}
    assert after - before == example.state_size(optlib.adamw().init(backbone)), (
        "unfreezing adds exactly one fresh AdamW state for the backbone"
    )
    loss = history["loss"]
    assert loss[-1] < loss[2], "unfreezing the backbone lowers the loss further"
