"""Command line: list the scheduler names, or plot schedules to an image.

    python -m optlib list
    python -m optlib plot cosine --learning-rate 3e-4 --num-warmup-steps 100 \\
        --num-training-steps 1000 --kw num_cycles=1.5 -o cosine.png

Several names draw several curves on one plot. ``--kw key=value`` goes to every name;
``--kw NAME:key=value`` only to ``NAME``. Values are Python literals (``3``, ``0.5``,
``"cosine"``, ``[30, 60]``), anything else is taken as a string. ``--num-warmup-steps`` and
``--num-training-steps`` follow Hugging Face's ``get_scheduler`` and go to the HF-convention
names only (torch names take their own keywords, e.g. ``--kw OneCycleLR:total_steps=1000``).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from typing import Any

from optlib._registry import get_scheduler, scheduler_entry, scheduler_names


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


def _build(name: str, args: argparse.Namespace, keywords: dict[str | None, dict[str, Any]]):
    """The schedule ``name`` with the command line's arguments, and its legend label."""
    entry = scheduler_entry(name)
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
    label = name + (" (" + ", ".join(f"{k}={v!r}" for k, v in own.items()) + ")" if own else "")
    return schedule, label


def _list(_: argparse.Namespace) -> int:
    for name in scheduler_names():
        entry = scheduler_entry(name)
        print(f"{name:<36} {entry.family:<7} {entry.reference}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from optlib._plotting import plot_schedule

    keywords = _parse_keywords(args.kw)
    unknown_scopes = set(keywords) - {None} - set(args.names)
    if unknown_scopes:
        raise ValueError(f"--kw is scoped to {sorted(unknown_scopes)}, which are not plotted")
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
    )
    print(f"wrote {args.output}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m optlib", description="optlib learning-rate schedules."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="print every scheduler name with its reference")
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
    plot.add_argument("--title", default=None, help="plot title")
    plot.add_argument("-o", "--output", required=True, help="image path, e.g. schedules.png")
    plot.set_defaults(run=_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (2 for a usage or argument error)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, ImportError) as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
