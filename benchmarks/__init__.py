"""optlib benchmarks: speed, memory and compile time against optax, torch and the copy roofline.

Run from the repository root::

    python -m benchmarks            # full suite (~10 minutes on a 2-core CPU)
    python -m benchmarks --quick    # smaller problems (< 2 minutes)
    python benchmarks/run.py --quick --device gpu

Writes ``benchmarks/results/latest.{json,md,png}`` (``latest_gpu.*`` for a GPU run). The
suites live in ``benchmarks/suites/``; ``benchmarks/run.py`` is the command line.

This package imports nothing heavy at import time, so that ``--device`` can pick the JAX
platform before JAX starts.
"""
