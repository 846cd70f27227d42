"""`search.json` in a sweep's results directory: what a config search (`sweep: {search: auto}`)
did and why (not `configs/<config>/search.json`, a configuration's load ladder).

The sweep writes it (servesweep/sweep/config_search.py builds it, after every step, so a cut
search leaves its record up to the last finished configuration); the report reads it.

Version history (`schema_version`):
  1  the first.

Every configuration of the grid appears once: in `steps` (started, with why it was chosen and
what it measured) or in `skipped` (never started, with the rule that ruled it out and why).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from servesweep.results.io import OpenModel, read_result_file

CONFIG_SEARCH_SCHEMA_VERSION = 1
SEARCH_FILE = "search.json"

# Why the search ended (stable: written to results files).
STOP_CONVERGED = "converged"  # every neighbour of the best is measured or cannot beat it beyond the noise
STOP_MAX_STARTS = "max_starts"  # sweep.search.max_starts reached
STOP_NOTHING_FITS = "nothing_fits_budget"  # every configuration is over the VRAM budget
STOP_EXHAUSTED = "exhausted"  # no configuration left to start (and none met the limits)

# Why a configuration was not started.
SKIP_BUDGET = "budget"  # its memory estimate is over vram_budget_gib
SKIP_DOMINATED = "dominated"  # a measured configuration with a higher max_num_seqs already served its loads
SKIP_SAME_LADDER = "same_ladder"  # a higher max_num_seqs would run the ladder a measured one ran
SKIP_NOT_REACHED = "not_reached"  # not a neighbour of the best when the search stopped


class Measured(OpenModel):
    """What a configuration's ladder (or fixed levels) measured, reduced to the objective."""

    goodput: float | None  # the objective: highest request goodput (req/s) over its clean levels
    level: str | None  # where: the level label of that point
    output_tok_s: float | None
    goodput_ci95_half: float | None = None  # with repeats: the 95 % half-width at that level
    ladder_stop: str | None = None  # the load ladder's stop reason
    ladder_ceiling: int | None = None  # the ladder's ceiling: min(its max_concurrency, max_num_seqs)
    failed: str | None = None  # the server did not start / died before any clean level: the cause


class Axis(OpenModel):
    name: str  # the server configuration field (max_batch_size, max_num_tokens, precision, ...)
    values: list[str | int | float | None]
    kind: Literal["batch_cap", "ordinal", "categorical"]
    knob: str | None = None  # the server's own name of the field (vLLM: max_num_seqs, max_num_batched_tokens)


class Step(OpenModel):
    n: int
    config: str
    why: str
    measured: Measured | None = None  # None while it runs (a cut search)
    best_after: str | None = None  # the highest goodput measured once this step was
    moved: bool = False  # it beat the best beyond the noise: the search's next moves go from here
    verdict: str | None = None  # how it compared with the best before it, in words
    resumed: bool = False  # measured by an earlier invocation of the same sweep: no start now
    wall_s: float | None = None


class Skipped(OpenModel):
    config: str
    rule: str  # SKIP_* above
    why: str


class Best(OpenModel):
    config: str
    goodput: float
    level: str | None
    output_tok_s: float | None
    goodput_ci95_half: float | None = None


class ConfigSearchRecord(OpenModel):
    schema_version: int = CONFIG_SEARCH_SCHEMA_VERSION
    method: str = "auto"
    objective: str
    noise_rule: str
    noise_floor: float
    vram_budget_gib: float | None
    axes: list[Axis]
    grid_size: int
    starts: int  # configurations started (each at least one server start)
    best: Best | None  # the highest goodput measured
    # Where the moves went from: the last configuration that beat its predecessor beyond the noise;
    # `converged` means no unmeasured neighbour of it is left. Another configuration within the
    # noise of it may read higher and be `best`.
    anchor: str | None = None
    no_best: str | None = None  # why there is none, when there is none
    stop_reason: str | None  # STOP_* above; None while running
    stop_detail: str | None
    steps: list[Step]
    skipped: list[Skipped]
    wall_s: float


def read_search_record(out_dir: Path) -> ConfigSearchRecord | None:
    """A sweep's search.json, or None when the sweep ran its grid."""
    path = out_dir / SEARCH_FILE
    if not path.exists():
        return None
    return read_result_file(path, ConfigSearchRecord, CONFIG_SEARCH_SCHEMA_VERSION, "delete it and run the same `servesweep sweep` again to rebuild it (finished points are kept)")
