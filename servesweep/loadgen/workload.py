"""What each request asks for: prompt text, prompt length and output length.

Synthetic prompts are random token ids decoded to text and re-encoded until the server-side
count is exact, so each request has the requested prompt length and is unique (prefix caching
cannot inflate results by accident). An optional shared prefix of N tokens models a common
system prompt. A JSONL dataset replaces synthetic prompts: lines with `prompt` (and optionally
`output_len`), or ShareGPT-style `conversations` whose first human turn is the prompt and whose
first model turn gives the output length.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from servesweep.errors import ConfigError
from servesweep.loadgen.fit import clip_pairs
from servesweep.loadgen.lengths import LengthSpec
from servesweep.loadgen.tokenizer import TokenizerLike

Endpoint = Literal["completions", "chat"]


class Workload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: Endpoint = "completions"
    stream: bool = True
    input_len: LengthSpec = Field(default_factory=lambda: LengthSpec.parse(128))
    output_len: LengthSpec = Field(default_factory=lambda: LengthSpec.parse(64))
    dataset: Path | None = None
    shared_prefix_len: int = 0
    ignore_eos: bool = True
    # Ask for `usage` beside every streamed chunk (stream_options.continuous_usage_stats), so each
    # chunk's token count is the server's (servesweep.loadgen.exchange).
    chunk_usage: bool = True
    request_timeout_s: float = Field(300.0, gt=0)
    # A stream that has begun and then sends nothing for this long fails as a stall (a timeout).
    stall_timeout_s: float = Field(60.0, gt=0)
    seed: int = 0

    @field_validator("input_len", "output_len", mode="before")
    @classmethod
    def _parse_len(cls, value: object) -> object:
        return LengthSpec.parse(value) if isinstance(value, (str, int)) else value

    def describe(self) -> dict:
        data = self.model_dump(mode="json")
        data["input_len"] = str(self.input_len)
        data["output_len"] = str(self.output_len)
        return data


@dataclass(slots=True)
class PromptItem:
    text: str
    prompt_len: int | None  # exact server-side token count where known
    output_len: int
    system: str | None = None  # shared prefix, sent as the system message on the chat endpoint
    clipped: bool = False  # its lengths were cut to fit the model's context (servesweep.loadgen.fit)


async def exact_length_text(
    tokenizer: TokenizerLike, n_tokens: int, rng: np.random.Generator, add_special_tokens: bool = True
) -> tuple[str, int]:
    """Random text that encodes to exactly `n_tokens` (special tokens included when asked).

    Decoding random ids and re-encoding can merge or split tokens; a few rounds of trimming or
    topping up converge. Returns the text and the count it really has.
    """
    overhead = len(await tokenizer.encode("", add_special_tokens=add_special_tokens)) if add_special_tokens else 0
    target_content = max(n_tokens - overhead, 1)
    ids = tokenizer.random_ids(rng, target_content)
    text = await tokenizer.decode(ids)
    count = 0
    for _ in range(12):
        content = await tokenizer.encode(text, add_special_tokens=False)
        count = len(content) + overhead
        if count == n_tokens:
            return text, count
        if count > n_tokens:
            content = content[: max(len(content) - (count - n_tokens), 1)]
        else:
            content = content + tokenizer.random_ids(rng, n_tokens - count)
        text = await tokenizer.decode(content)
    return text, count


async def synthetic_prompts(
    workload: Workload, n: int, tokenizer: TokenizerLike, rng: np.random.Generator, concurrency: int = 32,
    limit: int | None = None,
) -> list[PromptItem]:
    """`n` prompts of the workload's lengths; with `limit` (the model's context), a request whose
    input + output would not fit is clipped to it (servesweep.loadgen.fit) before any text is built."""
    input_arr = workload.input_len.sample(rng, n, ceiling=limit)
    output_arr = workload.output_len.sample(rng, n, ceiling=limit)
    clipped = clip_pairs(input_arr, output_arr, limit) if limit else np.zeros(n, dtype=bool)
    input_lens, output_lens, clipped_list = input_arr.tolist(), output_arr.tolist(), clipped.tolist()
    prefix = ""
    prefix_len = workload.shared_prefix_len
    if prefix_len:
        prefix, prefix_len = await exact_length_text(tokenizer, prefix_len, rng, add_special_tokens=False)
    # One child generator per prompt: the same seed gives the same prompts whatever order the
    # (possibly remote) tokenizer answers in.
    base_seed = int(rng.integers(2**63))
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> PromptItem:
        own_rng = np.random.default_rng([base_seed, i])
        body_len = max(input_lens[i] - prefix_len, 1)
        async with gate:
            if workload.endpoint == "chat":
                # The chat template adds tokens of its own; the exact count comes back in `usage`.
                body, _ = await exact_length_text(tokenizer, body_len, own_rng, add_special_tokens=False)
                return PromptItem(body, None, output_lens[i], system=prefix or None, clipped=clipped_list[i])
            body, count = await exact_length_text(tokenizer, body_len, own_rng)
            if prefix:
                # Joined without a separator, so the boundary tokenizes the same way every time.
                body = prefix + body
                count = len(await tokenizer.encode(body))
            return PromptItem(body, count, output_lens[i], clipped=clipped_list[i])

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def _dataset_entry(obj: dict) -> tuple[str, str | None, int | None]:
    """(prompt, reference completion, output length) from one dataset line."""
    if "prompt" in obj:
        return str(obj["prompt"]), obj.get("completion"), obj.get("output_len")
    turns = obj.get("conversations") or obj.get("messages")
    if isinstance(turns, list):
        human = next((t for t in turns if t.get("from", t.get("role")) in ("human", "user")), None)
        if human is not None:
            reply = next((t for t in turns if t.get("from", t.get("role")) in ("gpt", "assistant")), None)
            text = human.get("value", human.get("content"))
            answer = reply.get("value", reply.get("content")) if reply else None
            return str(text), answer, None
    raise ConfigError("expected a 'prompt' field or ShareGPT 'conversations'")


async def dataset_prompts(
    workload: Workload, n: int, tokenizer: TokenizerLike | None, rng: np.random.Generator,
    limit: int | None = None,
) -> list[PromptItem]:
    """Prompts from a JSONL file, cycled in order when fewer lines than requests. With `limit` (the
    model's context) and a tokenizer, an output length that would not fit after its prompt is cut
    to the room left (the item is marked clipped); a prompt that alone does not fit is sent as is
    (the server's refusal is recorded)."""
    path = workload.dataset
    assert path is not None
    if not path.exists():
        raise ConfigError(f"dataset {path} does not exist")
    entries: list[tuple[str, str | None, int | None]] = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entries.append(_dataset_entry(orjson.loads(line)))
            except (orjson.JSONDecodeError, ValueError, AttributeError) as exc:
                raise ConfigError(f"{path}:{lineno}: {exc}") from None
    if not entries:
        raise ConfigError(f"dataset {path} has no prompts")
    fallback_out = workload.output_len.sample(rng, n)
    items: list[PromptItem] = []
    for i in range(n):
        prompt, answer, out_len = entries[i % len(entries)]
        prompt_len = len(await tokenizer.encode(prompt)) if tokenizer else None
        if out_len is None and answer and tokenizer:
            out_len = max(len(await tokenizer.encode(answer, add_special_tokens=False)), 1)
        output = int(out_len or fallback_out[i])
        clipped = False
        if limit and prompt_len is not None and prompt_len + output > limit:
            clipped = True
            output = max(limit - prompt_len, 1) if prompt_len < limit else output
        items.append(PromptItem(prompt, prompt_len, output, clipped=clipped))
    return items


async def build_prompts(
    workload: Workload, n: int, tokenizer: TokenizerLike | None, rng: np.random.Generator,
    limit: int | None = None,
) -> list[PromptItem]:
    if workload.dataset is not None:
        return await dataset_prompts(workload, n, tokenizer, rng, limit)
    if tokenizer is None:
        raise ConfigError("synthetic prompts need a tokenizer: give --tokenizer DIR or a server with /tokenize")
    return await synthetic_prompts(workload, n, tokenizer, rng, limit=limit)
