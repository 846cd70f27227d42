"""The prompts a Locust process sends: built once, before its first request, and encoded in advance.

The same builder as `servesweep run` (servesweep.loadgen.workload.build_prompts): exact prompt
lengths, output-length distributions, shared prefix, datasets. Each process draws its own prompts
(seed + worker index), so workers do not send identical prompts that the server's prefix cache
would answer cheaply. Every prompt's whole HTTP request is encoded here, so a request costs one
`sendall`.

Tokenizers: a model directory's tokenizer.json when the process can read it, else the server's
`/tokenize` (`BlockingServerTokenizer`: plain urllib calls, which gevent turns into cooperative
ones under Locust).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

import numpy as np
import orjson

from servesweep import controlplane
from servesweep.errors import ConfigError, ServerUnresponsive, TargetError
from servesweep.loadgen.client import build_payload, endpoint_path
from servesweep.loadgen.http import HttpPool
from servesweep.loadgen.tokenizer import (SERVER_VOCAB_SIZE, LocalTokenizer, TokenizerLike, control_timeout,
                                          local_tokenizer_dir)
from servesweep.loadgen.lengths import LARGEST_CONTEXT
from servesweep.loadgen.workload import PromptItem, build_prompts
from servesweep.locust.config import LocustRunConfig


T = TypeVar("T")


@dataclass(slots=True)
class PreparedPrompt:
    item: PromptItem
    request: bytes  # the whole HTTP request, headers included


class BlockingServerTokenizer:
    """The server's /tokenize and /detokenize (vLLM serves both) over blocking HTTP calls."""

    def __init__(self, base_url: str, model: str, vocab_size: int = SERVER_VOCAB_SIZE, timeout_s: float = 30.0) -> None:
        self._base = base_url.rstrip("/")
        self._model = model
        self._vocab_size = vocab_size
        self._timeout_s = timeout_s

    def _post(self, path: str, payload: dict) -> dict:
        req = urllib.request.Request(self._base + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with controlplane.urlopen(req, timeout=self._timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if controlplane.is_redirect(exc.code):
                raise TargetError(exc.msg) from None
            if controlplane.is_auth_failure(exc.code):
                raise controlplane.auth_error(self._base + path, exc.code) from None
            raise TargetError(f"{self._base}{path} answered HTTP {exc.code}: {exc.read()[:200]!r}") from None
        except (urllib.error.URLError, OSError) as exc:
            if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError):
                raise ServerUnresponsive(f"{self._base}{path} did not answer within {self._timeout_s:g} s") from None
            raise TargetError(f"cannot reach {self._base}{path}: {exc}") from None

    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._post("/tokenize", {"model": self._model, "prompt": text,
                                        "add_special_tokens": add_special_tokens})["tokens"]

    async def decode(self, ids: list[int]) -> str:
        return self._post("/detokenize", {"model": self._model, "tokens": ids})["prompt"]

    def random_ids(self, rng: np.random.Generator, n: int) -> list[int]:
        # Low ids are where most tokenizers keep their special and byte tokens (as ServerTokenizer).
        return rng.integers(min(1000, self._vocab_size // 4), self._vocab_size, size=n).tolist()


class _Cooperative:
    """A tokenizer that lets other greenlets run between calls (Locust's heartbeats must go out
    while a worker builds thousands of prompts), and fails every call after the first failure: the
    blocking calls do not yield to the event loop, so each prompt task it had started would
    otherwise wait out its own timeout before the build stopped (8 x 30 s seen)."""

    def __init__(self, inner: TokenizerLike, pause: Callable[[], None]) -> None:
        self._inner, self._pause = inner, pause
        self._failed: Exception | None = None

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        if self._failed is not None:
            raise self._failed
        self._pause()
        try:
            return await call()
        except Exception as exc:
            self._failed = exc
            raise

    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return await self._call(lambda: self._inner.encode(text, add_special_tokens=add_special_tokens))

    async def decode(self, ids: list[int]) -> str:
        return await self._call(lambda: self._inner.decode(ids))

    def random_ids(self, rng: np.random.Generator, n: int) -> list[int]:
        return self._inner.random_ids(rng, n)


def make_tokenizer(config: LocustRunConfig) -> TokenizerLike | None:
    source = config.tokenizer
    if source is None:
        return None
    if local_tokenizer_dir(source) is not None:
        return LocalTokenizer(source)
    # "server", or a directory this machine (a remote worker's) does not have.
    return BlockingServerTokenizer(config.base_url, config.model,
                                   timeout_s=control_timeout(config.workload.request_timeout_s))


def build_pool(config: LocustRunConfig, index: int, pause: Callable[[], None] = lambda: None) -> list[PreparedPrompt]:
    """`config.prompt_pool` prompts for the process of worker `index` (0 for a single process)."""
    workload = config.workload.model_copy(update={"seed": config.workload.seed + index})
    tokenizer = make_tokenizer(config)
    if tokenizer is None and workload.dataset is None:
        raise ConfigError("synthetic prompts need a tokenizer: give --tokenizer DIR or a server with /tokenize")
    wrapped = _Cooperative(tokenizer, pause) if tokenizer is not None else None
    rng = np.random.default_rng(workload.seed)
    # Lengths were checked against the model's context before Locust started (cli/locust.py);
    # a distribution's tail past it is clipped here, as `servesweep run` clips it.
    limit = config.max_model_len or LARGEST_CONTEXT
    items = asyncio.run(build_prompts(workload, config.prompt_pool, wrapped, rng, limit=limit))
    target = HttpPool(config.base_url)  # only its request encoder: the bytes `servesweep run` sends
    path = endpoint_path(workload)
    return [PreparedPrompt(item, target.encode_post(path, orjson.dumps(build_payload(config.model, item, workload))))
            for item in items]
