"""The files servesweep writes and reads back, one model per file, each filled by one builder and
read through its model by every reader. Runs (loadgen, sweep) write them; reports only read them
(and write the recommendation). Each file carries its own `schema_version`; the version history
of each is in its module.

  summary.json         results.summary          Summary          build_summary / write_summary
  points.jsonl         results.points           SweepPoint       append_point / read_points
  verification.json    results.verification     Verification     sweep.verify_run / read_verification
  recommendation.json  results.recommendation   Recommendation   analysis.recommend.analyse
  model.json, drift.json  results.sweep_files   ModelRecord, DriftRecord  (the sweep)
  scenario.json        results.sweep_files      ScenarioRecord   (the Scenario model's dump; read-only model)
  assertions.json      results.assertions       AssertionsRecord write_assertions (run, sweep)
  search.json          results.config_search    ConfigSearchRecord  sweep.config_search (`search: auto`;
                       the results directory's own, not a configuration's ladder search.json)
  configs/<config>/search.json
                       results.ladder_search    LadderSearch     the search's to_model / write_ladder_search
                       (the adaptive load search: concurrency ladder or rate search)
  intervals.jsonl      loadgen.intervals        IntervalRow      (soak runs)
  capacity.json        reports.capacity         CapacityReport
  prediction.json      reports.projection       Prediction
  gate.json, gate-under-load*.json, reference.json, gate-measurement.json
                       quality.gate             GateResult, UnderLoadResult, UnderLoadMeasurement, Measurement
  predicted_vs_*.json  reports.projection       Comparison
  report-inputs.json   results.report_inputs    ReportInputs     analysis.recommend.store_report_inputs
                       (the --quality-from/--measured sweeps a report was made with)

The file-level helpers (atomic writes, torn JSONL lines, the output directory check) are in
results.io.
"""

from servesweep.results.io import (
    GATE_MEASUREMENT_FILE,
    GATE_UNDER_LOAD_FILE,
    GATE_UNDER_LOAD_MEASUREMENT_FILE,
    GATE_UNDER_LOAD_RECORDS_FILE,
    GATE_UNDER_LOAD_SUMMARY_FILE,
    GATE_UNDER_LOAD_TELEMETRY_FILE,
    WRITE_PROBE_BYTES,
    OpenModel,
    append_jsonl,
    dumps,
    ensure_writable_dir,
    read_json_file,
    read_jsonl,
    torn_last_line,
    write_json,
)
from servesweep.results.ladder_search import (
    LADDER_SEARCH_SCHEMA_VERSION,
    LadderSearch,
    read_ladder_search,
    read_ladder_searches,
    write_ladder_search,
)
from servesweep.results.points import (
    KIND_BEFORE_RECORDED,
    POINTS_FILE,
    POINTS_SCHEMA_VERSION,
    SweepPoint,
    append_point,
    dummy_weights,
    knob_names,
    memory_fraction_of,
    read_points,
)
from servesweep.results.recommendation import (
    RECOMMENDATION_FILE,
    RECOMMENDATION_SCHEMA_VERSION,
    Recommendation,
    read_recommendation,
    write_recommendation,
)
from servesweep.results.report_inputs import (
    REPORT_INPUTS_FILE,
    REPORT_INPUTS_SCHEMA_VERSION,
    ReportInputs,
    build_report_inputs,
    write_report_inputs,
)
from servesweep.results.summary import (
    SUMMARY_FILE,
    SUMMARY_SCHEMA_VERSION,
    Summary,
    build_summary,
    level_entry,
    read_summary,
    write_summary,
)
from servesweep.results.verification import (
    VERIFICATION_FILE,
    VERIFICATION_SCHEMA_VERSION,
    Verification,
    read_verification,
    write_verification,
)

__all__ = [
    "GATE_MEASUREMENT_FILE", "GATE_UNDER_LOAD_FILE", "GATE_UNDER_LOAD_MEASUREMENT_FILE",
    "GATE_UNDER_LOAD_RECORDS_FILE", "GATE_UNDER_LOAD_SUMMARY_FILE",
    "GATE_UNDER_LOAD_TELEMETRY_FILE", "WRITE_PROBE_BYTES", "OpenModel",
    "append_jsonl", "dumps", "ensure_writable_dir", "read_json_file", "read_jsonl", "torn_last_line", "write_json",
    "LADDER_SEARCH_SCHEMA_VERSION", "LadderSearch", "read_ladder_search", "read_ladder_searches",
    "write_ladder_search",
    "KIND_BEFORE_RECORDED", "POINTS_FILE", "POINTS_SCHEMA_VERSION", "SweepPoint", "append_point", "dummy_weights",
    "knob_names", "memory_fraction_of", "read_points",
    "RECOMMENDATION_FILE", "RECOMMENDATION_SCHEMA_VERSION", "Recommendation", "read_recommendation",
    "write_recommendation",
    "REPORT_INPUTS_FILE", "REPORT_INPUTS_SCHEMA_VERSION", "ReportInputs", "build_report_inputs",
    "write_report_inputs",
    "SUMMARY_FILE", "SUMMARY_SCHEMA_VERSION", "Summary", "build_summary", "level_entry", "read_summary",
    "write_summary",
    "VERIFICATION_FILE", "VERIFICATION_SCHEMA_VERSION", "Verification", "read_verification", "write_verification",
]
