"""Command line of the optlib benchmarks.

::

    python -m benchmarks [--quick | --smoke] [--device auto|cpu|gpu] [--out DIR]
                         [--suites update,memory,metric,compile,schedules,lbfgs] [--no-torch]
                         [--optimizers adam,rprop,...]
    python -m benchmarks --rejudge benchmarks/results/latest.json   # targets only, no run
    python benchmarks/run.py ...      # the same

Suites (in this order): ``update`` (update time vs optax and torch, roofline), ``memory``
(optimizer state bytes), ``metric`` (metric-driven scheduler overhead and host transfers),
``compile`` (compile time vs leaves), ``schedules`` (cost of each schedule in a jitted step),
``lbfgs`` (optlib.lbfgs vs optax.lbfgs and torch's LBFGS, per step and per evaluation).

Results go to ``DIR/latest.{json,md,png}`` (``latest_<platform>.*`` when JAX runs on another
platform than the CPU); the JSON is rewritten after every suite, so an interrupted run keeps
what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SUITES = ("update", "memory", "metric", "compile", "schedules", "lbfgs")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("::")[0]
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller problems, < 2 minutes")
    size.add_argument(
        "--smoke",
        action="store_true",
        help="tiny problems and subsets (CI test; numbers mean nothing)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="JAX device: auto = jax.devices()[0] (a GPU when present)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--tag", default=None, help="file stem (default latest[_<platform>])")
    parser.add_argument(
        "--suites", default=",".join(SUITES), help=f"comma-separated subset of {','.join(SUITES)}"
    )
    parser.add_argument(
        "--optimizers",
        default=None,
        help="comma-separated twins of the update suite (default: the mode's, all in full/quick)",
    )
    parser.add_argument("--no-torch", action="store_true", help="leave the torch column out")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG")
    parser.add_argument("--note", default="", help="a line added to the markdown report")
    parser.add_argument(
        "--rejudge",
        type=Path,
        default=None,
        metavar="JSON",
        help="re-evaluate the targets of a results file and rewrite its .json/.md (no run)",
    )
    args = parser.parse_args(argv)
    args.suites = [name.strip() for name in args.suites.split(",") if name.strip()]
    unknown = sorted(set(args.suites) - set(SUITES))
    if unknown:
        parser.error(f"unknown suites {unknown}; choose from {', '.join(SUITES)}")
    return args


def _twin_names(text: str) -> tuple[str, ...]:
    from benchmarks.twins import TWINS_BY_NAME

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(set(names) - set(TWINS_BY_NAME))
    if unknown:
        raise SystemExit(f"--optimizers: unknown {unknown}; choose from {', '.join(TWINS_BY_NAME)}")
    return names


def _command_line(argv: list[str]) -> str:
    """The command as typed, quoted, with a ``--note``'s text elided (the report shows it)."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            shown.append("'...'")
            skip = False
        elif arg == "--note":
            shown.append(arg)
            skip = True
        elif arg.startswith("--note="):
            shown.append("--note='...'")
        else:
            shown.append(shlex.quote(arg))
    return " ".join(["python -m benchmarks", *shown])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return float("nan")


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _version(module_name: str) -> str:
    try:
        module = __import__(module_name)
    except ImportError:
        return "not installed"
    return getattr(module, "__version__", "unknown")


def _torch_device(platform_name: str, disabled: bool) -> str | None:
    if disabled:
        return None
    try:
        import torch
    except ImportError:
        return None
    if platform_name == "cpu":
        return "cpu"
    if platform_name == "gpu" and torch.cuda.is_available():
        return "cuda"
    return None  # torch cannot run on JAX's device: no like-for-like column


def _rejudge(path: Path) -> int:
    """Re-evaluates the targets of a saved run (the judging rules may have changed)."""
    import json

    from benchmarks import report, targets

    results = json.loads(path.read_text())
    results["targets"] = targets.evaluate(results)
    report.write(results, path.parent, path.stem, with_chart=False)
    for target in results["targets"]:
        status = {True: "met", False: "MISSED", None: "n/a"}[target["met"]]
        print(f"{status:>6}  {target['target']}: {target['measured']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rejudge is not None:
        return _rejudge(args.rejudge)
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"  # before JAX starts

    import jax

    from benchmarks import report, targets
    from benchmarks.config import MODES
    from benchmarks.context import Context
    from benchmarks.suites import compile as compile_suite
    from benchmarks.suites import lbfgs, memory, metric, schedules, update

    device = jax.devices()[0]
    if args.device == "gpu" and device.platform != "gpu":
        print(f"--device gpu: JAX has no GPU here (default device {device})", file=sys.stderr)
        return 2
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.optimizers:
        mode = dataclasses.replace(mode, optimizers=_twin_names(args.optimizers))
    torch_device = _torch_device(device.platform, args.no_torch)
    context = Context(mode=mode, platform=device.platform, torch_device=torch_device)
    tag = args.tag or ("latest" if device.platform == "cpu" else f"latest_{device.platform}")

    torch_threads = None
    if torch_device is not None:
        import torch

        torch_threads = torch.get_num_threads()
    command = _command_line(sys.argv[1:] if argv is None else argv)
    results: dict = {
        "meta": {
            "mode": mode.name,
            "command": command.strip(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "commit": _commit(),
            "device": device.platform
            + ("" if device.device_kind == device.platform else f" ({device.device_kind})"),
            "platform": device.platform,
            "cpu_model": _cpu_model(),
            "cores": os.cpu_count(),
            "memory_gib": _memory_gib(),
            "torch_device": torch_device,
            "torch_threads": torch_threads,
            "versions": {
                "python": platform.python_version(),
                "jax": jax.__version__,
                "jaxlib": _version("jaxlib"),
                "optax": _version("optax"),
                "torch": _version("torch"),
                "transformers": _version("transformers"),
                "numpy": _version("numpy"),
            },
            "load_average": {"before": list(os.getloadavg()), "after": list(os.getloadavg())},
            "duration_s": 0.0,
            "warmup": mode.warmup,
            "steps": mode.steps,
            "torch_steps": mode.torch_steps,
            "note": args.note,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        },
    }
    results["problems"] = {
        problem.name: {
            "description": problem.description,
            "params": problem.num_params,
            "leaves": problem.num_leaves,
            "bytes": problem.nbytes,
        }
        for problem in context.problems
    }
    runners = {
        "update": update.run,
        "memory": memory.run,
        "metric": metric.run,
        "compile": compile_suite.run,
        "schedules": schedules.run,
        "lbfgs": lbfgs.run,
    }
    started = time.perf_counter()
    for name in args.suites:
        results[name] = runners[name](context)
        results["meta"]["load_average"]["after"] = list(os.getloadavg())
        results["meta"]["duration_s"] = time.perf_counter() - started
        results["targets"] = targets.evaluate(results)
        report.write(results, args.out, tag, with_chart=False)
    paths = report.write(results, args.out, tag, with_chart=not args.no_chart)
    context.log(
        f"done in {results['meta']['duration_s']:.0f} s: " + ", ".join(map(str, paths.values()))
    )
    for target in results["targets"]:
        status = {True: "met", False: "MISSED", None: "n/a"}[target["met"]]
        print(f"{status:>6}  {target['target']}: {target['measured']} (goal {target['goal']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
