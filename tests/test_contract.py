"""Each data-contract violation is reported on its own, naming file, row and column."""
from __future__ import annotations

import pandas as pd
import pytest

from emdlot.cli import main
from emdlot.data.contract import check_inputs, load_inputs, ContractError


def _edit(folder, table, fn):
    path = folder / f"{table}.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = fn(frame)
    frame.to_csv(path, index=False)


def _set(row, column, value):
    def fn(frame):
        frame.loc[row, column] = value
        return frame
    return fn


def _first_distressed(folder):
    labels = pd.read_csv(folder / "labels.csv", dtype=str, keep_default_na=False)
    return int(labels.index[labels["label"] == "Extended"][0])


def _panel_row_of_firm(folder, firm):
    panel = pd.read_csv(folder / "panel.csv", dtype=str, keep_default_na=False)
    return int(panel.index[panel["firm_id"] == firm][0])


def test_synthetic_folder_is_valid(small_csv):
    tables, violations = check_inputs(small_csv)
    assert violations == []
    assert len(tables.financial_features) == 32 and len(tables.macro_features) == 36
    assert tables.panel["date"].dtype.kind == "M"


CASES = {
    # name: (table, edit, expected file, expected data index (row = index + 2), column, message fragment)
    "missing column": ("panel", lambda f: f.drop(columns=["date"]), "panel.csv", None, "date", "required column is missing"),
    "non-numeric": ("panel", _set(4, "D/A", "abc"), "panel.csv", 4, "D/A", "non-numeric value 'abc'"),
    "inf": ("panel", _set(9, "ROA", "inf"), "panel.csv", 9, "ROA", "infinite value"),
    "unparsable date": ("panel", _set(3, "date", "2019-13-45"), "panel.csv", 3, "date", "unparsable date"),
    "duplicate key": ("panel", lambda f: pd.concat([f, f.iloc[[5]]], ignore_index=True), "panel.csv", "last", "date", "duplicate key"),
    "unknown label": ("labels", _set(2, "label", "Bankrupt"), "labels.csv", 2, "label", "unknown label 'Bankrupt'"),
    "unknown section": ("prospectus", _set(1, "section", "summary"), "prospectus.csv", 1, "section", "unknown section 'summary'"),
    "macro non-numeric": ("macro", _set(0, "GDP YoY", "n/a?"), "macro.csv", 0, "GDP YoY", "non-numeric"),
    "macro duplicate date": ("macro", lambda f: pd.concat([f, f.iloc[[0]]], ignore_index=True), "macro.csv", "last", "date", "duplicate key"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_violation_is_reported_with_file_row_and_column(small_csv, case):
    table, edit, file, index, column, fragment = CASES[case]
    _edit(small_csv, table, edit)
    if index == "last":
        index = len(pd.read_csv(small_csv / f"{table}.csv")) - 1
    _, violations = check_inputs(small_csv)
    assert len(violations) == 1, [str(v) for v in violations]
    v = violations[0]
    assert (v.file, v.column) == (file, column)
    assert v.row == (None if index is None else index + 2)
    assert fragment in v.message
    assert file in str(v) and (index is None or f"row {index + 2}" in str(v))


def test_distressed_firm_without_event_date(small_csv):
    row = _first_distressed(small_csv)
    _edit(small_csv, "labels", _set(row, "event_date", ""))
    _, violations = check_inputs(small_csv)
    assert [(v.file, v.row, v.column) for v in violations] == [("labels.csv", row + 2, "event_date")]
    assert "Extended firm has no event_date" in violations[0].message


def test_labelled_firm_absent_from_panel(small_csv):
    _edit(small_csv, "labels", lambda f: pd.concat([f, pd.DataFrame([{"firm_id": "GHOST", "label": "Performing", "event_date": ""}])], ignore_index=True))
    _, violations = check_inputs(small_csv)
    assert len(violations) == 1 and violations[0].column == "firm_id" and "'GHOST' has no rows in the panel" in violations[0].message


def test_panel_firm_without_label(small_csv):
    labels = pd.read_csv(small_csv / "labels.csv", dtype=str, keep_default_na=False)
    firm = labels.loc[0, "firm_id"]
    first_row = _panel_row_of_firm(small_csv, firm)
    _edit(small_csv, "labels", lambda f: f.iloc[1:])
    _edit(small_csv, "prospectus", lambda f: f[f["firm_id"] != firm])
    _, violations = check_inputs(small_csv)
    assert [(v.file, v.row, v.column) for v in violations] == [("panel.csv", first_row + 2, "firm_id")]
    assert "has no label" in violations[0].message


def test_empty_and_header_only_files(small_csv):
    (small_csv / "labels.csv").write_text("")
    (small_csv / "macro.csv").write_text("date,GDP\n")
    _, violations = check_inputs(small_csv)
    messages = {str(v) for v in violations}
    assert any("labels" in m and "empty" in m for m in messages)
    assert any("macro.csv" in m and "no rows" in m for m in messages)


def test_missing_required_table_and_ambiguous_formats(small_csv):
    (small_csv / "labels.csv").unlink()
    pd.read_csv(small_csv / "panel.csv").to_parquet(small_csv / "panel.parquet")
    _, violations = check_inputs(small_csv)
    text = " | ".join(map(str, violations))
    assert "required table 'labels' is missing" in text
    assert "both panel.parquet and panel.csv" in text


def test_every_violation_is_reported_not_just_the_first(small_csv):
    _edit(small_csv, "panel", lambda f: f.assign(ROA=["bad"] * 3 + list(f["ROA"].iloc[3:])))
    _, violations = check_inputs(small_csv)
    assert [v.row for v in violations] == [2, 3, 4]


def test_free_column_names_with_spaces_slashes_and_chinese(small_csv):
    _edit(small_csv, "panel", lambda f: f.rename(columns={"D/A": "资产负债率 (%)", "ROA": "净利润/总资产"}))
    _, violations = check_inputs(small_csv)
    assert violations == []
    tables = load_inputs(small_csv)
    assert "资产负债率 (%)" in tables.financial_features and tables.panel["净利润/总资产"].dtype == float


def test_parquet_inputs_with_typed_columns(tmp_path, small_synth):
    from emdlot.synth import write_dataset

    write_dataset(small_synth, tmp_path)
    frame = pd.read_parquet(tmp_path / "panel.parquet")
    frame.loc[7, "CFO"] = float("-inf")
    frame.to_parquet(tmp_path / "panel.parquet")
    _, violations = check_inputs(tmp_path)
    assert [(v.file, v.row, v.column, v.message) for v in violations] == [("panel.parquet", 9, "CFO", "infinite value")]


def test_load_inputs_raises_with_all_violations(small_csv):
    _edit(small_csv, "labels", _set(0, "label", "X"))
    _edit(small_csv, "panel", _set(0, "TA", "?"))
    with pytest.raises(ContractError) as info:
        load_inputs(small_csv)
    assert len(info.value.violations) == 2


def test_cli_validate_exit_codes_and_messages(small_csv, capsys):
    assert main(["validate", str(small_csv)]) == 0
    _edit(small_csv, "panel", _set(4, "D/A", "abc"))
    assert main(["validate", str(small_csv), "--report", str(small_csv / "report.csv")]) == 2
    err = capsys.readouterr().err
    assert "panel.csv, row 6, column 'D/A': non-numeric value 'abc'" in err
    assert "Traceback" not in err
    report = pd.read_csv(small_csv / "report.csv")
    assert report.loc[0, "row"] == 6 and report.loc[0, "column"] == "D/A"


def test_cli_prepare_on_invalid_folder_exits_2(small_csv, tmp_path, capsys):
    _edit(small_csv, "labels", _set(0, "label", "Bankrupt"))
    assert main(["prepare", str(small_csv), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "labels.csv, row 2, column 'label'" in err and "Traceback" not in err
