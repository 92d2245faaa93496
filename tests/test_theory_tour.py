"""examples/theory_tour.py runs end to end (small budgets), prints its table and writes a PNG."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the tour plots with matplotlib (examples extra)")

TOUR_PATH = Path(__file__).resolve().parents[1] / "examples" / "theory_tour.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tour():
    """``examples/theory_tour.py`` imported as a module (examples are not a package)."""
    name = "optlib_example_theory_tour"
    spec = importlib.util.spec_from_file_location(name, TOUR_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


def table_rows(output: str, labels: list[str]) -> dict[str, list[tuple[str, float]]]:
    """``{label: [(iterations, final f - f*) per problem]}`` from the printed table.

    ``iterations`` is a number, or ``"> budget"`` when the tolerance was not reached.
    """
    rows = {}
    for line in output.splitlines():
        label, *cells = [part.strip() for part in line.split("|")]
        if label in labels:
            assert label not in rows, f"{label} printed twice"
            rows[label] = [(cell.rsplit(maxsplit=1)[0], float(cell.split()[-1])) for cell in cells]
    return rows


def test_tour_prints_all_twelve_optimizers_and_writes_a_png(tour, tmp_path, capsys):
    output = tmp_path / "plots" / "tour.png"
    steps, second_order_steps = 150, 40

    assert (
        tour.main(
            [
                "-o",
                str(output),
                "--steps",
                str(steps),
                "--second-order-steps",
                str(second_order_steps),
            ]
        )
        == 0
    )

    printed = capsys.readouterr().out
    rows = table_rows(printed, tour.LABELS)
    assert len(tour.LABELS) == 12
    assert sorted(rows) == sorted(tour.LABELS)
    for label, cells in rows.items():
        assert len(cells) == 2, (label, cells)  # Rosenbrock, least squares
        budget = second_order_steps if label in ("Newton", "BFGS") else steps
        for iterations, final_gap in cells:
            assert iterations == f"> {budget}" or 0 <= int(iterations) <= budget, iterations
            assert final_gap >= 0
    for label in ("Newton", "BFGS"):  # they reach the tolerance on both problems
        assert all(iterations.isdigit() for iterations, _ in rows[label]), rows[label]

    import matplotlib.image

    assert output.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(output)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_tour_rejects_an_empty_budget(tour):
    with pytest.raises(SystemExit):
        tour.main(["--steps", "0"])
