"""flows/predict.py: a registered (or run's, or on-disk) EMDLOT package scores an input folder without labels,
with text features made by the packaged text model; one row per input firm (scored, or rejected with the
reason), --as-of ignores later rows, a firm alone gets the numbers it gets in the folder, bad input is one
line and exit 2."""
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import ray
import torch

from emdlot import tracking
from emdlot.config import PrepareConfig, SynthConfig
from emdlot.data.assemble import assemble
from emdlot.data.contract import check_inputs, load_inputs
from emdlot.data.prepare import prepare
from emdlot.data.scoring import contract_rows
from emdlot.model.emdlot import Interpretation
from emdlot.runs import train_and_score
from emdlot.runs.package import TEXT_MODEL_FILE, Scorer, log_package, write_package
from emdlot.data.assemble import DatasetMeta
from emdlot.scoring.predict import class_warnings, input_firms, top_drivers
from emdlot.synth.generate import generate, write_dataset
from emdlot.text.config import EmbedConfig
from emdlot.text.io import find_prospectus, read_prospectus, read_split
from emdlot.text.outputs import FEATURES_FILE, save_outputs
from emdlot.text.pipeline import run_text_pipeline
from emdlot.text.reduce import load_text_model, save_text_model
from emdlot.training.config import EMDLOTConfig
from flows_loader import load_flow

flow = load_flow("predict")
P = ["p_Performing", "p_Extended", "p_Defaulted"]
AS_OF = "2019-12-31"
NO_TEXT, NO_VALUE, LATE, GHOST = "F00001", "F00005", "F00009", "ZZ-prospectus-only"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def package(tmp_path_factory, local_ray):
    """A small EMDLOT with text (extractive extraction, the TF-IDF fallback, PCA), packaged and registered."""
    root = tmp_path_factory.mktemp("predict")
    write_dataset(generate(SynthConfig(firms=240, seed=5, distressed_rate=0.25)), root / "in")
    prepare(root / "in", root / "ds", PrepareConfig(max_len=12, imputer_max_iter=3))
    cfg = EmbedConfig.model_validate({"embedder": {"model": str(root / "no-bert"), "tfidf": {"max_features": 5000}}})
    source = find_prospectus(root / "in")
    text = run_text_pipeline(read_prospectus(source), read_split(root / "ds" / "manifest.csv"), cfg, root / "cache")
    save_outputs(text, cfg, root / "text", source)
    config = EMDLOTConfig.model_validate({
        "model": {"hidden_size": 16, "feature_embed_size": 8, "num_clusters": 3},
        "train": {"batch_size": 32, "max_epochs": 3, "patience": 3, "warmup_epochs": 1, "identifier_epochs": 1,
                  "kmeans_n_init": 2, "progress": False}})
    result = train_and_score(assemble(root / "ds", root / "text" / FEATURES_FILE), config, seed=1)
    folder = write_package(root / "package", result.model, config, root / "ds", text_model=root / "text" / TEXT_MODEL_FILE)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    rows = contract_rows(load_inputs(root / "in"))
    example = rows[rows["firm_id"].isin(["F00000", "F00002"])].reset_index(drop=True)
    with tracking.mlflow_run("emdlot-test-package", uri=uri) as run:
        log_package(folder, example, registered_name="emdlot")
    return {"root": root, "uri": uri, "folder": folder, "run_id": run.info.run_id,
            "text": pd.read_parquet(root / "text" / FEATURES_FILE)}


def test_a_seed_ensemble_package_scores_the_mean_of_its_members_and_a_rewrite_drops_old_members(package, tmp_path):
    from emdlot.model import EMDLOT

    lead = Scorer(package["folder"])
    config, root = lead.config, package["root"]
    torch.manual_seed(7)
    other = EMDLOT(config.model, num_features=len(lead.meta.feature_names)).eval()
    folder = write_package(tmp_path / "ensemble", [lead.models[0], other], config, root / "ds")
    single = write_package(tmp_path / "other", other, config, root / "ds")
    rows = contract_rows(load_inputs(root / "in"))
    rows = rows[rows["firm_id"].isin(["F00000", "F00002", "F00005"])]
    ensemble = Scorer(folder)
    assert len(ensemble.models) == 2
    columns = ["p_Performing", "p_Extended", "p_Defaulted"]
    scores = [Scorer(f).score(rows)[columns].to_numpy() for f in (package["folder"], single)]
    scored = ensemble.score(rows)
    np.testing.assert_allclose(scored[columns].to_numpy(), np.mean(scores, axis=0), atol=1e-6)
    assert list(scored["cluster"]) == list(Scorer(package["folder"]).score(rows)["cluster"])  # the lead's clusters
    write_package(folder, other, config, root / "ds")  # the same folder, now one model
    assert len(Scorer(folder).models) == 1 and not list(folder.glob("member-*"))


def subset_folder(src: Path, out: Path, firms: list[str]) -> Path:
    """An input folder of `firms` only, without labels (macro as it is)."""
    out.mkdir(parents=True)
    panel, prospectus = pd.read_parquet(src / "panel.parquet"), pd.read_parquet(src / "prospectus.parquet")
    panel[panel["firm_id"].isin(firms)].to_parquet(out / "panel.parquet", index=False)
    prospectus[prospectus["firm_id"].isin(firms)].to_parquet(out / "prospectus.parquet", index=False)
    shutil.copy2(src / "macro.parquet", out / "macro.parquet")
    return out


@pytest.fixture(scope="module")
def folder(package):
    """60 firms, no labels; one without prospectus, one with no financial value, one whose rows all come after
    AS_OF, and one firm that only the prospectus names."""
    root = package["root"]
    firms = sorted(pd.read_parquet(root / "in" / "panel.parquet")["firm_id"].unique())[:60]
    out = subset_folder(root / "in", root / "score_in", firms)
    panel, prospectus = pd.read_parquet(out / "panel.parquet"), pd.read_parquet(out / "prospectus.parquet")
    indicators = [c for c in panel.columns if c not in ("firm_id", "date")]
    panel.loc[panel["firm_id"] == NO_VALUE, indicators] = np.nan
    panel = panel[(panel["firm_id"] != LATE) | (panel["date"] > pd.Timestamp(AS_OF))]
    ghost = prospectus[prospectus["firm_id"] == "F00000"].assign(firm_id=GHOST)
    prospectus = pd.concat([prospectus[prospectus["firm_id"] != NO_TEXT], ghost], ignore_index=True)
    panel.to_parquet(out / "panel.parquet", index=False)
    prospectus.to_parquet(out / "prospectus.parquet", index=False)
    return out


def run_flow(*args) -> int:
    return flow.main([str(a) for a in args])


def error_lines(capsys) -> list[str]:
    """The flow's own lines on stderr (MLflow logs there too), after checking there is no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("predict:")]


@pytest.fixture(scope="module")
def scored(package, folder):
    out = package["root"] / "scores.csv"
    assert run_flow("--model", "models:/emdlot/1", "--input", folder, "--out", out, "--tracking-uri", package["uri"],
                    "--batch-firms", 7) == 0
    return pd.read_csv(out, dtype={"firm_id": str}, parse_dates=["last_date"]).set_index("firm_id")


def expected_scores(package, folder: Path, as_of: str | None = None) -> pd.DataFrame:
    """Scorer.score of the folder's rows with the embed run's own text features of its prospectus firms."""
    tables = load_inputs(folder, require_labels=False)
    rows = contract_rows(tables, as_of=pd.Timestamp(as_of) if as_of else None)
    rows = rows[rows["firm_id"] != NO_VALUE]
    text = package["text"][package["text"]["firm_id"].isin(set(tables.prospectus["firm_id"]))]
    return Scorer(package["folder"]).score(rows, text_features=text).set_index("firm_id")


@pytest.mark.slow
def test_the_flow_scores_a_registered_model_as_scorer_score_does_text_features_included(package, folder, scored, capsys):
    assert not list(folder.glob("labels.*"))  # labels are not needed
    expected = expected_scores(package, folder)
    got = scored.loc[expected.index]
    assert (got["status"] == "scored").all()
    np.testing.assert_allclose(got[P].to_numpy(), expected[P].to_numpy(), atol=1e-6)
    assert (got["predicted_class"] == expected["predicted_class"]).all() and (got["cluster"] == expected["cluster"]).all()
    assert (got["has_text"] == expected["has_text"]).all() and got["has_text"].sum() >= 50
    assert not got.loc[NO_TEXT, "has_text"]  # scored without text, not dropped
    drivers = got["top_drivers"].str.split("; ")
    assert (drivers.str.len() == 3).all() and drivers.map(lambda d: all("@Q-" in x and x.endswith("%)") for x in d)).all()
    # on record: the run in emdlot-predict with what it scored and the output file
    client = mlflow.MlflowClient(tracking_uri=package["uri"])
    run = client.search_runs([client.get_experiment_by_name("emdlot-predict").experiment_id],
                             "params.model_uri = 'models:/emdlot/1'")[0]
    assert run.info.status == "FINISHED" and run.data.params["input_path"] == str(folder.resolve())
    assert run.data.tags["model.version"] == "1" and run.data.tags["model.run_id"] == package["run_id"]
    assert run.data.metrics["scored"] == len(expected) and run.data.metrics["rejected"] == 2
    assert "predictions/scores.csv" in {a.path for a in client.list_artifacts(run.info.run_id, "predictions")}
    warned = class_warnings(scored.reset_index(), Scorer(package["folder"]).meta)
    assert run.data.metrics["class_warnings"] == len(warned)
    assert ("warnings.txt" in {a.path for a in client.list_artifacts(run.info.run_id)}) == bool(warned)


@pytest.mark.slow
def test_every_input_firm_is_in_the_output_once_and_unscorable_firms_are_rejected_with_the_reason(package, folder, scored):
    panel = pd.read_parquet(folder / "panel.parquet")
    prospectus = pd.read_parquet(folder / "prospectus.parquet")
    assert scored.index.is_unique and set(scored.index) == set(panel["firm_id"]) | set(prospectus["firm_id"])
    rejected = scored[scored["status"] == "rejected"]
    assert set(rejected.index) == {GHOST, NO_VALUE}
    assert rejected.loc[GHOST, "reason"] == "no row in the panel"
    assert rejected.loc[NO_VALUE, "reason"].startswith("no value in any of the")
    assert rejected[P].isna().all().all() and scored.loc[scored["status"] == "scored", P].notna().all().all()


@pytest.mark.slow
def test_as_of_ignores_later_rows(package, folder, scored):
    out = package["root"] / "as_of.parquet"
    assert run_flow("--model", package["folder"], "--input", folder, "--out", out, "--as-of", AS_OF,
                    "--tracking-uri", package["uri"]) == 0
    got = pd.read_parquet(out).set_index("firm_id")
    assert got.loc[LATE, "status"] == "rejected" and got.loc[LATE, "reason"].startswith(f"no panel row on or before the as-of date {AS_OF}")
    assert scored.loc[LATE, "status"] == "scored"  # it has rows, only later ones
    ok = got[got["status"] == "scored"]
    assert (ok["last_date"] <= pd.Timestamp(AS_OF)).all()
    expected = expected_scores(package, folder, AS_OF).loc[ok.index]
    np.testing.assert_allclose(ok[P].to_numpy(), expected[P].to_numpy(), atol=1e-6)
    changed = (ok[P] - scored.loc[ok.index, P]).abs().max(axis=1) > 1e-4
    assert changed.sum() >= 5  # the later rows would have moved these firms


@pytest.mark.slow
def test_a_firm_scored_alone_gets_what_it_gets_in_the_folder(package, folder, scored):
    firm = "F00012"
    alone = subset_folder(folder, package["root"] / "alone", [firm])
    out = package["root"] / "alone.csv"
    assert run_flow("--model", f"runs:/{package['run_id']}/emdlot", "--input", alone, "--out", out,
                    "--tracking-uri", package["uri"]) == 0
    got = pd.read_csv(out, dtype={"firm_id": str}).set_index("firm_id")
    assert list(got.index) == [firm] and got.loc[firm, "has_text"]
    np.testing.assert_allclose(got.loc[firm, P].to_numpy(float), scored.loc[firm, P].to_numpy(float), atol=1e-6)
    for column in ("predicted_class", "cluster", "top_drivers", "quarters"):
        assert got.loc[firm, column] == scored.loc[firm, column], column


@pytest.mark.slow
def test_a_bert_text_model_without_its_weights_on_this_machine_is_a_one_line_error(package, tmp_path, capsys):
    copy = Path(shutil.copytree(package["folder"], tmp_path / "package"))
    model = load_text_model(copy / TEXT_MODEL_FILE)
    settings = {**model.settings, "embedder_kind": "bert", "embedder_source": str(tmp_path / "gone-bert")}
    save_text_model(copy / TEXT_MODEL_FILE, model.pca, None, settings)
    alone = subset_folder(package["root"] / "in", tmp_path / "in", ["F00012"])
    assert run_flow("--model", copy, "--input", alone, "--out", tmp_path / "o.csv", "--tracking-uri", package["uri"]) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and "BERT" in err[0] and "gone-bert" in err[0], err


@pytest.mark.slow
def test_an_input_without_an_indicator_the_model_reads_is_a_one_line_error(package, tmp_path, capsys):
    alone = subset_folder(package["root"] / "in", tmp_path / "in", ["F00012"])
    (alone / "macro.parquet").unlink()  # the model reads the 36 macro indicators
    assert run_flow("--model", package["folder"], "--input", alone, "--out", tmp_path / "o.csv", "--tracking-uri", package["uri"]) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and "lacks column(s)" in err[0] and "indicators the model was trained on" in err[0], err


def test_labels_are_not_required_and_present_labels_only_add_their_firms(small_csv):
    labels = (small_csv / "labels.csv").read_text().splitlines()
    dropped = labels[1].split(",")[0]  # a panel firm without a label
    (small_csv / "labels.csv").write_text("\n".join([labels[0], *labels[2:], "ZZ-labels-only,Performing,"]) + "\n")
    _, violations = check_inputs(small_csv)
    assert {v.message.split(" ")[0] for v in violations} == {"labelled", "panel"} and len(violations) == 2
    tables, violations = check_inputs(small_csv, require_labels=False)
    assert violations == [] and "ZZ-labels-only" in input_firms(tables) and dropped in input_firms(tables)
    (small_csv / "labels.csv").unlink()
    _, violations = check_inputs(small_csv)
    assert [str(v) for v in violations] == [f"labels.parquet|csv: required table 'labels' is missing in {small_csv}"]
    tables, violations = check_inputs(small_csv, require_labels=False)
    assert violations == [] and len(tables.labels) == 0 and set(input_firms(tables)) >= set(tables.panel["firm_id"])


def test_a_bad_model_uri_is_a_one_line_error_with_exit_2_and_a_failed_run(tmp_path, small_csv, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for model, words in (("models:/emdlot/99", "cannot be loaded"), (f"runs:/{'0' * 32}/emdlot", "cannot be loaded"),
                         (str(tmp_path / "nope"), "no such folder"), (str(tmp_path), "not an EMDLOT package")):
        assert run_flow("--model", model, "--input", small_csv, "--out", tmp_path / "o.csv", "--tracking-uri", uri) == 2, model
        err = error_lines(capsys)
        assert len(err) == 1 and words in err[0] and model in err[0], err
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("emdlot-predict").experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FAILED"}


@pytest.mark.slow
def test_contract_violations_are_listed_line_by_line_with_exit_2(package, tmp_path, small_csv, capsys):
    panel = (small_csv / "panel.csv").read_text().splitlines()
    column = panel[0].split(",")[2]
    for line in (3, 7):
        cells = panel[line].split(",")
        cells[2] = "n/a?"
        panel[line] = ",".join(cells)
    (small_csv / "panel.csv").write_text("\n".join(panel) + "\n")
    assert run_flow("--model", package["folder"], "--input", small_csv, "--out", tmp_path / "o.csv",
                    "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}") == 2
    err = error_lines(capsys)
    assert err == ["predict: error: 2 data contract violation(s) in " + str(small_csv.resolve()) + ":",
                   f"predict: error: panel.csv, row 4, column '{column}': non-numeric value 'n/a?'",
                   f"predict: error: panel.csv, row 8, column '{column}': non-numeric value 'n/a?'"]


def test_a_bad_output_path_or_date_is_a_one_line_error(tmp_path, small_csv, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run_flow("--model", "models:/emdlot/1", "--input", small_csv, "--out", tmp_path / "o.xlsx", "--tracking-uri", uri) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and ".csv or .parquet" in err[0], err
    assert run_flow("--model", "models:/emdlot/1", "--input", small_csv, "--out", tmp_path / "o.csv", "--as-of", "soon",
                    "--tracking-uri", uri) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and "not a date" in err[0], err
    (tmp_path / "a-file").write_text("")
    assert run_flow("--model", "models:/emdlot/1", "--input", small_csv, "--out", tmp_path / "a-file" / "o.csv",
                    "--tracking-uri", uri) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and "a-file/o.csv: its folder cannot be made" in err[0], err


def test_a_batch_with_no_firm_of_a_class_its_share_expects_is_warned_about():
    meta = DatasetMeta(feature_names=[], financial_features=[], macro_features=[], config=PrepareConfig(),
                       counts={"train": {"Performing": 140, "Extended": 9, "Defaulted": 6},
                               "val": {"Performing": 20, "Extended": 2, "Defaulted": 1},
                               "test": {"Performing": 20, "Extended": 1, "Defaulted": 1},
                               "rejected": {"Performing": 50, "Extended": 50, "Defaulted": 50},  # not labelled firms
                               "train_balanced": {"Performing": 140, "Extended": 140, "Defaulted": 140}})

    def batch(classes: list[str], rejected: int = 0) -> pd.DataFrame:
        return pd.DataFrame({"predicted_class": classes + [""] * rejected,
                             "status": ["scored"] * len(classes) + ["rejected"] * rejected})

    # 200 scored, all Performing: 12 Extended and 8 Defaulted expected at the labelled firms' shares, one line for both
    (line,) = class_warnings(batch(["Performing"] * 200), meta)
    assert "predicted Extended or Defaulted" in line and "(20 of 200)" in line and "about 20 of these 200" in line
    # one Defaulted named: only Extended is missing; rejected firms do not count towards the batch
    (line,) = class_warnings(batch(["Performing"] * 199 + ["Defaulted"], rejected=500), meta)
    assert "predicted Extended," in line and "about 12 of these 200" in line
    # too few expected of the missing classes together: no warning, however one-sided the batch
    assert class_warnings(batch(["Performing"] * 40), meta) == []  # 2.4 + 1.6 expected
    assert class_warnings(batch(["Performing"] * 99 + ["Extended"]), meta) == []  # 4 Defaulted expected
    assert len(class_warnings(batch(["Performing"] * 40), meta, min_expected=3.0)) == 1
    # a batch with every class named is never warned about
    assert class_warnings(batch(["Performing"] * 198 + ["Extended", "Defaulted"]), meta) == []


def test_top_drivers_rank_quarter_feature_cells_by_temporal_times_feature_attention():
    alpha = np.zeros((1, 3, 2))
    alpha[0, 1] = [0.25, 0.75]  # Q-2
    alpha[0, 2] = [0.9, 0.1]  # Q-1
    temporal = np.array([[0.0, 0.6, 0.4]])
    interp = Interpretation(probabilities=np.ones((1, 3)) / 3, predicted_class=np.zeros(1, int), feature_attention=alpha,
                            temporal_weights=temporal, chapter_weights=np.zeros((1, 2)), modality_weights=np.ones((1, 3)),
                            cluster_membership=np.ones((1, 2)) / 2, cluster=np.zeros(1, int))
    mask = np.array([[False, True, True]])
    assert top_drivers(interp, mask, ["roe", "debt"], k=3) == ["debt@Q-2 (45.0%); roe@Q-1 (36.0%); roe@Q-2 (15.0%)"]


@pytest.mark.slow
def test_emdlot_explain_scores_one_firm_of_raw_data_with_a_registered_model(package, folder, scored, capsys, tmp_path):
    """`emdlot explain MODEL DATA --firm ID`: the firm's probabilities equal the predict flow's, and the
    explanation ranks its own attention; an unscorable firm is a one-line error."""
    import json

    from emdlot.cli import main as cli

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}")  # another store in this process: --tracking-uri wins
    firm = sorted(scored.index[scored["status"] == "scored"])[3]
    assert cli(["explain", "models:/emdlot/1", str(folder), "--firm", firm, "--json", "--tracking-uri", package["uri"]]) == 0
    out = capsys.readouterr().out
    explanation = json.loads(out[out.index("{"):])
    probabilities = [explanation["probabilities"][c] for c in ("Performing", "Extended", "Defaulted")]
    np.testing.assert_allclose(probabilities, scored.loc[firm, ["p_Performing", "p_Extended", "p_Defaulted"]].to_numpy(float), atol=1e-6)
    assert explanation["true_class"] is None and explanation["top_features"]
    assert cli(["explain", "models:/emdlot/1", str(folder), "--firm", NO_VALUE, "--tracking-uri", package["uri"]]) == 2
    err = capsys.readouterr().err
    assert "cannot be scored" in err and "Traceback" not in err
