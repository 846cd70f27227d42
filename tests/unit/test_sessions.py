"""Multi-turn sessions: the plan, the growing messages, and the driver with a fake transport."""

import asyncio
from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from servesweep.loadgen.sessions import (
    SessionSpec,
    ThinkTime,
    build_messages,
    plan_sessions,
    run_sessions,
)
from servesweep.testing.word_tokenizer import WordTokenizer


@dataclass
class FakeRecord:
    ok: bool
    output_text: str | None


def test_spec_parsing_and_validation():
    spec = SessionSpec(sessions=3, turns=4, user_len="uniform:5:9", output_len=7, think_time_s="uniform:0.5:2")
    assert str(spec.user_len) == "uniform:5:9" and str(spec.think_time_s) == "uniform:0.5:2"
    assert spec.describe()["think_time_s"] == "uniform:0.5:2"
    assert spec.max_context_tokens() == 4 * 9 + 4 * 7
    assert SessionSpec(sessions=1, turns=1, user_len=1, output_len=1, think_time_s=1.5).think_time_s.a == 1.5
    assert ThinkTime.parse("exponential:3").kind == "exponential"
    for bad in (dict(sessions=0), dict(turns=0), dict(think_time_s="-1"), dict(think_time_s="uniform:3:1"),
                dict(think_time_s="gamma:1"), dict(user_len="uniform:9:5"), dict(start_interval_s=-1),
                dict(surprise=1)):
        with pytest.raises(ValidationError):
            SessionSpec(**({"sessions": 1, "turns": 1, "user_len": 4, "output_len": 4} | bad))


async def test_plan_has_exact_unique_messages_and_is_deterministic():
    spec = SessionSpec(sessions=3, turns=4, user_len="uniform:5:30", output_len="uniform:2:9",
                       think_time_s="uniform:1:2", start_interval_s=0.5, seed=3)
    tok = WordTokenizer()
    plans = await plan_sessions(spec, tok)
    assert [p.session_id for p in plans] == [0, 1, 2]
    assert [p.start_s for p in plans] == [0.0, 0.5, 1.0]
    texts = set()
    for plan in plans:
        assert [t.turn for t in plan.turns] == [0, 1, 2, 3]
        assert plan.turns[0].think_s == 0.0
        assert all(1 <= t.think_s <= 2 for t in plan.turns[1:])
        for t in plan.turns:
            assert t.session_id == plan.session_id
            assert len(await tok.encode(t.user_text, add_special_tokens=False)) == t.user_len
            assert 5 <= t.user_len <= 30 and 2 <= t.output_len <= 9
            texts.add(t.user_text)
    assert len(texts) == 12
    again = await plan_sessions(spec, WordTokenizer())
    assert again == plans
    other = await plan_sessions(spec.model_copy(update={"seed": 4}), WordTokenizer())
    assert [t.user_text for t in other[0].turns] != [t.user_text for t in plans[0].turns]
    p = plans[1]
    assert p.planned_context_tokens(1) == sum(t.user_len + t.output_len for t in p.turns[:2])


async def test_messages_carry_the_whole_history():
    spec = SessionSpec(sessions=1, turns=3, user_len=4, output_len=2)
    plan = (await plan_sessions(spec, WordTokenizer()))[0]
    u = [t.user_text for t in plan.turns]
    assert build_messages(plan, 0, []) == [{"role": "user", "content": u[0]}]
    assert build_messages(plan, 2, ["a0", "a1", "ignored"], system="be brief") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": u[0]}, {"role": "assistant", "content": "a0"},
        {"role": "user", "content": u[1]}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": u[2]},
    ]
    with pytest.raises(ValueError, match="needs the 2 previous answers, got 1"):
        build_messages(plan, 2, ["a0"])
    with pytest.raises(ValueError, match="turns 0..2, not 3"):
        build_messages(plan, 3, ["a0", "a1", "a2"])


async def test_driver_sends_history_with_think_time_between_turns():
    spec = SessionSpec(sessions=3, turns=3, user_len=3, output_len=5, think_time_s=0.05, start_interval_s=0.02)
    plans = await plan_sessions(spec, WordTokenizer())
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sent: list[tuple[int, int, float, list]] = []
    answered: dict[tuple[int, int], float] = {}

    async def send(messages, output_len, session_id, turn):
        sent.append((session_id, turn, loop.time() - t0, messages))
        assert output_len == 5
        await asyncio.sleep(0.01)
        answered[(session_id, turn)] = loop.time() - t0
        return FakeRecord(True, f"answer s{session_id} t{turn}")

    result = await run_sessions(plans, send)
    assert result.planned_turns == 9 and len(result.results) == 9
    assert result.skipped_turns == 0 and not result.ended_early and not result.stopped
    by_key = {(s, k): (at, msgs) for s, k, at, msgs in sent}
    for s in range(3):
        assert by_key[(s, 0)][0] >= s * 0.02 - 1e-3
        for k in (1, 2):
            at, msgs = by_key[(s, k)]
            assert at - answered[(s, k - 1)] >= 0.05 - 1e-3  # the pause runs from the previous answer
            assert [m["content"] for m in msgs if m["role"] == "assistant"] == [
                f"answer s{s} t{j}" for j in range(k)]
            assert msgs == build_messages(plans[s], k, [f"answer s{s} t{j}" for j in range(k)])
    assert sorted((r.session_id, r.turn) for r in result.results) == [(s, k) for s in range(3) for k in range(3)]


async def test_failed_turn_ends_its_session_and_counts_the_rest_as_skipped():
    plans = await plan_sessions(SessionSpec(sessions=2, turns=4, user_len=2, output_len=2), WordTokenizer())

    async def send(messages, output_len, session_id, turn):
        failed = session_id == 1 and turn == 1
        return FakeRecord(not failed, None if failed else "ok")

    result = await run_sessions(plans, send)
    assert [(r.session_id, r.turn) for r in result.results if r.session_id == 1] == [(1, 0), (1, 1)]
    assert result.ended_early == [1] and result.skipped_turns == 2
    assert len(result.records) == 6


async def test_stop_cuts_pauses_short_and_skips_the_rest():
    plans = await plan_sessions(SessionSpec(sessions=2, turns=3, user_len=2, output_len=2, think_time_s=30),
                                WordTokenizer())
    stop = asyncio.Event()

    async def send(messages, output_len, session_id, turn):
        return FakeRecord(True, "ok")

    task = asyncio.ensure_future(run_sessions(plans, send, stop=stop))
    await asyncio.sleep(0.02)
    stop.set()
    result = await asyncio.wait_for(task, 1.0)
    assert result.stopped and result.skipped_turns == 4 and len(result.results) == 2


async def test_send_exception_cancels_other_sessions_and_is_raised():
    plans = await plan_sessions(SessionSpec(sessions=2, turns=2, user_len=2, output_len=2), WordTokenizer())
    cancelled = []

    async def send(messages, output_len, session_id, turn):
        if session_id == 0:
            raise RuntimeError("transport bug")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(session_id)
            raise

    with pytest.raises(RuntimeError, match="transport bug"):
        await asyncio.wait_for(run_sessions(plans, send), 1.0)
    assert cancelled == [1]
