"""What every suite needs: the mode, the device, the problems (built once), and a logger."""

from __future__ import annotations

import dataclasses
import functools
import sys
import time

from benchmarks.config import Mode
from benchmarks.problems import Problem, matrix_problem, tree_problem


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
    def problems(self) -> list[Problem]:
        mode = self.mode
        return [
            matrix_problem(mode.matrix),
            tree_problem(mode.width, mode.layers, mode.vocab, mode.context),
        ]

    def log(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)
