"""`assertions.json`: the CI thresholds (`--assert`, a scenario's `assert:`) checked after a run or a
sweep, one row per level x assertion as the console table shows it (servesweep.reports.assertions).

Version history (`schema_version`):
  1  files written before the field existed are version 1: the same fields.
"""

from __future__ import annotations

from pathlib import Path

from servesweep.results.io import OpenModel, write_json

ASSERTIONS_FILE = "assertions.json"
ASSERTIONS_SCHEMA_VERSION = 1


class AssertionsRecord(OpenModel):
    schema_version: int = ASSERTIONS_SCHEMA_VERSION
    passed: bool
    # level, assertion, actual value, PASS or "FAIL[: why]": the console table's columns and words
    results: list[dict[str, str]]


def write_assertions(out: Path, passed: bool, header: list[str], rows: list[list[str]]) -> None:
    record = AssertionsRecord(schema_version=ASSERTIONS_SCHEMA_VERSION, passed=passed,
                              results=[dict(zip(header, row)) for row in rows])
    write_json(out / ASSERTIONS_FILE, record.to_file())
