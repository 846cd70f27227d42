import pytest

from servesweep.scenarios.schema import ScenarioError, load_scenario


def test_shipped_scenarios_are_valid():
    from pathlib import Path

    # gate-*.yaml are accuracy-gate specs, checked in test_gate.py.
    files = [p for p in sorted(Path(__file__).resolve().parents[2].joinpath("scenarios").glob("*.yaml"))
             if not p.name.startswith("gate-")]
    assert len(files) >= 5
    for path in files:
        scenario = load_scenario(path)
        assert scenario.load.levels() or scenario.load.adaptive


@pytest.mark.parametrize("text,message", [
    ("load: [1, 2", "not valid YAML"),
    ("- a\n- b", "mapping"),
    ("load: {concurrency: [1]}\nsweep: {precision: [int4]}", "sweep.precision.0: Input should be 'fp32', 'fp16', 'bf16' or 'fp8'"),
    ("load: {concurrency: [1]}\nsweep: {max_num_seq: [4]}", "sweep.max_num_seq: unknown field"),
    ("load: {concurrency: [1], request_rate: [2]}", "exactly one of concurrency"),
    ("load: {concurrency: [1]}\nworkload: {input_len: 'gauss:1'}", "workload.input_len: bad length spec"),
])
def test_errors_name_file_field_and_allowed_values(tmp_path, text, message):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario(tmp_path / "nope.yaml")
