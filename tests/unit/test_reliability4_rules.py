"""Reliability round 4 (issue 37), the rules without a server: credentials and their redaction, the
stream caps, what counts as truncated, damaged or newer result files, a repeat cut short."""

from __future__ import annotations

import base64
import json

import pytest

from servesweep import auth
from servesweep.cli import main
from servesweep.confidence import repeats_ci
from servesweep.errors import EXIT_USAGE, ConfigError
from servesweep.loadgen.exchange import Exchange
from servesweep.loadgen.records import RequestRecord
from servesweep.loadgen.sse import MAX_EVENT_BYTES, EventTooLarge, SSEParser
from servesweep.reports.render import write_report
from servesweep.results import append_point
from tests_support import point


# --- credentials ------------------------------------------------------------------------------------

def test_credentials_leave_the_url_as_a_basic_header():
    url, a = auth.resolve("http://me:p%40ss-word@127.0.0.1:8000/v1", None, [], environ={})
    assert url == "http://127.0.0.1:8000/v1"
    assert a.as_dict() == {"Authorization": "Basic " + base64.b64encode(b"me:p@ss-word").decode()}
    assert "p@ss-word" in a.secrets and "me:p@ss-word" in a.secrets and a.key_source == "URL"
    assert auth.resolve("http://[::1]:8/", None, [], environ={})[0] == "http://[::1]:8/"


def test_the_key_comes_from_the_option_then_the_environment():
    _, a = auth.resolve("http://h:1", "sk-option-1", ["X-Team: blue"], environ={"OPENAI_API_KEY": "sk-env-22"})
    assert a.as_dict() == {"Authorization": "Bearer sk-option-1", "X-Team": "blue"} and a.key_source == "--api-key"
    _, b = auth.resolve("http://h:1", None, [], environ={"OPENAI_API_KEY": "sk-env-22"})
    assert b.as_dict() == {"Authorization": "Bearer sk-env-22"} and b.key_source == "OPENAI_API_KEY"
    _, c = auth.resolve("http://h:1", None, ["Authorization: Token t-333"], environ={"OPENAI_API_KEY": "sk-env-22"})
    assert c.as_dict() == {"Authorization": "Token t-333"}
    assert auth.resolve("http://h:1", None, [], environ={})[1].headers == ()


@pytest.mark.parametrize("header, message", [("X-Key a", "expected 'Name: value'"), ("Bad Name: v", "HTTP header"),
                                              ("Host: elsewhere", "sets this header itself"),
                                              ("X-Key: a\nb", "line break"), ("X-Key:", "empty")])
def test_bad_headers_are_refused_without_echoing_the_value(header, message):
    with pytest.raises(ConfigError, match=message) as caught:
        auth.parse_header(header)
    assert "a\nb" not in str(caught.value)


def test_printing_the_auth_or_an_error_shows_no_secret():
    a = auth.ServerAuth((("Authorization", "Bearer sk-very-secret"),), "--api-key")
    assert "sk-very-secret" not in repr(a) and "sk-very-secret" not in str(a)
    assert a.redact("server said: bad key sk-very-secret") == f"server said: bad key {auth.REDACTED}"
    assert a.describe() == {"headers": ["Authorization"], "key_source": "--api-key"}
    assert auth.from_handover(auth.handover(a)).headers == a.headers


# --- caps on what a server sends ------------------------------------------------------------------

def test_a_line_that_never_ends_is_refused_at_the_cap():
    parser = SSEParser()
    piece = b"x" * (1 << 20)
    parser.feed(b"data: ")
    with pytest.raises(EventTooLarge, match="longer than 32 MiB"):
        for _ in range(MAX_EVENT_BYTES // len(piece) + 2):
            parser.feed(piece)
    assert parser.feed(b"\n\ndata: ok\n\n") == [b"ok"]  # the buffer was let go


def test_an_event_that_never_closes_is_refused_at_the_cap():
    parser = SSEParser()
    line = b"data: " + b"y" * (1 << 20) + b"\n"
    with pytest.raises(EventTooLarge, match="never ended"):
        for _ in range(MAX_EVENT_BYTES // len(line) + 2):
            parser.feed(line)


def test_a_flood_of_empty_data_lines_is_bounded_too():
    parser = SSEParser()
    with pytest.raises(EventTooLarge):
        parser.feed(b"data:\n" * (MAX_EVENT_BYTES // 64 + 2))


# --- truncated answers ------------------------------------------------------------------------------

def _exchange(asked: int, events: list[dict], exact: bool = True) -> RequestRecord:
    record = RequestRecord(request_id=0, level="c1", warmup=False, scheduled_s=0.0, output_len_requested=asked)
    ex = Exchange(record, 0.0, True, False, exact_length=exact)
    ex.on_status(200, "OK")
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    ex.on_body(body, 1.0)
    ex.on_complete(1.0)
    return record


TOKEN = {"choices": [{"index": 0, "text": "x"}]}


def _usage(n: int) -> dict:
    return {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n}}


def test_fewer_tokens_than_asked_by_the_servers_count_is_truncated():
    record = _exchange(8, [TOKEN, {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}, _usage(1)])
    assert record.error_kind == "truncated" and record.finish_reason == "stop"
    assert "1 of 8 tokens while EOS was ignored" in record.error_message


def test_whole_answers_and_eos_allowed_answers_are_not_truncated():
    whole = _exchange(2, [TOKEN, {"choices": [{"index": 0, "text": "x", "finish_reason": "length"}]}, _usage(2)])
    assert whole.ok and whole.finish_reason == "length"
    eos = _exchange(8, [TOKEN, {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}, _usage(1)],
                    exact=False)
    assert eos.ok  # EOS not ignored: stopping early is the model's right
    # No usage and no finish reason: a chunk may carry several tokens, nothing says it was cut.
    assert _exchange(8, [TOKEN, TOKEN]).ok


def test_an_unexpected_finish_reason_is_truncated_even_with_eos_allowed():
    record = _exchange(8, [TOKEN, {"choices": [{"index": 0, "text": "", "finish_reason": "abort"}]}], exact=False)
    assert record.error_kind == "truncated" and "finish_reason 'abort'" in record.error_message


# --- result files: damaged, newer; a repeat cut short ---------------------------------------------

def _sweep(tmp_path):
    (tmp_path / "scenario.json").write_text(json.dumps({"name": "s", "slo": {"ttft_ms": 1000, "percentile": 99}}))
    for c in (1, 4):
        append_point(tmp_path, point("bf16", c, 100.0 * c))
    return tmp_path


@pytest.mark.parametrize("name, body", [("search.json", "{not json"), ("configs/bf16/search.json", '{"steps": 1'),
                                        ("model.json", '{"schema_version": 1, "path": 5}'),
                                        ("search.json", "[1, 2]")])
def test_a_damaged_result_file_is_exit_2_naming_it(tmp_path, capsys, name, body):
    out = _sweep(tmp_path)
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(body)
    for command in (["report", str(out)], ["capacity", str(out), "--peak-rps", "5"]):
        assert main(command) == EXIT_USAGE
        err = capsys.readouterr().err
        assert f"{out / name} is damaged" in err and "servesweep sweep" in err and "Traceback" not in err


def test_a_newer_schema_version_is_said_once(tmp_path, capsys):
    out = _sweep(tmp_path)
    (out / "model.json").write_text(json.dumps({"schema_version": 99, "path": "/m", "field_of_the_future": 1}))
    write_report(out)
    write_report(out)
    err = capsys.readouterr().err
    assert err.count("has schema_version 99, newer than the 1") == 1


def test_truncated_answers_are_named_in_the_report(tmp_path):
    out = tmp_path
    (out / "scenario.json").write_text(json.dumps({"name": "s"}))
    p = point("bf16", 2, 100.0)
    p["summary"]["errors"] = {"truncated": 7}
    p["summary"]["failed"], p["summary"]["completed"] = 7, 1
    p["summary"]["error_examples"] = {"truncated": "truncated: 1 of 32 tokens"}
    append_point(out, p)
    md = write_report(out)["md"].read_text()
    assert "## Truncated responses" in md and "c2: 7 of 8 responses TRUNCATED" in md


def test_a_repeat_cut_short_is_left_out_of_the_interval():
    def level(label, tok_s, cut=None):
        entry = {"label": label, "output_token_throughput": tok_s, "request_throughput": 1.0,
                 "ttft_ms": {"p50": 10.0}, "tpot_ms": {}, "e2e_ms": {}}
        return entry | ({"cut_short": cut} if cut else {})

    ci = repeats_ci([level("c1#r1", 100.0), level("c1#r2", 102.0), level("c1#r3", 3.0, "interrupted")])
    assert ci["c1"]["output_tok_s"]["n"] == 2 and ci["c1"]["output_tok_s"]["mean"] == pytest.approx(101.0)
