"""Multi-turn chat sessions: conversations whose prompts grow with their own history.

A session is one simulated user holding a conversation of `turns` turns on the chat endpoint.
Turn k's request carries the whole conversation so far: the user messages of turns 0..k-1 with
the model's real answers to them, then turn k's new user message. So each prompt extends the
previous one (the prefix-cache reuse of real chat traffic), and the context grows turn by turn.

Terms:
  user_len      tokens of each new user message's content (a LengthSpec: `64`, `uniform:20:80`, ...),
                exact with the target's tokenizer (no special tokens: the chat template adds its own).
  output_len    max_tokens asked for each answer (a LengthSpec).
  think_time_s  the user's pause between receiving an answer and sending the next turn:
                `2` (fixed seconds), `uniform:LOW:HIGH` or `exponential:MEAN`. Turn 0 has none.
  start_interval_s  session i starts i x start_interval_s after the run starts (0: all at once).

Policy: a session whose request fails (the send's record is not ok, or has no answer text) ends
there: its later turns would need an answer that does not exist. The turns it did not send are
counted in `SessionsResult.skipped_turns`, never silently dropped.

Public API:
  SessionSpec(sessions, turns, user_len, output_len, think_time_s=0, start_interval_s=0, seed=0)
  await plan_sessions(spec, tokenizer) -> list[SessionPlan]        pure: the user messages, lengths, pauses
  build_messages(plan, turn, answers, system=None) -> list[{"role", "content"}]
  await run_sessions(plans, send, stop=None) -> SessionsResult
      send(messages, output_len, session_id, turn) -> awaitable record: the caller's transport;
      the answer is read from the record's `output_text` (override with `answer_of`).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from servesweep.loadgen.lengths import LengthSpec
from servesweep.loadgen.tokenizer import TokenizerLike
from servesweep.loadgen.workload import exact_length_text


class ThinkTime(BaseModel):
    """Seconds a user pauses between turns: fixed, uniform:LOW:HIGH or exponential:MEAN."""

    kind: Literal["fixed", "uniform", "exponential"]
    a: float
    b: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> "ThinkTime":
        if not (math.isfinite(self.a) and math.isfinite(self.b)):
            raise ValueError("think time must be finite")
        if self.kind in ("fixed", "exponential") and self.a < 0:
            raise ValueError(f"think time must be >= 0 s, got {self.a:g}")
        if self.kind == "uniform" and not (0 <= self.a <= self.b):
            raise ValueError(f"uniform think time needs 0 <= LOW <= HIGH, got {self.a:g}:{self.b:g}")
        return self

    @classmethod
    def parse(cls, text: str | float | int) -> "ThinkTime":
        raw = str(text).strip()
        parts = raw.split(":")
        try:
            if len(parts) == 1:
                return cls(kind="fixed", a=float(parts[0]))
            kind, *nums = parts
            if (kind, len(nums)) == ("uniform", 2):
                return cls(kind="uniform", a=float(nums[0]), b=float(nums[1]))
            if (kind, len(nums)) == ("exponential", 1):
                return cls(kind="exponential", a=float(nums[0]))
            raise ValueError
        except ValueError as exc:
            detail = f": {exc}" if str(exc) else ""
            raise ValueError(f"bad think time {raw!r}{detail}; use SECONDS, uniform:LOW:HIGH or "
                             "exponential:MEAN") from None

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.a:g}"
        if self.kind == "uniform":
            return f"uniform:{self.a:g}:{self.b:g}"
        return f"exponential:{self.a:g}"

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, self.a, dtype=float)
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b, size=n)
        return rng.exponential(self.a, size=n) if self.a > 0 else np.zeros(n)


class SessionSpec(BaseModel):
    """What the multi-turn workload looks like; see the module docstring for each term."""

    model_config = ConfigDict(extra="forbid")

    sessions: int = Field(ge=1)
    turns: int = Field(ge=1)
    user_len: LengthSpec
    output_len: LengthSpec
    think_time_s: ThinkTime = Field(default_factory=lambda: ThinkTime(kind="fixed", a=0.0))
    start_interval_s: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    seed: int = Field(default=0, ge=0)

    @field_validator("user_len", "output_len", mode="before")
    @classmethod
    def _parse_len(cls, value: object) -> object:
        return LengthSpec.parse(value) if isinstance(value, (str, int)) else value

    @field_validator("think_time_s", mode="before")
    @classmethod
    def _parse_think(cls, value: object) -> object:
        return ThinkTime.parse(value) if isinstance(value, (str, int, float)) else value

    def max_context_tokens(self) -> int:
        """Upper bound of the last turn's content tokens: every user message and every answer,
        the one being generated included (the chat template's own tokens are not counted).

        Compare with the model's context length, less the template's overhead, before running.
        """
        return self.turns * self.user_len.max_value + self.turns * self.output_len.max_value

    def describe(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data.update(user_len=str(self.user_len), output_len=str(self.output_len),
                    think_time_s=str(self.think_time_s))
        return data


@dataclass(slots=True)
class Turn:
    """One planned turn: the new user message and what to ask for."""

    session_id: int
    turn: int
    user_text: str
    user_len: int  # the message content's exact token count (no special tokens)
    output_len: int
    think_s: float  # pause after the previous answer before sending this turn (0 for turn 0)


@dataclass(slots=True)
class SessionPlan:
    session_id: int
    start_s: float  # when turn 0 is sent, from the start of the run
    turns: list[Turn]
    clipped_turns: int = 0  # planned turns left out: their context would not fit the model's

    def planned_context_tokens(self, turn: int) -> int:
        """Content tokens of turn `turn`'s request plus its answer, if every answer is full length."""
        return sum(t.user_len + t.output_len for t in self.turns[: turn + 1])


async def plan_sessions(spec: SessionSpec, tokenizer: TokenizerLike, concurrency: int = 32,
                        limit: int | None = None) -> list[SessionPlan]:
    """Every session's user messages (exact token counts), answer lengths and pauses.

    Deterministic for a given seed and tokenizer: lengths come from one generator in a fixed
    order, each message's text from its own child generator (so the order in which a remote
    tokenizer answers does not matter), and every message is unique.

    With `limit` (the model's context, servesweep.loadgen.fit), a session's plan ends before the
    first turn whose context would not fit; `SessionPlan.clipped_turns` counts what was left out.
    """
    n = spec.sessions * spec.turns
    rng = np.random.default_rng(spec.seed)
    user_lens = spec.user_len.sample(rng, n, ceiling=limit).reshape(spec.sessions, spec.turns).tolist()
    output_lens = spec.output_len.sample(rng, n, ceiling=limit).reshape(spec.sessions, spec.turns).tolist()
    if limit:
        for s_lens, o_lens in zip(user_lens, output_lens):  # cut each session at its first turn past the limit
            total = 0
            for k in range(spec.turns):
                total += s_lens[k] + o_lens[k]
                if total > limit:
                    del s_lens[k:], o_lens[k:]
                    break
    thinks = spec.think_time_s.sample(rng, n).reshape(spec.sessions, spec.turns)
    thinks[:, 0] = 0.0
    gate = asyncio.Semaphore(concurrency)

    async def one(s: int, k: int) -> Turn:
        async with gate:
            text, count = await exact_length_text(tokenizer, user_lens[s][k],
                                                  np.random.default_rng([spec.seed, s, k]),
                                                  add_special_tokens=False)
        return Turn(s, k, text, count, output_lens[s][k], float(thinks[s, k]))

    turns = await asyncio.gather(*(one(s, k) for s in range(spec.sessions) for k in range(len(user_lens[s]))))
    plans, start = [], 0
    for s in range(spec.sessions):
        count = len(user_lens[s])
        plans.append(SessionPlan(s, s * spec.start_interval_s, list(turns[start:start + count]),
                                 clipped_turns=spec.turns - count))
        start += count
    return plans


def build_messages(plan: SessionPlan, turn: int, answers: Sequence[str],
                   system: str | None = None) -> list[dict[str, str]]:
    """The chat `messages` of turn `turn`: [system], then (user, assistant) per earlier turn, then user.

    `answers[j]` is the model's answer to turn j; the first `turn` of them are used.
    """
    if not 0 <= turn < len(plan.turns):
        raise ValueError(f"session {plan.session_id} has turns 0..{len(plan.turns) - 1}, not {turn}")
    if len(answers) < turn:
        raise ValueError(f"turn {turn} needs the {turn} previous answers, got {len(answers)}")
    messages = [{"role": "system", "content": system}] if system else []
    for j in range(turn):
        messages.append({"role": "user", "content": plan.turns[j].user_text})
        messages.append({"role": "assistant", "content": answers[j]})
    messages.append({"role": "user", "content": plan.turns[turn].user_text})
    return messages


Send = Callable[[list[dict[str, str]], int, int, int], Awaitable[Any]]


def record_answer(record: Any) -> str | None:
    """The answer text of a record, or None when the request failed (RequestRecord's fields)."""
    if not getattr(record, "ok", True):
        return None
    return getattr(record, "output_text", None)


@dataclass(slots=True)
class TurnResult:
    session_id: int
    turn: int
    record: Any


@dataclass(slots=True)
class SessionsResult:
    results: list[TurnResult] = field(default_factory=list)  # in completion order
    planned_turns: int = 0
    skipped_turns: int = 0  # not sent: their session ended early or the run was stopped
    ended_early: list[int] = field(default_factory=list)  # sessions ended by a failed turn
    stopped: bool = False  # the stop event ended the run before every session finished
    clipped_turns: int = 0  # never planned: past the model's context (SessionPlan.clipped_turns)

    def describe(self) -> dict[str, Any]:
        """The outcome for the summary: every planned turn is sent, skipped or clipped."""
        return {"planned_turns": self.planned_turns + self.clipped_turns, "sent_turns": len(self.results),
                "skipped_turns": self.skipped_turns, "clipped_turns": self.clipped_turns,
                "sessions_ended_early": len(self.ended_early), "stopped": self.stopped}

    @property
    def records(self) -> list[Any]:
        return [r.record for r in self.results]


async def run_sessions(
    plans: Sequence[SessionPlan],
    send: Send,
    stop: asyncio.Event | None = None,
    answer_of: Callable[[Any], str | None] = record_answer,
    system: str | None = None,
) -> SessionsResult:
    """Drive every session concurrently: start offset, then send, wait for the answer, think, repeat.

    Setting `stop` ends each session before its next send (a pause is cut short); what a session
    did not send counts as skipped. An exception from `send` cancels the other sessions and is
    raised. Pauses are measured from when the previous answer arrived.
    """
    out = SessionsResult(planned_turns=sum(len(p.turns) for p in plans),
                         clipped_turns=sum(p.clipped_turns for p in plans))
    stop = stop or asyncio.Event()

    async def pause(seconds: float) -> None:
        if seconds > 0 and not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=seconds)
            except asyncio.TimeoutError:
                pass

    async def session(plan: SessionPlan) -> None:
        answers: list[str] = []
        await pause(plan.start_s)
        for k, turn in enumerate(plan.turns):
            if k:
                await pause(turn.think_s)
            if stop.is_set():
                out.stopped = True
                out.skipped_turns += len(plan.turns) - k
                return
            record = await send(build_messages(plan, k, answers, system), turn.output_len, plan.session_id, k)
            out.results.append(TurnResult(plan.session_id, k, record))
            answer = answer_of(record)
            if answer is None:
                if k + 1 < len(plan.turns):
                    out.ended_early.append(plan.session_id)
                    out.skipped_turns += len(plan.turns) - k - 1
                return
            answers.append(answer)

    tasks = [asyncio.ensure_future(session(p)) for p in plans]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return out
