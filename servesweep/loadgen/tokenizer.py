"""Token counting with the target model's own tokenizer.

Prompts must have an exact token count as the server counts it. Two sources:
  - `LocalTokenizer`: the model directory's `tokenizer.json`, loaded with `tokenizers`;
  - `ServerTokenizer`: the server's `/tokenize` and `/detokenize` endpoints (vLLM has both),
    for when the tokenizer is not on this machine.
Both count special tokens the way a completions request does (BOS included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import aiohttp
import numpy as np
from tokenizers import Tokenizer

from servesweep.controlplane import NO_REDIRECTS, auth_error, is_auth_failure, is_redirect, redirect_error
from servesweep.errors import ServerUnresponsive, TargetError


class TokenizerLike(Protocol):
    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    async def decode(self, ids: list[int]) -> str: ...

    def random_ids(self, rng: np.random.Generator, n: int) -> list[int]:
        """`n` ordinary token ids to build random text from."""
        ...


class LocalTokenizer:
    def __init__(self, model_dir: str | Path) -> None:
        self.model_dir = Path(model_dir)
        path = self.model_dir / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer.json in {model_dir}")
        self._tok = Tokenizer.from_file(str(path))
        special = {i for i, tok in self._tok.get_added_tokens_decoder().items() if tok.special}
        self._pool = self._word_tokens(special)

    def _word_tokens(self, special: set[int], max_checked: int = 20000) -> np.ndarray:
        """Tokens that are a space plus letters and encode back to themselves.

        A run of such tokens splits at every space in pre-tokenization, so random text made of
        them re-encodes to exactly the same ids: prompts get their exact length at once.
        """
        vocab = self._tok.get_vocab_size(with_added_tokens=False)
        ids = np.arange(vocab)
        if vocab > max_checked:
            ids = np.random.default_rng(0).choice(vocab, max_checked, replace=False)
        pool = []
        for i in ids.tolist():
            if i in special:
                continue
            text = self._tok.decode([i])
            if len(text) > 1 and text[0] == " " and text[1:].isalpha() and text[1:].isascii():
                if self._tok.encode(text, add_special_tokens=False).ids == [i]:
                    pool.append(i)
        if len(pool) < 50:  # an unusual tokenizer: fall back to every ordinary id
            pool = [i for i in range(vocab) if i not in special]
        return np.array(pool)

    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    async def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def random_ids(self, rng: np.random.Generator, n: int) -> list[int]:
        return rng.choice(self._pool, size=n).tolist()


# Every /tokenize and /detokenize call gets this long (seconds). They answer in milliseconds; one
# that does not answer at all must not hold the run forever (Ctrl-C still stops it sooner).
CONTROL_TIMEOUT_S = 30.0


class _NotServed(TargetError):
    """The server has no usable /tokenize (most servers but vLLM answer 404)."""


class ServerTokenizer:
    """The server's own tokenizer. Every failure is a TargetError naming the URL: a server that
    cannot be reached or does not answer within `timeout_s` (CONTROL_TIMEOUT_S by default), an
    HTTP error, or an answer without the expected field."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, model: str, vocab_size: int,
                 timeout_s: float | None = None) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._model = model
        self._vocab_size = vocab_size
        self._timeout_s = CONTROL_TIMEOUT_S if timeout_s is None else timeout_s

    async def available(self) -> bool:
        """Whether the server tokenizes. False for an HTTP error or an unusable answer; a server
        that does not answer raises TargetError."""
        try:
            await self.encode("probe")
        except _NotServed:
            return False
        return True

    async def _post(self, endpoint: str, payload: dict, key: str) -> object:
        url = f"{self._base}/{endpoint}"
        try:
            async with self._session.post(url, json=payload, timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                                          **NO_REDIRECTS) as resp:
                if is_redirect(resp.status):
                    raise TargetError(redirect_error(url, resp.status, resp.headers.get("Location")))
                if is_auth_failure(resp.status):
                    raise auth_error(url, resp.status)
                if resp.status != 200:
                    raise _NotServed(f"{url} answered HTTP {resp.status}: {(await resp.text())[:200]}")
                body = await resp.json(content_type=None)
        except TimeoutError:
            raise ServerUnresponsive(f"{url} did not answer within {self._timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise TargetError(f"cannot reach {url}: {exc}") from None
        except ValueError:
            raise _NotServed(f"{url} did not answer with JSON") from None
        value = body.get(key) if isinstance(body, dict) else None
        if value is None:
            raise _NotServed(f"{url} answered without a {key!r} field")
        return value

    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        payload = {"model": self._model, "prompt": text, "add_special_tokens": add_special_tokens}
        tokens = await self._post("tokenize", payload, "tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise _NotServed(f"{self._base}/tokenize answered 'tokens' that are not a list of integers")
        return tokens

    async def decode(self, ids: list[int]) -> str:
        text = await self._post("detokenize", {"model": self._model, "tokens": ids}, "prompt")
        if not isinstance(text, str):
            raise _NotServed(f"{self._base}/detokenize answered a 'prompt' that is not a string")
        return text

    def random_ids(self, rng: np.random.Generator, n: int) -> list[int]:
        # Low ids are where most tokenizers keep their special and byte tokens.
        return rng.integers(min(1000, self._vocab_size // 4), self._vocab_size, size=n).tolist()


# --- which tokenizer: the one rule (`servesweep run`, sweeps, worker processes, Locust) ----------
# The source of token counts, as a string a worker process or a Locust worker can be handed: a
# model directory holding tokenizer.json, SERVER for the server's /tokenize, or None (no tokenizer:
# a dataset workload is then needed).
SERVER = "server"
# The vocabulary random prompt ids are drawn from when only the server tokenizes (its size is not
# served; ids below it exist in every tokenizer servesweep has met).
SERVER_VOCAB_SIZE = 32000


def local_tokenizer_dir(*candidates: str | Path | None) -> Path | None:
    """The first candidate directory that holds a tokenizer.json."""
    for candidate in candidates:
        if candidate and candidate != SERVER and (Path(candidate) / "tokenizer.json").exists():
            return Path(candidate)
    return None


async def tokenizer_source(session: aiohttp.ClientSession, base_url: str, model: str,
                           *candidates: str | Path | None, timeout_s: float | None = None) -> str | None:
    """Where prompts get their token counts, in this order: the first candidate directory with a
    tokenizer.json (the user's --tokenizer, then the model path the server reports), the server's
    /tokenize (SERVER), or None. A server that does not answer /tokenize in time is a TargetError,
    not "no tokenizer"."""
    local = local_tokenizer_dir(*candidates)
    if local is not None:
        return str(local.resolve())
    probe = ServerTokenizer(session, base_url, model, vocab_size=SERVER_VOCAB_SIZE, timeout_s=timeout_s)
    return SERVER if await probe.available() else None


def control_timeout(request_timeout_s: float | None) -> float:
    """A control call's timeout: CONTROL_TIMEOUT_S, or the run's --timeout where that is shorter."""
    return CONTROL_TIMEOUT_S if request_timeout_s is None else min(CONTROL_TIMEOUT_S, request_timeout_s)


def open_tokenizer(source: str | None, session: aiohttp.ClientSession, base_url: str,
                   model: str, timeout_s: float | None = None) -> TokenizerLike | None:
    """The tokenizer `tokenizer_source` chose (in this process: a worker re-opens its parent's)."""
    if source is None:
        return None
    if source == SERVER:
        return ServerTokenizer(session, base_url, model, vocab_size=SERVER_VOCAB_SIZE, timeout_s=timeout_s)
    return LocalTokenizer(source)
