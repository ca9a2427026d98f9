"""Chinese prospectus sections assembled from varied sentence templates.

Distressed firms with the `risk_disclosure` mechanism draw many distress sentences; every other firm
may still draw a few, so the language is more frequent but never decisive.
"""
from __future__ import annotations

import numpy as np

INDUSTRIES = ("城市基础设施建设", "房地产开发", "煤炭开采", "钢铁冶炼", "交通运输", "商贸流通", "化工制造", "水务环保", "电力热力", "建筑施工")
RATINGS = ("AAA", "AA+", "AA", "AA-", "A+")

NOTICE = (
    "发行人董事会已批准本募集说明书，全体董事、监事及高级管理人员承诺其中不存在虚假记载、误导性陈述或重大遗漏。",
    "经{agency}综合评定，发行人主体信用等级为{rating}，本期债券信用等级为{rating}，评级展望为稳定。",
    "本期债券发行规模为人民币{amount}亿元，期限为{years}年，票面利率将根据簿记建档结果确定。",
    "投资者认购或持有本期债券即视为同意债券受托管理协议及债券持有人会议规则的各项安排。",
    "本期债券上市后的交易流通可能受到市场环境等因素影响，发行人无法保证本期债券具有活跃的交易市场。",
    "截至最近一期末，发行人合并口径资产负债率为{ratio}%，净资产为{na}亿元。",
    "发行人主营业务为{industry}，所处行业受宏观经济周期和产业政策影响较大。",
    "本期债券不提供担保，偿债资金主要来源于发行人日常经营产生的现金流。",
    "投资者应认真阅读本募集说明书全文及有关的信息披露文件，独立作出投资决策。",
    "中国证监会及交易所对本期债券发行的核准，并不表明对本期债券的投资价值作出任何评价。",
)

RISK = (
    "利率风险：受国民经济总体运行状况、国家宏观经济政策以及国际环境变化的影响，市场利率存在波动的可能性。",
    "流动性风险：本期债券发行结束后将申请上市交易，但无法保证本期债券能够按照预期上市交易并保持活跃。",
    "偿付风险：在本期债券存续期内，如果由于不可控的因素导致发行人不能从预期的还款来源获得足够资金，可能影响本期债券本息的按期偿付。",
    "经营风险：发行人所处{industry}行业竞争较为激烈，若未来市场需求下降，发行人的经营业绩可能受到不利影响。",
    "政策风险：发行人从事的{industry}业务受国家产业政策和地方政府规划影响较大，政策调整可能影响发行人的业务开展。",
    "管理风险：随着发行人业务规模的扩大，对公司治理、内部控制和人员管理提出了更高要求。",
    "资信风险：发行人资信状况良好，但在本期债券存续期内，若发行人资信状况发生不利变化，将可能影响本期债券的偿付。",
    "评级风险：在本期债券存续期内，资信评级机构将持续跟踪评级，评级结果的变化可能影响本期债券的市场价格。",
    "宏观经济风险：发行人所在行业与宏观经济周期高度相关，经济增速放缓可能对发行人盈利能力产生不利影响。",
    "投资项目风险：发行人在建项目投资规模较大、建设周期较长，项目建设中可能面临成本超支或延期完工等风险。",
    "会计政策变更风险：若未来会计准则发生变化，可能对发行人的财务报表产生一定影响。",
    "环保风险：随着国家环保标准的提高，发行人可能需要增加环保投入，从而对经营业绩产生一定影响。",
)

DISTRESS = (
    "发行人短期有息债务规模较大，未来一年内到期债务集中，存在较大的短期偿债压力。",
    "报告期内发行人经营活动产生的现金流量净额持续为负，对外部融资的依赖程度较高。",
    "发行人货币资金中受限资金占比较高，可自由支配的货币资金难以覆盖短期债务。",
    "发行人资产负债率逐年攀升，债务负担加重，财务结构稳健性下降。",
    "发行人涉及多起未决诉讼及仲裁事项，涉诉金额较大，可能对发行人的财务状况产生重大不利影响。",
    "发行人对外担保金额较大，被担保方如出现违约，发行人将面临代偿风险。",
    "报告期内发行人主营业务收入大幅下滑，净利润出现亏损，盈利能力明显减弱。",
    "发行人所有权受限资产规模较大，抵押和质押比例较高，再融资空间有限。",
    "发行人控股股东股权质押比例较高，若出现平仓风险，可能导致发行人控制权发生变更。",
    "发行人部分银行借款已出现展期，存续债券到期兑付依赖于借新还旧。",
    "近期发行人主体信用评级被下调并列入负面观察名单，再融资渠道明显收窄。",
    "发行人应收账款规模较大且账龄较长，存在一定的坏账风险，回款情况存在不确定性。",
    "发行人非标融资规模较大，融资成本较高，利息支出对利润形成较大侵蚀。",
    "发行人下属子公司存在债务逾期情况，可能引发交叉违约条款。",
)


def _fill(template: str, rng: np.random.Generator, industry: str) -> str:
    return template.format(
        agency=rng.choice(("中诚信国际", "联合资信", "大公国际", "东方金诚", "上海新世纪")),
        rating=rng.choice(RATINGS),
        amount=int(rng.integers(3, 30)),
        years=int(rng.choice((3, 5, 7))),
        ratio=f"{rng.uniform(40, 85):.2f}",
        na=f"{rng.uniform(10, 500):.1f}",
        industry=industry,
    )


def _section(pool: tuple[str, ...], distress: int, rng: np.random.Generator, industry: str, long: bool) -> str:
    n_plain = int(rng.integers(14, 26) if long else rng.integers(4, 9))
    sentences = [_fill(pool[i], rng, industry) for i in rng.integers(0, len(pool), n_plain)]
    picks = rng.choice(len(DISTRESS), size=min(distress, len(DISTRESS)), replace=False)
    for i in picks:
        sentences.insert(int(rng.integers(0, len(sentences) + 1)), DISTRESS[i])
    return "".join(sentences)


def prospectus_sections(rng: np.random.Generator, disclosed: bool, long_share: float) -> dict[str, str]:
    """The two sections of one firm; `disclosed` plants heavy distress language (the text mechanism)."""
    industry = str(rng.choice(INDUSTRIES))
    risk_distress = int(rng.integers(3, 7)) if disclosed else int(rng.binomial(2, 0.08))
    notice_distress = int(rng.integers(1, 3)) if disclosed else int(rng.binomial(1, 0.04))
    return {
        "important_notice": _section(NOTICE, notice_distress, rng, industry, rng.random() < long_share),
        "risk_factors": _section(RISK, risk_distress, rng, industry, rng.random() < long_share),
    }
