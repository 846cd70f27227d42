"""`report-inputs.json`: the other sweeps a report of a results directory was last made with
(`--quality-from`, `--measured`), as paths relative to that directory, so that a later
`servesweep report DIR`, `capacity` or the verification's re-analysis keeps them and the folders
can move together (e.g. into examples/).

servesweep.analysis.recommend writes it (store_report_inputs, through `write_report_inputs`)
and reads it back through `ReportInputs` (stored_report_inputs, which resolves the paths and names
the file when one no longer leads to a directory).

Version history (`schema_version`):
  1  files written before the field existed (no `schema_version`) are version 1: the same fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import field_validator

from servesweep.results.io import OpenModel, write_json

REPORT_INPUTS_FILE = "report-inputs.json"
REPORT_INPUTS_SCHEMA_VERSION = 1


class ReportInputs(OpenModel):
    """quality_from  the `--quality-from` sweep, relative to the results directory; null for none
    measured      the `--measured` sweeps (other SKUs), relative to it; a null is read as none"""

    schema_version: int = REPORT_INPUTS_SCHEMA_VERSION
    quality_from: str | None = None
    measured: list[str] = []

    @field_validator("measured", mode="before")
    @classmethod
    def _null_is_none(cls, value: object) -> object:
        return [] if value is None else value


def build_report_inputs(quality_from: str | None, measured: Sequence[str]) -> ReportInputs:
    return ReportInputs(schema_version=REPORT_INPUTS_SCHEMA_VERSION, quality_from=quality_from,
                        measured=list(measured))


def write_report_inputs(out_dir: Path, inputs: ReportInputs) -> Path:
    path = out_dir / REPORT_INPUTS_FILE
    write_json(path, inputs.to_file())
    return path
