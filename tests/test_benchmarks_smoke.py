"""``python -m benchmarks --smoke`` runs end to end and writes well-formed JSON, markdown, PNG.

Timings are never asserted (CI machines are shared and noisy); what is asserted is what the
command promises whatever the speed: every section and column is there, every time is a
positive finite number, the metric-driven steps make no host transfer (the positive control
shows the guard would catch one), and Adafactor's factored state is tiny next to Adam's
(a property of the state's shapes, not of timing).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the benchmarks draw their chart with matplotlib")

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SUITES = ("update", "memory", "metric", "compile", "schedules", "lbfgs")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Runs the smoke benchmark once (CPU) and returns ``(results, markdown, png, stdout)``."""
    out = tmp_path_factory.mktemp("benchmarks")
    env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--device", "cpu", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = json.loads((out / "latest.json").read_text())
    return (
        results,
        (out / "latest.md").read_text(),
        (out / "latest.png").read_bytes(),
        completed.stdout,
    )


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_results_have_every_suite_and_the_machine(smoke_run):
    results, *_ = smoke_run
    assert set(SUITES) <= set(results)
    meta = results["meta"]
    assert meta["mode"] == "smoke" and meta["platform"] == "cpu"
    for key in ("cpu_model", "cores", "device", "load_average", "versions", "command"):
        assert meta[key], key
    assert {"jax", "optax", "torch"} <= set(meta["versions"])
    assert set(results["problems"]) == {"matrix", "tree"}


def test_update_rows_time_optlib_optax_and_torch_on_both_problems(smoke_run):
    results, *_ = smoke_run
    rows = results["update"]["rows"]
    assert {(row["problem"], row["optimizer"]) for row in rows} == {
        (problem, optimizer)
        for problem in ("matrix", "tree")
        for optimizer in ("adam", "sgd_momentum")
    }
    for row in rows:
        assert set(row["times"]) == {"optlib", "optax", "torch"}
        for impl, times in row["times"].items():
            assert _positive_finite(times["median_s"]), (row["optimizer"], impl)
            assert times["steps"] >= 1
        assert _positive_finite(row["optlib_over_optax"])
        assert _positive_finite(row["torch_over_optlib"])
        # Paired rounds: optlib vs optax and the A/A control (optax vs a second optax).
        for paired in (row["optlib_vs_optax"], row["aa_control"]):
            assert paired["rounds"] == row["times"]["optlib"]["steps"]
            assert 0 <= paired["slower_rounds"] <= paired["rounds"]
            assert 0 < paired["p_slower"] <= 1
        assert row["optlib_over_optax"] == row["optlib_vs_optax"]["ratio"]
        assert all(_positive_finite(value) for value in row["roofline"].values())
        # The compiled program cannot move less than the one-pass bytes.
        assert all(ratio >= 1 - 1e-6 for ratio in row["xla_over_one_pass"].values()), row
        # One-pass traffic: 3x the params (read p and g, write p) plus state read and written.
        assert (
            row["bytes_per_update"]["optlib"]
            == 3 * row["param_bytes"] + 2 * row["state_bytes"]["optlib"]
        )
    assert all(
        _positive_finite(value) for value in results["update"]["copy_bandwidth_gbs"].values()
    )


def test_metric_driven_steps_make_no_host_transfer(smoke_run):
    results, *_ = smoke_run
    metric = results["metric"]
    assert metric["guard_catches_transfers"], "the transfer guard did not catch a numpy argument"
    variants = {row["variant"] for row in metric["rows"]}
    assert variants == {"adam", "adam+reduce_lr_on_plateau", "adam+greedy_lr"}
    for row in metric["rows"]:
        assert row["host_transfers_per_step"] == 0, row
        assert row["host_ops_in_compiled_step"] == 0, row
        assert row["guarded_steps"] >= 1


def test_adafactor_state_is_under_one_percent_of_adams_at_full_size(smoke_run):
    results, *_ = smoke_run
    memory = results["memory"]
    assert memory["adafactor_over_adam"]["matrix"] <= 0.01
    adam = next(
        row for row in memory["rows"] if row["problem"] == "matrix" and row["optimizer"] == "adam"
    )
    assert adam["optlib_state_bytes"] >= 2 * adam["param_bytes"]  # two moments


def test_compile_and_schedule_suites_report_each_configuration(smoke_run):
    results, *_ = smoke_run
    compile_rows = results["compile"]["rows"]
    assert [row["leaves"] for row in compile_rows] == [10, 20, 40]
    for row in compile_rows:
        for impl in ("optlib", "optax"):
            assert _positive_finite(row[impl]["total_s"])
        assert row["paired"]["rounds"] == row["repeats"]
    schedule_rows = results["schedules"]["rows"]
    assert [row["name"] for row in schedule_rows] == ["StepLR", "OneCycleLR", "cosine"]
    assert next(row for row in schedule_rows if row["name"] == "OneCycleLR")["drives_momentum"]
    assert all(math.isfinite(row["ns_per_step"]) for row in schedule_rows)


def test_markdown_has_the_machine_targets_and_tables(smoke_run):
    results, markdown, _, stdout = smoke_run
    assert markdown.startswith("# optlib benchmarks (smoke mode, cpu")
    assert results["meta"]["cpu_model"] in markdown
    for heading in (
        "## Targets",
        "## Update time and roofline",
        "## Optimizer state memory",
        "## Metric-driven schedulers",
        "## Compile time",
        "## Schedules inside a jitted step",
    ):
        assert heading in markdown
    assert len(results["targets"]) == 6
    for target in results["targets"]:
        assert target["target"] in markdown
        assert target["target"] in stdout  # the command prints the verdicts too
    table_rows = [line for line in markdown.splitlines() if line.startswith("| adam |")]
    assert len(table_rows) >= 2  # one per problem in the update table (and memory)


def test_chart_is_a_png(smoke_run):
    *_, png, _ = smoke_run
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 10_000


@pytest.mark.parametrize(("slower", "rounds"), [(0, 5), (5, 5), (4, 5), (15, 20), (3, 40)])
def test_sign_test_is_scipys_binomial_tail(slower, rounds):
    from scipy import stats

    from benchmarks.timing import sign_test_p

    expected = stats.binomtest(slower, rounds, 0.5, alternative="greater").pvalue
    assert sign_test_p(slower, rounds) == pytest.approx(expected, rel=1e-12)


def test_paired_ratio_pairs_rounds_not_medians():
    from benchmarks.timing import paired_ratio

    # optlib is 10 % faster in every round, while the load doubles half-way: the paired ratio
    # stays at 0.9 and optlib is never the slower one.
    optax = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    optlib = [0.9 * t for t in optax]
    paired = paired_ratio(optlib, optax)
    assert paired["ratio"] == pytest.approx(0.9)
    assert paired["slower_rounds"] == 0 and paired["p_slower"] == 1.0


def test_lbfgs_rows_time_optlib_optax_and_torch_per_step_and_per_evaluation(smoke_run):
    results, markdown, *_ = smoke_run
    rows = {row["implementation"]: row for row in results["lbfgs"]["rows"]}
    assert set(rows) == {"optlib", "optax", "torch"}
    for name, row in rows.items():
        assert _positive_finite(row["times"]["median_s"]), name
        assert _positive_finite(row["per_eval"]["median_s"]), name
        assert row["evals_per_step"] >= 1, name
    assert "## L-BFGS" in markdown


def test_holm_bonferroni_rejects_the_textbook_example():
    from benchmarks.targets import holm_rejected

    # m = 4 at 0.05: 0.005 <= 0.0125 and 0.01 <= 0.0167 are rejected, 0.03 > 0.025 stops
    assert holm_rejected([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm_rejected([0.5, 0.5]) == [False, False]
    # one strong row among 38 is still caught; a row at 0.021 alone is not (38 rows)
    assert holm_rejected([0.0002] + [0.5] * 37)[0]
    assert not holm_rejected([0.021] + [0.5] * 37)[0]
