"""The model-free extraction stays within its token budget and keeps risk sentences."""
import random

import pytest

from emdlot.text.config import ExtractiveConfig
from emdlot.text.extractive import extract_key_sentences, split_sentences
from emdlot.text.tokens import approx_token_count, cut_to_budget
from emdlot.text.fixtures import BOILERPLATE, NEUTRAL, RISK, _fill, build_tiny_bert, section_text

CFG = ExtractiveConfig()


@pytest.fixture(scope="module")
def bert_count(tmp_path_factory):
    from transformers import AutoTokenizer

    from emdlot.text.tokens import tokenizer_counter

    path = build_tiny_bert(tmp_path_factory.mktemp("bert"))
    return tokenizer_counter(AutoTokenizer.from_pretrained(path))


def test_split_sentences_keeps_punctuation_and_drops_blanks():
    assert split_sentences("第一句。第二句！\n\n第三句；无标点") == ["第一句。", "第二句！", "第三句；", "无标点"]


@pytest.mark.parametrize("budget", [20, 60, 150, 510])
def test_extraction_never_exceeds_budget_in_bert_tokens(bert_count, budget):
    rng = random.Random(budget)
    for _ in range(20):
        text = section_text("risk_factors", rng.random(), rng.randint(5, 60), rng)
        result = extract_key_sentences(text, bert_count, budget, CFG)
        assert result.n_tokens == bert_count(result.text) <= budget
        assert result.text  # something is always kept


def test_long_text_is_cut_to_budget_but_short_text_is_kept_whole(bert_count):
    rng = random.Random(3)
    long_text = section_text("risk_factors", 0.5, 60, rng)
    assert bert_count(long_text) > 510
    assert bert_count(extract_key_sentences(long_text, bert_count, 510, CFG).text) > 400  # budget is used
    short = section_text("risk_factors", 0.5, 3, rng)
    assert extract_key_sentences(short, bert_count, 510, CFG).text == short


def test_risk_sentences_win_over_boilerplate_and_neutral_text():
    rng = random.Random(0)
    risk = [_fill(t, rng) for t in RISK[:4]]
    filler = BOILERPLATE + [_fill(t, rng) for t in NEUTRAL]
    text = "".join(filler[:3] + risk[:2] + filler[3:] + risk[2:])
    budget = sum(approx_token_count(s) for s in risk)  # room for exactly the risk sentences
    kept = extract_key_sentences(text, approx_token_count, budget, CFG).text
    assert all(s in kept for s in risk)
    assert not any(s in kept for s in BOILERPLATE)


def test_kept_sentences_stay_in_reading_order():
    rng = random.Random(1)
    text = section_text("risk_factors", 0.6, 30, rng)
    kept = split_sentences(extract_key_sentences(text, approx_token_count, 200, CFG).text)
    positions = [text.index(s) for s in kept]
    assert positions == sorted(positions)


def test_a_single_sentence_longer_than_the_budget_is_cut(bert_count):
    sentence = "发行人有息负债规模较大" * 40 + "。"
    result = extract_key_sentences(sentence, bert_count, 50, CFG)
    assert 0 < result.n_tokens <= 50 and sentence.startswith(result.text)


def test_cut_to_budget_returns_the_longest_fitting_prefix():
    text = "一二三四五六七八九十"
    assert cut_to_budget(text, approx_token_count, 4) == "一二三四"
    assert cut_to_budget(text, approx_token_count, 100) == text


def test_extraction_is_deterministic(bert_count):
    text = section_text("important_notice", 0.7, 20, random.Random(5))
    assert extract_key_sentences(text, bert_count, 100, CFG) == extract_key_sentences(text, bert_count, 100, CFG)
