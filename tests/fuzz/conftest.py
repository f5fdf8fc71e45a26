"""The fuzz modules' summary: how many answers were checked, by status, and with
THREADSVC_FUZZ_KEEP_GOING=1 every bad answer recorded (tests/fuzz/checks.py)."""

from __future__ import annotations

from typing import Any

from tests.fuzz.checks import ANSWERS, FINDINGS, KNOWN


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if ANSWERS:
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(ANSWERS.items()))
        terminalreporter.write_line(f"fuzz: {sum(ANSWERS.values())} answers checked ({statuses})")
    for test, n in sorted(KNOWN.items()):
        terminalreporter.write_line(
            f"fuzz: {n} answers showed a known bug, tolerated (tests/fuzz/test_findings.py::{test})"
        )
    if FINDINGS:
        terminalreporter.write_sep("=", f"fuzz: {len(FINDINGS)} bad answers (keep-going mode)")
        for finding in FINDINGS:
            terminalreporter.write_line(finding[:2000])
