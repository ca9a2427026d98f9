"""flows/embed.py end to end on Ray Data (local mode) with a tiny BERT built in the test.

One corpus of 64 firms (some risk sections far past 512 tokens) with the awkward cases:
a firm with an empty section, one with a missing section, one with non-UTF-8 bytes,
one whose sections are both empty, and a manifest firm without any prospectus row.
"""
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import ray

from emdlot.schema import SECTIONS, TEXT_DIMS, text_feature_column
from emdlot.text.embed import BertEmbedder
from emdlot.text.fixtures import build_tiny_bert, build_tiny_glm4, make_corpus
from emdlot.text.reduce import apply_text_model, load_text_model
from flows_loader import load_flow

ROOT = Path(__file__).resolve().parents[1]
FEATURES = [text_feature_column(s, i) for s in SECTIONS for i in range(TEXT_DIMS)]


flow = load_flow("embed")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def write_awkward_dataset(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CSV prospectus + manifest with the awkward firms described in the module docstring."""
    prospectus, manifest = make_corpus(64, seed=0)
    at = lambda firm, section: (prospectus.firm_id == firm) & (prospectus.section == section)  # noqa: E731
    prospectus.loc[at("F001", "risk_factors"), "text"] = ""
    prospectus = prospectus[~at("F002", "important_notice") & ~at("F005", "risk_factors")]
    prospectus.loc[prospectus.firm_id == "F004", "text"] = "  "
    # A test firm's text carries a marker that only the test split holds.
    prospectus.loc[at("F003", "risk_factors"), "text"] = "发行人存在逾期债务，涉及ZQXW项目。"
    manifest = pd.concat([manifest, pd.DataFrame([("F999", "Performing", "train", "")], columns=manifest.columns)])
    folder.mkdir(parents=True, exist_ok=True)
    prospectus.to_csv(folder / "prospectus.csv", index=False)
    with open(folder / "prospectus.csv", "ab") as f:
        f.write(b"F005,risk_factors,\xb7\xa2\xd0\xd0\xc8\xcb GBK bytes\n")
    manifest.to_csv(folder / "manifest.csv", index=False)
    return prospectus, manifest


@pytest.fixture(scope="module")
def world(tmp_path_factory, local_ray):
    root = tmp_path_factory.mktemp("embed")
    prospectus, manifest = write_awkward_dataset(root / "data")
    config = root / "embed.yaml"
    config.write_text("very_long_chars: 1000\nembedder:\n  batch_size: 16\n")
    return {"root": root, "data": root / "data", "bert": build_tiny_bert(root / "bert"), "config": config,
            "uri": f"sqlite:///{root / 'mlflow.db'}", "manifest": manifest, "prospectus": prospectus}


def run_flow(world, out: Path, *extra: str) -> dict:
    args = ["--data", str(world["data"]), "--out", str(out), "--config", str(world["config"]),
            "--tracking-uri", world["uri"], *extra]
    assert flow.main(args) == 0
    import json

    return json.loads((out / "embed_summary.json").read_text())


@pytest.fixture(scope="module")
def first_run(world):
    out = world["root"] / "out"
    summary = run_flow(world, out, "--embedder", str(world["bert"]))
    return out, summary


def test_features_one_row_per_firm_with_text(first_run):
    out, summary = first_run
    features = pd.read_parquet(out / "text_features.parquet")
    assert list(features.columns) == ["firm_id", *FEATURES]
    assert features.firm_id.is_unique
    # 64 firms in the corpus; F004 (both sections empty) and F999 (no rows) have no text.
    assert set(features.firm_id) == {f"F{i:03d}" for i in range(64)} - {"F004"}
    values = features[FEATURES].to_numpy()
    # NaN only as whole missing sections (one per partial firm: F001, F002, ...), never a stray cell
    per_section = np.isnan(values).reshape(len(values), 2, -1)
    assert np.all(per_section.all(axis=2) == per_section.any(axis=2)) and per_section.all(axis=2).sum() == summary["firms_partial"] == 3
    assert summary["embedder"] == "bert" and summary["extract_computed"] == summary["extract_docs"] == 123


def test_every_firm_has_a_status_and_a_reason(first_run, world):
    out, summary = first_run
    status = pd.read_parquet(out / "text_status.parquet").set_index("firm_id")
    assert len(status) == 65 and summary["firms"] == 65
    assert status.loc["F006", "status"] == "ok" and status.loc["F006", "message"] == ""
    assert status.loc["F001", ["status", "risk_factors"]].tolist() == ["partial", "empty"]
    assert status.loc["F002", ["status", "important_notice"]].tolist() == ["partial", "missing"]
    assert status.loc["F005", "risk_factors"] == "non_utf8" and "not valid UTF-8" in status.loc["F005", "message"]
    assert "row 128" in status.loc["F005", "message"]  # the appended line: header + 126 rows + 1
    for firm in ("F004", "F999"):
        assert status.loc[firm, "status"] == "no_text" and not status.loc[firm, "in_text_features"]
        assert "not in text_features" in status.loc[firm, "message"]
    assert status.loc["F003", "split"] == "test"
    long_firms = {f for f, t in zip(world["prospectus"].firm_id, world["prospectus"].text) if len(t) > 1000}
    assert len(long_firms) >= 3
    assert set(status.index[status.message.str.contains("very long text")]) == long_firms
    assert (summary["firms_ok"], summary["firms_partial"], summary["firms_no_text"]) == (60, 3, 2)


def test_missing_section_is_missing_not_zero(first_run):
    out, _ = first_run
    features = pd.read_parquet(out / "text_features.parquet").set_index("firm_id")
    risk = [c for c in FEATURES if c.startswith("risk_factors")]
    notice = [c for c in FEATURES if c.startswith("important_notice")]
    assert features.loc["F001", risk].isna().all() and features.loc["F001", notice].notna().all()
    assert features.loc["F002", notice].isna().all() and features.loc["F002", risk].notna().all()


def test_extractions_fit_the_bert_budget(first_run, world):
    from transformers import AutoTokenizer

    out, _ = first_run
    extractions = pd.read_parquet(out / "extractions.parquet")
    assert len(extractions) == 123 and (extractions.backend == "extractive").all()
    tokenizer = AutoTokenizer.from_pretrained(world["bert"])
    counts = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in extractions.text]
    assert counts == extractions.token_count.tolist()
    assert max(counts) <= 510
    long = extractions[extractions.source_chars > 1000]
    assert len(long) >= 3 and (long.token_count > 400).all()  # long sections use the budget


def test_pca_is_fitted_on_training_firms_with_the_same_vectors_as_a_direct_loop(first_run, world):
    out, summary = first_run
    saved = load_text_model(out / "text_pca.skops")
    assert not (out / "text_pca.joblib").exists()
    assert saved.fallback_model is None and saved.settings["embedder_kind"] == "bert"
    extractions = pd.read_parquet(out / "extractions.parquet")
    train = set(world["manifest"].query("split == 'train'").firm_id)
    direct = BertEmbedder(str(world["bert"]), pooling="cls", max_length=512)
    for section in SECTIONS:
        rows = extractions[(extractions.section == section) & extractions.firm_id.isin(train)]
        pca = saved.pca.pcas[section]
        assert pca.n_samples_ == len(rows) and len(rows) > TEXT_DIMS
        np.testing.assert_allclose(pca.mean_, direct.embed(list(rows.text)).mean(0), atol=1e-4)
    assert 0 < summary["pca_explained_variance_total"] <= 1
    assert saved.settings["explained_variance"]["total"] == pytest.approx(summary["pca_explained_variance_total"])
    # The saved model scores new texts as the run scored its firms: embed, then apply_text_model.
    firms = extractions[extractions.firm_id.isin(["F006", "F007"])]
    embeddings = firms[["firm_id", "section"]].assign(embedding=list(direct.embed(list(firms.text))))
    features = pd.read_parquet(out / "text_features.parquet").set_index("firm_id")
    scored = apply_text_model(saved, embeddings).set_index("firm_id")
    np.testing.assert_allclose(scored[FEATURES].to_numpy(), features.loc[scored.index, FEATURES].to_numpy(), atol=1e-3)


def test_mlflow_run_has_params_metrics_and_artifacts(first_run, world):
    mlflow.set_tracking_uri(world["uri"])
    runs = mlflow.search_runs(experiment_names=["emdlot-embed"], output_format="list")
    run = min(runs, key=lambda r: r.info.start_time)  # the first run of this module
    assert run.data.params["embedder_kind"] == "bert"
    assert run.data.params["extract.backend"] == "extractive"
    assert run.data.params["embedder.pooling"] == "cls"
    assert run.data.metrics["embed_docs_per_s"] > 0 and run.data.metrics["extract_docs_per_s"] > 0
    assert 0 < run.data.metrics["pca_explained_variance_total"] <= 1
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "text")}
    assert {"text/text_pca.skops", "text/extractions_sample.csv", "text/text_status.csv"} <= artifacts


def test_rerun_uses_the_cache_and_recomputes_only_changed_texts(first_run, world):
    out, _ = first_run
    before = pd.read_parquet(out / "text_features.parquet")
    again = run_flow(world, out, "--embedder", str(world["bert"]))
    assert (again["extract_computed"], again["extract_cached"]) == (0, 123)
    assert (again["embed_computed"], again["embed_cached"]) == (0, 123)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "text_features.parquet"), before)

    # Change one firm's short risk section (kept whole, so its extraction changes too) and add
    # a new firm with two sections: three new documents, 122 unchanged ones.
    changed = world["root"] / "data_changed"
    changed.mkdir()
    csv = (world["data"] / "prospectus.csv").read_bytes()
    csv = csv.replace("F006,risk_factors,".encode(), "F006,risk_factors,发行人新增对外担保8亿元。".encode(), 1)
    csv += "NEW,important_notice,发行人资产负债率为91%。\nNEW,risk_factors,发行人存在逾期债务。\n".encode()
    (changed / "prospectus.csv").write_bytes(csv)
    (changed / "manifest.csv").write_bytes((world["data"] / "manifest.csv").read_bytes())
    args = ["--data", str(changed), "--out", str(out), "--config", str(world["config"]),
            "--tracking-uri", world["uri"], "--embedder", str(world["bert"])]
    assert flow.main(args) == 0
    import json

    third = json.loads((out / "embed_summary.json").read_text())
    assert (third["extract_computed"], third["extract_cached"]) == (3, 122)
    assert (third["embed_computed"], third["embed_cached"]) == (3, 122)
    status = pd.read_parquet(out / "text_status.parquet").set_index("firm_id")
    assert status.loc["NEW", ["status", "split"]].tolist() == ["ok", "unlisted"]


def test_fallback_embedder_is_announced_and_fitted_on_training_texts_only(world, caplog):
    out = world["root"] / "out_fallback"
    with caplog.at_level(logging.WARNING):
        summary = run_flow(world, out, "--embedder", str(world["root"] / "no-such-bert"))
    assert summary["embedder"] == "tfidf_svd_fallback"
    assert "NO BERT WEIGHTS" in caplog.text and "FALLBACK" in caplog.text
    features = pd.read_parquet(out / "text_features.parquet")
    assert list(features.columns) == ["firm_id", *FEATURES] and len(features) == 63
    extractions = pd.read_parquet(out / "extractions.parquet").set_index(["firm_id", "section"])
    assert "ZQXW" in extractions.loc[("F003", "risk_factors"), "text"]  # the test firm's marker is embedded...
    fallback = load_text_model(out / "text_pca.skops")
    assert fallback.settings["embedder_kind"] == "tfidf_svd_fallback"
    marker_grams = {"zq", "qx", "xw", "zqx", "qxw"}  # the marker's char n-grams (the vectorizer lowercases)
    assert not marker_grams & set(fallback.fallback_model[0].vocabulary_)  # ...but never fitted on
    # The saved fallback embeds new texts into the run's features.
    firm = extractions.loc["F006"]
    embeddings = pd.DataFrame({"firm_id": "F006", "section": firm.index,
                               "embedding": list(fallback.fallback_embedder().embed(list(firm["text"])))})
    np.testing.assert_allclose(fallback.features(embeddings)[FEATURES].to_numpy(),
                               features.set_index("firm_id").loc[["F006"], FEATURES].to_numpy(), atol=1e-4)
    # The check has teeth: the same fit with the test firm's text in it learns the marker's n-grams.
    from emdlot.text.config import EmbedConfig
    from emdlot.text.embed import fit_tfidf_svd

    cfg = EmbedConfig.model_validate(fallback.settings["config"]).embedder
    leaky = fit_tfidf_svd(extractions["text"].tolist(), cfg, seed=0)
    assert marker_grams <= set(leaky[0].vocabulary_)
    assert extractions.token_count.max() <= 510


def test_transformers_backend_with_a_tiny_glm4(world):
    model = build_tiny_glm4(world["root"] / "glm4")
    config = world["root"] / "llm.yaml"
    config.write_text("extract:\n  llm:\n    max_new_tokens: 24\n    batch_size: 16\n")
    out = world["root"] / "out_llm"
    args = ["--data", str(world["data"]), "--out", str(out), "--config", str(config), "--tracking-uri",
            world["uri"], "--embedder", str(world["bert"]), "--backend", "transformers", "--llm", str(model)]
    assert flow.main(args) == 0
    extractions = pd.read_parquet(out / "extractions.parquet")
    assert len(extractions) == 123 and (extractions.backend == "transformers").all()
    assert extractions.token_count.max() <= 510
    raw = pd.concat(pd.read_parquet(p) for p in (out / "cache" / "extract").glob("part-*.parquet"))
    assert (raw.raw_response.str.len() > 0).all()  # the model answered every document
    # Answers are short (24 new tokens), so they are not the extractive selection of long sections.
    assert extractions.token_count.median() < 60


def test_an_interrupted_run_resumes_without_redoing_finished_batches(world, monkeypatch):
    """Stop the driver after two stored embedding batches; the rerun computes only the rest."""
    from emdlot.text.cache import ShardCache

    out = world["root"] / "out_resume"
    config = world["root"] / "batches_of_8.yaml"
    config.write_text("embedder:\n  batch_size: 8\n")
    args = ["--data", str(world["data"]), "--out", str(out), "--config", str(config),
            "--tracking-uri", world["uri"], "--embedder", str(world["bert"])]
    real_write, writes = ShardCache.write, []

    def write_then_interrupt(self, rows):
        path = real_write(self, rows)
        if self.dir.name == "embed":
            writes.append(len(rows))
            if len(writes) == 2:
                raise KeyboardInterrupt("simulated interruption")
        return path

    monkeypatch.setattr(ShardCache, "write", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        flow.main(args)
    monkeypatch.undo()
    assert writes == [8, 8] and not (out / "text_features.parquet").exists()

    summary = run_flow(world, out, "--embedder", str(world["bert"]), "--config", str(config))
    assert (summary["extract_computed"], summary["extract_cached"]) == (0, 123)
    assert (summary["embed_computed"], summary["embed_cached"]) == (123 - 16, 16)
    assert len(pd.read_parquet(out / "text_features.parquet")) == 63
