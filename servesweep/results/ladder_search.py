"""`configs/<config>/search.json`: a configuration's adaptive load search (`concurrency: auto`,
the concurrency ladder; or the open-loop request-rate search): the rungs it ran, why each ran,
what each measured and which limits it broke, where it stopped and what it recommends. Not the
results directory's own `search.json` (a config search over the grid: results.config_search).

The sweep writes it (servesweep.sweep.sweep_runner, from the search's `to_model()`, once the search
stops or is cut); the report (its load-search section, the repeats section, the recommendation's
uncertainty) and the config search read it through `LadderSearch`.

Version history (`schema_version`):
  1  files written before the field existed (no `schema_version`) are version 1: the same fields.
     The oldest lack `uncertainty` and the rungs' `uncertain`, and their observations lack `n`,
     `ci95` and `samples` (written before repeats, issue 25).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


from servesweep.results.io import OpenModel, read_result_file, write_json

LADDER_SEARCH_FILE = "search.json"  # under configs/<config>/
LADDER_SEARCH_SCHEMA_VERSION = 1

KIND_CONCURRENCY = "concurrency"  # the closed-loop ladder
KIND_REQUEST_RATE = "request_rate"  # the open-loop rate search


class Rung(OpenModel):
    """One level the search ran. Its level is under the search's kind: `concurrency` or
    `request_rate`. `observation` is servesweep.sweep.observation.Observation's to_dict."""

    concurrency: int | None = None
    request_rate: float | int | None = None
    reason: str | None = None  # double, halve, bisect knee, bisect slo, bisect
    limits: list[str] = []  # the stop-reason constants it broke, in order of precedence
    detail: list[str] = []
    uncertain: list[str] = []  # SLO verdicts whose interval straddles the limit
    observation: dict[str, Any] = {}

    def level(self, kind: str | None) -> int | float | None:
        """Where it ran: the concurrency or the request rate, as the search's kind says."""
        return self.request_rate if kind == KIND_REQUEST_RATE else self.concurrency


class NoiseAware(OpenModel):
    """The knee's noise-aware throughputs (with repeats): the rungs whose gain was inside the noise."""

    output_tok_s: list[float | int] = []
    flat_within_noise: list[float | int] = []
    rule: str | None = None


class Knee(OpenModel):
    """analysis.knee.find_knee over the rungs (concurrency as the batch size)."""

    knee_batch_size: int | float | None = None
    knee_reached: bool = False
    threshold: float | int | None = None
    segments: list[dict[str, Any]] = []
    noise_aware: NoiseAware | None = None


class Uncertainty(OpenModel):
    """The verdicts left open at the repeat cap and the repeats behind the rungs; `note` is one line."""

    repeats: dict[str, Any] | None = None  # min, max, cap
    uncertain_rungs: dict[str, list[str]] = {}
    note: str | None = None
    recommended_ci95: dict[str, list[float | int]] | None = None  # the ladder's recommended rung, with repeats


class LadderSearch(OpenModel):
    """`configs/<config>/search.json`. The concurrency ladder fills `recommended_concurrency`,
    `knee` and `slo_edge`; the rate search `best_rate` and `lowest_failing_rate`."""

    schema_version: int = LADDER_SEARCH_SCHEMA_VERSION
    kind: str | None = None  # KIND_CONCURRENCY or KIND_REQUEST_RATE
    config: dict[str, Any] | None = None  # the search's options (LadderConfig, RateSearchConfig)
    slo: dict[str, Any] | None = None
    stop_reason: str | None = None  # servesweep.sweep.ladder's STOP_*; None while it runs
    done: bool = False
    recommended_concurrency: int | None = None
    knee: Knee | None = None
    slo_edge: dict[str, Any] | None = None  # highest_met, lowest_broken
    best_rate: float | int | None = None
    lowest_failing_rate: float | int | None = None
    uncertainty: Uncertainty | None = None
    rungs: list[Rung] = []

    @property
    def ceiling(self) -> Any:
        """The ladder's ceiling: its options' max_concurrency (min of the scenario's and max_num_seqs)."""
        return (self.config or {}).get("max_concurrency")

    @property
    def recommended(self) -> int | float | None:
        """What it recommends: the concurrency (ladder) or the best rate (rate search)."""
        if "recommended_concurrency" in self.model_fields_set:
            return self.recommended_concurrency
        return self.best_rate

    def flat_within_noise(self) -> list[float | int]:
        """The rungs whose gain was inside the noise (taken as flat for the knee); [] without repeats."""
        noise = self.knee.noise_aware if self.knee is not None else None
        return list(noise.flat_within_noise) if noise is not None else []

    def note(self) -> str | None:
        return self.uncertainty.note if self.uncertainty is not None else None


def build_ladder_search(search: dict[str, Any]) -> LadderSearch:
    """The file's model from a search's to_dict (servesweep.sweep.ladder), with the schema version."""
    return LadderSearch.model_validate({"schema_version": LADDER_SEARCH_SCHEMA_VERSION, **search})


def ladder_search_path(config_dir: Path) -> Path:
    return config_dir / LADDER_SEARCH_FILE


def write_ladder_search(config_dir: Path, search: LadderSearch) -> None:
    write_json(ladder_search_path(config_dir), search.to_file())


def read_ladder_search(config_dir: Path) -> LadderSearch | None:
    """A configuration's search.json (config_dir = <results>/configs/<config>), or None when its
    levels were fixed."""
    path = ladder_search_path(config_dir)
    return read_result_file(path, LadderSearch, LADDER_SEARCH_SCHEMA_VERSION, "delete it and run the same `servesweep sweep` again to rebuild it (finished points are kept)") if path.exists() else None


def read_ladder_searches(out_dir: Path) -> list[tuple[str, LadderSearch]]:
    """(configuration label, its search) for every configuration of a results directory that ran
    an adaptive search, in label order."""
    out = []
    for path in sorted(out_dir.glob(f"configs/*/{LADDER_SEARCH_FILE}")):
        out.append((path.parent.name, read_result_file(path, LadderSearch, LADDER_SEARCH_SCHEMA_VERSION, "delete it and run the same `servesweep sweep` again to rebuild it (finished points are kept)")))
    return out
