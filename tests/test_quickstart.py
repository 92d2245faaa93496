"""The quickstart runs (small sizes): accuracy improves, the warm-up shows in the logged
learning rate, each epoch logs the rate it trained with, the PNG is written; and
``optlib.current_learning_rate`` (the rate every example logs) also reads optimizers wrapped in
``optax.inject_hyperparams``."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from examples_loader import load_example

import optlib

pytest.importorskip(
    "matplotlib", reason="the quickstart writes a PNG (pip install -e '.[examples]')"
)
pytest.importorskip(
    "tqdm", reason="the quickstart shows a progress bar (pip install -e '.[examples]')"
)


def test_quickstart_trains_logs_the_rate_and_writes_the_png(tmp_path, capsys):
    quickstart = load_example("quickstart")
    output = tmp_path / "curves" / "quickstart.png"
    learning_rate = 1e-2
    history = quickstart.main(
        [
            "--samples",
            "2000",
            "--epochs",
            "8",
            "--warmup-epochs",
            "1",
            "--learning-rate",
            str(learning_rate),
            "-o",
            str(output),
        ]
    )

    accuracy = history["val_accuracy"]
    assert accuracy[-1] > accuracy[0] + 0.15, accuracy
    assert accuracy[-1] > 0.6, "well above chance (1/3)"

    # Warm-up: LinearLR factor 0.1 -> 1 over the first epoch, times the plateau's rate.
    steps_per_epoch = len(history["step_lr"]) // len(accuracy)
    warmup = np.asarray(history["step_lr"][: steps_per_epoch + 1])
    np.testing.assert_allclose(warmup[0], 0.1 * learning_rate, rtol=1e-6)
    assert np.all(np.diff(warmup) > 0)
    np.testing.assert_allclose(warmup[-1], learning_rate, rtol=1e-6)

    # Each epoch's log line shows the rates that epoch's updates applied (not the rate the
    # plateau step at its end sets for the next epoch): "first..last" while warming up.
    log = capsys.readouterr().out
    logged = re.findall(r"epoch +\d+ .*val acc [\d.]+ +lr (\S+)", log)
    assert len(logged) == len(accuracy)
    for epoch, text in enumerate(logged):
        rates = np.asarray(
            history["step_lr"][epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch]
        )
        assert history["lr"][epoch] == rates[-1]
        assert text == quickstart._rate_text(rates)
        first, _, last = text.partition("..")
        np.testing.assert_allclose(float(first), rates[0], rtol=1e-2)
        np.testing.assert_allclose(float(last or first), rates[-1], rtol=1e-2)
    assert logged[0] == f"{0.1 * learning_rate:.2e}..{history['step_lr'][steps_per_epoch - 1]:.2e}"
    assert logged[-1] == f"{history['step_lr'][-1]:.2e}"

    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(output)
    assert image.ndim == 3 and min(image.shape[:2]) > 300


def test_current_learning_rate_reads_inject_hyperparams():
    """The rate ``inject_hyperparams`` applied, also after the user overrides it mid-run."""
    schedule = optlib.step_lr(0.1, step_size=2, gamma=0.5)
    tx = optax.inject_hyperparams(optlib.adam)(learning_rate=schedule)
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.asarray([1.0, -2.0, 3.0])}
    state = tx.init(params)
    update = jax.jit(tx.update)
    np.testing.assert_allclose(optlib.current_learning_rate(state), schedule(0))
    for step in range(5):
        updates, state = update(grads, state, params)
        # Adam's first update is -lr * sign(g) (up to eps and rounding): the rate applied.
        if step == 0:
            np.testing.assert_allclose(-updates["w"][0], schedule(0), rtol=1e-5)
        np.testing.assert_allclose(state.hyperparams["learning_rate"], schedule(step), rtol=1e-6)
        np.testing.assert_allclose(
            optlib.current_learning_rate(state), state.hyperparams["learning_rate"], rtol=0
        )

    constant = optax.inject_hyperparams(optlib.adam)(learning_rate=0.1)
    state = constant.init(params)
    _, state = constant.update(grads, state, params)
    state.hyperparams["learning_rate"] = jnp.asarray(0.01)
    updates, state = constant.update(grads, state, params)
    np.testing.assert_allclose(optlib.current_learning_rate(state), 0.01, rtol=1e-6)
