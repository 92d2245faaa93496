"""The benchmark suites; each ``run(context) -> dict`` adds one section to the results."""
