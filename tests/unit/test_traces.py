"""Trace replay input: both layouts, the error policy, speed, and prompts with real shared prefixes."""

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from servesweep.errors import ConfigError
from servesweep.loadgen.tokenizer import LocalTokenizer
from servesweep.loadgen.traces import (
    TracePrompts,
    TraceRequest,
    detect_format,
    read_trace,
    trace_prompts,
    trace_stats,
)
from servesweep.testing.word_tokenizer import WordTokenizer

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "scenarios" / "traces"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_mooncake_offsets_lengths_and_hash_ids(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [
        {"timestamp": 1000, "input_length": 600, "output_length": 20, "hash_ids": [0, 5]},
        {"timestamp": 1250, "input_length": 30, "output_length": 7},
        {"timestamp": 3000, "input_length": 40.0, "output_length": 8, "hash_ids": [], "text_input": "hi"},
    ])
    reqs = read_trace(path)
    assert [r.offset_s for r in reqs] == [0.0, 0.25, 2.0]
    assert [(r.input_len, r.output_len) for r in reqs] == [(600, 20), (30, 7), (40, 8)]
    assert [r.hash_ids for r in reqs] == [(0, 5), None, None]
    assert [r.text for r in reqs] == [None, None, "hi"]


def test_speed_divides_offsets(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [
        {"timestamp": 0, "input_length": 5, "output_length": 5},
        {"timestamp": 4000, "input_length": 5, "output_length": 5},
    ])
    assert [r.offset_s for r in read_trace(path, speed=2)] == [0.0, 2.0]
    assert [r.offset_s for r in read_trace(path, speed=0.5)] == [0.0, 8.0]
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="speed"):
            read_trace(path, speed=bad)


def test_out_of_order_timestamps_are_sorted_stably(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [
        {"timestamp": 500, "input_length": 1, "output_length": 1},
        {"timestamp": 200, "input_length": 2, "output_length": 1},
        {"timestamp": 500, "input_length": 3, "output_length": 1},
        {"timestamp": 200, "input_length": 4, "output_length": 1},
    ])
    reqs = read_trace(path)
    assert [r.input_len for r in reqs] == [2, 4, 1, 3]
    assert [r.offset_s for r in reqs] == [0.0, 0.0, 0.3, 0.3]


def test_azure_csv_with_seven_fractional_digits(tmp_path):
    path = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:16:00.0000001,879,12\n"
    )
    reqs = read_trace(path)
    assert [(r.input_len, r.output_len) for r in reqs] == [(374, 44), (396, 109), (879, 12)]
    assert reqs[1].offset_s == pytest.approx(4.314579, abs=1e-9)
    assert reqs[2].offset_s == pytest.approx(13.3194101, abs=1e-9)
    assert all(r.hash_ids is None and r.text is None for r in reqs)


def test_azure_column_order_case_zone_and_numeric_seconds(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "generatedtokens,Extra,contexttokens,timestamp\n"
        "5,x,10,2024-05-10T00:00:01Z\n"
        "6,y,11,2024-05-10T02:00:00.5+02:00\n"  # = 00:00:00.5 UTC: half a second before the first
    )
    reqs = read_trace(path)
    assert [(r.input_len, r.output_len, r.offset_s) for r in reqs] == [(11, 6, 0.0), (10, 5, 0.5)]
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n12.5,3,4\n10,3,4\n")
    assert [r.offset_s for r in read_trace(path)] == [0.0, 2.5]


def test_format_detection_and_gzip(tmp_path):
    assert detect_format(TRACES / "synthetic-mooncake.jsonl") == "mooncake"
    assert detect_format(TRACES / "synthetic-azure.csv") == "azure"
    sniffed = tmp_path / "trace.txt"
    sniffed.write_text((TRACES / "synthetic-azure.csv").read_text())
    assert detect_format(sniffed) == "azure"
    packed = tmp_path / "trace.jsonl.gz"
    packed.write_bytes(gzip.compress((TRACES / "synthetic-mooncake.jsonl").read_bytes()))
    assert detect_format(packed) == "mooncake"
    assert read_trace(packed) == read_trace(TRACES / "synthetic-mooncake.jsonl")
    odd = tmp_path / "trace.dat"
    odd.write_text("hello\n")
    with pytest.raises(ConfigError, match="cannot tell its format"):
        read_trace(odd)
    # An explicit format wins over the extension.
    assert len(read_trace(sniffed, fmt="azure")) == 160
    with pytest.raises(ConfigError, match="not known"):
        read_trace(sniffed, fmt="sharegpt")


@pytest.mark.parametrize("row, message", [
    ({"input_length": 5, "output_length": 5}, "missing field 'timestamp'"),
    ({"timestamp": 0, "output_length": 5}, "missing field 'input_length'"),
    ({"timestamp": 0, "input_length": -3, "output_length": 5}, "input_length must be >= 1, got -3"),
    ({"timestamp": 0, "input_length": 5, "output_length": 0}, "output_length must be >= 1, got 0"),
    ({"timestamp": 0, "input_length": "many", "output_length": 5}, "input_length is not a number"),
    ({"timestamp": 0, "input_length": 5.5, "output_length": 5}, "input_length must be a whole number"),
    ({"timestamp": "soon", "input_length": 5, "output_length": 5}, "timestamp is not a number"),
    ({"timestamp": -1, "input_length": 5, "output_length": 5}, "timestamp must be >= 0"),
    ({"timestamp": 0, "input_length": 5, "output_length": 5, "hash_ids": [1, "a"]}, "hash_ids must be a list"),
    ([1, 2], "expected a JSON object"),
    ("{not json", "not valid JSON"),
])
def test_bad_mooncake_row_names_file_and_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"timestamp": 0, "input_length": 5, "output_length": 5}, "", row])
    with pytest.raises(ConfigError, match=rf"bad\.jsonl:3: .*{message}"):
        read_trace(path)


@pytest.mark.parametrize("body, message", [
    ("TIMESTAMP,ContextTokens\n", r"bad\.csv:1: header lacks column\(s\) GeneratedTokens"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,10,2\nyesterday,10,2\n",
     r"bad\.csv:3: TIMESTAMP is not a date-time"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,10,-2\n",
     r"bad\.csv:2: GeneratedTokens must be >= 1, got -2"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,,2\n",
     r"bad\.csv:2: ContextTokens is not a number: ''"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,10\n", r"bad\.csv:2: 2 cells"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-13-16 18:15:46.1,10,2\n", r"bad\.csv:2: TIMESTAMP"),
])
def test_bad_azure_row_names_file_and_line(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        read_trace(path)


def test_empty_and_missing_traces(tmp_path):
    for name, body in [("e.jsonl", "\n\n"), ("e.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n")]:
        (tmp_path / name).write_text(body)
        with pytest.raises(ConfigError, match=f"{name}: no requests"):
            read_trace(tmp_path / name)
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(ConfigError, match="blank.csv: empty file"):
        read_trace(tmp_path / "blank.csv")
    with pytest.raises(ConfigError, match="does not exist"):
        read_trace(tmp_path / "nope.jsonl")


def test_stats_peak_rate():
    reqs = [TraceRequest(t, 10, 5) for t in (0.0, 0.1, 0.2, 0.3, 2.0, 4.0)]
    stats = trace_stats(reqs)
    assert stats["requests"] == 6
    assert stats["duration_s"] == 4.0
    assert stats["peak_rate"] == 4.0  # four requests within the first second
    assert stats["mean_rate"] == pytest.approx(5 / 4)
    assert stats["max_total_len"] == 15


def test_committed_synthetic_traces_are_regenerated_exactly(tmp_path):
    spec = importlib.util.spec_from_file_location("make_traces", TRACES / "make_traces.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path in module.write_traces(tmp_path):
        assert path.read_bytes() == (TRACES / path.name).read_bytes(), f"{path.name} differs from the committed file"


@pytest.mark.parametrize("name", ["synthetic-mooncake.jsonl", "synthetic-azure.csv"])
def test_synthetic_traces_fit_a_1024_token_model(name):
    reqs = read_trace(TRACES / name)
    stats = trace_stats(reqs)
    assert 100 <= stats["requests"] <= 200
    assert 20 <= stats["duration_s"] <= 30
    assert stats["max_input_len"] <= 600 and stats["max_output_len"] <= 128
    assert stats["peak_rate"] > 2 * stats["mean_rate"]  # bursty, not evenly spaced


async def test_shared_hash_ids_give_shared_prefixes_exact_lengths():
    tok = WordTokenizer()
    reqs = [
        TraceRequest(0.0, 1 + 600, 5, (7, 8)),   # a full block 7, then 88 tokens of block 8
        TraceRequest(0.1, 1 + 520, 5, (7, 9)),
        TraceRequest(0.2, 1 + 300, 5, (7,)),     # the first 300 tokens of block 7
        TraceRequest(0.3, 1 + 700, 5, (3,)),     # block 3 then 188 tokens of its own
        TraceRequest(0.4, 1 + 50, 5, None),
        TraceRequest(0.5, 99, 6, None, text="w11 w12"),
    ]
    items = await trace_prompts(reqs, tok, seed=4)
    ids = [await tok.encode(i.text) for i in items]
    for r, item, got in zip(reqs[:5], items, ids):
        assert item.prompt_len == r.input_len == len(got)
        assert item.output_len == r.output_len
    assert ids[0][:513] == ids[1][:513]           # BOS + block 7
    assert ids[0][513:521] != ids[1][513:521]     # blocks 8 and 9 differ
    assert ids[2][1:] == ids[0][1:301]            # a partial block is a prefix of the full one
    assert ids[3][1:513] != ids[0][1:513]
    assert items[5].text == "w11 w12" and items[5].prompt_len == 3 and items[5].output_len == 6
    # Deterministic: same seed, same text; another seed, other text.
    again = await trace_prompts(reqs, WordTokenizer(), seed=4)
    assert [i.text for i in again] == [i.text for i in items]
    other = await trace_prompts(reqs, WordTokenizer(), seed=5)
    assert other[0].text != items[0].text


async def test_blocks_are_built_once_and_chat_has_no_prompt_len():
    tok = WordTokenizer()
    builder = TracePrompts(tok, seed=0, block_tokens=16)
    first = await builder.block(3)
    calls = tok.encode_calls
    assert await builder.block(3) == first and tok.encode_calls == calls
    assert len(first.split()) == 16
    assert (await builder.block(3, 5)).split() == first.split()[:5]
    items = await trace_prompts([TraceRequest(0.0, 40, 3, (3,))], tok, endpoint="chat", block_tokens=16)
    assert items[0].prompt_len is None
    assert items[0].text.split()[:16] == first.split()
    assert len(items[0].text.split()) == 40  # no BOS on the chat endpoint: the template adds its own


async def test_prompts_need_a_tokenizer_unless_the_trace_has_text():
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        await trace_prompts([TraceRequest(0.0, 5, 5)], None)
    items = await trace_prompts([TraceRequest(0.0, 5, 5, text="hello")], None)
    assert items[0].text == "hello" and items[0].prompt_len is None


async def test_real_tokenizer_shares_prefix_tokens(tiny_model_dir):
    tok = LocalTokenizer(tiny_model_dir)
    reqs = [TraceRequest(0.0, 600, 4, (1, 2)), TraceRequest(0.0, 560, 4, (1, 3))]
    items = await trace_prompts(reqs, tok, seed=0)
    a, b = [await tok.encode(i.text) for i in items]
    assert a[:500] == b[:500]
    for item, ids, r in zip(items, (a, b), reqs):
        assert item.prompt_len == len(ids)  # the real count is what gets recorded
        assert abs(item.prompt_len - r.input_len) <= 1  # a block boundary may merge one token
