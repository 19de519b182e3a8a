"""pytest plugin for the nbval run: sum cell times per notebook and print the slowest notebooks."""

from __future__ import annotations

from collections import defaultdict

_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report) -> None:  # noqa: ANN001 (pytest hook signature)
    if report.when == "call":
        _seconds[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    if not _seconds:
        return
    terminalreporter.section("slowest notebooks (quick profile)")
    for notebook, seconds in sorted(_seconds.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{seconds:8.1f} s  {notebook}")
    terminalreporter.write_line(f"{sum(_seconds.values()):8.1f} s  total")
