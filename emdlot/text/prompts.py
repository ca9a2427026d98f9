"""The LLM seam: Chinese prompt per section, request rows in, key information out.

Pure functions, shared by the transformers and vLLM backends, so what is sent to the
model and how its answer is read can be tested without a model. The prompt asks for
at most `budget_chars` Chinese characters because Chinese BERT reads about one token
per character; the token budget itself is enforced after generation.
"""
from __future__ import annotations

import re
from typing import Any

from emdlot.text.config import LLMConfig

SECTION_TITLES: dict[str, str] = {
    "important_notice": "重大事项提示",
    "risk_factors": "风险因素",
}

SYSTEM_PROMPT = "你是一名资深信用分析师，负责从债券募集说明书中提炼与发行人违约风险相关的关键信息。"

USER_PROMPT = (
    "以下是某发行人债券募集说明书“{title}”章节的原文。\n"
    "请提炼其中与偿债能力、流动性、经营与财务状况、担保与诉讼等违约风险相关的关键信息，"
    "保留具体数字，删去格式化的声明与套话。\n"
    "要求：只输出提炼后的正文，使用简体中文连续段落，不超过{budget_chars}个字，不要标题、编号或解释。\n\n"
    "原文：\n{text}"
)


def build_messages(section: str, text: str, budget_chars: int, max_input_chars: int) -> list[dict[str, str]]:
    """Chat messages asking for the key risk information of one section."""
    if section not in SECTION_TITLES:
        raise ValueError(f"unknown prospectus section {section!r}; expected one of {sorted(SECTION_TITLES)}")
    user = USER_PROMPT.format(
        title=SECTION_TITLES[section], budget_chars=budget_chars, text=text[:max_input_chars]
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def sampling_params(cfg: LLMConfig) -> dict[str, Any]:
    """vLLM SamplingParams fields; temperature 0 makes the extraction greedy and reproducible."""
    return {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_new_tokens}


def build_request(row: dict[str, Any], *, cfg: LLMConfig, budget_chars: int) -> dict[str, Any]:
    """Ray Data LLM preprocess: a document row -> its `messages` and `sampling_params`.

    The row's `key` is passed through so the answer can be matched to its document.
    """
    return {
        "key": row["key"],
        "messages": build_messages(row["section"], row["text"], budget_chars, cfg.max_input_chars),
        "sampling_params": sampling_params(cfg),
    }


_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
_FENCE = re.compile(r"^```[\w-]*\s*$", re.MULTILINE)
_LEAD_IN = re.compile(r"^\s*(?:关键信息|提炼结果|摘要|总结|以下是[^：:\n]*)[：:]\s*")
_LIST_MARK = re.compile(r"^\s*(?:[-*•#>]+|\d+[.、)）]|[（(]\d+[)）]|[一二三四五六七八九十]+、)\s*", re.MULTILINE)
_SPACE_BETWEEN_CJK = re.compile(r"(?<=[\u3000-\u9fff\uff00-\uffef])[ \t\u3000]+(?=[\u3000-\u9fff\uff00-\uffef])")


def parse_response(generated_text: str | None) -> str:
    """The key information in a model answer: reasoning, markdown and lead-ins removed.

    Returns "" when nothing usable is left; the caller then falls back to extraction
    without a model and says so for that document.
    """
    if not generated_text:
        return ""
    text = _THINK.sub("", generated_text)
    text = _FENCE.sub("", text)
    text = _LEAD_IN.sub("", text.strip())
    text = _LIST_MARK.sub("", text)
    text = text.replace("**", "")
    text = _SPACE_BETWEEN_CJK.sub("", text)
    return re.sub(r"\s*\n\s*", "\n", text).strip()


def parse_output_row(row: dict[str, Any]) -> dict[str, Any]:
    """Ray Data LLM postprocess: keep the key, the parsed answer and the raw answer."""
    raw = row.get("generated_text") or ""
    return {"key": row["key"], "extracted": parse_response(raw), "raw_response": raw}
