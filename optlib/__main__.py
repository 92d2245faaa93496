"""Command line: list the scheduler names, or plot schedules to an image.

    python -m optlib list
    python -m optlib describe --training-args args.json [--num-training-steps 1000]
    python -m optlib plot cosine --learning-rate 3e-4 --num-warmup-steps 100 \\
        --num-training-steps 1000 --kw num_cycles=1.5 -o cosine.png

Several names draw several curves on one plot. ``--kw key=value`` goes to every name;
``--kw NAME:key=value`` only to ``NAME``. Values are Python literals (``3``, ``0.5``,
``"cosine"``, ``[30, 60]``), anything else is taken as a string. ``--num-warmup-steps`` and
``--num-training-steps`` follow Hugging Face's ``get_scheduler`` and go to the HF-convention
names only (torch names take their own keywords, e.g. ``--kw OneCycleLR:total_steps=1000``);
the legend shows the warm-up and each name's own keywords. ``--log`` draws the learning rate
on a log scale.

Schedulers built from other Python objects (``LambdaLR``/``MultiplicativeLR`` take a function,
``SequentialLR``/``ChainedScheduler`` take schedules) cannot be built from the command line;
``list`` marks them and ``plot`` says so. Build them in Python and plot them with
``optlib.plot_schedule``.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
from collections.abc import Sequence
from typing import Any

from optlib._registry import SchedulerEntry, get_scheduler, scheduler_entry, scheduler_names

# Keywords whose value is a Python object no command-line literal can express.
_PYTHON_OBJECT_KEYWORDS = {
    "lr_lambda": "a Python function of the step",
    "schedulers": "a list of schedules built in Python",
}


def _literal(text: str) -> Any:
    """A Python literal if ``text`` is one, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_keywords(items: Sequence[str]) -> dict[str | None, dict[str, Any]]:
    """``["a=1", "cosine:b=2"]`` -> ``{None: {"a": 1}, "cosine": {"b": 2}}``."""
    scoped: dict[str | None, dict[str, Any]] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(f"--kw expects key=value or NAME:key=value, got {item!r}")
        scope, _, key = key.rpartition(":") if ":" in key else (None, "", key)
        scoped.setdefault(scope or None, {})[key.strip()] = _literal(value.strip())
    return scoped


def _python_object_keywords(entry: SchedulerEntry) -> list[str]:
    """The keywords of ``entry``'s factory that need a Python object (none for most names)."""
    parameters = inspect.signature(entry.factory).parameters
    return [key for key in _PYTHON_OBJECT_KEYWORDS if key in parameters]


def _build(name: str, args: argparse.Namespace, keywords: dict[str | None, dict[str, Any]]):
    """The schedule ``name`` with the command line's arguments, and its legend label."""
    entry = scheduler_entry(name)
    needs = _python_object_keywords(entry)
    if needs:
        what = "; ".join(f"`{key}` is {_PYTHON_OBJECT_KEYWORDS[key]}" for key in needs)
        raise ValueError(
            f"{entry.name} cannot be built from the command line: {what}. Build it in Python "
            f"(optlib.{entry.factory.__name__}(...)) and draw it with optlib.plot_schedule."
        )
    own = keywords.get(name, {})
    specific = {**keywords.get(None, {}), **own}
    standard = {}
    if entry.family != "torch":
        standard = {
            "num_warmup_steps": args.num_warmup_steps,
            "num_training_steps": args.num_training_steps,
        }
    schedule = get_scheduler(name, learning_rate=args.learning_rate, **standard, **specific)
    if not callable(schedule):
        raise TypeError(f"{name} is metric-driven: it has no fixed curve to plot")
    shown = {key: standard[key] for key in entry.forwards if key == "num_warmup_steps"}
    shown.update(own)
    settings = ", ".join(f"{key}={value!r}" for key, value in shown.items() if value is not None)
    return schedule, name + (f" ({settings})" if settings else "")


def _list(_: argparse.Namespace) -> int:
    for name in scheduler_names():
        entry = scheduler_entry(name)
        needs = _python_object_keywords(entry)
        note = f"  [Python only: {', '.join(needs)}]" if needs else ""
        print(f"{name:<36} {entry.reference}{note}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from optlib._plotting import plot_schedule

    keywords = _parse_keywords(args.kw)
    unknown_scopes = set(keywords) - {None} - set(args.names)
    if unknown_scopes:
        scopes = sorted(str(scope) for scope in unknown_scopes)
        raise ValueError(f"--kw is scoped to {scopes}, which are not plotted")
    built = [_build(name, args, keywords) for name in args.names]
    steps = args.steps
    if steps is None:
        steps = int(1.1 * args.num_training_steps) if args.num_training_steps else 1000
    plot_schedule(
        [schedule for schedule, _ in built],
        steps=steps,
        labels=[label for _, label in built],
        path=args.output,
        title=args.title,
        log_scale=args.log,
    )
    print(f"wrote {args.output}")
    return 0


def _describe(args: argparse.Namespace) -> int:
    import json

    from optlib._describe import describe
    from optlib._training_args import from_training_args

    with open(args.training_args, encoding="utf-8") as file:
        fields = json.load(file)
    if not isinstance(fields, dict):
        raise ValueError(
            f"{args.training_args} must hold a JSON object of TrainingArguments fields"
        )
    tx = from_training_args(fields, num_training_steps=args.num_training_steps)
    print(describe(tx))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m optlib", description="optlib learning-rate schedules."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser(
        "list", help="print every scheduler name with the reference it reproduces"
    )
    listing.set_defaults(run=_list)

    plot = commands.add_parser("plot", help="plot one or several schedules to an image")
    plot.add_argument("names", nargs="+", metavar="NAME", help="scheduler name(s), see `list`")
    plot.add_argument("--learning-rate", type=float, default=1.0, help="base lr (default 1.0)")
    plot.add_argument("--num-warmup-steps", type=int, default=None, help="HF-convention names")
    plot.add_argument("--num-training-steps", type=int, default=None, help="HF-convention names")
    plot.add_argument(
        "--kw",
        action="append",
        default=[],
        metavar="[NAME:]KEY=VALUE",
        help="a scheduler keyword (Python literal); NAME: limits it to one name; repeatable",
    )
    plot.add_argument(
        "--steps",
        type=int,
        default=None,
        help="number of steps drawn (default: 1.1 * num_training_steps, else 1000)",
    )
    plot.add_argument("--log", action="store_true", help="learning rate on a log scale")
    plot.add_argument("--title", default=None, help="plot title")
    plot.add_argument("-o", "--output", required=True, help="image path, e.g. schedules.png")
    plot.set_defaults(run=_plot)

    described = commands.add_parser(
        "describe", help="print the optax chain Hugging Face Trainer would build, in words"
    )
    described.add_argument(
        "--training-args",
        required=True,
        metavar="JSON",
        help="a JSON file of TrainingArguments fields (e.g. args.to_json_string())",
    )
    described.add_argument(
        "--num-training-steps",
        type=int,
        default=None,
        help="optimizer steps (default: max_steps from the file)",
    )
    described.set_defaults(run=_describe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (2 for a usage or argument error)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, ImportError, OSError) as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
