"""A real ``transformers.Trainer`` checkpoint resumed in JAX with ``load_hf_trainer_checkpoint``.

A tiny two-layer torch MLP (float64, generated data, one full batch per step) trains with the
Trainer's default AdamW (two param groups: weights with weight decay, biases without), a
linear warm-up schedule and gradient clipping, saving ``checkpoint-3``. A second Trainer
resumes from it (``resume_from_checkpoint``) and runs to step 6. In JAX, a Flax twin of the
model (``Dense`` kernels are the transposed torch weights: ``layouts``) loads the
checkpoint's weights and optimizer state and takes the same steps: the parameters after each
step and the learning rates must match the resumed Trainer's.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
nn = pytest.importorskip("flax.linen")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

import optlib  # noqa: E402

LEARNING_RATE, WEIGHT_DECAY, WARMUP, MAX_STEPS, SAVE_AT = 0.05, 0.1, 2, 6, 3
MAX_GRAD_NORM = 0.1  # small enough that the Trainer's clipping acts at every step
rng = np.random.default_rng(0)
INPUTS = rng.normal(size=(8, 3))
TARGETS = rng.normal(size=(8, 2))

# torch name -> Flax path, and the layouts of the Dense kernels
PATHS = {
    "lin1.weight": "params/Dense_0/kernel",
    "lin1.bias": "params/Dense_0/bias",
    "lin2.weight": "params/Dense_1/kernel",
    "lin2.bias": "params/Dense_1/bias",
}
LAYOUTS = {"params/Dense_0/kernel": "transpose", "params/Dense_1/kernel": "transpose"}


class TorchMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1 = torch.nn.Linear(3, 4)
        self.lin2 = torch.nn.Linear(4, 2)

    def forward(self, x, labels=None):
        out = self.lin2(torch.tanh(self.lin1(x)))
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


class FlaxMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        hidden = jnp.tanh(nn.Dense(4, name="Dense_0")(x))
        return nn.Dense(2, name="Dense_1")(hidden)


class Record(transformers.TrainerCallback):
    """The parameters after every step and the lr each step used."""

    def __init__(self):
        self.params, self.lrs = [], []

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.lrs.append([group["lr"] for group in optimizer.param_groups])

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.params.append({n: p.detach().numpy().copy() for n, p in model.named_parameters()})


def _trainer(output_dir, model, callbacks=()):
    args = transformers.TrainingArguments(
        output_dir=str(output_dir),
        max_steps=MAX_STEPS,
        save_steps=SAVE_AT,
        per_device_train_batch_size=len(INPUTS),
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        lr_scheduler_type="linear",
        warmup_steps=WARMUP,
        max_grad_norm=MAX_GRAD_NORM,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        logging_strategy="no",
        seed=0,
    )
    data = [{"x": x, "labels": y} for x, y in zip(INPUTS, TARGETS, strict=True)]
    return transformers.Trainer(
        model=model, args=args, train_dataset=data, callbacks=list(callbacks)
    )


def test_trainer_checkpoint_resumes_in_jax_as_the_resumed_trainer(tmp_path, x64):
    torch.manual_seed(0)
    with torch.autograd.set_detect_anomaly(False):
        _trainer(tmp_path / "run", TorchMLP().double()).train()
        record = Record()
        _trainer(tmp_path / "resumed", TorchMLP().double(), [record]).train(
            resume_from_checkpoint=str(tmp_path / "run" / f"checkpoint-{SAVE_AT}")
        )
    checkpoint = tmp_path / "run" / f"checkpoint-{SAVE_AT}"
    weights = load_file(str(checkpoint / "model.safetensors"))
    params = {"params": {}}
    for name, path in PATHS.items():
        _, layer, leaf = path.split("/")
        value = weights[name].T if leaf == "kernel" else weights[name]
        params["params"].setdefault(layer, {})[leaf] = jnp.asarray(value)

    schedule = optlib.get_scheduler(
        "linear",
        learning_rate=LEARNING_RATE,
        num_warmup_steps=WARMUP,
        num_training_steps=MAX_STEPS,
    )
    tx = optax.chain(  # the Trainer clips the global norm, then steps AdamW
        optlib.clip_grad_norm(MAX_GRAD_NORM),
        optlib.param_groups(
            {
                "decay": optlib.adamw(schedule, weight_decay=WEIGHT_DECAY),
                "no_decay": optlib.adamw(schedule, weight_decay=0.0),
            },
            optlib.decay_labels,
        ),
    )
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    names = saved["param_groups"][0].get("param_names")
    # Trainer's param groups: the decayed weights, then the biases
    paths = (
        PATHS
        if names
        else [PATHS[n] for n in ("lin1.weight", "lin2.weight", "lin1.bias", "lin2.bias")]
    )
    opt_state, global_step = optlib.load_hf_trainer_checkpoint(
        checkpoint, tx, params, param_paths=paths, layouts=LAYOUTS
    )
    assert global_step == SAVE_AT

    model = FlaxMLP()
    x, y = jnp.asarray(INPUTS), jnp.asarray(TARGETS)

    @jax.jit
    def step(params, opt_state):
        grads = jax.grad(lambda p: jnp.mean((model.apply(p, x) - y) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    grads = jax.grad(lambda p: jnp.mean((model.apply(p, x) - y) ** 2))(params)
    assert float(optlib.global_grad_norm(grads)) > MAX_GRAD_NORM  # the clipping acts
    assert len(record.params) == MAX_STEPS - SAVE_AT
    for expected, expected_lrs in zip(record.params, record.lrs, strict=True):
        lrs = optlib.current_learning_rate(opt_state)
        np.testing.assert_allclose([lrs["decay"], lrs["no_decay"]], expected_lrs, rtol=1e-12)
        params, opt_state = step(params, opt_state)
        for name, path in PATHS.items():
            _, layer, leaf = path.split("/")
            ours = np.asarray(params["params"][layer][leaf])
            reference = expected[name].T if leaf == "kernel" else expected[name]
            np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-14, err_msg=name)
