"""`emdlot demo` end to end at reduced size: every stage runs and the MLflow run holds what it promises."""
from __future__ import annotations

import mlflow
import pandas as pd

from emdlot.demo import run_demo


def test_demo_runs_the_chain_and_tracks_the_model(tmp_path):
    out = tmp_path / "demo"
    assert run_demo(out, firms=1000, seed=86) == 0
    manifest = pd.read_csv(out / "dataset" / "manifest.csv")
    assert len(manifest) == 1000

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("emdlot-demo")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for name in ("test_recall", "test_f1", "test_average_precision", "test_auc", "test_composite"):
        assert name in metrics
    assert 0.0 <= metrics["test_auc"] <= 1.0 and metrics["epochs"] >= metrics["best_epoch"] >= 1
    assert len(client.get_metric_history(run.info.run_id, "val_score")) == metrics["epochs"]
    assert run.data.params["model.hidden_size"] == "64"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "explanations")}
    assert artifacts == {"explanations/modality_weights.csv", "explanations/chapter_weights.csv", "explanations/feature_importance.csv"}
    importance = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="explanations/feature_importance.csv",
                                                                 tracking_uri=f"sqlite:///{out / 'mlflow.db'}"))
    assert len(importance) == 68 and abs(importance["attention_pct"].sum() - 100) < 1e-3

    # the embed step ran through the same library calls as flows/embed.py and fed the model
    status = pd.read_parquet(out / "text" / "text_status.parquet")
    assert set(status["firm_id"]) == set(manifest["firm_id"])
    features = pd.read_parquet(out / "text" / "text_features.parquet")
    assert features.shape[1] == 1 + 80 and set(features["firm_id"]) <= set(manifest["firm_id"])
    assert len(features) == (status["status"] != "no_text").sum() > 0.9 * len(manifest)
    assert run.data.params["data.text_features"] == str((out / "text" / "text_features.parquet").resolve())
    assert run.data.params["data.performing_cutoff"] == "matched" and run.data.params["model.decay"] == "learned"
    assert int(run.data.params["data.firms.test"]) == (manifest["split"] == "test").sum()
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} == {"model/emdlot.safetensors"}
    (embed_run,) = client.search_runs([client.get_experiment_by_name("emdlot-embed").experiment_id])
    assert embed_run.info.status == "FINISHED" and 0 < embed_run.data.metrics["pca_explained_variance_total"] <= 1
    chapters = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="explanations/chapter_weights.csv",
                                                               tracking_uri=f"sqlite:///{out / 'mlflow.db'}"))
    assert chapters.select_dtypes("number").to_numpy().max() > 0  # text reached the model
