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
from tokenizers import Tokenizer


class TokenizerLike(Protocol):
    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    async def decode(self, ids: list[int]) -> str: ...

    def sample_range(self) -> tuple[int, int]:
        """[low, high) range of ordinary (non-special) token ids to draw random text from."""
        ...


class LocalTokenizer:
    def __init__(self, model_dir: str | Path) -> None:
        path = Path(model_dir) / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer.json in {model_dir}")
        self._tok = Tokenizer.from_file(str(path))
        self._special = set(self._special_ids())

    def _special_ids(self) -> list[int]:
        decoder = self._tok.get_added_tokens_decoder()
        return [i for i, tok in decoder.items() if tok.special]

    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    async def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def sample_range(self) -> tuple[int, int]:
        low = max(self._special) + 1 if self._special and max(self._special) < 1000 else 0
        return low, self._tok.get_vocab_size(with_added_tokens=False)


class ServerTokenizer:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, model: str, vocab_size: int) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._model = model
        self._vocab_size = vocab_size

    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        payload = {"model": self._model, "prompt": text, "add_special_tokens": add_special_tokens}
        async with self._session.post(f"{self._base}/tokenize", json=payload) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{self._base}/tokenize answered HTTP {resp.status}: {await resp.text()}")
            return (await resp.json())["tokens"]

    async def decode(self, ids: list[int]) -> str:
        payload = {"model": self._model, "tokens": ids}
        async with self._session.post(f"{self._base}/detokenize", json=payload) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{self._base}/detokenize answered HTTP {resp.status}: {await resp.text()}")
            return (await resp.json())["prompt"]

    def sample_range(self) -> tuple[int, int]:
        # Low ids are where most tokenizers keep their special and byte tokens.
        return min(1000, self._vocab_size // 4), self._vocab_size
