"""Cache, input reading, PCA and configuration of the text pipeline, without Ray."""
import re

import numpy as np
import pandas as pd
import pytest

from emdlot.schema import SECTIONS, TEXT_DIMS, text_feature_column
from emdlot.text.cache import ShardCache, content_key, frame_to_vectors
from emdlot.text.config import EmbedConfig, load_embed_config
from emdlot.data.io import TableError
from emdlot.text.io import find_prospectus, read_firm_list, read_prospectus, read_split
from emdlot.text.reduce import (
    TextModel, apply_text_model, fit_section_pca, load_text_model, save_text_model, text_features,
)


# ---------------------------------------------------------------- cache
def test_content_key_changes_with_text_and_every_identity_field():
    base = content_key("文本", {"model": "a", "pooling": "cls"})
    assert base == content_key("文本", {"pooling": "cls", "model": "a"})  # order-free
    assert base != content_key("文本。", {"model": "a", "pooling": "cls"})
    assert base != content_key("文本", {"model": "b", "pooling": "cls"})
    assert base != content_key("文本", {"model": "a", "pooling": "mean"})


def test_shard_cache_round_trips_and_later_shards_win(tmp_path):
    cache = ShardCache(tmp_path, "embed")
    cache.write(pd.DataFrame({"key": ["a", "b"], "embedding": list(np.ones((2, 3)))}))
    cache.write(pd.DataFrame({"key": ["b"], "embedding": [np.full(3, 7.0)]}))
    vectors = frame_to_vectors(cache.load())
    assert set(vectors) == {"a", "b"}
    np.testing.assert_array_equal(vectors["b"], [7, 7, 7])
    assert vectors["a"].dtype == np.float32


def test_shard_cache_survives_a_damaged_shard_and_ignores_unfinished_writes(tmp_path):
    cache = ShardCache(tmp_path, "extract")
    cache.write(pd.DataFrame({"key": ["a"], "extracted": ["x"]}))
    (cache.dir / "part-broken.parquet").write_bytes(b"not parquet")
    (cache.dir / ".part-half.parquet.tmp").write_bytes(b"half written")
    assert cache.load()["key"].tolist() == ["a"]


def test_empty_cache_has_a_key_column(tmp_path):
    assert ShardCache(tmp_path, "x").load()["key"].tolist() == []


# ---------------------------------------------------------------- reading inputs
def test_read_prospectus_flags_bad_documents_without_dropping_them(tmp_path):
    path = tmp_path / "prospectus.csv"
    path.write_bytes(
        "firm_id,section,text\n".encode()
        + "A,important_notice,发行人存在偿债风险。\n".encode()
        + b"A,risk_factors,\xff\xfe bad bytes\n"
        + "B,risk_factors,\n".encode()
        + "C,risk_factors,   \n".encode()
    )
    table = read_prospectus(path)
    status = dict(zip(zip(table.firm_id, table.section), table.status))
    assert status == {("A", "important_notice"): "ok", ("A", "risk_factors"): "non_utf8",
                      ("B", "risk_factors"): "empty", ("C", "risk_factors"): "empty"}
    assert table.loc[table.status != "ok", "text"].isna().all()
    assert table.source_row.tolist() == [2, 3, 4, 5]


def test_read_prospectus_parquet_with_bytes_column(tmp_path):
    pd.DataFrame({"firm_id": ["A", "B"], "section": ["risk_factors"] * 2,
                  "text": ["风险。".encode(), b"\xc3\x28"]}).to_parquet(tmp_path / "p.parquet")
    assert read_prospectus(tmp_path / "p.parquet").status.tolist() == ["ok", "non_utf8"]


@pytest.mark.parametrize("body, message", [
    ("firm_id,text\nA,x\n", "missing column(s) ['section']"),
    ("firm_id,section,text\nA,summary,x\n", "row 2, column section: 'summary'"),
    ("firm_id,section,text\nA,risk_factors,x\nA,risk_factors,y\n", "row 3, columns firm_id/section: duplicate"),
    ("firm_id,section,text\n,risk_factors,x\n", "row 2, column firm_id"),
])
def test_structural_errors_name_file_row_and_column(tmp_path, body, message):
    path = tmp_path / "prospectus.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(TableError, match=r"prospectus\.csv.*" + re.escape(message)):
        read_prospectus(path)


def test_find_prospectus_requires_exactly_one_file(tmp_path):
    with pytest.raises(TableError, match="no prospectus.parquet or prospectus.csv"):
        find_prospectus(tmp_path)
    (tmp_path / "prospectus.csv").write_text("firm_id,section,text\n")
    assert find_prospectus(tmp_path).name == "prospectus.csv"
    (tmp_path / "prospectus.parquet").write_text("")
    with pytest.raises(TableError, match="both"):
        find_prospectus(tmp_path)


def test_split_readers(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("firm_id,label,split,reason\n007,Performing,train,\n008,Defaulted,test,\n")
    assert read_split(manifest).values.tolist() == [["007", "train"], ["008", "test"]]  # ids stay strings
    manifest.write_text("firm_id,label,split,reason\n007,Performing,holdout,\n")
    with pytest.raises(TableError, match="row 2, column split: 'holdout'"):
        read_split(manifest)
    firms = tmp_path / "train.txt"
    firms.write_text("A\n\nB\nA\n")
    assert read_firm_list(firms).values.tolist() == [["A", "train"], ["B", "train"]]


# ---------------------------------------------------------------- PCA
def _embeddings(firms, rng, shift=0.0, sections=SECTIONS):
    rows = [(f, s, rng.normal(size=64).astype(np.float32) + shift) for f in firms for s in sections]
    return pd.DataFrame(rows, columns=["firm_id", "section", "embedding"])


def test_pca_never_sees_a_test_firm():
    rng = np.random.default_rng(0)
    train = [f"T{i}" for i in range(50)]
    test = [f"X{i}" for i in range(10)]
    emb = pd.concat([_embeddings(train, rng), _embeddings(test, rng, shift=100.0)], ignore_index=True)
    model = fit_section_pca(emb, set(train), seed=0)
    for section in SECTIONS:
        pca = model.pcas[section]
        rows = emb[(emb.section == section) & emb.firm_id.isin(train)]
        assert pca.n_samples_ == 50
        np.testing.assert_allclose(pca.mean_, np.stack(rows.embedding).mean(0), rtol=1e-5, atol=1e-5)
    # Test firms only get transformed: far from the training mean, so large scores.
    feats = text_features(emb, model).set_index("firm_id")
    assert feats.loc[test].abs().to_numpy().mean() > 10 * feats.loc[train].abs().to_numpy().mean()


def test_features_have_80_columns_and_nan_for_a_missing_section():
    rng = np.random.default_rng(1)
    train = [f"T{i}" for i in range(45)]
    emb = pd.concat([_embeddings(train, rng), _embeddings(["ONLY_RISK"], rng, sections=["risk_factors"])])
    feats = text_features(emb, fit_section_pca(emb, set(train), seed=0))
    expected = ["firm_id"] + [text_feature_column(s, i) for s in SECTIONS for i in range(TEXT_DIMS)]
    assert list(feats.columns) == expected and len(feats) == 46
    row = feats.set_index("firm_id").loc["ONLY_RISK"]
    assert row[[text_feature_column("important_notice", i) for i in range(TEXT_DIMS)]].isna().all()
    assert row[[text_feature_column("risk_factors", i) for i in range(TEXT_DIMS)]].notna().all()


def test_pca_explained_variance_is_a_share_and_total_combines_sections():
    rng = np.random.default_rng(2)
    emb = _embeddings([f"T{i}" for i in range(60)], rng)
    ev = fit_section_pca(emb, set(emb.firm_id), seed=0).explained_variance
    assert 0 < ev["important_notice"] < 1 and 0 < ev["risk_factors"] < 1
    assert min(ev["important_notice"], ev["risk_factors"]) <= ev["total"] <= max(ev["important_notice"], ev["risk_factors"])


def test_too_few_training_firms_is_a_clear_error():
    rng = np.random.default_rng(3)
    emb = _embeddings([f"T{i}" for i in range(30)], rng)
    with pytest.raises(ValueError, match="needs more than 40 training firms.*found 30"):
        fit_section_pca(emb, set(emb.firm_id), seed=0)



# ---------------------------------------------------------------- saved text model (skops, no pickle)
def test_text_model_round_trip_gives_identical_features(tmp_path):
    from emdlot.text.config import EmbedConfig
    from emdlot.text.embed import fit_tfidf_svd

    rng = np.random.default_rng(4)
    train = [f"T{i}" for i in range(50)]
    emb = _embeddings(train, rng)
    pca = fit_section_pca(emb, set(train), seed=0)
    cfg = EmbedConfig()
    fallback = fit_tfidf_svd([f"发行人存在逾期债务{i}亿元，风险{i % 7}" for i in range(30)], cfg.embedder, seed=0)
    written = save_text_model(tmp_path / "text_pca.skops", pca, fallback,
                              {"embedder_kind": "tfidf_svd_fallback", "embedder_source": "test",
                               "config": cfg.model_dump(mode="json")})
    loaded = load_text_model(tmp_path / "text_pca.skops")
    assert isinstance(loaded, TextModel) and loaded.settings == written
    assert loaded.settings["explained_variance"] == pca.explained_variance
    assert EmbedConfig.model_validate(loaded.settings["config"]) == cfg
    new = pd.concat([_embeddings([f"N{i}" for i in range(5)], rng), emb.head(6)], ignore_index=True)
    pd.testing.assert_frame_equal(apply_text_model(loaded, new), text_features(new, pca))
    pd.testing.assert_frame_equal(loaded.features(new), apply_text_model(pca, new))
    texts = ["发行人存在逾期债务3亿元", "新文本"]
    np.testing.assert_array_equal(loaded.fallback_model.transform(texts), fallback.transform(texts))
    assert loaded.fallback_embedder().embed(texts).shape == (2, cfg.embedder.tfidf.dims)

    save_text_model(tmp_path / "bert.skops", pca, None, {"embedder_kind": "bert", "embedder_source": "x", "config": {}})
    bert = load_text_model(tmp_path / "bert.skops")
    assert bert.fallback_model is None and bert.fallback_embedder() is None
    with pytest.raises(ValueError, match=r"'risk_factors' embeddings have \[32\] dims; .* fitted on 64-d"):
        apply_text_model(bert, pd.DataFrame({"firm_id": ["A"], "section": ["risk_factors"], "embedding": [np.zeros(32)]}))


def test_text_model_with_an_unexpected_type_is_refused(tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    from emdlot.data.transforms import signed_log1p

    rng = np.random.default_rng(5)
    pca = fit_section_pca(_embeddings([f"T{i}" for i in range(45)], rng), {f"T{i}" for i in range(45)}, seed=0)
    path = tmp_path / "text_pca.skops"
    save_text_model(path, pca, FunctionTransformer(signed_log1p), {"embedder_kind": "bert"})
    with pytest.raises(ValueError, match=re.escape(
            f"{path}: refusing to load unexpected types ['emdlot.data.transforms.signed_log1p']")):
        load_text_model(path)
    # Types skops trusts but a text model does not hold are refused too, by what they are.
    save_text_model(path, pca, pca.pcas["risk_factors"], {"embedder_kind": "bert"})
    with pytest.raises(ValueError, match="not an EMDLOT text model .*fallback_model is a PCA, not a Pipeline"):
        load_text_model(path)
    sio.dump({"pcas": pca.pcas}, path)
    with pytest.raises(ValueError, match="not an EMDLOT text model .*expected keys"):
        load_text_model(path)


# ---------------------------------------------------------------- config
def test_packaged_yaml_equals_the_typed_defaults():
    assert load_embed_config() == EmbedConfig()
    assert EmbedConfig().extract.token_budget == 510 and EmbedConfig().embedder.max_length == 512


def test_config_rejects_unknown_keys_and_an_over_budget_extraction(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("embedder:\n  poolin: mean\n")
    with pytest.raises(ValueError, match="poolin"):
        load_embed_config(bad)
    bad.write_text("extract:\n  token_budget: 600\n")
    with pytest.raises(ValueError, match="token_budget=600 exceeds"):
        load_embed_config(bad)
