"""Request lengths against the model's context, checked before any load is sent.

A request whose prompt plus output exceeds the server's context (vLLM's `max_model_len`, which
its `/v1/models` reports) is refused by the server, one by one, after the prompt was built and
sent. Worse, a length nobody can serve (`--input-len 100000000`) made servesweep build a prompt of
that many tokens first: gigabytes, then a MemoryError. So, before any load:

  - the limit is the server's `max_model_len` where it reports one, else servesweep's ceiling
    (`LARGEST_CONTEXT`: no model has a longer context), and the limit's source is kept with it;
  - what the typical request asks for (fixed lengths, or the medians of distributions) must fit:
    otherwise the run is refused (ConfigError, exit 2) naming the lengths, the limit and its source;
  - a distribution whose tail does not fit is clipped per request: the input is cut to
    limit - output (the output to limit - 1 when it alone does not fit), and the run says how many
    requests were clipped (summary `lengths_clipped`, a warning on the console);
  - trace rows are clipped the same way, or the trace is refused when most of its rows do not fit;
  - multi-turn sessions stop at the turn whose context (every earlier message and answer, counted
    in content tokens) would not fit; the turns left out are counted.

For the chat endpoint the lengths are content tokens: the chat template adds a few of its own,
which no client can count without the template.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from servesweep.errors import ConfigError
from servesweep.loadgen.lengths import LARGEST_CONTEXT, LengthSpec


@dataclass(frozen=True)
class ContextLimit:
    tokens: int
    source: str

    def describe(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "source": self.source}


def context_limit(max_model_len: int | None, models_url: str) -> ContextLimit:
    """The server's `max_model_len` (from its model list) where it gives one, else the ceiling."""
    if max_model_len and max_model_len > 0:
        return ContextLimit(int(max_model_len), f"max_model_len reported by {models_url}")
    return ContextLimit(LARGEST_CONTEXT, f"servesweep's ceiling of {LARGEST_CONTEXT:,} tokens (no model has a "
                                         f"longer context; {models_url} reported no max_model_len)")


def median(spec: LengthSpec) -> float:
    """The typical value of a length distribution."""
    if spec.kind == "uniform":
        return (spec.a + spec.b) / 2
    return spec.a  # fixed; the mean of normal; the median of lognormal


def _fixed(spec: LengthSpec) -> bool:
    return spec.kind == "fixed" or (spec.kind == "uniform" and spec.a == spec.b) or (
        spec.kind in ("normal", "lognormal") and spec.b == 0)


@dataclass(frozen=True)
class LengthFit:
    """What the check decided: `clip` when some requests will be cut to the limit."""

    limit: ContextLimit
    clip: bool = False
    note: str | None = None


def check_lengths(input_len: LengthSpec, output_len: LengthSpec, limit: ContextLimit,
                  shared_prefix_len: int = 0, what: str = "--input-len {i} + --output-len {o}") -> LengthFit:
    """Refuse lengths whose typical request cannot fit; say when a tail will be clipped."""
    prefix_floor = shared_prefix_len + 1 if shared_prefix_len else 0  # a prompt is the prefix + >= 1 token
    worst = max(input_len.max_value, prefix_floor) + output_len.max_value
    if worst <= limit.tokens:
        return LengthFit(limit)
    label = what.format(i=input_len, o=output_len)
    typical = max(median(input_len), prefix_floor) + median(output_len)
    if typical > limit.tokens or (_fixed(input_len) and _fixed(output_len)):
        prefix = f" (with a shared prefix of {shared_prefix_len})" if prefix_floor > input_len.max_value else ""
        verb = "ask" if _fixed(input_len) and _fixed(output_len) else "typically ask"
        raise ConfigError(f"{label}{prefix} {verb} for {_tokens(typical)} tokens per request, more than the "
                          f"model's context of {limit.tokens:,} tokens ({limit.source})")
    return LengthFit(limit, clip=True, note=(
        f"{label} reach {worst:,} tokens, past the model's context of {limit.tokens:,} tokens ({limit.source}): "
        "requests past it are clipped (input cut to the context less the output)"))


def check_sessions(turns: int, user_len: LengthSpec, output_len: LengthSpec, limit: ContextLimit) -> LengthFit:
    """Sessions: the context grows by a user message and an answer per turn."""
    worst = turns * (user_len.max_value + output_len.max_value)
    if worst <= limit.tokens:
        return LengthFit(limit)
    first = median(user_len) + median(output_len)
    if first > limit.tokens:
        raise ConfigError(f"--user-len {user_len} + --output-len {output_len} typically ask for {_tokens(first)} "
                          f"tokens in a session's first turn, more than the model's context of {limit.tokens:,} "
                          f"tokens ({limit.source})")
    return LengthFit(limit, clip=True, note=(
        f"{turns} turns of --user-len {user_len} + --output-len {output_len} reach {worst:,} tokens of context, "
        f"past the model's {limit.tokens:,} ({limit.source}): a session ends before the turn that would not "
        "fit (those turns are counted as clipped)"))


def _tokens(value: float) -> str:
    return f"{int(math.ceil(value)):,}"


def clip_pairs(inputs: np.ndarray, outputs: np.ndarray, limit: int) -> np.ndarray:
    """Cut each (input, output) pair to fit `limit` in place; returns the mask of pairs cut."""
    over = inputs + outputs > limit
    if over.any():
        outputs[over] = np.minimum(outputs[over], max(limit - 1, 1))
        inputs[over] = np.maximum(limit - outputs[over], 1)
    return over


def clip_trace(requests: list[Any], limit: ContextLimit, name: str) -> tuple[int, str | None]:
    """Clip a trace's rows in place (TraceRequest: input_len, output_len); refuse a trace most of
    whose rows do not fit. Returns (rows clipped, the note saying so)."""
    over = [r for r in requests if r.input_len + r.output_len > limit.tokens]
    if not over:
        return 0, None
    biggest = max(r.input_len + r.output_len for r in over)
    if len(over) * 2 > len(requests):
        raise ConfigError(f"trace {name}: {len(over)} of {len(requests)} requests ask for more tokens than the "
                          f"model's context of {limit.tokens:,} ({limit.source}); the largest asks for {biggest:,}")
    inputs = np.array([r.input_len for r in over], dtype=np.int64)
    outputs = np.array([r.output_len for r in over], dtype=np.int64)
    clip_pairs(inputs, outputs, limit.tokens)
    for r, i, o in zip(over, inputs.tolist(), outputs.tolist()):
        r.input_len, r.output_len = i, o
    return len(over), (f"trace {name}: {len(over)} of {len(requests)} requests asked for more than the model's "
                       f"context of {limit.tokens:,} tokens ({limit.source}; up to {biggest:,}) and were clipped "
                       "(input cut to the context less the output)")
