"""pytest plugin for the nbval run: a patient wait for each cell's last messages; the slowest notebooks.

nbval 0.11 waits a hard-coded 5 s for each message the kernel sends after a cell's reply (nbval issues #136,
#231). On a busy 2-core machine the kernel's closing "idle" message was seen to take longer, failing a cell that
only defines functions. `OUTPUT_TIMEOUT_S` gives it a minute; a kernel that never answers still fails.
"""

from __future__ import annotations

from collections import defaultdict

OUTPUT_TIMEOUT_S = 60
_seconds: dict[str, float] = defaultdict(float)


def pytest_collection_modifyitems(items) -> None:  # noqa: ANN001 (pytest hook signature)
    for item in items:
        if hasattr(item, "output_timeout"):  # an nbval notebook cell
            item.output_timeout = OUTPUT_TIMEOUT_S


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
