"""Model-free key-information extraction: keep the most informative sentences in budget.

A sentence scores by the risk terms it holds (weighted lexicon, boilerplate terms count
against), whether it quotes figures (amounts, ratios) and how early it sits in the
section (prospectus sections lead with their most material items). Sentences are taken
best-first while they fit the token budget and are returned in their original order,
so the extraction still reads as text.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from emdlot.text.config import ExtractiveConfig
from emdlot.text.tokens import TokenCounter, cut_to_budget

# Weighted risk vocabulary of Chinese bond prospectuses (重大事项提示 / 风险因素).
# Positive: signals of credit risk. Negative: standard legal boilerplate that every
# prospectus repeats and that says nothing about the issuer.
RISK_LEXICON: dict[str, float] = {
    "违约": 3.0, "逾期": 3.0, "偿债": 2.5, "偿付": 2.5, "流动性": 2.0, "资金链": 3.0,
    "债务": 1.5, "负债": 1.5, "资产负债率": 2.0, "有息负债": 2.0, "短期借款": 2.0,
    "到期": 1.0, "集中兑付": 2.5, "再融资": 2.0, "融资": 1.0, "现金流": 2.0,
    "经营活动产生的现金流量净额": 2.0, "亏损": 2.5, "净利润": 1.0, "下降": 1.5,
    "下滑": 1.5, "波动": 1.0, "减值": 2.0, "应收账款": 1.5, "存货": 1.0,
    "担保": 1.5, "对外担保": 2.0, "抵押": 1.5, "质押": 1.5, "受限": 2.0, "冻结": 2.5,
    "诉讼": 2.0, "仲裁": 2.0, "处罚": 2.0, "失信": 3.0, "评级": 1.0, "下调": 2.0,
    "风险": 1.0, "不确定": 1.0, "重大不利": 2.0, "持续经营": 2.5, "政策": 0.5,
    "利率": 0.5, "汇率": 0.5, "关联交易": 1.0, "实际控制人": 1.0, "控股股东": 0.5,
    "保证": -1.0, "真实、准确、完整": -3.0, "虚假记载": -3.0, "误导性陈述": -3.0,
    "重大遗漏": -2.0, "法律责任": -1.5, "仔细阅读": -2.0, "审慎": -1.0, "声明": -1.0,
}

_SENTENCE = re.compile(r"[^。！？；!?;\n]+[。！？；!?;]*")
_FIGURE = re.compile(r"\d[\d,.]*\s*(?:%|％|亿|万|元|倍)?")


def split_sentences(text: str) -> list[str]:
    """Sentences of a Chinese text, ending punctuation kept, whitespace-only pieces dropped."""
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def sentence_score(sentence: str, position: int, n_sentences: int, cfg: ExtractiveConfig) -> float:
    """Risk-term weight per sqrt(length), plus figure and early-position bonuses."""
    lexicon = sum(weight * sentence.count(term) for term, weight in RISK_LEXICON.items())
    density = lexicon / math.sqrt(max(len(sentence), 1) / 20 + 1)
    figures = cfg.number_weight if _FIGURE.search(sentence) else 0.0
    early = cfg.position_weight * (1 - position / max(n_sentences, 1))
    return density + figures + early


@dataclass(frozen=True)
class Extraction:
    text: str
    n_tokens: int
    n_sentences_kept: int
    n_sentences: int


def extract_key_sentences(text: str, count: TokenCounter, budget: int, cfg: ExtractiveConfig) -> Extraction:
    """Best-scoring sentences of `text` that together fit `budget` tokens, in reading order."""
    sentences = split_sentences(text)
    if not sentences:
        return Extraction("", 0, 0, 0)
    n = len(sentences)
    ranked = sorted(range(n), key=lambda i: (-sentence_score(sentences[i], i, n, cfg), i))
    kept: list[int] = []
    used = 0
    for i in ranked:
        cost = count(sentences[i])
        if used + cost <= budget:
            kept.append(i)
            used += cost
    if not kept:  # even the best sentence is longer than the budget: cut it
        best = cut_to_budget(sentences[ranked[0]], count, budget)
        return Extraction(best, count(best), 1, n)
    kept.sort()
    joined = "".join(sentences[i] for i in kept)
    # Token counts of parts need not add up exactly (a Latin word split across a
    # boundary); drop the lowest-ranked sentence until the joined text fits.
    while count(joined) > budget and len(kept) > 1:
        worst = max(kept, key=ranked.index)
        kept.remove(worst)
        joined = "".join(sentences[i] for i in kept)
    joined = cut_to_budget(joined, count, budget)
    return Extraction(joined, count(joined), len(kept), n)
