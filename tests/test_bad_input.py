"""Bad input as a new user gives it, across every command.

Each case breaks one thing and runs the command in-process. It must end either in a clear error (exit 2)
whose lines name the file and, where there is one, the row and column, or in a documented, counted
handling (exit 0 and a note). Never a traceback, never a firm dropped without a word.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from emdlot.cli import main as emdlot_main
from emdlot.config import PrepareConfig
from emdlot.data.prepare import prepare
from emdlot.schema import SECTIONS, TEXT_DIMS, text_feature_column
from flows_loader import load_flow
from test_importers import edb_workbook, wind_events_workbook, d


# ---------------------------------------------------------------- editing an input folder
def read(folder: Path, table: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{table}.csv", dtype=str, keep_default_na=False)


def write(folder: Path, table: str, frame: pd.DataFrame) -> None:
    frame.to_csv(folder / f"{table}.csv", index=False)


def set_cell(table: str, row: int, column: str, value: str):
    def edit(folder: Path) -> None:
        frame = read(folder, table)
        frame.loc[row, column] = value
        write(folder, table, frame)
    return edit


def replace_bytes(table: str, line: int, old: bytes, new: bytes):
    """Edit line `line` (0 = header) of a CSV as bytes: how a file in another encoding arrives."""
    def edit(folder: Path) -> None:
        lines = (folder / f"{table}.csv").read_bytes().split(b"\n")
        lines[line] = lines[line].replace(old, new, 1)
        (folder / f"{table}.csv").write_bytes(b"\n".join(lines))
    return edit


def corrupt_field(table: str, line: int, field: int, junk: bytes = b"\xff\xfe"):
    """Put bytes that are not UTF-8 at the start of field `field` (0-based) of CSV line `line` (0 = header)."""
    def edit(folder: Path) -> None:
        lines = (folder / f"{table}.csv").read_bytes().split(b"\n")
        fields = lines[line].split(b",", field)
        fields[field] = junk + fields[field]
        lines[line] = b",".join(fields)
        (folder / f"{table}.csv").write_bytes(b"\n".join(lines))
    return edit


def first_firm(folder: Path, label: str) -> tuple[int, str]:
    labels = read(folder, "labels")
    index = int(labels.index[labels["label"] == label][0])
    return index, labels.loc[index, "firm_id"]


def duplicate_header(folder: Path) -> None:
    panel = read(folder, "panel")
    panel.insert(len(panel.columns), "EBIT_copy", panel["EBIT"])
    text = panel.to_csv(index=False).replace("EBIT_copy", "EBIT", 1)
    (folder / "panel.csv").write_text(text)


def semicolons(folder: Path) -> None:
    read(folder, "labels").to_csv(folder / "labels.csv", sep=";", index=False)


def tabs(folder: Path) -> None:
    read(folder, "macro").to_csv(folder / "macro.csv", sep="\t", index=False)


def labels_as_excel(folder: Path) -> None:
    read(folder, "labels").to_excel(folder / "labels.xlsx", index=False)
    (folder / "labels.csv").unlink()


def macro_as_excel(folder: Path) -> None:
    read(folder, "macro").to_excel(folder / "macro.xlsx", index=False)
    (folder / "macro.csv").unlink()


def upper_case_suffix(folder: Path) -> None:
    (folder / "panel.csv").rename(folder / "panel.CSV")


def zoned_parquet(folder: Path) -> None:
    panel = pd.read_csv(folder / "panel.csv", dtype={"firm_id": str})
    panel["date"] = pd.to_datetime(panel["date"]).dt.tz_localize("Asia/Shanghai")
    panel.to_parquet(folder / "panel.parquet", index=False)
    (folder / "panel.csv").unlink()


def both_formats(folder: Path) -> None:
    read(folder, "labels").to_parquet(folder / "labels.parquet", index=False)


def empty_file(table: str):
    return lambda folder: (folder / f"{table}.csv").write_bytes(b"")


def header_only(table: str):
    def edit(folder: Path) -> None:
        write(folder, table, read(folder, table).head(0))
    return edit


def edit_frame(table: str, fn: Callable[[pd.DataFrame], pd.DataFrame]):
    def edit(folder: Path) -> None:
        write(folder, table, fn(read(folder, table)))
    return edit


def bom(folder: Path) -> None:
    path = folder / "labels.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def distressed_without_date(folder: Path) -> None:
    index, _ = first_firm(folder, "Extended")
    set_cell("labels", index, "event_date", "")(folder)


def ghost_label(folder: Path) -> None:
    labels = read(folder, "labels")
    write(folder, "labels", pd.concat([labels, pd.DataFrame([{"firm_id": "GHOST", "label": "Performing", "event_date": ""}])]))


def unlabelled_firm(folder: Path) -> None:
    labels = read(folder, "labels")
    write(folder, "labels", labels.iloc[1:])


def macro_clash(folder: Path) -> None:
    write(folder, "macro", read(folder, "macro").rename(columns={"GDP YoY": "ROA"}))


def only_keys(folder: Path) -> None:
    write(folder, "panel", read(folder, "panel")[["firm_id", "date"]])


# ---------------------------------------------------------------- validate: one folder, one fault
@dataclass(frozen=True)
class Fault:
    edit: Callable[[Path], None]
    expect: tuple[str, ...]  # fragments of the output (file, row, column, what)
    status: int = 2


VALIDATE = {
    "timezone-aware date (CSV)": Fault(set_cell("panel", 5, "date", "2019-03-31T00:00:00+08:00"),
                                       ("panel.csv, row 7, column 'date'", "carries a timezone")),
    "timezone-aware date (UTC Z)": Fault(set_cell("panel", 8, "date", "2019-03-31 10:00Z"),
                                         ("panel.csv, row 10, column 'date'", "carries a timezone")),
    "timezone-aware dates (Parquet)": Fault(zoned_parquet, ("panel.parquet, column 'date'", "timezone (Asia/Shanghai)")),
    "duplicate column header": Fault(duplicate_header, ("panel.csv", "row 1 (header), column 'EBIT'", "appears 2 times")),
    "non-UTF-8 firm_id": Fault(replace_bytes("panel", 40, b"F0", b"F\xe90"),
                               ("panel.csv, row 41, column 'firm_id'", "not UTF-8", "\\xe9")),
    "non-UTF-8 header": Fault(replace_bytes("panel", 0, b"ROA", b"RO\xc1"), ("panel.csv, row 1", "column name is not UTF-8")),
    "non-UTF-8 number": Fault(corrupt_field("panel", 12, 2), ("panel.csv, row 13, column 'EBIT'", "not UTF-8", "\\xff\\xfe")),
    "semicolon-separated CSV": Fault(semicolons, ("labels.csv", "row 1 (header)", "semicolons", "comma-separated")),
    "tab-separated CSV": Fault(tabs, ("macro.csv", "row 1 (header)", "tabs")),
    "labels as Excel": Fault(labels_as_excel, ("labels.xlsx is not read", "not Excel", "CSV UTF-8")),
    "optional macro as Excel": Fault(macro_as_excel, ("macro.xlsx is not read", "optional table 'macro'")),
    "upper-case .CSV suffix": Fault(upper_case_suffix, ("panel.CSV is not read", "name it panel.csv")),
    "panel in two formats": Fault(both_formats, ("labels.csv", "labels.parquet", "keep one")),
    "0-byte panel": Fault(empty_file("panel"), ("panel.csv", "the file is empty")),
    "0-byte prospectus": Fault(empty_file("prospectus"), ("prospectus.csv", "the file is empty")),
    "labels with a header only": Fault(header_only("labels"), ("labels.csv", "header but no rows")),
    "missing required column": Fault(edit_frame("labels", lambda f: f.drop(columns=["label"])),
                                     ("labels.csv, column 'label'", "required column is missing")),
    "percent sign in a number": Fault(set_cell("panel", 3, "ROA", "12%"), ("panel.csv, row 5, column 'ROA'", "non-numeric value '12%'")),
    "infinite value": Fault(set_cell("panel", 9, "D/A", "-inf"), ("panel.csv, row 11, column 'D/A'", "infinite value")),
    "impossible date": Fault(set_cell("panel", 2, "date", "2019-02-30"), ("panel.csv, row 4, column 'date'", "unparsable date")),
    "duplicate firm-quarter": Fault(edit_frame("panel", lambda f: pd.concat([f, f.iloc[[3]]])),
                                    ("panel.csv", "column 'date'", "duplicate key", "first seen in row 5")),
    "lower-case label": Fault(set_cell("labels", 4, "label", "performing"),
                              ("labels.csv, row 6, column 'label'", "unknown label 'performing'", "Performing, Extended, Defaulted")),
    "distressed firm without event_date": Fault(distressed_without_date, ("labels.csv", "column 'event_date'", "Extended firm has no event_date")),
    "unparsable event_date": Fault(set_cell("labels", 1, "event_date", "soon"), ("labels.csv, row 3, column 'event_date'", "unparsable date 'soon'")),
    "labelled firm absent from the panel": Fault(ghost_label, ("labels.csv", "column 'firm_id'", "'GHOST' has no rows in the panel")),
    "panel firm without a label": Fault(unlabelled_firm, ("panel.csv, row 2, column 'firm_id'", "has no label")),
    "macro column named like a panel indicator": Fault(macro_clash, ("macro.csv, column 'ROA'", "also a panel indicator")),
    "macro duplicate quarter": Fault(edit_frame("macro", lambda f: pd.concat([f, f.iloc[[0]]])), ("macro.csv", "column 'date'", "duplicate key")),
    "unknown prospectus section": Fault(set_cell("prospectus", 1, "section", "summary"),
                                        ("prospectus.csv, row 3, column 'section'", "unknown section 'summary'")),
    "duplicate prospectus section": Fault(edit_frame("prospectus", lambda f: pd.concat([f, f.iloc[[0]]])),
                                          ("prospectus.csv", "column 'section'", "duplicate key")),
    "panel without indicators": Fault(only_keys, ("panel.csv", "no indicator columns")),
    "an indicator with no values": Fault(edit_frame("panel", lambda f: f.assign(ROA="")), ("panel.csv, column 'ROA'", "no values at all")),
    # documented handling: accepted, and said
    "Excel byte-order mark": Fault(bom, ("valid (300 firms",), status=0),
    "non-UTF-8 prospectus text": Fault(corrupt_field("prospectus", 3, 2),
                                       ("valid", "note: prospectus.csv: 1 text cell(s) are not UTF-8 (rows 4)",
                                        "treated as missing"), status=0),
}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    status = emdlot_main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_clean(status: int, out: str, err: str, expect: tuple[str, ...], wanted: int) -> None:
    text = out + err
    assert status == wanted, text
    assert "Traceback" not in text
    for fragment in expect:
        assert fragment in text, (fragment, text)


@pytest.mark.parametrize("case", list(VALIDATE))
def test_validate_names_file_row_and_column_or_says_what_it_accepted(small_csv, capsys, case):
    fault = VALIDATE[case]
    fault.edit(small_csv)
    assert_clean(*run_cli(["validate", small_csv], capsys), fault.expect, fault.status)


def test_the_same_bad_cell_reaches_prepare_as_the_same_one_line_violation(small_csv, tmp_path, capsys):
    set_cell("panel", 5, "date", "2019-03-31T00:00:00+08:00")(small_csv)
    status, out, err = run_cli(["prepare", small_csv, "--out", tmp_path / "ds"], capsys)
    assert_clean(status, out, err, ("panel.csv, row 7, column 'date'", "carries a timezone"), 2)
    assert not (tmp_path / "ds").exists()


def test_a_non_utf8_prospectus_cell_is_treated_alike_by_validate_and_embed(small_csv, small_dataset, tmp_path, capsys):
    """One bad text cell: validate accepts the folder with a note, and the embed flow keeps the firm with
    that section's status non_utf8 (it used to reject the whole file in validate and pass in embed)."""
    from emdlot.text.io import read_prospectus

    corrupt_field("prospectus", 3, 2)(small_csv)
    status, out, err = run_cli(["validate", small_csv], capsys)
    assert status == 0 and "rows 4" in out
    table = read_prospectus(small_csv / "prospectus.csv")
    assert table.loc[table["source_row"] == 4, "status"].tolist() == ["non_utf8"]


# ---------------------------------------------------------------- command options and the other commands
def test_validate_report_with_a_wrong_extension_fails_before_the_work(small_csv, tmp_path, capsys):
    set_cell("panel", 3, "ROA", "x")(small_csv)
    status, out, err = run_cli(["validate", small_csv, "--report", tmp_path / "violations.xlsx"], capsys)
    assert_clean(status, out, err, ("--report", "violations.xlsx", "must end in .csv or .parquet"), 2)
    assert "data contract violation" not in err  # refused before checking, so nothing was done in vain
    status, out, err = run_cli(["validate", small_csv, "--report", tmp_path / "violations.csv"], capsys)
    assert status == 2 and len(pd.read_csv(tmp_path / "violations.csv")) == 1


def test_validate_report_naming_a_folder(small_csv, tmp_path, capsys):
    (tmp_path / "r.csv").mkdir()
    assert_clean(*run_cli(["validate", small_csv, "--report", tmp_path / "r.csv"], capsys), ("r.csv", "is a folder"), 2)


def test_import_out_with_a_wrong_extension_fails_before_reading(tmp_path, capsys):
    book = edb_workbook(tmp_path / "edb.xlsx")
    assert_clean(*run_cli(["import", "wind-macro", book, "--out", tmp_path / "macro.xlsx"], capsys),
                 ("--out", "macro.xlsx", "must end in .csv or .parquet"), 2)


def test_import_sheet_option_reads_only_that_sheet_and_names_a_missing_one(tmp_path, capsys):
    book = edb_workbook(tmp_path / "edb.xlsx")
    import openpyxl

    names = openpyxl.load_workbook(book, read_only=True).sheetnames
    assert run_cli(["import", "wind-macro", book, "--out", tmp_path / "all.csv"], capsys)[0] == 0
    assert run_cli(["import", "wind-macro", book, "--sheet", names[0], "--out", tmp_path / "one.csv"], capsys)[0] == 0
    every, one = pd.read_csv(tmp_path / "all.csv"), pd.read_csv(tmp_path / "one.csv")
    assert one.shape[1] < every.shape[1]
    assert_clean(*run_cli(["import", "wind-macro", book, "--sheet", "宏观", "--out", tmp_path / "x.csv"], capsys),
                 ("edb.xlsx", "no sheet named '宏观'", names[0]), 2)


def test_import_defaults_sheet_option_and_one_sheet_only(tmp_path, capsys):
    book = wind_events_workbook(tmp_path / "events.xlsx", [["B1", "债1", d(2019, 5, 6), "未能按期兑付本息", "甲公司", ""]])
    assert run_cli(["import", "wind-defaults", book, "--sheet", "违约债券报表", "--out", tmp_path / "l.csv"], capsys)[0] == 0
    assert pd.read_csv(tmp_path / "l.csv")["firm_id"].tolist() == ["甲公司"]
    assert_clean(*run_cli(["import", "wind-defaults", book, "--sheet", "同等级不同行业", "--out", tmp_path / "l.csv"], capsys),
                 ("events.xlsx", "同等级不同行业"), 2)
    assert_clean(*run_cli(["import", "wind-defaults", book, "--sheet", "a", "--sheet", "b", "--out", tmp_path / "l.csv"], capsys),
                 ("give one --sheet",), 2)


def test_import_of_a_csv_given_as_a_workbook(small_csv, tmp_path, capsys):
    assert_clean(*run_cli(["import", "ifind-defaults", small_csv / "labels.csv", "--out", tmp_path / "l.csv"], capsys),
                 ("labels.csv", "not a readable .xlsx workbook"), 2)


@pytest.mark.parametrize("argv, expect", [
    (["synth", "--out", "{file}"], ("--out", "is a file")),
    (["synth", "--out", "{tmp}/s", "--firms", "5"], ("firms: Input should be greater than or equal to 20 (got 5)",)),
    (["synth", "--out", "{tmp}/s", "--config", "{yaml}"], ("bad.yaml, line 2", "not valid YAML")),
    (["prepare", "{input}", "--out", "{file}"], ("--out", "is a file")),
    (["prepare", "{input}", "--out", "{tmp}/ds", "--val-fraction", "1.5"], ("val_fraction: Input should be less than 1 (got 1.5)",)),
    (["prepare", "{input}", "--out", "{tmp}/ds", "--text-features", "{tmp}/none.parquet"], ("--text-features", "none.parquet: no such file")),
    (["demo", "--out", "{tmp}/demo", "--firms", "50"], ("--firms 50", "the demo needs at least")),
    (["demo", "--out", "{file}"], ("--out", "is a file")),
    (["ui", "--out", "{tmp}"], ("mlflow.db: no MLflow store here",)),
    (["explain", "{tmp}/run.npz", "--firm", "F00001"], ("run.npz", "not an interpretation")),
    (["report", "{input}"], ("no tables/ or interpretations/", "not the --out of flows/train.py")),
])
def test_command_options_are_checked_before_work_with_one_line(small_csv, tmp_path, capsys, argv, expect):
    (tmp_path / "a_file.txt").write_text("x")
    (tmp_path / "bad.yaml").write_text("firms: [120\n")
    names = {"file": tmp_path / "a_file.txt", "tmp": tmp_path, "yaml": tmp_path / "bad.yaml", "input": small_csv}
    before = sorted(p.name for p in tmp_path.iterdir())
    status, out, err = run_cli([a.format(**names) for a in argv], capsys)
    assert_clean(status, out, err, expect, 2)
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing half-made


# ---------------------------------------------------------------- prepare: text features and rejected firms
@pytest.fixture(scope="session")
def small_dataset(_small_csv_master, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad_input") / "dataset"
    prepare(_small_csv_master, out, PrepareConfig())
    return out


def text_table(firms: list[str], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    columns = {text_feature_column(s, i): rng.normal(size=len(firms)) for s in SECTIONS for i in range(TEXT_DIMS)}
    return pd.DataFrame({"firm_id": firms, **columns})


def test_text_features_that_match_no_firm_are_an_error_not_a_silent_loss(small_csv, tmp_path, capsys):
    text_table(["X1", "X2", "X3"]).to_parquet(tmp_path / "text.parquet")
    status, out, err = run_cli(["prepare", small_csv, "--out", tmp_path / "ds", "--text-features", tmp_path / "text.parquet"], capsys)
    assert_clean(status, out, err, ("text features", "none of their 3 firm_ids", "'X1'"), 2)


def test_partly_matching_text_features_are_counted_and_recorded_in_meta(small_csv, small_dataset, tmp_path, capsys):
    manifest = pd.read_csv(small_dataset / "manifest.csv", dtype={"firm_id": str})
    firms = manifest["firm_id"].head(40).tolist() + ["STRANGER"]
    text_table(firms).to_parquet(tmp_path / "text.parquet")
    status, out, err = run_cli(["prepare", small_csv, "--out", tmp_path / "ds", "--text-features", tmp_path / "text.parquet"], capsys)
    assert_clean(status, out, err, ("text features: 40 of the dataset's firms matched", "41 firms in the file"), 0)
    recorded = json.loads((tmp_path / "ds" / "meta.json").read_text())["text"]
    assert recorded["firms_matched"] == 40 and recorded["firms_in_file"] == 41
    assert sum(part["with_text"] for part in recorded["per_split"].values()) == 40
    assert recorded["path"] == str((tmp_path / "text.parquet").resolve()) and len(recorded["sha256"]) == 64


def test_a_firm_whose_rows_all_follow_its_event_is_rejected_with_that_reason(small_csv, tmp_path, capsys):
    index, firm = first_firm(small_csv, "Extended")
    labels = read(small_csv, "labels")
    labels.loc[index, "event_date"] = "2010-01-31"
    extra = labels.index[labels["label"] == "Performing"][:2]  # keep two usable Extended firms for the split
    labels.loc[extra, ["label", "event_date"]] = ["Extended", "2024-12-01"]
    write(small_csv, "labels", labels)
    status, out, err = run_cli(["prepare", small_csv, "--out", tmp_path / "ds", "--val-fraction", "0"], capsys)
    assert_clean(status, out, err, ("note: 1 firm(s) rejected", "manifest.csv"), 0)
    manifest = pd.read_csv(tmp_path / "ds" / "manifest.csv", dtype={"firm_id": str}, keep_default_na=False).set_index("firm_id")
    assert len(manifest) == len(labels)  # no firm lost
    reason = manifest.loc[firm, "reason"]
    assert manifest.loc[firm, "split"] == "rejected" and "is dated after its event date 2010-01-31" in reason
    assert "within" not in reason


def test_a_split_made_impossible_by_rejections_names_the_rejected_firms(small_csv, tmp_path, capsys):
    labels = read(small_csv, "labels")
    defaulted = labels.index[labels["label"] == "Defaulted"]
    labels.loc[defaulted[0], "event_date"] = "2010-01-31"
    write(small_csv, "labels", labels)
    firm = labels.loc[defaulted[0], "firm_id"]
    status, out, err = run_cli(["prepare", small_csv, "--out", tmp_path / "ds"], capsys)
    assert_clean(status, out, err, ("Defaulted", "1 firm(s) were rejected before the split", firm), 2)


# ---------------------------------------------------------------- the flows
def run_flow(name: str, argv: list, capsys) -> tuple[int, str, str]:
    status = load_flow(name).main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_embed_zero_byte_prospectus_names_the_file(small_csv, small_dataset, tmp_path, capsys):
    (small_csv / "prospectus.csv").write_bytes(b"")
    assert_clean(*run_flow("embed", ["--data", small_csv, "--out", tmp_path / "e", "--manifest", small_dataset / "manifest.csv"], capsys),
                 ("prospectus.csv", "the file is empty"), 2)


def test_embed_fails_before_extraction_when_no_prospectus_firm_is_in_the_split(small_csv, small_dataset, tmp_path, capsys, monkeypatch):
    """Prospectus ids from another folder: the error comes before Ray starts (it used to come after the
    whole extraction had run)."""
    flow = load_flow("embed")
    monkeypatch.setattr(flow, "init_ray", lambda *a, **k: pytest.fail("Ray started before the ids were checked"))
    edit_frame("prospectus", lambda f: f.assign(firm_id="X" + f["firm_id"]))(small_csv)
    status = flow.main([str(a) for a in ["--data", small_csv, "--out", tmp_path / "e", "--manifest", small_dataset / "manifest.csv"]])
    captured = capsys.readouterr()
    assert_clean(status, captured.out, captured.err, ("prospectus.csv", "0 of its", "training firms of", "manifest.csv", "'XF"), 2)


@pytest.mark.parametrize("problem, expect", [
    ("manifest without split", ("labels.csv", "missing column(s) ['split']")),
    ("empty train-firms file", ("no firm ids",)),
    ("manifest with a bad split", ("row 2, column split", "'holdout'")),
])
def test_embed_split_files(small_csv, tmp_path, capsys, problem, expect):
    if problem == "manifest without split":
        split = ["--manifest", small_csv / "labels.csv"]
    elif problem == "empty train-firms file":
        (tmp_path / "train.txt").write_text("\n\n")
        split = ["--train-firms", tmp_path / "train.txt"]
    else:
        (tmp_path / "manifest.csv").write_text("firm_id,split\nF00001,holdout\n")
        split = ["--manifest", tmp_path / "manifest.csv"]
    assert_clean(*run_flow("embed", ["--data", small_csv, "--out", tmp_path / "e", *split], capsys), expect, 2)


@pytest.mark.parametrize("extra, expect", [
    (["--trials", "0"], ("--trials must be at least 1 (got 0)",)),
    (["--trials", "2", "--max-concurrent", "0"], ("--max-concurrent must be at least 1",)),
    (["--trials", "2", "--space", "{bad}"], ("bad.yaml, line", "not valid YAML")),
])
def test_tune_arguments(small_dataset, tmp_path, capsys, extra, expect):
    (tmp_path / "bad.yaml").write_text("hidden_size: {choice: [32, 64\n")
    argv = ["--data", small_dataset, "--out", tmp_path / "t", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    argv += [a.format(bad=tmp_path / "bad.yaml") for a in extra]
    assert_clean(*run_flow("tune", argv, capsys), expect, 2)
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("extra, expect", [
    (["--max-concurrent", "0"], ("--max-concurrent must be at least 1",)),
    (["--variant", "fastest"], ("unknown training variant 'fastest'",)),
    (["--baselines", "CatBoost"], ("--baselines: unknown ['CatBoost']",)),
])
def test_train_arguments(small_csv, tmp_path, capsys, extra, expect):
    argv = ["--input", small_csv, "--out", tmp_path / "t", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", *extra]
    assert_clean(*run_flow("train", argv, capsys), expect, 2)


def test_train_on_a_folder_that_breaks_the_contract_is_one_line_per_violation_and_a_failed_run(small_csv, tmp_path, capsys):
    import mlflow

    set_cell("panel", 5, "date", "2019-03-31T00:00:00+08:00")(small_csv)
    set_cell("labels", 4, "label", "performing")(small_csv)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    status, out, err = run_flow("train", ["--input", small_csv, "--out", tmp_path / "t", "--tracking-uri", uri], capsys)
    assert_clean(status, out, err, ("train: error: panel.csv, row 7, column 'date'", "train: error: labels.csv, row 6, column 'label'"), 2)
    runs = mlflow.MlflowClient(uri).search_runs([mlflow.MlflowClient(uri).get_experiment_by_name("emdlot-train").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


@pytest.mark.parametrize("extra, expect", [
    (["--batch-firms", "0"], ("--batch-firms must be at least 1",)),
    (["--as-of", "end of 2024"], ("--as-of 'end of 2024': not a date",)),
    (["--out", "{tmp}/scores.xlsx"], ("--out", "scores.xlsx", "must end in .csv or .parquet")),
])
def test_predict_arguments_are_checked_before_the_model_is_loaded(small_csv, tmp_path, capsys, extra, expect):
    argv = ["--model", "models:/emdlot/1", "--input", small_csv, "--out", tmp_path / "s.csv",
            "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"] + [a.format(tmp=tmp_path) for a in extra]
    assert_clean(*run_flow("predict", argv, capsys), expect, 2)
    assert not (tmp_path / "m.db").exists()  # refused before MLflow or the model was touched
