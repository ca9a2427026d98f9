"""The `emdlot` command end to end: synth -> validate -> prepare, and the importers as subcommands."""
from __future__ import annotations

import json

import pandas as pd

from emdlot.cli import main
from test_importers import d, edb_workbook, wind_events_workbook


def test_synth_validate_prepare_chain(tmp_path, capsys):
    data, ds = tmp_path / "d", tmp_path / "ds"
    assert main(["synth", "--out", str(data), "--firms", "300", "--seed", "5", "--format", "csv"]) == 0
    assert main(["validate", str(data)]) == 0
    assert main(["prepare", str(data), "--out", str(ds), "--val-fraction", "0"]) == 0
    meta = json.loads((ds / "meta.json").read_text())
    assert meta["config"]["seed"] == 86 and meta["config"]["val_fraction"] == 0.0
    assert len(meta["feature_names"]) == 68 and set(meta["inputs"]) == {"panel", "macro", "prospectus", "labels"}
    assert "prepared" in capsys.readouterr().out


def test_config_file_and_unknown_setting(tmp_path, capsys):
    cfg = tmp_path / "synth.yaml"
    cfg.write_text("firms: 120\nseed: 3\n")
    assert main(["synth", "--out", str(tmp_path / "d"), "--config", str(cfg)]) == 0
    assert len(pd.read_parquet(tmp_path / "d" / "labels.parquet")) == 120
    cfg.write_text("firms: 120\ncolour: blue\n")
    assert main(["synth", "--out", str(tmp_path / "e"), "--config", str(cfg)]) == 2
    assert "colour" in capsys.readouterr().err
    for body, message in [("- firms\n- 120\n", "expected a mapping"), ("firms: [120\n", "not valid YAML")]:
        cfg.write_text(body)  # a file that is not a settings mapping: exit 2 naming it, no traceback
        assert main(["synth", "--out", str(tmp_path / "e"), "--config", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert str(cfg) in err and message in err and "Traceback" not in err


def test_import_subcommands_write_contract_tables(tmp_path):
    macro_xlsx = edb_workbook(tmp_path / "edb.xlsx")
    assert main(["import", "wind-macro", str(macro_xlsx), "--out", str(tmp_path / "macro.parquet")]) == 0
    macro = pd.read_parquet(tmp_path / "macro.parquet")
    assert macro["date"].is_unique and macro.shape[1] > 1
    events = wind_events_workbook(tmp_path / "events.xlsx", [
        ["B1", "债1", d(2019, 5, 6), "甲公司未能按期兑付本息", "甲公司", ""],
        ["B2", "债2", d(2020, 1, 2), "乙公司与持有人达成展期协议", "乙公司", ""],
    ])
    assert main(["import", "wind-defaults", str(events), "--out", str(tmp_path / "labels.csv")]) == 0
    labels = pd.read_csv(tmp_path / "labels.csv").set_index("firm_id")
    assert labels.loc["甲公司", "label"] == "Defaulted" and labels.loc["乙公司", "label"] == "Extended"


def test_import_of_a_bad_workbook_exits_2_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"not a workbook")
    assert main(["import", "wind-macro", str(bad), "--out", str(tmp_path / "m.parquet")]) == 2
    err = capsys.readouterr().err
    assert "bad.xlsx" in err and "Traceback" not in err
