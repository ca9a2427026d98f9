"""Wind / iFinD importers: small workbooks in the vendors' layouts, written here with openpyxl,
plus the real samples in ../shared/data when that folder exists."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from emdlot.data.contract import check_inputs
from emdlot.data.io import read_table, write_table
from emdlot.importers import (
    ExtensionRule,
    ImportFormatError,
    MacroImportConfig,
    WindDefaultsConfig,
    read_ifind_first_defaults,
    read_wind_defaults,
    read_wind_edb,
    read_wind_macro,
    series_summary,
    to_quarterly,
)

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FOOTER = "数据来源：Wind"


def write_workbook(path: Path, sheets: dict[str, list[list]]) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def d(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day)


MONTH_ENDS_2020 = [pd.Timestamp(2020, month, 1) + pd.offsets.MonthEnd(0) for month in range(1, 12)]  # Jan..Nov


def edb_workbook(path: Path) -> Path:
    """Three sheets in the Wind EDB layout: quarterly GDP; monthly series with 频率/单位 metadata rows,
    a banner row above the header and a gap; a sheet in descending date order repeating a name."""
    quarterly = [
        ["指标名称", "GDP:不变价:当季同比"],
        [d(2019, 12, 31), 6.0],
        [d(2020, 3, 31), -6.9],
        [None, None],  # blank rows inside the data
        [d(2020, 6, 30), 3.1],
        [d(2020, 9, 30), 4.8],
        [d(2020, 12, 31), 6.4],
        [None, None],
        [FOOTER, None],
    ]
    monthly = [
        ["=[1]!edb()", None, None],  # the export's formula banner (cached value "Wind" in real files)
        ["指标名称", "CPI:当月同比", "发电量:当月值"],
        ["频率", "月", "月"],
        ["单位", "%", "亿千瓦时"],
        ["指标ID", "M0000612", "S0027012"],
    ]
    for month, when in enumerate(MONTH_ENDS_2020, start=1):
        monthly.append([when, float(month), 100.0 + month if month != 5 else None])  # May missing for the flow
    monthly += [[None, None, None], [FOOTER, None, None]]
    descending = [["指标名称", "GDP:不变价:当季同比", "M2:同比"]]
    for when, value, m2 in [(d(2020, 12, 31), 6.5, 10.1), (d(2020, 9, 30), 4.9, 10.9), (d(2020, 6, 30), 3.2, 11.1)]:
        descending.append([when, value, m2])
    descending.append([FOOTER, None, None])
    return write_workbook(path, {"季度": quarterly, "月度": monthly, "倒序": descending})


@pytest.fixture()
def edb_file(tmp_path: Path) -> Path:
    return edb_workbook(tmp_path / "wind_edb.xlsx")


# ----------------------------------------------------------------------------- macro


def test_macro_is_one_row_per_quarter_end_with_one_column_per_series(edb_file):
    macro = read_wind_macro(edb_file)
    assert list(macro.columns) == [
        "date", "GDP:不变价:当季同比", "CPI:当月同比", "发电量:当月值", "GDP:不变价:当季同比 [倒序!B]", "M2:同比",
    ]
    expected_dates = pd.to_datetime(["2019-12-31", "2020-03-31", "2020-06-30", "2020-09-30", "2020-12-31"])
    assert list(macro["date"]) == list(expected_dates)  # footer, blank and metadata rows add no quarter
    assert macro["date"].is_unique and str(macro["date"].dtype) == "datetime64[ns]"
    by_date = macro.set_index("date")
    # quarterly series kept as they are
    assert by_date["GDP:不变价:当季同比"].tolist() == [6.0, -6.9, 3.1, 4.8, 6.4]
    # monthly series: the last month of each quarter (an incomplete last quarter takes its latest month)
    assert by_date["CPI:当月同比"].iloc[1:].tolist() == [3.0, 6.0, 9.0, 11.0]
    assert by_date["发电量:当月值"].iloc[1:].tolist() == [103.0, 106.0, 109.0, 111.0]
    # quarters a series does not cover are missing, not filled
    assert pd.isna(by_date.loc["2019-12-31", "CPI:当月同比"]) and pd.isna(by_date.loc["2020-03-31", "M2:同比"])
    assert all(dtype == "float64" for dtype in macro.dtypes.iloc[1:])


def test_macro_mean_aggregation_averages_the_quarters_observations(edb_file):
    macro = read_wind_macro(edb_file, MacroImportConfig(aggregation="mean")).set_index("date")
    assert macro["CPI:当月同比"].iloc[1:].tolist() == [2.0, 5.0, 8.0, 10.5]
    # May is missing: Q2 averages April and June only
    assert macro.loc["2020-06-30", "发电量:当月值"] == pytest.approx((104.0 + 106.0) / 2)
    # a quarterly series has one value per quarter, so mean and last agree
    assert macro["GDP:不变价:当季同比"].tolist() == [6.0, -6.9, 3.1, 4.8, 6.4]


def test_frequency_comes_from_the_metadata_row_else_from_date_spacing(tmp_path, edb_file):
    summary = series_summary(read_wind_edb(edb_file)).set_index("name")
    assert summary.loc["CPI:当月同比", ["frequency", "frequency_source", "unit"]].tolist() == ["monthly", "metadata", "%"]
    assert summary.loc["GDP:不变价:当季同比", ["frequency", "frequency_source"]].tolist() == ["quarterly", "spacing"]
    assert pd.isna(summary.loc["GDP:不变价:当季同比", "unit"])
    assert summary.loc["发电量:当月值", "observations"] == 10
    # the metadata wins over the spacing: weekly-spaced data declared as daily stays daily
    weekly = [["指标名称", "利差"], ["频率", "日"]] + [[d(2021, 1, 4 + 7 * k), float(k)] for k in range(4)]
    spaced = [["指标名称", "利差2"]] + [[d(2021, 1, 4 + 7 * k), float(k)] for k in range(4)]
    path = write_workbook(tmp_path / "spreads.xlsx", {"declared": weekly, "spaced": spaced})
    summary = series_summary(read_wind_edb(path)).set_index("name")
    assert summary.loc["利差", ["frequency", "frequency_source"]].tolist() == ["daily", "metadata"]
    assert summary.loc["利差2", ["frequency", "frequency_source"]].tolist() == ["weekly", "spacing"]


def test_repeated_series_names_get_a_deterministic_sheet_and_column_suffix(tmp_path, edb_file):
    first = read_wind_edb(edb_file)
    again = read_wind_edb(edb_file)
    assert [s.name for s in first] == [s.name for s in again]
    repeated = [s for s in first if s.source_name == "GDP:不变价:当季同比"]
    assert [(s.name, s.sheet, s.column) for s in repeated] == [
        ("GDP:不变价:当季同比", "季度", "B"),
        ("GDP:不变价:当季同比 [倒序!B]", "倒序", "B"),
    ]
    # within one sheet too, and a series called "date" cannot shadow the date column
    same_sheet = [["指标名称", "M1", "M1", "date"], [d(2020, 3, 31), 1.0, 2.0, 3.0]]
    names = [s.name for s in read_wind_edb(write_workbook(tmp_path / "dup.xlsx", {"s": same_sheet}))]
    assert names == ["M1", "M1 [s!C]", "date [s!D]"]


def test_descending_sheet_is_sorted_and_sheets_can_be_selected(edb_file):
    macro = read_wind_macro(edb_file, MacroImportConfig(sheets=["倒序"]))
    assert list(macro.columns) == ["date", "GDP:不变价:当季同比", "M2:同比"]  # only this sheet: no suffix needed
    assert macro["date"].is_monotonic_increasing
    assert macro["M2:同比"].tolist() == [11.1, 10.9, 10.1]


def test_to_quarterly_keeps_a_series_without_observations_as_an_empty_column(tmp_path):
    rows = [["指标名称", "有值", "停更"], [d(2020, 1, 31), 1.0, None], [d(2020, 4, 30), 2.0, "--"]]
    series = read_wind_edb(write_workbook(tmp_path / "empty.xlsx", {"s": rows}))
    assert series_summary(series).set_index("name").loc["停更", ["observations", "frequency"]].tolist() == [0, "unknown"]
    macro = to_quarterly(series)
    assert macro["停更"].isna().all() and macro["有值"].tolist() == [1.0, 2.0]


BAD_EDB_SHEETS = {
    "non-numeric value": ([["指标名称", "CPI"], [d(2020, 1, 31), 1.0], [d(2020, 2, 29), "n/a"]],
                          ["sheet 'bad'", "row 3", "column B ('CPI')", "expected a number, found 'n/a'"]),
    "text among the dates": ([["指标名称", "CPI"], [d(2020, 1, 31), 1.0], ["注释", 2.0], [d(2020, 3, 31), 3.0]],
                             ["row 3", "column A", "'注释'"]),
    "value without a date": ([["指标名称", "CPI"], [d(2020, 1, 31), 1.0], [None, 2.0]],
                             ["row 3", "column B ('CPI')", "without a date"]),
    "no header row": ([["名称", "CPI"], [d(2020, 1, 31), 1.0]],
                      ["sheet 'bad'", "column A", "not a recognised EDB layout", "指标名称"]),
    "duplicate date": ([["指标名称", "CPI"], [d(2020, 1, 31), 1.0], [d(2020, 1, 31), 2.0]],
                       ["row 3", "column A", "already appears in row 2"]),
    "data below the footer": ([["指标名称", "CPI"], [d(2020, 1, 31), 1.0], [FOOTER, None], [d(2020, 2, 29), 2.0]],
                              ["row 4", "below the source note in row 3"]),
    "unknown frequency": ([["指标名称", "CPI"], ["频率", "每月"], [d(2020, 1, 31), 1.0]],
                          ["row 2", "column B ('CPI')", "unknown frequency '每月'"]),
    "value in an unnamed column": ([["指标名称", "CPI", None], [d(2020, 1, 31), 1.0, None], [d(2020, 2, 29), 2.0, 5.0]],
                                   ["row 3", "column C", "without a series name"]),
    "number where a date belongs": ([["指标名称", "CPI"], [43861, 1.0]], ["row 2", "column A", "expected a date"]),
    "no data rows": ([["指标名称", "CPI"], [FOOTER, None]], ["row 1", "no dated rows"]),
}


@pytest.mark.parametrize("case", list(BAD_EDB_SHEETS))
def test_bad_edb_layouts_raise_an_error_naming_file_sheet_row_and_column(tmp_path, case):
    rows, expected_parts = BAD_EDB_SHEETS[case]
    path = write_workbook(tmp_path / "bad_macro.xlsx", {"bad": rows})
    with pytest.raises(ImportFormatError) as caught:
        read_wind_macro(path)
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert message.startswith(str(path))
    for part in expected_parts:
        assert part in message, (part, message)


def test_unreadable_file_and_unknown_sheet_are_clear_errors(tmp_path, edb_file):
    not_excel = tmp_path / "macro.xlsx"
    not_excel.write_text("date,cpi\n2020-01-31,1\n", encoding="utf-8")
    with pytest.raises(ImportFormatError, match="not a readable .xlsx workbook"):
        read_wind_macro(not_excel)
    with pytest.raises(ImportFormatError, match="no sheet named '缺失'"):
        read_wind_macro(edb_file, MacroImportConfig(sheets=["缺失"]))


# ----------------------------------------------------------------------------- labels

WIND_HEADER = ["代码", "名称", "发生日期", "事件摘要", "发行人", "担保人"]


def wind_events_workbook(path: Path, events: list[list]) -> Path:
    trailer = [[None] * 6, [None, "", "", "", "", ""], [FOOTER, None, None, None, None, None]]
    spreads = [["指标名称", "信用利差:AAA:城投"], ["频率", "日"], [d(2021, 1, 4), 50.0]]
    return write_workbook(path, {"违约债券报表": [WIND_HEADER] + events + trailer, "同等级不同行业": spreads})


WIND_EVENTS = [
    # A: its first event is listed after a later one; that first event reports an extension
    ["111.SZ", "18甲01", d(2020, 6, 1), "未能按期兑付本息", "甲公司", ""],
    ["112.SZ", "17甲02", d(2019, 3, 5), "经持有人会议同意，本期债券本金展期一年", "甲公司", ""],
    # B: first event a default, a later one an extension: the first event decides
    ["211.SH", "16乙01", d(2018, 1, 10), "不能按期支付利息,构成实质性违约", "乙集团有限公司", ""],
    ["212.SH", "16乙02", d(2018, 9, 10), "本期债券正在推进展期工作安排", "乙集团有限公司", ""],
    [None] * 6,  # a blank row inside the report
    # C: an extension that failed ("未能...就展期事宜达成一致") is a default
    ["311.IB", "16丙01", d(2018, 11, 28), "截止目前，发行人亦未能与债券持有人就展期事宜达成一致共识。", "丙控股股份有限公司", ""],
    # D: 延期 (a payment delay) is a default unless the rule counts it
    ["411.SZ", "13丁债", d(2016, 3, 14), "发行人现提议延期支付本金及利息", "  丁有限公司 ", ""],
    # E: two events on the first date, the second reporting an extension
    ["511.SH", "19戊01", d(2021, 3, 19), "本期中期票据提前到期应付", "戊基业股份有限公司", ""],
    ["512.SH", "19戊02", d(2021, 3, 19), "本期中期票据提前到期。_x000D_\n本期中期票据正在推进展期工作安排", "戊基业股份有限公司", ""],
]


@pytest.fixture()
def wind_events_file(tmp_path: Path) -> Path:
    return wind_events_workbook(tmp_path / "wind_defaults.xlsx", WIND_EVENTS)


def test_wind_defaults_give_one_label_per_issuer_from_its_first_event(wind_events_file):
    labels = read_wind_defaults(wind_events_file).set_index("firm_id")
    assert sorted(labels.index) == sorted(["甲公司", "乙集团有限公司", "丙控股股份有限公司", "丁有限公司", "戊基业股份有限公司"])
    assert labels["label"].to_dict() == {
        "甲公司": "Extended",
        "乙集团有限公司": "Defaulted",
        "丙控股股份有限公司": "Defaulted",
        "丁有限公司": "Defaulted",
        "戊基业股份有限公司": "Extended",
    }
    assert labels.loc["甲公司", "event_date"] == pd.Timestamp("2019-03-05")
    assert labels.loc["甲公司", ["bond_code", "bond_name", "n_events"]].tolist() == ["112.SZ", "17甲02", 2]
    assert labels.loc["乙集团有限公司", "event_date"] == pd.Timestamp("2018-01-10")
    assert "展期" in labels.loc["甲公司", "extension_evidence"]
    assert labels.loc["乙集团有限公司", "extension_evidence"] == ""
    # a tie on the first date: Extended because one of them reports it; the bond is the first listed
    assert labels.loc["戊基业股份有限公司", ["bond_code", "n_events"]].tolist() == ["511.SH", 2]
    assert labels.loc["戊基业股份有限公司", "extension_evidence"] == "本期中期票据正在推进展期工作安排"
    assert str(labels["event_date"].dtype) == "datetime64[ns]"


def test_counting_yanqi_is_a_rule_setting(wind_events_file):
    rule = ExtensionRule(keywords=["展期", "延期"])
    labels = read_wind_defaults(wind_events_file, WindDefaultsConfig(extension=rule)).set_index("firm_id")
    assert labels.loc["丁有限公司", "label"] == "Extended"
    assert labels.loc["丙控股股份有限公司", "label"] == "Defaulted"


def test_extension_rule_reads_negations_within_the_clause():
    rule = ExtensionRule(keywords=["展期", "延期"])
    assert rule.evidence("经持有人会议审议，同意本期债券展期至2022年。") == "同意本期债券展期至2022年"
    assert rule.evidence("公司未能就展期事宜达成一致") is None
    assert rule.evidence("“16配投01”延期兑付的议案未通过") is None
    # a negation in another clause does not cancel the extension
    assert rule.evidence("公司未能按期兑付，持有人会议同意展期") == "持有人会议同意展期"
    assert rule.evidence("") is None


BAD_EVENT_ROWS = {
    "missing date": (["1.SZ", "债", None, "违约", "某公司", ""], ["row 2", "column C ('发生日期')", "date is missing"]),
    "text date": (["1.SZ", "债", "去年", "违约", "某公司", ""], ["row 2", "column C ('发生日期')", "expected a date, found '去年'"]),
    "missing issuer": (["1.SZ", "债", d(2020, 1, 1), "违约", None, "担保人"], ["row 2", "column E ('发行人')", "value is missing"]),
}


@pytest.mark.parametrize("case", list(BAD_EVENT_ROWS))
def test_bad_wind_event_rows_raise_an_error_naming_row_and_column(tmp_path, case):
    row, expected_parts = BAD_EVENT_ROWS[case]
    path = wind_events_workbook(tmp_path / "bad_events.xlsx", [row])
    with pytest.raises(ImportFormatError) as caught:
        read_wind_defaults(path)
    message = str(caught.value)
    for part in [str(path), "sheet '违约债券报表'", *expected_parts]:
        assert part in message, (part, message)


def test_a_report_without_the_required_columns_is_rejected(tmp_path, edb_file):
    path = write_workbook(tmp_path / "no_summary.xlsx", {"报表": [["代码", "发生日期", "发行人"], ["1.SZ", d(2020, 1, 1), "某公司"]]})
    with pytest.raises(ImportFormatError, match="no sheet has a header row .* 发行人, 发生日期, 事件摘要"):
        read_wind_defaults(path)
    with pytest.raises(ImportFormatError, match="not a recognised report"):
        read_wind_defaults(edb_file)  # a macro export is not a default report
    twice = write_workbook(tmp_path / "twice.xlsx", {"报表": [WIND_HEADER + ["发行人"], ["1.SZ", "债", d(2020, 1, 1), "违约", "甲", "", "乙"]]})
    with pytest.raises(ImportFormatError, match=r"row 1, column G \('发行人'\): the header holds '发行人' twice \(also column E\)"):
        read_wind_defaults(twice)
    empty = write_workbook(tmp_path / "empty.xlsx", {"报表": [WIND_HEADER, [None] * 6, [FOOTER]]})
    with pytest.raises(ImportFormatError, match="row 1: the report has a header but no records"):
        read_wind_defaults(empty)


IFIND_HEADER = ["发行人", "首次违约日期", "违约债券代码", "违约债券简称", "摘要", "首次违约时债券余额", "首次违约类型"]


def test_ifind_first_defaults_read_from_the_second_row_header(tmp_path):
    rows = [
        ["同花顺iFinD", None, None, None, None, None, None],  # the export's banner above the header
        IFIND_HEADER,
        ["庚公司", d(2019, 6, 25), "1.SZ", "18庚03", "摘要", 5.0, "展期资金未兑付"],
        ["辛集团", d(2014, 3, 7), "2.SZ", "11辛债", None, 10.0, "利息违约"],
        ["壬公司", d(2022, 8, 5), "3.SZ", "H壬4优", None, 8.5, "本息违约"],
    ]
    labels = read_ifind_first_defaults(write_workbook(tmp_path / "ifind.xlsx", {"发行人首次债券违约": rows}))
    assert labels["firm_id"].tolist() == sorted(["庚公司", "辛集团", "壬公司"])
    by_firm = labels.set_index("firm_id")
    assert by_firm["label"].to_dict() == {"庚公司": "Extended", "辛集团": "Defaulted", "壬公司": "Defaulted"}
    assert by_firm.loc["辛集团", ["event_date", "bond_code", "event_type"]].tolist() == [pd.Timestamp("2014-03-07"), "2.SZ", "利息违约"]


def test_ifind_issuer_listed_twice_is_an_error(tmp_path):
    rows = [IFIND_HEADER, ["庚公司", d(2019, 6, 25), "1", "a", None, 1, "本息违约"], ["庚公司", d(2020, 1, 2), "2", "b", None, 1, "利息违约"]]
    with pytest.raises(ImportFormatError, match=r"row 3, column A \('发行人'\): issuer '庚公司' is listed twice \(also row 2\)"):
        read_ifind_first_defaults(write_workbook(tmp_path / "dup.xlsx", {"s": rows}))


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_imported_tables_pass_the_data_contract(tmp_path, edb_file, wind_events_file, suffix):
    """Written with the CLI's writer, the imports form a valid input folder with a panel of the same firms."""
    labels = read_wind_defaults(wind_events_file)
    macro = read_wind_macro(edb_file)
    folder = tmp_path / "inputs"
    write_table(labels, folder / f"labels{suffix}")
    write_table(macro, folder / f"macro{suffix}")
    panel = pd.DataFrame(
        [(firm, quarter, 0.1 * k) for k, firm in enumerate(labels["firm_id"]) for quarter in ("2019-12-31", "2020-03-31")],
        columns=["firm_id", "date", "roa"],
    )
    write_table(panel, folder / f"panel{suffix}")
    tables, violations = check_inputs(folder)
    assert violations == []
    assert tables.macro_features == list(macro.columns[1:])
    back = read_table(folder / f"labels{suffix}")
    assert back["firm_id"].tolist() == labels["firm_id"].tolist()


# ----------------------------------------------------------------------------- real samples

needs_real_data = pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"{REAL_DATA} is absent")
MACRO_FILE = REAL_DATA / "cn_macro_wind_edb_1990-2022.xlsx"
EVENTS_FILE = REAL_DATA / "cn_bond_default_events_wind_2014-2021.xlsx"
IFIND_FILE = REAL_DATA / "cn_issuer_first_default_ifind_2014-2022.xlsx"


@pytest.fixture(scope="module")
def real_macro_series():
    return read_wind_edb(MACRO_FILE)


@pytest.mark.realdata
@needs_real_data
def test_real_macro_export_becomes_a_quarterly_table(real_macro_series):
    sheets = openpyxl.load_workbook(MACRO_FILE, read_only=True).sheetnames
    summary = series_summary(real_macro_series)
    assert summary["sheet"].drop_duplicates().tolist() == sheets  # every sheet contributes series
    assert summary["name"].is_unique and (summary["observations"] > 0).all()
    assert {"monthly", "quarterly"} <= set(summary["frequency"])
    macro = to_quarterly(real_macro_series)
    assert macro["date"].is_unique and macro["date"].is_monotonic_increasing
    assert (macro["date"] + pd.Timedelta(days=1)).dt.is_quarter_start.all()
    # cross-check against pandas reading the same sheet: quarterly kept, monthly = last month of the quarter
    gdp = pd.read_excel(MACRO_FILE, sheet_name="GDP", index_col=0).iloc[:, 0]
    gdp = gdp[pd.to_datetime(gdp.index, errors="coerce").notna()].dropna()
    by_date = macro.set_index("date")
    assert by_date.loc[pd.to_datetime(gdp.index), gdp.name].tolist() == pytest.approx(gdp.astype(float).tolist())
    prices = pd.read_excel(MACRO_FILE, sheet_name="价格", index_col=0)["CPI:当月同比"]
    prices = prices[pd.to_datetime(prices.index, errors="coerce").notna()].dropna()
    prices.index = pd.to_datetime(prices.index)
    quarter_ends = prices[prices.index.month.isin([3, 6, 9, 12])]
    assert by_date.loc[quarter_ends.index, "CPI:当月同比"].tolist() == pytest.approx(quarter_ends.tolist())


@pytest.mark.realdata
@needs_real_data
def test_real_credit_spread_sheets_take_frequency_from_metadata_when_present():
    config = MacroImportConfig(sheets=["同等级不同行业", "兴证固收行业信用利差指数（同等级不同行业）"])
    summary = series_summary(read_wind_edb(EVENTS_FILE, config))
    sources = summary.groupby("sheet")["frequency_source"].unique().to_dict()
    assert list(sources["同等级不同行业"]) == ["metadata"]
    assert list(sources["兴证固收行业信用利差指数（同等级不同行业）"]) == ["spacing"]
    # the second sheet repeats the first one's names: all made unique
    assert summary["name"].is_unique and summary["source_name"].duplicated().any()


@pytest.mark.realdata
@needs_real_data
def test_real_wind_default_report_gives_one_label_per_issuer():
    raw = pd.read_excel(EVENTS_FILE, sheet_name=0)
    raw = raw[raw["发行人"].notna() & (raw["发行人"].astype(str).str.strip() != "")]
    labels = read_wind_defaults(EVENTS_FILE)
    assert labels["firm_id"].is_unique
    assert set(labels["firm_id"]) == set(raw["发行人"].str.strip())
    assert labels["n_events"].sum() == len(raw)
    first_dates = raw.groupby(raw["发行人"].str.strip())["发生日期"].min()
    assert (labels.set_index("firm_id")["event_date"] == first_dates.reindex(labels["firm_id"]).values).all()
    assert set(labels["label"]) == {"Extended", "Defaulted"}
    extended = labels[labels["label"] == "Extended"]
    assert extended["extension_evidence"].str.contains("展期").all()


@pytest.mark.realdata
@needs_real_data
def test_real_ifind_list_gives_extended_for_extension_types():
    raw = pd.read_excel(IFIND_FILE, header=1)
    labels = read_ifind_first_defaults(IFIND_FILE)
    assert len(labels) == len(raw) and labels["firm_id"].is_unique
    expected_extended = set(raw.loc[raw["首次违约类型"].str.contains("展期"), "发行人"])
    assert set(labels.loc[labels["label"] == "Extended", "firm_id"]) == expected_extended
    assert labels["event_date"].min() == raw["首次违约日期"].min()
