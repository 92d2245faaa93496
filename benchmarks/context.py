"""What every suite needs: the mode, the device, the problems (built once), and a logger."""

from __future__ import annotations

import dataclasses
import functools
import sys
import time

from benchmarks.config import Mode
from benchmarks.problems import Problem, matrix_problem, matrix_stack_problem, tree_problem
from benchmarks.twins import TWINS, Twin


@dataclasses.dataclass
class Context:
    """Shared settings of one benchmark run.

    Attributes:
      mode: sizes and repetitions.
      platform: JAX's platform (``"cpu"``, ``"gpu"``, ...).
      torch_device: where torch runs beside JAX (``"cpu"``, ``"cuda"``), or None when torch
        cannot run on JAX's device (then the torch column is left out).
      started: ``time.perf_counter()`` at the start of the run.
    """

    mode: Mode
    platform: str
    torch_device: str | None
    started: float = dataclasses.field(default_factory=time.perf_counter)

    @functools.cached_property
    def twins(self) -> list[Twin]:
        """The twins of the update suite: the mode's (all of them in full and quick mode)."""
        wanted = self.mode.optimizers
        return [twin for twin in TWINS if wanted is None or twin.name in wanted]

    @functools.cached_property
    def problems(self) -> list[Problem]:
        """The matrix and the tree, and the stack of matrices when a twin is timed on it."""
        mode = self.mode
        problems = [
            matrix_problem(mode.matrix),
            tree_problem(mode.width, mode.layers, mode.vocab, mode.context),
        ]
        if any("stack" in twin.problems for twin in self.twins):
            problems.append(matrix_stack_problem(*mode.stack))
        return problems

    def log(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)
