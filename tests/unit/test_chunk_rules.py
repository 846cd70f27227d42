"""Which streamed chunks are tokens (servesweep.loadgen.exchange), on recorded and hand-made streams."""

from pathlib import Path

import pytest

from servesweep.crosscheck import cross_check
from servesweep.loadgen.exchange import Exchange
from servesweep.loadgen.records import TIMING_CHUNKS, TIMING_USAGE_PER_CHUNK, RequestRecord
from servesweep.loadgen.stats import summarize

STREAMS = Path(__file__).parent / "streams"
pytestmark = pytest.mark.usefixtures("event_decoder")  # every rule, under both ways of reading an event


def feed(events: list[str], keep_text: bool = False) -> RequestRecord:
    """One event per second from t=1 (the request was on the wire at t=0)."""
    record = RequestRecord(request_id=0, level="c1", warmup=False, scheduled_s=0.0, sent_s=0.0, wire_s=0.0)
    exchange = Exchange(record, 0.0, stream=True, keep_text=keep_text)
    exchange.on_status(200, "OK")
    for i, event in enumerate(events, start=1):
        exchange.on_body(f"data: {event}\n\n".encode(), float(i))
    exchange.on_complete(float(len(events) + 1))
    assert record.ok, record.error_message
    return record


def recorded(name: str) -> list[str]:
    return [line[6:] for line in (STREAMS / f"{name}.sse").read_text().splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("name,rule", [("vllm-completions-final-usage", TIMING_CHUNKS),
                                       ("vllm-completions-usage-per-chunk", TIMING_USAGE_PER_CHUNK),
                                       ("vllm-chat-final-usage", TIMING_CHUNKS),
                                       ("vllm-chat-usage-per-chunk", TIMING_USAGE_PER_CHUNK)])
def test_recorded_vllm_streams_of_textless_tokens_time_the_first_token(name, rule):
    events = recorded(name)
    record = feed(events)
    chat = "chat" in name
    # Completions: the first chunk is the first token. Chat: the role header (event 1) is not a
    # token; the first token is event 2.
    first = 2.0 if chat else 1.0
    assert record.token_timing == rule
    assert record.completion_tokens == 12 and len(record.chunk_arrivals_s) == 12
    assert record.first_token_s == first and record.ttft_ms == first * 1000
    assert record.chunk_arrivals_s == [first + i for i in range(12)]
    # Not one token had text: no first text, all twelve counted as textless.
    assert record.first_text_s is None and record.first_text_ms is None
    assert record.tokens_without_text == 12
    assert record.tpot_ms == pytest.approx(((len(events) + 1) - first) * 1000 / 11)


def completion(text: str, finish: str | None = None, tokens: int | None = None) -> str:
    usage = f',"usage":{{"prompt_tokens":5,"completion_tokens":{tokens}}}' if tokens is not None else ""
    fin = f',"finish_reason":"{finish}"' if finish else ""
    return f'{{"choices":[{{"index":0,"text":"{text}"{fin}}}]{usage}}}'


def test_usage_per_chunk_counts_several_tokens_in_one_chunk_and_skips_chunks_without_one():
    events = [completion("", tokens=0),            # the server's keep-alive: no token yet
              completion("ab", tokens=2),          # two tokens in one chunk
              completion("", tokens=3),            # a token without text
              completion("c", "length", tokens=5),  # two more, the last with the finish
              '{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":5}}', "[DONE]"]
    record = feed(events, keep_text=True)
    assert record.token_timing == TIMING_USAGE_PER_CHUNK
    assert record.chunk_arrivals_s == [2.0, 3.0, 4.0]
    assert record.first_token_s == record.first_text_s == 2.0
    assert record.completion_tokens == 5 and record.tokens_without_text == 1
    assert record.output_text == "abc"


def test_chunk_rule_reconciles_with_the_final_usage():
    text, empty = completion("a"), completion("")
    finish_only = completion("", "stop")
    final = '{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":%d}}'
    # vLLM: four tokens, the first and third without text, the last one carrying the finish.
    record = feed([empty, text, empty, finish_only, final % 4, "[DONE]"])
    assert record.chunk_arrivals_s == [1.0, 2.0, 3.0, 4.0] and record.ttft_ms == 1000
    assert record.first_text_ms == 2000 and record.tokens_without_text == 3
    # Another server: a keep-alive before the first token and a finish marker, two real tokens.
    record = feed([empty, text, empty, finish_only, final % 2, "[DONE]"])
    assert record.chunk_arrivals_s == [2.0, 3.0] and record.ttft_ms == 2000
    assert record.tokens_without_text == 1


def test_chat_rule_role_header_and_empty_deltas():
    role = '{"choices":[{"delta":{"role":"assistant","content":""}}]}'
    keep_alive = '{"choices":[{"delta":{}}]}'
    null = '{"choices":[{"delta":{"content":null}}]}'
    empty = '{"choices":[{"delta":{"content":""}}]}'
    text = '{"choices":[{"delta":{"content":"x"}}]}'
    final = '{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}'
    record = feed([role, keep_alive, null, empty, text, empty, final, "[DONE]"])
    assert record.token_timing == TIMING_CHUNKS
    assert record.chunk_arrivals_s == [4.0, 5.0, 6.0]
    assert record.first_token_s == 4.0 and record.first_text_s == 5.0 and record.tokens_without_text == 2


def test_reasoning_output_is_visible_and_not_the_answer():
    role = '{"choices":[{"delta":{"role":"assistant","content":""}}]}'
    think = '{"choices":[{"delta":{"reasoning_content":"hm"}}]}'
    answer = '{"choices":[{"delta":{"content":"42"}}]}'
    record = feed([role, think, think, answer, "[DONE]"], keep_text=True)
    assert record.chunk_arrivals_s == [2.0, 3.0, 4.0]
    assert record.first_text_s == 2.0 and record.tokens_without_text == 0
    assert record.output_text == "42"


def test_summary_and_cross_check_flag_textless_streams():
    events = recorded("vllm-completions-usage-per-chunk")
    summary = summarize([feed(events) for _ in range(3)])
    assert summary["token_timing"] == {TIMING_USAGE_PER_CHUNK: 3}
    assert summary["tokens_without_text"] == 36 and summary["tokens_without_text_fraction"] == 1.0
    assert summary["first_text_ms"]["count"] == 0 and summary["ttft_ms"]["p50"] == 1000
    assert summary["itl_per_token_ms"] == pytest.approx(1000.0)
    check = cross_check(summary, None)
    assert check["suspect"] and "without visible text" in check["reasons"][0]


def test_cross_check_flags_tpot_apart_from_the_streams_decode_time():
    # What timing the first visible text did on the H200: TPOT 0.46x the per-token decode time.
    level = {"ttft_ms": {"mean": 1917.0}, "itl_ms": {"mean": 13.5}, "e2e_ms": {"mean": 2699.0},
             "tpot_ms": {"mean": 6.25}, "itl_per_token_ms": 13.5, "tokens_without_text_fraction": 0.1}
    check = cross_check(level, None)
    assert check["suspect"] and check["reasons"] == [
        "TPOT mean 6.25 ms vs the stream's decode time per token 13.50 ms: the first token or the token count is off"]
    level["tpot_ms"]["mean"] = 13.0
    assert not cross_check(level, None)["suspect"]


def test_cross_check_is_two_sided_on_ttft():
    level = {"ttft_ms": {"mean": 181.0}, "itl_ms": {"mean": 5.0}, "e2e_ms": {"mean": 800.0},
             "tpot_ms": {"mean": 5.0}, "itl_per_token_ms": 5.0, "tokens_without_text_fraction": 0.0}
    telemetry = {"server_latency_mean_ms": {"ttft": 25.0, "itl": 5.0, "e2e": 800.0}}
    check = cross_check(level, telemetry)
    assert check["suspect"] and "exceeds the server's" in check["reasons"][0]
    assert check["ttft_offset_ms"] == pytest.approx(156.0)
    level["ttft_ms"]["mean"] = 27.0  # the front-end's few ms
    assert not cross_check(level, telemetry)["suspect"]
    level["ttft_ms"]["mean"] = 20.0  # before the server made it
    assert "below the server's" in cross_check(level, telemetry)["reasons"][0]
    # Under load the front-end queues: 25 % of the server's figure is allowed on top of 10 ms.
    telemetry["server_latency_mean_ms"]["ttft"] = 1000.0
    level["ttft_ms"]["mean"] = 1255.0
    assert not cross_check(level, telemetry)["suspect"]
    level["ttft_ms"]["mean"] = 1265.0
    assert cross_check(level, telemetry)["suspect"]


def test_server_itl_is_compared_per_token_not_per_chunk():
    # bf16 c128 on the H200 (2026-12-02): 62,012 tokens in 50,352 chunks; the server's inter-token
    # mean 18.48 ms, the client's per-chunk gap 22.77 ms, its per-token decode time 18.45 ms.
    level = {"ttft_ms": {"mean": 345.0}, "itl_ms": {"mean": 22.77}, "e2e_ms": {"mean": 2650.0},
             "tpot_ms": {"mean": 18.56}, "itl_per_token_ms": 18.45, "tokens_without_text_fraction": 0.0}
    telemetry = {"server_latency_mean_ms": {"ttft": 305.0, "itl": 18.48, "e2e": 2600.0}}
    check = cross_check(level, telemetry)
    assert not check["suspect"], check["reasons"]
    assert check["client_mean_ms"]["itl"] == 18.45


def test_per_chunk_usage_is_asked_for_unless_turned_off():
    from servesweep.loadgen.client import build_payload
    from servesweep.loadgen.workload import PromptItem, Workload

    item = PromptItem("hi", 2, 8)
    assert build_payload("m", item, Workload())["stream_options"] == {
        "include_usage": True, "continuous_usage_stats": True}
    assert build_payload("m", item, Workload(chunk_usage=False))["stream_options"] == {"include_usage": True}
    assert "stream_options" not in build_payload("m", item, Workload(stream=False))
