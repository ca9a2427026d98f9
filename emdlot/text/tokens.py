"""How many BERT tokens a text takes, and cutting a text to a token budget.

Budgets are counted in the embedder's own tokens, because BERT's 512-token limit is
what the extraction has to fit. Without a BERT tokenizer (fallback embedder) the count
is approximated the way Chinese BERT tokenises: one token per CJK character or
punctuation mark, one per run of Latin letters or digits.
"""
from __future__ import annotations

import re
from typing import Callable, Protocol

TokenCounter = Callable[[str], int]

_APPROX_TOKEN = re.compile(r"[A-Za-z0-9]+|\S")


def approx_token_count(text: str) -> int:
    """Token count of `text` under a character-level Chinese tokenizer (no special tokens)."""
    return len(_APPROX_TOKEN.findall(text))


class _Tokenizer(Protocol):
    def __call__(self, text: str, **kwargs): ...


def tokenizer_counter(tokenizer: _Tokenizer) -> TokenCounter:
    """Count tokens with a Hugging Face tokenizer, without [CLS]/[SEP]."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def cut_to_budget(text: str, count: TokenCounter, budget: int) -> str:
    """Longest prefix of `text` whose token count fits `budget` (binary search on characters)."""
    if count(text) <= budget:
        return text
    lo, hi = 0, len(text)  # invariant: text[:lo] fits, text[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(text[:mid]) <= budget:
            lo = mid
        else:
            hi = mid
    return text[:lo]
