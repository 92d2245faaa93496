"""The Flax examples run (small sizes) and do what they show: the loss goes down, the
metric-driven scheduler lowers the learning rate once the loss plateaus, and the log lines
show ``optlib.current_learning_rate``."""

from __future__ import annotations

import re

import numpy as np
import pytest
from examples_loader import load_example

pytest.importorskip("flax", reason="the examples need flax")


def logged_rates(log: str) -> np.ndarray:
    """The ``lr <rate>`` of every log line (the examples log optlib.current_learning_rate)."""
    return np.asarray([float(rate) for rate in re.findall(r" lr ([\d.e+-]+)", log)])


def test_trainstate_example_lowers_lr_on_validation_plateau(capsys):
    history = load_example("flax_trainstate").main(
        ["--epochs", "16", "--samples", "1024", "--batch-size", "32"]
    )
    rates, val_loss = np.asarray(history["learning_rate"]), np.asarray(history["val_loss"])
    np.testing.assert_allclose(logged_rates(capsys.readouterr().out), rates, rtol=1e-2)
    assert val_loss[-1] < 0.5 * val_loss[0]
    assert np.all(np.diff(rates) <= 0), "ReduceLROnPlateau only ever lowers the rate"
    assert rates[-1] < rates[0], "the validation loss plateaued: the rate should have dropped"
    first_drop = int(np.argmax(rates < rates[0]))
    best_before = np.min(val_loss[: first_drop - 2])  # patience=2: no new best in the last 3
    assert np.all(val_loss[first_drop - 2 : first_drop + 1] >= best_before * (1 - 1e-4))


def test_nnx_example_raises_then_lowers_lr_with_the_loss(capsys):
    history = load_example("flax_nnx").main(
        ["--steps", "150", "--learning-rate", "0.02", "--log-every", "10"]
    )
    rates, loss = np.asarray(history["learning_rate"]), np.asarray(history["loss"])
    logged_steps = [*range(0, 150, 10), 149]
    np.testing.assert_allclose(
        logged_rates(capsys.readouterr().out), rates[logged_steps], rtol=1e-2
    )
    assert loss[-20:].mean() < 0.2 * loss[:20].mean()
    peak = int(np.argmax(rates))
    assert rates[peak] > rates[0], "GreedyLR raises the rate while the loss improves"
    assert rates[-1] < rates[peak], "...and lowers it once the loss plateaus"
