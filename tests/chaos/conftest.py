"""The chaos suite's report: rows collected by the tests (tests/chaos/support.py REPORT) are
printed as a table at the end of the run and written to build/chaos-report.json.

The ``stack`` and ``env`` fixtures come from tests/conftest.py and are not redefined here."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.chaos.support import NOTES, REPORT, SEED, format_table, write_report


def pytest_configure(config: pytest.Config) -> None:
    # Harmless if pyproject registers the marker as well; keeps `filterwarnings = error` happy.
    config.addinivalue_line("markers", "chaos: fault injection on the real local stack (kill -9, restarts, …)")


# Set for every worker the chaos tests start (Env.worker_env copies os.environ; the harness's own
# settings still win): thread dumps on SIGABRT (see support.stop_all), and no operations endpoint
# unless the harness assigns one (several workers on one host would fight for the default port).
WORKER_DEFAULTS = {"PYTHONFAULTHANDLER": "1", "ICEFEED_HTTP_PORT": "0"}


@pytest.fixture(scope="package", autouse=True)
def _worker_defaults() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in WORKER_DEFAULTS}
    for key, value in WORKER_DEFAULTS.items():
        os.environ.setdefault(key, value)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    if not REPORT:
        return
    path = write_report(REPORT)
    terminalreporter.write_sep("=", f"icefeed chaos report (seed {SEED})")
    for line in format_table(REPORT):
        terminalreporter.write_line(line)
    for note in NOTES:
        terminalreporter.write_line(f"  {note}")
    terminalreporter.write_line(f"written to {path}")
