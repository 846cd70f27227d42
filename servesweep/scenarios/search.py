"""The options of the adaptive searches a scenario can ask for (`concurrency: auto`,
`request_rate: auto`, and over configurations `sweep: {search: auto}`). They are part of the
scenario's schema; servesweep/sweep/ladder.py and sweep/config_search.py run the searches with
them. Here, not in the sweep, so that the scenario schema imports nothing from the sweep (data
flows one way: scenarios -> sweep).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from servesweep.thresholds import KNEE_THRESHOLD, KV_FULL_FRAC


class LadderConfig(BaseModel):
    """Options of `concurrency: auto`."""

    model_config = ConfigDict(extra="forbid")

    max_concurrency: int = Field(256, ge=1)
    bisect_steps: int = Field(3, ge=0)
    knee_threshold: float = Field(KNEE_THRESHOLD, gt=0, lt=1)
    kv_full_frac: float = Field(KV_FULL_FRAC, gt=0, le=1)


class RateSearchConfig(BaseModel):
    """Options of the open-loop rate search."""

    model_config = ConfigDict(extra="forbid")

    start_rate: float = Field(1.0, gt=0)
    max_rate: float = Field(256.0, gt=0)
    rel_tol: float = Field(0.10, gt=0)
    bisect_steps: int = Field(6, ge=0)
    max_halvings: int = Field(6, ge=0)
    min_goodput_frac: float | None = Field(0.9, gt=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> "RateSearchConfig":
        if self.start_rate > self.max_rate:
            raise ValueError(f"start_rate {self.start_rate:g} is above max_rate {self.max_rate:g}")
        return self


class ConfigSearchConfig(BaseModel):
    """`sweep: {search: ...}`: how the sweep picks the configurations it starts. `grid` (the
    default): every one. `auto`: the config search (servesweep/sweep/config_search.py) starts
    the next configuration from what the finished ones measured and stops when the best cannot
    improve by more than the noise. `search: auto` is short for `search: {method: auto}`."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["grid", "auto"] = "grid"
    # Two configurations' goodputs differ beyond the noise when the gap exceeds the 95 % Welch
    # half-width of their repeats (load.repeats >= 2) or, without repeats, this fraction of the
    # better one: the run-to-run spread a single window has on the machine (see the README).
    noise_floor: float = Field(0.05, gt=0, lt=1)
    max_starts: int | None = Field(None, ge=1)  # stop after this many server starts, best so far

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        return {"method": data} if isinstance(data, str) else data
