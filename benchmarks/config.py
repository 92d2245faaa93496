"""Problem sizes and repetition counts of the three modes: full, quick and smoke.

* ``full``: the issue's problems, one 4096 x 4096 matrix and a transformer-like tree of 148
  leaves and ~50M parameters (< 10 minutes on a 2-core CPU).
* ``quick``: the same kinds of problem, smaller (2048 x 2048; ~5.7M parameters, still 148
  leaves) (< 2 minutes).
* ``smoke``: tiny problems and a subset of optimizers and schedules, for the CI test that runs
  the command end to end; its numbers mean nothing.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mode:
    """Sizes and repetitions of one benchmark mode.

    Attributes:
      name: ``"full"``, ``"quick"`` or ``"smoke"``.
      matrix: side of the square matrix problem.
      width: model width of the transformer-like tree (``d_model``).
      layers: number of transformer blocks (12 leaves each).
      vocab: rows of the token embedding.
      context: rows of the position embedding.
      warmup: untimed steps before timing (the first one compiles).
      steps: timed steps per JAX implementation (the median is reported).
      torch_steps: timed steps of torch (slowest by far; the first rounds only).
      compile_leaves: tree sizes of the compile-time suite.
      compile_optimizers: twins whose compile time is measured.
      compile_repeats: compilations per (size, optimizer, implementation); the best is kept.
      schedule_steps: optimizer steps per jitted loop in the schedule suite.
      schedule_repeats: timed loops per schedule.
      optimizers: twins measured in the update suite (None: all).
      schedules: schedule names measured (None: every registered step-based one).
      metric_problems: problems of the metric-driven suite.
      stack: ``(count, side)`` of the stack of matrices timed for the twins that ask for it
        (Muon: ``count`` matrices of ``side x side``).
    """

    name: str
    matrix: int
    width: int
    layers: int
    vocab: int
    context: int
    warmup: int
    steps: int
    torch_steps: int
    compile_leaves: tuple[int, ...]
    compile_optimizers: tuple[str, ...]
    compile_repeats: tuple[int, ...]
    schedule_steps: int
    schedule_repeats: int
    optimizers: tuple[str, ...] | None = None
    schedules: tuple[str, ...] | None = None
    metric_problems: tuple[str, ...] = ("matrix", "tree")
    stack: tuple[int, int] = (8, 1024)


FULL = Mode(
    name="full",
    matrix=4096,
    width=576,
    layers=12,
    vocab=4096,
    context=512,
    warmup=2,
    steps=20,
    torch_steps=10,
    compile_leaves=(10, 100, 1000),
    compile_optimizers=("adam", "sgd_momentum", "adafactor"),
    compile_repeats=(7, 7, 5),
    schedule_steps=4000,
    schedule_repeats=7,
)

QUICK = Mode(
    name="quick",
    matrix=2048,
    width=192,
    layers=12,
    vocab=2048,
    context=256,
    warmup=2,
    steps=15,
    torch_steps=8,
    compile_leaves=(10, 100, 1000),
    compile_optimizers=("sgd_momentum",),
    compile_repeats=(3, 3, 1),
    schedule_steps=1000,
    schedule_repeats=5,
    stack=(4, 1024),
)

SMOKE = Mode(
    name="smoke",
    matrix=128,
    width=32,
    layers=1,
    vocab=64,
    context=16,
    warmup=1,
    steps=5,
    torch_steps=3,
    compile_leaves=(10, 20, 40),
    compile_optimizers=("adam",),
    compile_repeats=(1, 1, 1),
    schedule_steps=200,
    schedule_repeats=3,
    optimizers=("adam", "sgd_momentum"),
    schedules=("StepLR", "OneCycleLR", "cosine"),
    metric_problems=("matrix",),
    stack=(2, 64),
)

MODES = {mode.name: mode for mode in (FULL, QUICK, SMOKE)}
