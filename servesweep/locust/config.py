"""What a Locust process needs to know about the servesweep run, passed on Locust's command line.

`servesweep locust` validates everything first (workload, scenario, target, tokenizer), then hands
Locust one option, `--servesweep-config JSON`. Locust forwards custom options from the master to
its workers with every spawn message, so a worker started with only `--worker --master-host H`
learns the workload from the master.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from servesweep.loadgen.stats import SLO
from servesweep.loadgen.workload import Workload

CONFIG_OPTION = "--servesweep-config"
# Set on the master at test start (wall-clock seconds) and forwarded to workers with the spawn
# message: every process measures from the same instant, so records of all workers line up with
# each other and with the server telemetry the master samples.
EPOCH_OPTION = "servesweep_epoch"
# A worker's records are numbered index, index + MAX_WORKERS, ...: unique over a run.
MAX_WORKERS = 4096


class LocustRunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    base_url: str
    model: str
    max_model_len: int | None = None
    workload: Workload = Field(default_factory=Workload)
    out_dir: Path
    # A model directory holding tokenizer.json, "server" for the server's /tokenize, or None
    # (then prompts come from the workload's dataset).
    tokenizer: str | None = None
    slo: SLO | None = None
    keep_text: bool = False
    # Prompts built per process before the first request and cycled; a run that sends more
    # requests than this reuses them (flagged as prompt_pool_wrapped).
    prompt_pool: int = Field(default=1024, ge=1, le=100_000)
    scenario: str | None = None
    telemetry_interval_s: float = Field(default=0.5, gt=0)
    # Headless runs: stop after this long. servesweep ends the test itself (stop, wait for every
    # worker's last report, then quit) rather than Locust's --run-time, which quits at once and
    # gives the workers' last reports half a second to arrive.
    run_time_s: float | None = Field(default=None, gt=0)

    def to_option(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_option(cls, text: str) -> "LocustRunConfig":
        return cls.model_validate_json(text)


_DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """Seconds in Locust's run-time format: 90, 90s, 5m, 1h30m, 1h30m10s (decimals allowed)."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groupdict().values()):
        raise ValueError(f"run time {text!r}: expected e.g. 60s, 5m, 1h30m or a number of seconds")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    seconds = parts.get("h", 0.0) * 3600 + parts.get("m", 0.0) * 60 + parts.get("s", 0.0)
    if seconds <= 0:
        raise ValueError(f"run time {text!r} must be more than 0 s")
    return seconds
