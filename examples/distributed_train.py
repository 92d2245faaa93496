"""The sharded training of ``sharded_train.py`` as 2 processes on localhost (jax.distributed).

Each process owns 4 CPU devices; ``jax.distributed.initialize`` joins them into one global
2x4 mesh of 8 devices (``"data"`` across the processes, ``"model"`` within each one), and
the very same jitted step runs on it: parameters, batches and optimizer state are global
``jax.Array``s built with ``jax.make_array_from_callback`` from host data every process holds,
and the optimizer state is created in place with
``jax.jit(tx.init, out_shardings=optlib.state_shardings(tx, params, param_shardings))``.
CPU collectives go through gloo (``jax_cpu_collectives_implementation``); on a TPU/GPU
cluster, drop the CPU settings and call ``jax.distributed.initialize()`` as the platform
documents.

Run the launcher (starts both workers on 127.0.0.1, checks they agree, and compares their
result with the same training in one process on 8 devices):

    python examples/distributed_train.py [--optimizer adamw] [--steps 20] [--zero1]

``--zero1``: the parameters are replicated over ``"data"`` (split over ``"model"`` only) and
the optimizer state is split over ``"data"`` as well
(``optlib.state_shardings(..., shard_state_over="data")``, ZeRO-1): each process then holds
half of the statistics.

or start each worker yourself:

    python examples/distributed_train.py --worker --process-id 0 --coordinator 127.0.0.1:12345
    python examples/distributed_train.py --worker --process-id 1 --coordinator 127.0.0.1:12345

Each worker prints ``process <i>/<n>: final_loss=<float>``. The collectives' own per-rank
messages (gloo's "Rank 0 is connected to 1 peer ranks" lines, written by C++ to standard
output) are silenced unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

NUM_PROCESSES = 2
LOCAL_DEVICES = 4
FINAL_LOSS = re.compile(r"process (\d+)/(\d+):.*final_loss=(\S+)")


def free_port() -> int:
    """A TCP port free on the loopback interface (the coordinator's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_environment() -> dict[str, str]:
    """This environment with CPU-only jax, ``LOCAL_DEVICES`` devices, and our import path."""
    env = dict(os.environ)
    flags = [
        flag
        for flag in env.get("XLA_FLAGS", "").split()
        if not flag.startswith("--xla_force_host_platform_device_count")
    ]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={LOCAL_DEVICES}"])
    env["JAX_PLATFORMS"] = "cpu"
    # The workers import what this process can import (optlib from a checkout, too).
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    return env


def launch(
    optimizer: str, steps: int, timeout: float = 120.0, zero1: bool = False
) -> list[tuple[float, str]]:
    """Runs ``NUM_PROCESSES`` workers on localhost; returns each one's (final loss, stdout).

    Raises:
      RuntimeError: a worker failed, timed out, or printed no final loss.
    """
    coordinator = f"127.0.0.1:{free_port()}"
    env = worker_environment()
    # Output goes to files, not pipes: a worker blocked on a full pipe would stall the other
    # one inside a collective.
    logs = [
        (tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(NUM_PROCESSES)
    ]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--worker",
                "--process-id",
                str(index),
                "--num-processes",
                str(NUM_PROCESSES),
                "--coordinator",
                coordinator,
                "--optimizer",
                optimizer,
                "--steps",
                str(steps),
                *(["--zero1"] if zero1 else []),
            ],
            env=env,
            stdout=stdout,
            stderr=stderr,
            text=True,
        )
        for index, (stdout, stderr) in enumerate(logs)
    ]
    deadline = time.monotonic() + timeout
    try:
        for worker in workers:
            worker.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"a worker did not finish within {timeout} s") from error
    finally:
        for worker in workers:  # only the processes started here
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    outputs = []
    for stdout, stderr in logs:
        outputs.append(tuple(_read(log) for log in (stdout, stderr)))
    results = []
    for worker, (stdout, stderr) in zip(workers, outputs):
        found = FINAL_LOSS.findall(stdout)
        if worker.returncode != 0 or not found:
            raise RuntimeError(
                f"worker exited with {worker.returncode}:\n{stdout}\n{stderr[-4000:]}"
            )
        results.append((float(found[-1][2]), stdout))
    return results


def _read(log) -> str:
    log.seek(0)
    text = log.read()
    log.close()
    return text


def single_process_loss(optimizer: str, steps: int, zero1: bool, timeout: float = 120.0) -> float:
    """The final loss of the same training in one process on 8 CPU devices
    (``sharded_train.py``, run in a fresh interpreter so that its device count is its own)."""
    env = worker_environment()
    env["XLA_FLAGS"] = env["XLA_FLAGS"].replace(
        f"device_count={LOCAL_DEVICES}", f"device_count={NUM_PROCESSES * LOCAL_DEVICES}"
    )
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sharded_train.py")
    command = [sys.executable, script, "--optimizer", optimizer, "--steps", str(steps), "--quiet"]
    done = subprocess.run(
        [*command, *(["--zero1"] if zero1 else [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    found = re.findall(r"final_loss=(\S+)", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"the single-process run failed:\n{done.stdout}\n{done.stderr[-4000:]}")
    return float(found[-1])


def _quiet_stdout():
    """Sends file descriptor 1 (where gloo's C++ code prints) to /dev/null; returns a text
    stream on the original standard output for this process's own lines."""
    original = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return os.fdopen(original, "w")


def run_worker(args: argparse.Namespace) -> float:
    """One process of the distributed run: join the cluster, train on the global mesh."""
    out = sys.stdout if args.verbose else _quiet_stdout()
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
    # Imported after initialize: the example module builds nothing at import time, but its
    # helpers ask jax for the (now global) devices.
    import sharded_train as example

    mesh = example.make_mesh(jax.devices())
    tx = example.OPTIMIZERS[args.optimizer]()
    _, _, history = example.train_sharded(
        tx, mesh, example.init_params(), example.make_batches(args.steps), zero1=args.zero1
    )
    # history["lr"]: optlib.current_learning_rate of each step, computed inside the step.
    print(
        f"process {jax.process_index()}/{jax.process_count()}: "
        f"{jax.local_device_count()} local of {jax.device_count()} devices, "
        f"last lr {history['lr'][-1]:.3e}, final_loss={float(history['loss'][-1])!r}",
        file=out,
        flush=True,
    )
    jax.distributed.shutdown()
    return float(history["loss"][-1])


def main(argv: Sequence[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="adafactor")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--worker", action="store_true", help="run one process of the cluster")
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--num-processes", type=int, default=NUM_PROCESSES)
    parser.add_argument("--coordinator", default=None, help="host:port of process 0")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--zero1", action="store_true", help="replicated params, ZeRO-1 state")
    parser.add_argument("--verbose", action="store_true", help="keep the collectives' messages")
    args = parser.parse_args(argv)

    if args.worker:
        if args.coordinator is None:
            parser.error("--worker needs --coordinator host:port")
        return [run_worker(args)]
    results = launch(args.optimizer, args.steps, args.timeout, args.zero1)
    for _, stdout in results:
        print(stdout.strip())
    losses = [loss for loss, _ in results]
    if len(set(losses)) != 1:
        raise SystemExit(f"the processes disagree: {losses}")
    reference = single_process_loss(args.optimizer, args.steps, args.zero1, args.timeout)
    difference = abs(losses[0] - reference)
    print(
        f"{NUM_PROCESSES} processes: final_loss={losses[0]!r}; 1 process on "
        f"{NUM_PROCESSES * LOCAL_DEVICES} devices: final_loss={reference!r}; "
        f"|difference| = {difference:.3g}" + (" (ZeRO-1)" if args.zero1 else "")
    )
    if difference > 1e-6 * abs(reference):
        raise SystemExit("the distributed run does not match the single-process run")
    return losses


if __name__ == "__main__":
    main()
