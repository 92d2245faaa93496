"""optlib.from_training_args against transformers.Trainer.create_optimizer_and_scheduler.

A tiny torch model with biases, a LayerNorm matched by name (``layer_norm``) and one matched
only by type (``ln_f``) goes through a real ``Trainer`` on CPU; optlib builds from the same
``TrainingArguments``. Both run 30 optimizer steps of 2 accumulated micro-batches in float64
on the same gradients, with Trainer's clipping: parameters and learning rates agree to 1e-10
relative, and the no-decay sets are identical.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from examples_loader import load_example
from parity import OPTIMIZER_RTOL_F64, gradient, torch, torch_default_dtype

import optlib

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

STEPS = 30
MICRO = 2
LN_F = [r"(?:^|\.)ln_f\."]  # the LayerNorm Trainer finds by type, not by name


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(3, 4)
        self.layer_norm = torch.nn.LayerNorm(4)
        self.ln_f = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 2)
        self.scale = torch.nn.Parameter(torch.ones(2))  # 1-d, neither bias nor norm: decayed

    def forward(self, x):
        return self.head(self.ln_f(self.layer_norm(self.embed(x)))) * self.scale


def make_trainer(tmp_path, **fields):
    torch.manual_seed(0)
    model = Tiny().double()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, **fields
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = transformers.Trainer(model=model, args=args)
        trainer.create_optimizer_and_scheduler(num_training_steps=STEPS)
    return trainer, model, args


def coefficients(names_shapes, seed=0):
    rng = np.random.default_rng(seed)
    a = {n: rng.uniform(0.5, 1.5, s) for n, s in names_shapes}
    b = {n: rng.normal(0.0, 0.5, s) for n, s in names_shapes}
    noise = {n: rng.normal(0.0, 0.5, (STEPS, MICRO, *s)) for n, s in names_shapes}
    return a, b, noise


def torch_run(trainer, model, max_grad_norm):
    """Trainer's step: accumulate the micro-batch mean, clip, optimizer.step, scheduler.step."""
    named = dict(model.named_parameters())
    a, b, noise = coefficients([(n, tuple(p.shape)) for n, p in named.items()])
    t = torch.tensor
    params, lrs = [], []
    with torch_default_dtype(torch.float64):
        for step in range(STEPS):
            with torch.no_grad():
                for n, p in named.items():
                    p.grad = torch.zeros_like(p)
                    for i in range(MICRO):
                        p.grad += gradient(p, t(a[n]), t(b[n]), t(noise[n][step, i]), 1.0) / MICRO
            if max_grad_norm and max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            group = trainer.optimizer.param_groups[0]
            rate = group["lr"]
            if hasattr(trainer.optimizer, "train"):  # schedulefree: Trainer's train mode
                trainer.optimizer.train()
            trainer.optimizer.step()
            # schedulefree applies its warmed-up (RAdam: rectified) ``scheduled_lr``, which
            # optlib.current_learning_rate reports for the schedule-free optimizers
            lrs.append(group.get("scheduled_lr", rate))
            trainer.lr_scheduler.step()
            params.append({n: p.detach().numpy().copy() for n, p in named.items()})
    return params, np.asarray(lrs), (a, b, noise)


def nest(flat):
    tree: dict = {}
    for name, value in flat.items():
        *outer, leaf = name.split(".")
        node = tree
        for key in outer:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def flatten(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {".".join(k.key for k in path): v for path, v in flat}


def optlib_run(tx, init, coeffs):
    a, b, noise = ({n: jnp.asarray(v) for n, v in c.items()} for c in coeffs)
    params = nest({n: jnp.asarray(v) for n, v in init.items()})

    def micro_step(carry, c):
        params, state = carry
        flat = flatten(params)
        grads = nest({n: gradient(flat[n], a[n], b[n], c[n], 1.0) for n in flat})
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    def step(carry, xs):
        lr = optlib.current_learning_rate(carry[1])
        (params, state), _ = jax.lax.scan(micro_step, carry, xs)
        return (params, state), (flatten(params), lr)

    @jax.jit
    def run(params):
        _, out = jax.lax.scan(step, (params, tx.init(params)), noise)
        return out

    return run(params)


def relative_error(ours, reference):
    ours, reference = np.asarray(ours), np.asarray(reference)
    return float(np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), 1e-300))


def compare(tmp_path, **fields):
    trainer, model, args = make_trainer(tmp_path, **fields)
    init = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    reference, torch_lrs, coeffs = torch_run(trainer, model, args.max_grad_norm)
    params = nest({n: jnp.asarray(v) for n, v in init.items()})
    tx = optlib.from_training_args(args, num_training_steps=STEPS, params=params, no_decay=LN_F)
    trajectory, lrs = optlib_run(tx, init, coeffs)
    worst = max(relative_error(trajectory[n], np.stack([r[n] for r in reference])) for n in init)
    lr_error = max(relative_error(lrs[label], torch_lrs) for label in ("decay", "no_decay"))
    return worst, lr_error, trainer, model, tx, params


COMMON = {
    "weight_decay": 0.1,
    "warmup_steps": 0.1,  # a fraction: ceil(0.1 * 30) = 3 steps
    "max_grad_norm": 0.5,
    "gradient_accumulation_steps": MICRO,
}

# Every supported optim name that runs here (torch_xla / torch_npu are not installed).
OPTIM_CASES = {
    "adamw_torch": {"learning_rate": 0.05, "adam_beta1": 0.8, "adam_epsilon": 1e-6},
    "adamw_torch_fused": {"learning_rate": 0.05},
    "adafactor": {"learning_rate": 0.05},
    "sgd": {"learning_rate": 0.02, "optim_args": "momentum=0.9, nesterov=True"},
    "adagrad": {"learning_rate": 0.1, "optim_args": "lr_decay=0.01,eps=1e-8"},
    "rmsprop": {"learning_rate": 0.01, "optim_args": "momentum=0.5,alpha=0.9,centered=true"},
    "lion_32bit": {"learning_rate": 0.01, "adam_beta2": 0.95},
    "ademamix": {"learning_rate": 0.02, "optim_args": "alpha=4.0,beta3=0.999"},
    "stable_adamw": {"learning_rate": 0.05, "optim_args": "decouple_lr=True"},
    # Trainer passes the raw warmup_steps field to schedulefree: an integer here
    "schedule_free_adamw": {"learning_rate": 0.02, "warmup_steps": 3, "optim_args": "r=0.5"},
    "schedule_free_sgd": {"learning_rate": 0.05, "warmup_steps": 3},
    "schedule_free_radam": {"learning_rate": 0.02, "optim_args": "weight_lr_power=1.0"},
}


# bitsandbytes' CPU kernels compute in float32 even for float64 parameters.
BITSANDBYTES_RTOL = 1e-6


@pytest.mark.parametrize("optim", list(OPTIM_CASES))
def test_every_optim_name_reproduces_trainer(optim, tmp_path, x64):
    worst, lr_error, *_ = compare(
        tmp_path, optim=optim, lr_scheduler_type="linear", **{**COMMON, **OPTIM_CASES[optim]}
    )
    print(f"{optim}: max relative error {worst:.2e}, lr {lr_error:.2e}")
    rtol = BITSANDBYTES_RTOL if optim in ("lion_32bit", "ademamix") else OPTIMIZER_RTOL_F64
    assert worst < rtol, worst
    assert lr_error < OPTIMIZER_RTOL_F64, lr_error


SCHEDULER_CASES = {
    "cosine": {},
    "cosine_with_restarts": {"num_cycles": 2},
    "polynomial": {"power": 2.0, "lr_end": 1e-4},
    "cosine_with_min_lr": {"min_lr_rate": 0.1},
    "warmup_stable_decay": {"num_decay_steps": 10},
}


@pytest.mark.parametrize("schedule", list(SCHEDULER_CASES))
def test_lr_scheduler_types_reproduce_trainer(schedule, tmp_path, x64):
    worst, lr_error, *_ = compare(
        tmp_path,
        optim="adamw_torch",
        learning_rate=0.05,
        lr_scheduler_type=schedule,
        lr_scheduler_kwargs=SCHEDULER_CASES[schedule],
        **COMMON,
    )
    print(f"{schedule}: max relative error {worst:.2e}, lr {lr_error:.2e}")
    assert worst < OPTIMIZER_RTOL_F64, worst
    assert lr_error < OPTIMIZER_RTOL_F64, lr_error


def test_no_decay_set_is_trainers(tmp_path):
    trainer, model, _ = make_trainer(tmp_path, weight_decay=0.1)
    decayed = set(trainer.get_decay_parameter_names(model))
    names = [n for n, _ in model.named_parameters()]
    params = nest({n: np.zeros(1) for n in names})
    labels = flatten(optlib.hf_no_decay_labels(params, LN_F))
    assert {n for n in names if labels[n] == "decay"} == decayed
    # Without the extra pattern, ln_f (a LayerNorm by type only) would be decayed.
    plain = flatten(optlib.hf_no_decay_labels(params))
    assert {n for n in names if plain[n] == "decay"} == decayed | {"ln_f.weight"}
    groups = trainer.optimizer.param_groups
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert {by_id[id(p)] for p in groups[0]["params"]} == decayed


def test_from_torch_on_the_trainers_optimizer_and_scheduler_reproduces_them(tmp_path, x64):
    """from_torch on Trainer's live pair: the same groups (by identity) and the same run,
    without Trainer's clipping and accumulation (they live in the training loop)."""
    fields = {"optim": "adamw_torch", "learning_rate": 0.05, "weight_decay": 0.1}
    trainer, model, _ = make_trainer(tmp_path, lr_scheduler_type="cosine", warmup_steps=3, **fields)
    tx = optlib.from_torch(trainer.optimizer, trainer.lr_scheduler, param_paths=model)
    text = optlib.describe(tx)
    decayed = set(trainer.get_decay_parameter_names(model))
    group_0 = [n for n, p in model.named_parameters() if n in decayed]
    by_id = {id(p): n for n, p in model.named_parameters()}
    listed = ", ".join(
        by_id[id(p)].replace(".", "/") for p in trainer.optimizer.param_groups[0]["params"]
    )
    assert {by_id[id(p)] for p in trainer.optimizer.param_groups[0]["params"]} == set(group_0)
    assert f"'group_0': {len(group_0)} parameter(s): {listed}" in text
    init = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    reference, torch_lrs, coeffs = torch_run(trainer, model, 0.0)
    trajectory, lrs = optlib_run(
        optax.MultiSteps(tx, MICRO, accumulator_dtype=jnp.float64), init, coeffs
    )
    for n in init:
        assert (
            relative_error(trajectory[n], np.stack([r[n] for r in reference])) < OPTIMIZER_RTOL_F64
        )
    assert relative_error(lrs["group_0"], torch_lrs) < OPTIMIZER_RTOL_F64


def test_a_dict_of_fields_gives_the_same_transformation_as_training_arguments(tmp_path, x64):
    fields = {
        "optim": "sgd",
        "optim_args": "momentum=0.9",
        "learning_rate": 0.02,
        "lr_scheduler_type": "cosine",
        **COMMON,
    }
    _, _, args = make_trainer(tmp_path, **fields)
    params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
    from_args = optlib.from_training_args(args, num_training_steps=STEPS, params=params)
    from_dict = optlib.from_training_args(fields, num_training_steps=STEPS, params=params)
    assert optlib.describe(from_args) == optlib.describe(from_dict)
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), jax.eval_shape(from_args.init, params))
    assert shapes == jax.tree.map(
        lambda x: (x.shape, x.dtype), jax.eval_shape(from_dict.init, params)
    )


def test_xla_and_npu_adamw_names_build_torch_adamw():
    reference = optlib.describe(
        optlib.from_training_args({"optim": "adamw_torch"}, num_training_steps=5)
    )
    for name in ("adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused"):
        text = optlib.describe(optlib.from_training_args({"optim": name}, num_training_steps=5))
        assert text.replace(name, "adamw_torch") == reference


def test_describe_notes_optim_args_that_trainer_does_not_read():
    tx = optlib.from_training_args(
        {"optim": "sgd", "optim_args": "momentum=0.9,weight_decay=0.5,foo=1"}, num_training_steps=5
    )
    assert "optim_args ['foo', 'weight_decay'] have no effect for optim='sgd'" in optlib.describe(
        tx
    )


def test_warmup_ratio_of_older_transformers_is_read():
    text = optlib.describe(
        optlib.from_training_args(
            {"warmup_ratio": 0.25, "lr_scheduler_type": "cosine"}, num_training_steps=10
        )
    )
    assert "num_warmup_steps=3" in text  # ceil(0.25 * 10)


def test_describe_names_optimizer_groups_schedule_clipping_and_accumulation():
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
    tx = optlib.from_training_args(
        {"optim": "adamw_torch", "weight_decay": 0.01, "gradient_accumulation_steps": 4},
        num_training_steps=100,
        params=params,
    )
    text = optlib.describe(tx)
    for expected in (
        "optim='adamw_torch'",
        "optax.MultiSteps, one optimizer step per 4 micro-batches",
        "optlib.clip_grad_norm(1.0)",
        "param group 'decay': 1 parameter(s): dense/kernel",
        "param group 'no_decay': 1 parameter(s): dense/bias",
        "optlib.adamw(betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01)",
        "linear(learning_rate=5e-05, num_warmup_steps=0, num_training_steps=100)",
    ):
        assert expected in text, (expected, text)


def test_describe_command_line_reads_a_training_args_json(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"optim": "adafactor", "max_steps": 50, "warmup_steps": 5}))
    result = subprocess.run(
        [sys.executable, "-m", "optlib", "describe", "--training-args", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "optlib.adafactor(" in result.stdout and "num_training_steps=50" in result.stdout


def test_port_hf_recipe_example_trains_with_one_optimizer_step_per_accumulation():
    example = load_example("port_hf_recipe")
    history = example.main(["--epochs", "3", "--samples", "256", "--quiet"])
    assert history["optimizer_steps"] == history["steps"] == 256 // 32 // 4 * 3
    assert history["loss"][-1] < history["loss"][0]
    assert history["lr"][-1] == pytest.approx(0.0, abs=1e-12)  # cosine ends at 0


# ---------------------------------------------------------------------------------------------
# Bad input.


def test_unknown_optim_raises_listing_the_supported_names():
    with pytest.raises(ValueError, match=r"optim='adamw_bnb_8bit' is not supported.*adamw_torch"):
        optlib.from_training_args({"optim": "adamw_bnb_8bit"}, num_training_steps=10)


def test_bad_optim_args_raise():
    with pytest.raises(ValueError, match="optim_args must be 'key=value"):
        optlib.from_training_args({"optim": "sgd", "optim_args": "momentum"}, num_training_steps=10)


def test_missing_num_training_steps_raises():
    with pytest.raises(ValueError, match="num_training_steps is required"):
        optlib.from_training_args({"optim": "sgd"})


def test_unknown_scheduler_keyword_raises():
    with pytest.raises(TypeError, match="power"):
        optlib.from_training_args(
            {"lr_scheduler_type": "cosine", "lr_scheduler_kwargs": {"power": 2.0}},
            num_training_steps=10,
        )
