"""A `TokenizerLike` whose counts are known by construction, for tests.

Every token is a space plus a word `w<id>`; encoding splits on whitespace and maps each word back
to its id, so decode and encode round-trip exactly and a text's token count is its word count
(plus one BOS when special tokens are asked for). Words it does not know get a stable id of
their own. `encode_calls` counts calls, so tests can check work is cached.
"""

from __future__ import annotations

import numpy as np

BOS_ID = 1
FIRST_WORD_ID = 10


class WordTokenizer:
    def __init__(self, vocab_size: int = 5000) -> None:
        self.vocab_size = vocab_size
        self.encode_calls = 0
        self._unknown: dict[str, int] = {}

    def _id(self, word: str) -> int:
        if word.startswith("w") and word[1:].isdigit():
            return int(word[1:])
        return self._unknown.setdefault(word, self.vocab_size + len(self._unknown))

    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self.encode_calls += 1
        ids = [self._id(w) for w in text.split()]
        return [BOS_ID, *ids] if add_special_tokens else ids

    async def decode(self, ids: list[int]) -> str:
        return "".join(f" w{i}" for i in ids if i != BOS_ID)

    def random_ids(self, rng: np.random.Generator, n: int) -> list[int]:
        return rng.integers(FIRST_WORD_ID, self.vocab_size, size=n).tolist()
