"""A seeded Chinese prospectus corpus and tiny local models, for tests, benchmarks and the vLLM check.

Model weights cannot be downloaded here, so the models are built here (small configs, a WordPiece vocabulary trained with
`tokenizers` on the corpus, save_pretrained) and loaded by the pipeline through the
same from_pretrained(path) call that loads Chinese-BERT-wwm and GLM-4.
"""
from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

BOILERPLATE = [
    "发行人全体董事、监事及高级管理人员保证募集说明书内容真实、准确、完整，不存在虚假记载、误导性陈述或重大遗漏。",
    "投资者在评价和购买本期债券时，应仔细阅读本募集说明书全文及有关的信息披露文件。",
    "凡认购、受让并合法持有本期债券的投资者，均视同自愿接受本募集说明书对本期债券各项权利义务的约定。",
    "中国证监会对本期债券发行的核准，并不表明其对本期债券的投资价值作出任何评价。",
    "本期债券发行结束后，发行人将积极申请本期债券在证券交易所上市流通。",
]
NEUTRAL = [
    "发行人是{city}市重要的基础设施建设主体，主要从事土地整理和城市道路建设业务。",
    "发行人主营业务包括{biz}，近年来业务规模稳步扩大。",
    "本期债券期限为{n}年，票面利率将根据簿记建档结果确定。",
    "发行人治理结构较为完善，内部控制制度健全，管理团队经验丰富。",
    "{city}市近年来经济保持平稳增长，财政收入逐年提高。",
]
RISK = [
    "截至{y}年末，发行人资产负债率为{p}%，有息负债规模较大，存在一定的偿债风险。",
    "报告期内，发行人经营活动产生的现金流量净额分别为{a}亿元、{b}亿元和-{c}亿元，波动较大。",
    "发行人短期借款余额为{a}亿元，未来一年内到期债务集中兑付压力较大，面临再融资风险。",
    "发行人对外担保余额为{a}亿元，占净资产的比例为{p}%，若被担保方出现违约，发行人将承担代偿责任。",
    "截至报告期末，发行人受限资产账面价值为{a}亿元，主要为抵押和质押的土地使用权及房产。",
    "发行人应收账款余额较大，若债务人回款不及时，可能产生坏账并计提减值准备。",
    "发行人涉及多起未决诉讼，涉案金额合计约{a}亿元，可能对经营产生重大不利影响。",
    "报告期内发行人净利润分别为{a}亿元和-{b}亿元，盈利能力明显下滑。",
    "发行人控股股东所持股份已质押{p}%，若股价下跌可能引发控制权变更风险。",
    "发行人存在逾期债务{a}亿元，资金链较为紧张，流动性风险突出。",
    "发行人主体信用评级为{r}，若未来评级被下调，可能影响本期债券的交易价格。",
]
MARKET = [
    "受宏观经济及行业政策调整影响，发行人主营业务收入存在下降的风险。",
    "利率市场化改革可能导致市场利率波动，从而影响本期债券的投资价值。",
    "发行人所处行业竞争激烈，产品价格波动可能对盈利水平造成影响。",
]
CITIES = ["兰州", "贵阳", "昆明", "南宁", "沈阳", "天津", "无锡", "温州"]
BUSINESS = ["钢铁冶炼", "房地产开发", "公路运营", "煤炭开采", "化工产品", "城市供水"]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        city=rng.choice(CITIES), biz=rng.choice(BUSINESS), n=rng.choice([3, 5, 7]), y=rng.randint(2015, 2023),
        p=rng.randint(20, 95), a=round(rng.uniform(0.5, 80), 2), b=round(rng.uniform(0.1, 30), 2),
        c=round(rng.uniform(0.1, 10), 2), r=rng.choice(["AAA", "AA+", "AA", "AA-"]),
    )


def section_text(section: str, risk_level: float, n_sentences: int, rng: random.Random) -> str:
    """A section whose share of risk sentences grows with `risk_level` (0..1)."""
    sentences = []
    if section == "important_notice":
        sentences += rng.sample(BOILERPLATE, 3)
    for _ in range(n_sentences):
        pool = RISK if rng.random() < risk_level else (NEUTRAL + MARKET)
        sentences.append(_fill(rng.choice(pool), rng))
    return "".join(sentences)


def make_corpus(n_firms: int = 64, seed: int = 0, long_every: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(prospectus rows, manifest) for `n_firms` firms; every `long_every`-th risk section
    runs well past 512 tokens. Split: 8 test, 6 val, the rest train."""
    rng = random.Random(seed)
    rows, manifest = [], []
    for i in range(n_firms):
        firm = f"F{i:03d}"
        risk = rng.random()
        rows.append((firm, "important_notice", section_text("important_notice", risk, rng.randint(3, 8), rng)))
        n_risk = rng.randint(30, 45) if i % long_every == 0 else rng.randint(4, 12)
        rows.append((firm, "risk_factors", section_text("risk_factors", risk, n_risk, rng)))
        split = "test" if i % 8 == 3 else "val" if i % 10 == 7 else "train"
        label = "Defaulted" if risk > 0.8 else "Extended" if risk > 0.65 else "Performing"
        manifest.append((firm, label, split, ""))
    return (pd.DataFrame(rows, columns=["firm_id", "section", "text"]),
            pd.DataFrame(manifest, columns=["firm_id", "label", "split", "reason"]))


def all_fixture_sentences() -> list[str]:
    """Text to train the tiny vocabularies on: every template, filled a few ways."""
    rng = random.Random(1)
    out = []
    for template in BOILERPLATE + NEUTRAL + RISK + MARKET:
        out += [_fill(template, rng) for _ in range(3)]
    return out


def budget_documents(model: str | Path, n: int, max_sentences: int = 40, budget: int = 510,
                     seed: int = 0) -> list[str]:
    """`n` risk-factor sections cut to `budget` tokens of `model`'s tokenizer: what the pipeline feeds BERT."""
    from transformers import AutoTokenizer

    from emdlot.text.tokens import cut_to_budget, tokenizer_counter

    count = tokenizer_counter(AutoTokenizer.from_pretrained(model))
    rng = random.Random(seed)
    return [cut_to_budget(section_text("risk_factors", rng.random(), rng.randint(8, max_sentences), rng), count, budget)
            for _ in range(n)]


def _wordpiece(texts: list[str], extra_special: list[str] = (), vocab_size: int = 1200):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *extra_special]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    return tok


def build_tiny_bert(path: str | Path, texts: list[str] | None = None, hidden: int = 64, layers: int = 2,
                    heads: int = 2, seed: int = 0) -> Path:
    """A small random BERT + WordPiece tokenizer saved like a hub model (loadable by from_pretrained)."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path = Path(path)
    tok = _wordpiece(texts or all_fixture_sentences())
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=512,
    ).save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=512)
    BertModel(config).eval().save_pretrained(path)
    return path


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tiny_glm4(path: str | Path, texts: list[str] | None = None, seed: int = 0) -> Path:
    """A small random Glm4ForCausalLM with a chat template (GLM-4-9B-0414's architecture)."""
    import torch
    from transformers import Glm4Config, Glm4ForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    roles = ["<|system|>", "<|user|>", "<|assistant|>", "<|endoftext|>"]
    tok = _wordpiece((texts or all_fixture_sentences()) + ["原文", "请提炼", "关键信息"], extra_special=roles)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="<|endoftext|>",
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    config = Glm4Config(
        vocab_size=tok.get_vocab_size(), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=4096,
        pad_token_id=tok.token_to_id("[PAD]"), eos_token_id=tok.token_to_id("<|endoftext|>"), bos_token_id=None,
    )
    Glm4ForCausalLM(config).eval().save_pretrained(path)
    return path


def write_dataset(folder: str | Path, prospectus: pd.DataFrame, manifest: pd.DataFrame, fmt: str = "parquet") -> Path:
    """Write prospectus.<fmt> and manifest.csv into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        prospectus.to_parquet(folder / "prospectus.parquet", index=False)
    else:
        prospectus.to_csv(folder / "prospectus.csv", index=False)
    manifest.to_csv(folder / "manifest.csv", index=False)
    return folder
