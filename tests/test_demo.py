"""`emdlot demo --quick` end to end: every stage of the chain runs through the flows' library calls, and the
local MLflow store holds the embed, tune, train and predict runs, the tables, the report and the registered model."""
from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from emdlot.demo import run_demo


@pytest.mark.slow
def test_quick_demo_runs_the_whole_chain_and_records_every_stage(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run_demo(out, quick=True) == 0
    printed = capsys.readouterr().out
    report = out / "train" / "report.html"
    assert f"[demo] report: {report}" in printed and report.stat().st_size > 10_000
    assert "emdlot ui --out" in printed

    manifest = pd.read_csv(out / "dataset" / "manifest.csv")
    assert len(manifest) == 600
    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = {name: client.search_runs([client.get_experiment_by_name(name).experiment_id], "tags.mlflow.parentRunId IS NULL")
            for name in ("emdlot-embed", "emdlot-tune", "emdlot-train", "emdlot-predict")}
    assert all(len(r) == 1 and r[0].info.status == "FINISHED" for r in runs.values())
    tune_children = client.search_runs([runs["emdlot-tune"][0].info.experiment_id],
                                       f"tags.mlflow.parentRunId = '{runs['emdlot-tune'][0].info.run_id}'")
    assert len(tune_children) == 2
    train = runs["emdlot-train"][0]
    assert {"tables/table6_paper.md", "tables/table8_paper.png"} <= {a.path for a in client.list_artifacts(train.info.run_id, "tables")}
    assert {a.path for a in client.list_artifacts(train.info.run_id, "report")} == {"report/report.html"}
    (version,) = client.search_model_versions("name = 'emdlot'")
    assert version.run_id == train.info.run_id

    # the held-out issuers, scored by the registered model: every one in the output, none lost
    scores = pd.read_csv(out / "holdout_scores.csv")
    holdout = pd.read_parquet(out / "holdout" / "panel.parquet")
    assert sorted(scores["firm_id"]) == sorted(holdout["firm_id"].unique())
    scored = scores[scores["status"] == "scored"]
    assert len(scored) > 0.9 * len(scores)
    assert (scored[["p_Performing", "p_Extended", "p_Defaulted"]].sum(axis=1) - 1).abs().max() < 1e-6
    assert scored["has_text"].mean() > 0.9  # the packaged text model made their text features
