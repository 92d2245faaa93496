"""``optlib.plot_schedule`` and the ``python -m optlib`` command line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from parity import optlib_trace
from reliability_cases import HF_NAMES

import optlib
from optlib.__main__ import _parse_keywords, main

matplotlib = pytest.importorskip(
    "matplotlib", reason="plots need matplotlib: pip install 'optlib[plot]'"
)
matplotlib.use("Agg")
from matplotlib import image as mpimg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _assert_png(path: str) -> None:
    with open(path, "rb") as file:
        assert file.read(8) == PNG_MAGIC
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert np.ptp(pixels[..., :3]) > 0  # something was drawn


def test_cli_plot_writes_a_png(tmp_path):
    output = tmp_path / "schedules.png"
    command = [
        sys.executable, "-m", "optlib", "plot", "linear", "cosine_with_restarts",
        "--learning-rate", "3e-4", "--num-warmup-steps", "10", "--num-training-steps", "100",
        "--kw", "cosine_with_restarts:num_cycles=2", "-o", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    _assert_png(str(output))


PYTHON_ONLY = ("LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler")


def test_cli_list_prints_every_registered_name_with_its_reference(capsys):
    assert main(["list"]) == 0
    output = capsys.readouterr().out
    listed = {line.split()[0]: line for line in output.splitlines()}
    assert set(optlib.scheduler_names()) == set(listed)
    for name in optlib.scheduler_names():
        assert optlib._registry.scheduler_entry(name).reference in listed[name]
    for name in HF_NAMES:
        assert " transformers.get_" in listed[name]
    assert listed["StepLR"].split()[1] == "torch.optim.lr_scheduler.StepLR"
    assert listed["GreedyLR"].split()[1] == "transformers.optimization.GreedyLR"
    assert "torch" not in listed["GreedyLR"]
    assert "SGDR" in listed["CosineAnnealingWarmUpRestarts"]
    assert not any(word in output.lower() for word in ("seed", "chapter", "document"))


def test_cli_list_marks_schedulers_that_need_python_objects(capsys):
    assert main(["list"]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert [name for name, line in listed.items() if "Python only" in line] == list(PYTHON_ONLY)


@pytest.mark.parametrize("name", PYTHON_ONLY)
def test_cli_plot_says_plainly_a_scheduler_needs_python_objects(name, tmp_path, capsys):
    output = tmp_path / "never.png"
    assert main(["plot", name, "--kw", "lr_lambda=0.5", "-o", str(output)]) == 2
    error = capsys.readouterr().err
    assert f"{name} cannot be built from the command line" in error
    assert "optlib.plot_schedule" in error and "requires" not in error
    assert not output.exists()


def test_cli_plot_legend_shows_warm_up_and_own_keywords_and_log_scale(monkeypatch, tmp_path):
    drawn, plot_schedule = {}, optlib._plotting.plot_schedule

    def recording_plot_schedule(*args, **kwargs):
        drawn["ax"] = plot_schedule(*args, **kwargs)
        return drawn["ax"]

    monkeypatch.setattr(optlib._plotting, "plot_schedule", recording_plot_schedule)
    output = tmp_path / "log.png"
    argv = [
        "plot", "linear", "cosine_with_restarts", "constant", "StepLR", "--log",
        "--num-warmup-steps", "10", "--num-training-steps", "100",
        "--kw", "cosine_with_restarts:num_cycles=2", "--kw", "StepLR:step_size=30",
        "-o", str(output),
    ]  # fmt: skip
    assert main(argv) == 0
    ax = drawn["ax"]
    assert ax.get_yscale() == "log"
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [
        "linear (num_warmup_steps=10)",
        "cosine_with_restarts (num_warmup_steps=10, num_cycles=2)",
        "constant",
        "StepLR (step_size=30)",
    ]
    _assert_png(str(output))


def test_plot_schedule_log_scale():
    schedule = optlib.get_inverse_sqrt_schedule(1.0, 10)
    assert optlib.plot_schedule(schedule, steps=50, ax=Figure().subplots()).get_yscale() == "linear"
    ax = optlib.plot_schedule(schedule, steps=50, ax=Figure().subplots(), log_scale=True)
    assert ax.get_yscale() == "log"


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["plot", "no_such_schedule"], "Unknown scheduler name 'no_such_schedule'"),
        (["plot", "linear", "--num-warmup-steps", "5"], "requires `num_training_steps`"),
        (
            [
                "plot",
                "cosine",
                "--num-warmup-steps",
                "5",
                "--num-training-steps",
                "50",
                "--kw",
                "bogus=1",
            ],
            "bogus",
        ),
        (["plot", "reduce_lr_on_plateau"], "metric-driven"),
        (["plot", "constant", "--kw", "linear:power=2"], "not plotted"),
        (["plot", "constant", "--kw", "power"], "key=value"),
    ],
)
def test_cli_errors_exit_non_zero_with_a_clear_message(argv, fragment, tmp_path, capsys):
    output = tmp_path / "never.png"
    assert main([*argv, "-o", str(output)]) == 2
    assert fragment in capsys.readouterr().err
    assert not output.exists()


def test_cli_keywords_are_python_literals_scoped_by_name():
    parsed = _parse_keywords(
        ["num_cycles=1.5", "cosine:power=2", "wsd:decay_type=1-sqrt", "x=[1, 2]"]
    )
    assert parsed == {
        None: {"num_cycles": 1.5, "x": [1, 2]},
        "cosine": {"power": 2},
        "wsd": {"decay_type": "1-sqrt"},
    }


def test_plot_schedule_draws_each_schedule_values_on_given_axes():
    schedules = [
        optlib.get_cosine_schedule_with_warmup(1e-3, 10, 100),
        optlib.linear_decay(1e-3, 1e-4, 80, num_hold_steps=20),
    ]
    ax = Figure().subplots()
    assert (
        optlib.plot_schedule(schedules, steps=120, labels=["cosine", "linear_decay"], ax=ax) is ax
    )
    for line, schedule in zip(ax.get_lines(), schedules):
        np.testing.assert_array_equal(line.get_xdata(), np.arange(120))
        np.testing.assert_allclose(line.get_ydata(), optlib_trace(schedule, 120))
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["cosine", "linear_decay"]


def test_plot_schedule_saves_to_path(tmp_path):
    path = tmp_path / "one.png"
    ax = optlib.plot_schedule(
        optlib.get_inverse_sqrt_schedule(1.0, 10), steps=[0, 5, 10, 50, 200], path=str(path)
    )
    assert list(ax.get_lines()[0].get_xdata()) == [0, 5, 10, 50, 200]
    _assert_png(str(path))


def test_plot_schedule_rejects_mismatched_labels_and_metric_driven_schedulers():
    with pytest.raises(ValueError, match="one label per schedule"):
        optlib.plot_schedule(
            [optlib.get_constant_schedule(1.0)], labels=["a", "b"], ax=Figure().subplots()
        )
    plateau = optlib.get_scheduler("reduce_lr_on_plateau", learning_rate=0.1)
    with pytest.raises(TypeError, match="metric-driven"):
        optlib.plot_schedule(plateau, ax=Figure().subplots())


def test_plot_schedule_without_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'optlib\[plot\]'"):
        optlib.plot_schedule(optlib.get_constant_schedule(1.0), steps=3)
