"""Trace replay input: production-shaped arrivals and lengths read from a trace file.

Two layouts are read:

  mooncake  JSONL, one request a line, the layout Mooncake published and AIPerf replays:
              {"timestamp": 1500, "input_length": 620, "output_length": 64, "hash_ids": [0, 17]}
            `timestamp`: milliseconds from the trace start (a number >= 0).
            `input_length`, `output_length`: token counts.
            `hash_ids` (optional): ids of the prompt's 512-token blocks, in order; requests that
            share a leading run of ids share that prompt prefix (the KV-cache reuse of real traffic).
            `text_input` or `text` (optional): the prompt itself, used as is.
  azure     CSV with a header naming at least `TIMESTAMP,ContextTokens,GeneratedTokens` (Microsoft's
            public Azure LLM inference traces; any column order, extra columns ignored, names matched
            without regard to case). TIMESTAMP is a date-time such as `2023-11-16 18:15:46.6805900`
            (any number of fractional digits, `T` or space between date and time, an optional `Z` or
            UTC offset), or a plain number of seconds.

A file ending in `.gz` is read through gzip. The format comes from the extension (`.jsonl`/`.json`
mooncake, `.csv` azure) or else from the first non-empty line; `read_trace(..., fmt=...)` forces it.

Policy (so a trace means one thing):
  - Lengths must be whole numbers (`12` or `12.0`); input >= 1, output >= 1. A request asking for
    zero tokens cannot be timed, so a trace with such rows is refused rather than silently altered.
  - Timestamps need not be in order (merged logs are often slightly out of order): requests are
    sorted by time, ties kept in file order, and offsets count from the earliest request.
    Mooncake timestamps must be >= 0 (they are offsets from the trace start); all must be finite.
  - `speed` divides every offset: speed 2 replays the trace in half the time (twice the rate).
  - A replay longer than MAX_REPLAY_S (30 days) is refused: a span like that (31.7 years from one
    stray timestamp) is a unit or date error in the file, not a load test; a replay over a day is
    allowed and `long_replay_note` says how long it will take.
  - Any bad row raises ConfigError naming the file, the line and what is wrong; so does a trace
    with no requests.

Prompts for length-only traces come from `TracePrompts`: each hash id maps to one fixed block of
random text (seeded by the id), so requests with the same ids really send the same prefix text. A
request's last block may be partial: it is then the first tokens of that id's block. Tokens past
its blocks are random text unique to the request. Public API:

  read_trace(path, fmt=None, speed=1.0) -> list[TraceRequest]
  detect_format(path) -> "mooncake" | "azure"
  trace_stats(requests, window_s=1.0) -> dict      count, duration, mean and peak request rates
  await trace_prompts(requests, tokenizer, seed=0, endpoint="completions") -> list[PromptItem]
  TracePrompts(tokenizer, seed, block_tokens).block(hash_id) -> str  (the shared block text)
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import gzip
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from servesweep.errors import ConfigError
from servesweep.loadgen.tokenizer import TokenizerLike
from servesweep.loadgen.workload import Endpoint, PromptItem, exact_length_text

TraceFormat = Literal["mooncake", "azure"]
FORMATS: tuple[str, ...] = ("mooncake", "azure")
BLOCK_TOKENS = 512  # Mooncake's (and AIPerf's default) prefix block size
MAX_REPLAY_S = 30 * 86400.0
LONG_REPLAY_S = 86400.0
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@dataclass(slots=True)
class TraceRequest:
    """One request of a trace: when it is sent (seconds after the first) and what it asks for."""

    offset_s: float
    input_len: int
    output_len: int
    hash_ids: tuple[int, ...] | None = None
    text: str | None = None


class _RowError(ValueError):
    """What is wrong with one row; read_trace adds the file and line."""


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def detect_format(path: str | Path) -> TraceFormat:
    """'mooncake' or 'azure', from the extension, else from the first non-empty line."""
    path = Path(path)
    ext = _base_suffix(path)
    if ext in (".jsonl", ".json", ".ndjson"):
        return "mooncake"
    if ext == ".csv":
        return "azure"
    try:
        with _open_text(path) as f:
            first = next((line.strip() for line in f if line.strip()), "")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"trace {path}: cannot be read: {exc}") from None
    if first.startswith("{"):
        return "mooncake"
    if "timestamp" in first.lower() and "," in first:
        return "azure"
    raise ConfigError(f"trace {path}: cannot tell its format from the extension or the first line; "
                      f"give the format ({' or '.join(FORMATS)})")


def _whole(value: Any, what: str, minimum: int) -> int:
    """A token count: an integer (or integral number / numeric string) >= minimum."""
    if isinstance(value, bool):
        raise _RowError(f"{what} must be a whole number, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise _RowError(f"{what} is not a number: {text!r}") from None
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise _RowError(f"{what} must be a whole number, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise _RowError(f"{what} must be a whole number, got {value!r}")
    if value < minimum:
        raise _RowError(f"{what} must be >= {minimum}, got {value}")
    return value


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _RowError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise _RowError(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise _RowError(f"{what} must be finite, got {value!r}")
    return number


def _mooncake_row(obj: Any) -> tuple[float, TraceRequest]:
    if not isinstance(obj, dict):
        raise _RowError(f"expected a JSON object, got {type(obj).__name__}")
    for key in ("timestamp", "input_length", "output_length"):
        if key not in obj:
            raise _RowError(f"missing field {key!r}")
    ms = _finite(obj["timestamp"], "timestamp")
    if ms < 0:
        raise _RowError(f"timestamp must be >= 0 (milliseconds from the trace start), got {obj['timestamp']!r}")
    hash_ids = obj.get("hash_ids")
    if hash_ids is not None:
        if not isinstance(hash_ids, list) or not all(isinstance(h, int) and not isinstance(h, bool)
                                                     for h in hash_ids):
            raise _RowError(f"hash_ids must be a list of integers, got {hash_ids!r}")
        hash_ids = tuple(hash_ids) or None
    text = obj.get("text_input", obj.get("text"))
    if text is not None and not isinstance(text, str):
        raise _RowError(f"text_input must be a string, got {type(text).__name__}")
    request = TraceRequest(0.0, _whole(obj["input_length"], "input_length", 1),
                           _whole(obj["output_length"], "output_length", 1), hash_ids, text)
    return ms / 1000.0, request


def _read_mooncake(path: Path) -> list[tuple[float, TraceRequest]]:
    rows = []
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(_mooncake_row(orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"trace {path}:{lineno}: not valid JSON: {exc}") from None
            except _RowError as exc:
                raise ConfigError(f"trace {path}:{lineno}: {exc}") from None
    return rows


_DATETIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,](\d+))?\s*(Z|[+-]\d{2}:?\d{2})?$", re.IGNORECASE
)


def _azure_time(text: str) -> tuple[int, float]:
    """(whole seconds, fraction) of a TIMESTAMP cell, kept apart so 7 fractional digits survive.

    Whole seconds are counted from an arbitrary epoch; only differences are used.
    """
    text = text.strip()
    match = _DATETIME.match(text)
    if match is None:
        try:
            seconds = float(text)
        except ValueError:
            raise _RowError(f"TIMESTAMP is not a date-time like 2023-11-16 18:15:46.6805900 "
                            f"nor a number of seconds: {text!r}") from None
        if not math.isfinite(seconds):
            raise _RowError(f"TIMESTAMP must be finite, got {text!r}")
        whole = math.floor(seconds)
        return whole, seconds - whole
    date, clock, frac, zone = match.groups()
    try:
        moment = dt.datetime.fromisoformat(f"{date} {clock}")
    except ValueError as exc:
        raise _RowError(f"TIMESTAMP {text!r}: {exc}") from None
    whole = int((moment - dt.datetime(1970, 1, 1)).total_seconds())
    if zone and zone.upper() != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        whole -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return whole, float(f"0.{frac}") if frac else 0.0


def _read_azure(path: Path) -> list[tuple[float, TraceRequest]]:
    rows: list[tuple[float, TraceRequest]] = []
    with _open_text(path) as f:
        reader = csv.reader(f)
        header: list[str] | None = None
        columns: dict[str, int] = {}
        first_time: tuple[int, float] | None = None
        for cells in reader:
            lineno = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header = [c.strip() for c in cells]
                lowered = [c.lower() for c in header]
                missing = [name for name in AZURE_COLUMNS if name.lower() not in lowered]
                if missing:
                    raise ConfigError(f"trace {path}:{lineno}: header lacks column(s) {', '.join(missing)}; "
                                      f"an Azure trace needs {','.join(AZURE_COLUMNS)}")
                columns = {name: lowered.index(name.lower()) for name in AZURE_COLUMNS}
                continue
            try:
                if len(cells) < len(header):
                    raise _RowError(f"{len(cells)} cells where the header has {len(header)}")
                whole, frac = _azure_time(cells[columns["TIMESTAMP"]])
                if first_time is None:
                    first_time = (whole, frac)
                # Differences of whole seconds and of fractions, so no precision is lost to a
                # large epoch value in a float.
                t = (whole - first_time[0]) + (frac - first_time[1])
                request = TraceRequest(0.0, _whole(cells[columns["ContextTokens"]], "ContextTokens", 1),
                                       _whole(cells[columns["GeneratedTokens"]], "GeneratedTokens", 1))
            except _RowError as exc:
                raise ConfigError(f"trace {path}:{lineno}: {exc}") from None
            rows.append((t, request))
    if header is None:
        raise ConfigError(f"trace {path}: empty file (no header, no requests)")
    return rows


def read_trace(path: str | Path, fmt: TraceFormat | None = None, speed: float = 1.0) -> list[TraceRequest]:
    """The trace's requests sorted by send time, offsets in seconds from the first, divided by `speed`."""
    path = Path(path)
    if not (isinstance(speed, (int, float)) and math.isfinite(speed) and speed > 0):
        raise ConfigError(f"trace speed must be a positive number, got {speed!r}")
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"trace format {fmt!r} is not known; use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise ConfigError(f"trace {path}: file does not exist")
    fmt = fmt or detect_format(path)
    try:
        rows = _read_mooncake(path) if fmt == "mooncake" else _read_azure(path)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise ConfigError(f"trace {path}: cannot be read as {fmt} text: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"trace {path}: cannot be read: {exc.strerror or exc}") from None
    except csv.Error as exc:
        raise ConfigError(f"trace {path}: not valid CSV: {exc}") from None
    if not rows:
        raise ConfigError(f"trace {path}: no requests in it")
    # sorted() is stable: requests with the same timestamp keep their file order.
    rows.sort(key=lambda row: row[0])
    start = rows[0][0]
    span = (rows[-1][0] - start) / speed
    if span > MAX_REPLAY_S:
        raise ConfigError(f"trace {path}: replaying it would take {_span(span)} (its timestamps span "
                          f"{_span(rows[-1][0] - start)}{f' at speed {speed:g}' if speed != 1 else ''}); "
                          "a stray or mis-scaled timestamp? (Mooncake timestamps are milliseconds) "
                          "Fix the file, or give a --trace-speed that brings it under 30 days")
    out = []
    for t, request in rows:
        request.offset_s = (t - start) / speed
        out.append(request)
    return out


def _span(seconds: float) -> str:
    for unit, size in (("years", 365.25 * 86400), ("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def long_replay_note(requests: list[TraceRequest]) -> str | None:
    """A line saying how long a replay over LONG_REPLAY_S will take; None for a shorter one."""
    span = requests[-1].offset_s - requests[0].offset_s if requests else 0.0
    if span <= LONG_REPLAY_S:
        return None
    return f"replaying this trace takes {_span(span)} (--trace-speed N replays it N times faster)"


def trace_stats(requests: list[TraceRequest], window_s: float = 1.0) -> dict[str, Any]:
    """Facts for sizing and for checking a trace fits the model before replaying it.

    `peak_rate` is the most requests whose offsets fall in any `window_s`-long window (sliding,
    anchored at each request), divided by `window_s`.
    """
    if not requests:
        return {"requests": 0}
    offsets = np.array([r.offset_s for r in requests])
    duration = float(offsets[-1] - offsets[0])
    ends = np.searchsorted(offsets, offsets + window_s, side="left")
    in_window = int((ends - np.arange(len(offsets))).max())
    inputs = [r.input_len for r in requests]
    outputs = [r.output_len for r in requests]
    return {
        "requests": len(requests),
        "duration_s": duration,
        "mean_rate": (len(requests) - 1) / duration if duration > 0 else None,  # arrivals per second
        "peak_rate": in_window / window_s,
        "peak_window_s": window_s,
        "max_input_len": max(inputs),
        "max_output_len": max(outputs),
        "max_total_len": max(i + o for i, o in zip(inputs, outputs)),
        "mean_input_len": float(np.mean(inputs)),
        "mean_output_len": float(np.mean(outputs)),
        "with_hash_ids": sum(1 for r in requests if r.hash_ids),
    }


class TracePrompts:
    """Deterministic prompt text for hash ids: the same id always gives the same block.

    A block is `exact_length_text` of `block_tokens` tokens (no special tokens) drawn with a
    generator seeded by (seed, hash_id), built once and cached. Shorter pieces of a block are its
    first tokens, so a partial last block is still a prefix of the full one.
    """

    def __init__(self, tokenizer: TokenizerLike, seed: int = 0, block_tokens: int = BLOCK_TOKENS) -> None:
        if block_tokens < 1:
            raise ConfigError(f"block_tokens must be >= 1, got {block_tokens}")
        self.tokenizer = tokenizer
        self.seed = seed
        self.block_tokens = block_tokens
        self._blocks: dict[int, asyncio.Future[tuple[str, list[int]]]] = {}
        self._overhead: int | None = None  # special tokens an empty completions prompt has (BOS)

    async def _make(self, hash_id: int) -> tuple[str, list[int]]:
        rng = np.random.default_rng([self.seed, 1, abs(hash_id), int(hash_id < 0)])
        text, _ = await exact_length_text(self.tokenizer, self.block_tokens, rng, add_special_tokens=False)
        return text, await self.tokenizer.encode(text, add_special_tokens=False)

    async def _entry(self, hash_id: int) -> tuple[str, list[int]]:
        # One task per id, so concurrent requests sharing an id build it once.
        if hash_id not in self._blocks:
            self._blocks[hash_id] = asyncio.ensure_future(self._make(hash_id))
        return await self._blocks[hash_id]

    async def block(self, hash_id: int, n_tokens: int | None = None) -> str:
        """The block's text, or its first `n_tokens` tokens' text."""
        text, ids = await self._entry(hash_id)
        if n_tokens is None or n_tokens >= len(ids):
            return text
        return await self.tokenizer.decode(ids[:n_tokens])

    async def prompt(self, request: TraceRequest, index: int, add_special_tokens: bool = True) -> tuple[str, int]:
        """(text, real token count) for one request: its blocks, then unique text up to input_len.

        `input_len` counts special tokens when `add_special_tokens` (completions: BOS is part of
        the prompt the server counts). Blocks beyond what input_len needs are left out. The count
        returned is the tokenizer's count of the joined text, which may differ from input_len by a
        token where block boundaries merge; the caller records the real count.
        """
        tok = self.tokenizer
        if add_special_tokens and self._overhead is None:
            self._overhead = len(await tok.encode("", add_special_tokens=True))
        overhead = (self._overhead or 0) if add_special_tokens else 0
        content = max(request.input_len - overhead, 1)
        pieces = []
        used = 0
        for hash_id in request.hash_ids or ():
            if used >= content:
                break
            take = min(self.block_tokens, content - used)
            pieces.append(await self.block(hash_id, take))
            used += take
        if used < content:
            rng = np.random.default_rng([self.seed, 2, index])
            tail, _ = await exact_length_text(tok, content - used, rng, add_special_tokens=False)
            pieces.append(tail)
        text = "".join(pieces)
        return text, len(await tok.encode(text, add_special_tokens=add_special_tokens))


async def trace_prompts(
    requests: list[TraceRequest],
    tokenizer: TokenizerLike | None,
    seed: int = 0,
    endpoint: Endpoint = "completions",
    block_tokens: int = BLOCK_TOKENS,
    concurrency: int = 32,
) -> list[PromptItem]:
    """One PromptItem per request, in order, for the runner.

    Requests carrying `text` are sent as is (counted when a tokenizer is given). Others get
    `TracePrompts` text; that needs a tokenizer. On the chat endpoint the template adds tokens of
    its own, so prompt_len is None there (the server's `usage` gives the real count) and the
    text is built without special tokens.
    """
    chat = endpoint == "chat"
    if tokenizer is None and any(r.text is None for r in requests):
        raise ConfigError("replaying a trace without prompt text needs a tokenizer: "
                          "give --tokenizer DIR or a server with /tokenize")
    builder = TracePrompts(tokenizer, seed, block_tokens) if tokenizer is not None else None
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, request: TraceRequest) -> PromptItem:
        async with gate:
            if request.text is not None:
                count = None
                if tokenizer is not None and not chat:
                    count = len(await tokenizer.encode(request.text))
                return PromptItem(request.text, count, request.output_len)
            assert builder is not None
            text, count = await builder.prompt(request, i, add_special_tokens=not chat)
            return PromptItem(text, None if chat else count, request.output_len)

    return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))
