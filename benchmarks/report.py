"""Writes one run's results as JSON, a markdown report and a PNG chart."""

from __future__ import annotations

import json
import os
from pathlib import Path


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if seconds < 1e-3 else f"{seconds * 1e3:.2f}"


def _mib(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:.1f}"


def _check(met) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[met]


def machine_line(meta: dict) -> str:
    """One line naming the machine, the library versions and the load."""
    load = meta["load_average"]
    return (
        f"{meta['cpu_model']}, {meta['cores']} cores, {meta['memory_gib']:.0f} GiB; "
        f"JAX {meta['versions']['jax']} on **{meta['device']}**, optax "
        f"{meta['versions']['optax']}, torch {meta['versions']['torch']} "
        f"({meta['torch_threads']} threads), transformers {meta['versions']['transformers']}, "
        f"Python {meta['versions']['python']}. Load average (1 min) before / after: "
        f"{load['before'][0]:.2f} / {load['after'][0]:.2f}."
    )


def _targets_table(targets: list[dict]) -> list[str]:
    lines = ["| target | goal | measured | met |", "|---|---|---|---|"]
    for target in targets:
        measured = target["measured"] + (f" ({target['detail']})" if target["detail"] else "")
        lines.append(
            f"| {target['target']} | {target['goal']} | {measured} | {_check(target['met'])} |"
        )
    return lines


def _update_tables(results: dict) -> list[str]:
    update = results["update"]
    lines = []
    for name, problem in results["problems"].items():
        rows = [row for row in update["rows"] if row["problem"] == name]
        if not rows:
            continue
        bandwidth = update["copy_bandwidth_gbs"][name]
        lines += [
            "",
            f"**{problem['description']}** (copy bandwidth {bandwidth:.1f} GB/s; "
            f"{_mib(problem['bytes'])} MiB of params)",
            "",
            "| optimizer | optlib ms | optax ms | torch ms | optlib/optax (slower rounds) "
            "| A/A optax/optax | torch/optlib "
            "| roofline optlib | roofline optax | roofline torch | XLA bytes / one-pass "
            "(optlib, optax) | optlib program bandwidth / copy | state MiB optlib/optax/torch "
            "| optax twin |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for row in rows:
            times, roof, state = row["times"], row["roofline"], row["state_bytes"]
            torch_ms = _ms(times["torch"]["median_s"]) if "torch" in times else "-"
            torch_ratio = f"{row['torch_over_optlib']:.2f}" if "torch_over_optlib" in row else "-"
            torch_roof = f"{roof['torch']:.2f}" if "torch" in roof else "-"
            states = "/".join(
                _mib(state[i]) if i in state else "-" for i in ("optlib", "optax", "torch")
            )
            twin = "same math" if row["same_math"] else "differs"
            if row.get("stand_in"):
                twin = "stand-in (not judged)"
            if row["note"]:
                twin += f": {row['note']}"
            lines.append(
                f"| {row['optimizer']} | {_ms(times['optlib']['median_s'])} | "
                f"{_ms(times['optax']['median_s'])} | {torch_ms} | "
                f"{_paired(row['optlib_vs_optax'])} | {row['aa_control']['ratio']:.3f} | "
                f"{torch_ratio} | {roof['optlib']:.2f} | "
                f"{roof['optax']:.2f} | {torch_roof} | {row['xla_over_one_pass']['optlib']:.2f}, "
                f"{row['xla_over_one_pass']['optax']:.2f} | "
                f"{row['program_bandwidth']['optlib']:.2f} | {states} | {twin} |"
            )
    return lines


def _paired(paired: dict) -> str:
    return f"{paired['ratio']:.3f} ({paired['slower_rounds']}/{paired['rounds']})"


def _memory_table(memory: dict) -> list[str]:
    problems = list(memory["problems"])
    header = "| optimizer | " + " | ".join(
        f"{memory['problems'][p]}: optlib MiB (x params) | optax MiB" for p in problems
    )
    lines = [header + " |", "|---|" + "---:|---:|" * len(problems)]
    by_key = {(row["problem"], row["optimizer"]): row for row in memory["rows"]}
    for optimizer in dict.fromkeys(row["optimizer"] for row in memory["rows"]):
        cells = []
        for problem in problems:
            row = by_key[(problem, optimizer)]
            cells.append(
                f"{_mib(row['optlib_state_bytes'])} ({row['optlib_state_over_params']:.3f}) | "
                f"{_mib(row['optax_state_bytes'])}"
            )
        lines.append(f"| {optimizer} | " + " | ".join(cells) + " |")
    ratios = ", ".join(
        f"{memory['problems'][p]}: {ratio:.3%}"
        for p, ratio in memory["adafactor_over_adam"].items()
    )
    lines += ["", f"Adafactor state / Adam state: {ratios}."]
    if "sharded" in memory:
        lines += ["", *_sharded_memory_table(memory["sharded"])]
    return lines


def _sharded_memory_table(sharded: dict) -> list[str]:
    devices = sharded["rows"][0]["devices"] if sharded["rows"] else 0
    lines = [
        f"Per-device optimizer state, {sharded['problem']}, on {devices} devices: replicated; "
        "parameters split over the devices (state follows them); parameters replicated and "
        'state split (ZeRO-1, `shard_state_over="data"`).',
        "",
        "| optimizer | replicated MiB | param-sharded MiB | ZeRO-1 MiB | ZeRO-1 / replicated |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in sharded["rows"]:
        lines.append(
            f"| {row['optimizer']} | {_mib(row['replicated_bytes'])} | "
            f"{_mib(row['param_sharded_bytes'])} | {_mib(row['zero1_bytes'])} | "
            f"{row['zero1_over_replicated']:.4f} |"
        )
    return lines


def _metric_table(metric: dict) -> list[str]:
    lines = [
        "| problem | step | state arrays | median ms | overhead vs adam (paired rounds) "
        "| host transfers / step "
        "| host ops in compiled step |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in metric["rows"]:
        lines.append(
            f"| {row['problem']} | {row['variant']} | {row['state_arrays']} | "
            f"{_ms(row['times']['median_s'])} | {row['overhead']:+.1%} "
            f"({row['overhead_us']:+.0f} us) | {row['host_transfers_per_step']:g} "
            f"(of {row['guarded_steps']} guarded steps) | {row['host_ops_in_compiled_step']} |"
        )
    control = "yes" if metric["guard_catches_transfers"] else "**NO**"
    return lines + [
        "",
        f"Positive control: the same guard refuses a numpy argument here: {control}.",
    ]


def _compile_table(compile_: dict) -> list[str]:
    lines = [
        "| leaves | optimizer | optlib s (trace+lower / XLA) | optax s (trace+lower / XLA) "
        "| optlib/optax (best) | paired: median (optlib slower) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in compile_["rows"]:
        cells = [
            f"{row[i]['total_s']:.2f} ({row[i]['trace_lower_s']:.2f} / "
            f"{row[i]['xla_compile_s']:.2f})"
            for i in ("optlib", "optax")
        ]
        lines.append(
            f"| {row['leaves']} | {row['optimizer']} | {cells[0]} | {cells[1]} | "
            f"{row['optlib_over_optax']:.2f} | {_paired(row['paired'])} |"
        )
    return lines


def _schedule_table(schedules: dict) -> list[str]:
    rows = schedules["rows"]
    if not rows:
        return []
    constant = sorted(row["constant_step_ns"] for row in rows)[len(rows) // 2]
    lines = [
        f"Extra time per jitted Adam step (16-element parameter, {schedules['steps_per_loop']} "
        f"steps per jitted loop) over a constant learning rate, whose step takes "
        f"{constant:.0f} ns. Differences of a few ns are within noise.",
        "",
        "| schedule | ns / step | also drives beta1 |",
        "|---|---:|---|",
    ]
    for row in rows:
        momentum = "yes" if row["drives_momentum"] else ""
        lines.append(f"| {row['name']} | {row['ns_per_step']:.0f} | {momentum} |")
    if schedules["skipped"]:
        names = ", ".join(item["name"] for item in schedules["skipped"])
        lines += ["", f"Not step-based or not benchmarked: {names}."]
    return lines


def _lbfgs_table(lbfgs: dict) -> list[str]:
    problem = lbfgs["problem"]
    lines = [
        f"Least squares, A {problem['m']} x {problem['n']} (float32); one step = torch's "
        f"`step(closure)` with max_iter={lbfgs['max_iter']}, "
        f"history_size={lbfgs['history_size']}, strong Wolfe (optax: that many "
        "`optax.lbfgs` iterations in one jitted loop, its own zoom line search).",
        "",
        "| implementation | median ms / step | evaluations / step | median us / evaluation |",
        "|---|---:|---:|---:|",
    ]
    for row in lbfgs["rows"]:
        lines.append(
            f"| {row['implementation']} | {_ms(row['times']['median_s'])} | "
            f"{row['evals_per_step']:g} | {row['per_eval']['median_s'] * 1e6:.1f} |"
        )
    return lines


def markdown(results: dict) -> str:
    """The markdown report: machine, targets, then one table per suite."""
    meta = results["meta"]
    lines = [
        f"# optlib benchmarks ({meta['mode']} mode, {meta['device']})",
        "",
        f"Machine: {machine_line(meta)}",
        "",
        f"Command: `{meta['command']}`; {meta['date']}, commit {meta['commit']}, "
        f"{meta['duration_s']:.0f} s.",
    ]
    if meta.get("note"):
        lines += ["", meta["note"]]
    if results.get("targets"):
        lines += ["", "## Targets", ""] + _targets_table(results["targets"])
    if "update" in results:
        lines += [
            "",
            "## Update time and roofline",
            "",
            f"Median of {meta['steps']} steps (torch: {meta['torch_steps']}) after "
            f"{meta['warmup']} warm-up steps, implementations timed in interleaved rounds; "
            "optlib/optax is the median of the per-round ratios (both timed in the same round), "
            "with the number of rounds in which optlib was the slower; the A/A column times optax "
            "against a second optax in the same rounds (what noise does to identical programs); "
            "JAX steps are one jitted `update` + `apply_updates` "
            "with params and state donated; torch is `torch.optim.X(foreach=True)`. Roofline: "
            "(2 x params + grads + 2 x state bytes) / time, as a fraction of the copy bandwidth "
            "(`x <- -x` on a buffer of the problem's size, jitted, donated) timed in the same "
            "rounds. torch/optlib >= 1.5 means optlib is at least 0.5x faster than torch. "
            "XLA bytes: what the compiled program reads and writes, kernel by kernel (XLA:CPU "
            "writes each output of an update in its own loop, so the one-pass roofline is out "
            "of reach: Adam's ceiling is 1/1.43 = 0.70); program bandwidth / copy ~ 1 means the "
            "program runs at memory speed, < 1 that it is compute-bound.",
        ]
        lines += _update_tables(results)
    if "memory" in results:
        lines += ["", "## Optimizer state memory (full sizes)", ""] + _memory_table(
            results["memory"]
        )
    if "metric" in results:
        lines += [
            "",
            "## Metric-driven schedulers",
            "",
            "`optlib.adam(1e-3)` against `optlib.adam(optlib.reduce_lr_on_plateau(1e-3))` and "
            "`optlib.adam(optlib.greedy_lr(1e-3))` stepped with `value=metric`, timed steps "
            'under `jax.transfer_guard("disallow")`. Overhead: median over rounds of the step\'s '
            "time over plain Adam's in the same round, minus 1 (and of the difference, in us).",
            "",
        ] + _metric_table(results["metric"])
    if "compile" in results:
        lines += ["", "## Compile time", ""] + _compile_table(results["compile"])
    if "schedules" in results:
        lines += ["", "## Schedules inside a jitted step", ""] + _schedule_table(
            results["schedules"]
        )
    if "lbfgs" in results:
        lines += ["", "## L-BFGS (one torch step per update)", ""] + _lbfgs_table(results["lbfgs"])
    return "\n".join(lines) + "\n"


def chart(results: dict, path: Path) -> None:
    """A 2x2 PNG: update times, roofline fractions, compile times, schedule costs."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(2, 2, figsize=(14, 10))
    meta = results["meta"]
    figure.suptitle(
        f"optlib benchmarks ({meta['mode']}, {meta['device']}: {meta['cpu_model']}, "
        f"{meta['cores']} cores)"
    )
    update_rows = results.get("update", {}).get("rows", [])

    axis = axes[0][0]
    tree_rows = [row for row in update_rows if row["problem"] == "tree"]
    if tree_rows:
        names = [row["optimizer"] for row in tree_rows]
        positions = np.arange(len(names))
        for offset, impl in zip((-0.27, 0, 0.27), ("optlib", "optax", "torch")):
            values = [row["times"].get(impl, {}).get("median_s", np.nan) * 1e3 for row in tree_rows]
            axis.bar(positions + offset, values, width=0.27, label=impl)
        axis.set_xticks(positions, names, rotation=30)
        axis.set_yscale("log")
        axis.set_ylabel("ms per update (median)")
        axis.set_title(results["problems"]["tree"]["description"])
        axis.legend()

    axis = axes[0][1]
    if update_rows:
        labels = [f"{row['optimizer']}\n{row['problem']}" for row in update_rows]
        positions = np.arange(len(labels))
        for offset, impl in zip((-0.2, 0.2), ("optlib", "optax")):
            axis.bar(
                positions + offset,
                [row["roofline"][impl] for row in update_rows],
                width=0.4,
                label=impl,
            )
        axis.axhline(0.7, color="k", linestyle="--", linewidth=1, label="target 0.7")
        axis.set_xticks(positions, labels, rotation=90, fontsize=7)
        axis.set_ylabel("fraction of copy bandwidth")
        axis.set_title("roofline (one-pass bytes / time / copy bandwidth)")
        axis.legend()

    axis = axes[1][0]
    compile_rows = results.get("compile", {}).get("rows", [])
    for optimizer in dict.fromkeys(row["optimizer"] for row in compile_rows):
        rows = [row for row in compile_rows if row["optimizer"] == optimizer]
        leaves = [row["leaves"] for row in rows]
        for impl, style in (("optlib", "-o"), ("optax", "--s")):
            axis.plot(
                leaves, [row[impl]["total_s"] for row in rows], style, label=f"{optimizer} {impl}"
            )
    if compile_rows:
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("leaves")
        axis.set_ylabel("trace + lower + XLA compile, s")
        axis.set_title("compile time")
        axis.legend(fontsize=7)

    axis = axes[1][1]
    schedule_rows = results.get("schedules", {}).get("rows", [])
    if schedule_rows:
        axis.barh(
            [row["name"] for row in schedule_rows], [row["ns_per_step"] for row in schedule_rows]
        )
        axis.set_xscale("symlog", linthresh=10)
        axis.set_xlabel("extra ns per jitted Adam step (symlog)")
        axis.set_title("schedule cost inside a jitted step")
        axis.tick_params(axis="y", labelsize=7)
        axis.invert_yaxis()

    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write(results: dict, out_dir: Path, tag: str, with_chart: bool = True) -> dict[str, Path]:
    """Writes ``{tag}.json``, ``{tag}.md`` and (optionally) ``{tag}.png``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{tag}.json", "md": out_dir / f"{tag}.md"}
    paths["json"].write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    paths["md"].write_text(markdown(results))
    if with_chart:
        paths["png"] = out_dir / f"{tag}.png"
        chart(results, paths["png"])
    return paths
