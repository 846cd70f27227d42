"""Arrival processes: how requests are spaced in time at one load level.

Closed loop: a fixed number of users, each sending its next request when the last finishes.
Open loop: requests arrive on a schedule whatever the server does, with inter-arrival gaps
  - constant:  1 / rate
  - poisson:   exponential with mean 1 / rate
  - gamma:     shape = burstiness, scale = 1 / (rate * burstiness); the mean gap stays 1 / rate,
               burstiness < 1 is burstier than Poisson, > 1 more regular, 1 is Poisson
               (the definition `vllm bench serve` uses).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, model_validator

# "trace": requests at a replayed trace's offsets (servesweep.loadgen.traces); "sessions": multi-turn
# conversations, each waiting for its answer and a think time (servesweep.loadgen.sessions).
Arrival = Literal["closed", "constant", "poisson", "gamma", "trace", "sessions"]


# Measured requests per level when neither a count nor a duration is given: one default for the
# command line (`servesweep run`, `locust`) and scenarios alike, so a level measured by hand and
# the same level in a sweep are the same measurement. 64 (what scenarios always had): a sweep runs
# many levels and configurations; a run that wants tighter percentiles asks for more.
DEFAULT_NUM_REQUESTS = 64

# The largest load a level may ask for; past these a value is a typo or a unit slip, refused before
# anything starts rather than run until the machine runs out of memory. Users: every one holds a
# connection (a file descriptor, buffers), and one client address has at most ~28k-64k ephemeral
# ports towards one server port. Requests: a billion is a day at over 10,000 req/s. Duration: 30 days.
MAX_CONCURRENCY = 65_536
MAX_NUM_REQUESTS = 1_000_000_000
MAX_DURATION_S = 30 * 24 * 3600.0
MAX_REQUEST_RATE = 1_000_000.0


def default_open_arrival(burstiness: float) -> Arrival:
    """The arrival process of an open-loop level that names none: Poisson, or gamma when a
    burstiness other than 1 is given (gamma with burstiness 1 is Poisson)."""
    return "poisson" if burstiness == 1.0 else "gamma"


class LoadLevel(BaseModel):
    """One load level: either a closed-loop concurrency or an open-loop request rate."""

    concurrency: int | None = None
    request_rate: float | None = None
    arrival: Arrival = "closed"
    burstiness: float = 1.0
    max_concurrency: int | None = None
    num_requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    # A worker's share of a level keeps the whole level's label (see loadgen/workers.py).
    name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "LoadLevel":
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("give exactly one of concurrency or request_rate")
        if self.concurrency is not None:
            _within("concurrency", self.concurrency, 1, MAX_CONCURRENCY)
            if self.arrival != "sessions":
                self.arrival = "closed"
        else:
            _within("request_rate", self.request_rate, 0, MAX_REQUEST_RATE, low_open=True)
            if self.arrival == "closed":
                self.arrival = default_open_arrival(self.burstiness)
        _within("burstiness", self.burstiness, 0, MAX_REQUEST_RATE, low_open=True)
        if self.max_concurrency is not None:
            _within("max_concurrency", self.max_concurrency, 1, MAX_CONCURRENCY)
        if (self.num_requests is None) == (self.duration_s is None):
            raise ValueError("give exactly one of num_requests or duration_s")
        if self.num_requests is not None:
            _within("num_requests", self.num_requests, 1, MAX_NUM_REQUESTS)
        if self.duration_s is not None:
            _within("duration_s", self.duration_s, 0, MAX_DURATION_S, low_open=True)
        _within("warmup_requests", self.warmup_requests, 0, MAX_NUM_REQUESTS)
        return self

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        if self.concurrency is not None:
            return f"c{self.concurrency}"
        return f"r{self.request_rate:g}"

    @property
    def in_flight_limit(self) -> int | None:
        return self.concurrency if self.concurrency is not None else self.max_concurrency


def _within(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    """Refuse a load value outside [low, high] ((low, high] with `low_open`), NaN and infinity
    included: NaN compares false to everything, so it passed a plain `<= 0` test and sent every
    request at t = 0."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if value <= low if low_open else value < low:
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if value > high:
        raise ValueError(f"{name} must be <= {high:,.0f} (servesweep's limit for one level), got {value:g}")


def arrival_gaps(level: LoadLevel, n: int, rng: np.random.Generator) -> np.ndarray:
    """Inter-arrival gaps in seconds for `n` open-loop requests (the first gap is 0)."""
    if level.request_rate is None:
        raise ValueError("closed-loop levels have no arrival schedule")
    rate = level.request_rate
    if level.arrival == "constant":
        gaps = np.full(n, 1.0 / rate)
    elif level.arrival == "poisson":
        gaps = rng.exponential(1.0 / rate, size=n)
    else:
        gaps = rng.gamma(level.burstiness, 1.0 / (rate * level.burstiness), size=n)
    if n:
        gaps[0] = 0.0
    return gaps


def arrival_offsets(level: LoadLevel, n: int, rng: np.random.Generator) -> np.ndarray:
    """Scheduled send times (seconds from the start of the level)."""
    return np.cumsum(arrival_gaps(level, n, rng))
