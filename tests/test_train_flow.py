"""flows/train.py and its parts: the paper's valid-run rule, Ray Train runs that survive a killed worker,
failed runs on record while the others go on, the tables, and a registered model that scores raw contract
files exactly as the run scored its test firms."""
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import ray
import torch

from emdlot.config import SynthConfig
from emdlot.data.contract import load_inputs
from emdlot.data.scoring import contract_rows
from emdlot.runs import fit_run
from emdlot.runs.protocol import PAPER_SEEDS, Outcome, ProtocolSettings, draw_until_valid, seed_of
from emdlot.runs.ray_train import TrainSettings, fit_many
from emdlot.synth.generate import generate, write_dataset
from emdlot.training.config import EMDLOTConfig
from flows_loader import load_flow
from test_training import TEST, TINY, TRAIN, VAL

flow = load_flow("train")
VALID = np.eye(3)[[0, 1, 2, 0]]  # predicts every class
INVALID = np.eye(3)[[0, 0, 1, 0]]  # never predicts Defaulted


def fake_runs(valid_by_model: dict[str, list[bool]]):
    """A `run` for draw_until_valid whose n-th run of a model is valid as listed."""
    def run(jobs):
        for model, rank in jobs:
            yield Outcome(model, "baseline", 86, rank, proba=VALID if valid_by_model[model][rank] else INVALID)
    return run


def test_the_package_is_the_split_with_the_best_validation_run_and_other_models_are_let_go():
    from types import SimpleNamespace

    from emdlot.runs.evaluate import Chosen, _choose

    def split(*scores):
        return Chosen([Outcome("EMDLOT", "emdlot", 86, r, result=SimpleNamespace(val_score=v)) for r, v in enumerate(scores)],
                      Path("ds"), None, np.zeros(1))

    first, second, third = split(0.4, 0.6), split(0.7, 0.2, 0.5), split(0.7, 0.9)
    chosen = _choose(None, first, "seed_average")
    assert [o.result.val_score for o in chosen.runs] == [0.6, 0.4]  # the best first
    chosen = _choose(chosen, second, "seed_average")
    assert chosen.runs == sorted(second.runs, key=lambda o: -o.result.val_score)
    assert all(o.result is None for o in first.runs)  # the earlier split's models are let go
    assert _choose(chosen, split(0.7), "seed_average") is chosen  # a tie keeps the earlier split
    best = _choose(None, third, "best")
    assert [o.seed_rank for o in best.runs] == [1] and third.runs[0].result is None
    assert _choose(best, Chosen([], Path("ds"), None, np.zeros(1)), "best") is best  # a split without a finished run


def test_the_paper_rule_replaces_invalid_runs_with_the_next_seeds_and_stops_at_the_cap():
    settings = ProtocolSettings(n_valid=3, seeds=3, max_seeds=5)
    pattern = {"A": [True, True, True, False, False], "B": [True, False, True, False, True], "C": [False] * 5}
    outcomes = list(draw_until_valid(list(pattern), fake_runs(pattern), settings))
    ranks = {m: [o.seed_rank for o in outcomes if o.model == m] for m in pattern}
    assert ranks["A"] == [0, 1, 2]  # three valid: no further seed
    assert ranks["B"] == [0, 1, 2, 3, 4]  # one invalid -> rank 3 (invalid too) -> rank 4
    assert ranks["C"] == [0, 1, 2, 3, 4]  # never valid: stops at max_seeds, reported rather than dropped
    assert [seed_of(r) for r in range(12)] == [*PAPER_SEEDS, 1010, 1011]


def _same_weights(a, b) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.mark.long
def test_a_train_worker_killed_mid_run_resumes_from_its_checkpoint_and_ends_as_if_never_killed(local_ray, tmp_path, one_torch_thread):
    config = EMDLOTConfig().with_params({**TINY, "max_epochs": 5, "patience": 5, "dropout": 0.3})
    parts = {"train": TRAIN, "val": VAL, "test": TEST}
    broken = config.with_params({"num_clusters": 500})  # more clusters than training firms: fails in K-Means
    settings = TrainSettings(storage=tmp_path / "ray_train", fail_at_epoch=3, max_failures=1, max_concurrent=2)
    done = {name: out for name, _, out in fit_many([("killed", config, 4), ("broken", broken, 4)], parts, settings)}
    assert isinstance(done["broken"], Exception) and "K-Means" in str(done["broken"])  # recorded, the other went on
    killed = done["killed"]
    assert killed.history.resumed_after and killed.history.resumed_after[0] <= 3  # the worker died and came back
    reference = fit_run(parts, config, seed=4)
    assert [e.train_loss for e in killed.history.epochs] == [e.train_loss for e in reference.history.epochs]
    assert _same_weights(killed.model, reference.model)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small protocol run: one split, two seeds, every baseline and shortcut, one ablation, text off."""
    root = tmp_path_factory.mktemp("train_flow")
    write_dataset(generate(SynthConfig(firms=240, seed=5, distressed_rate=0.25)), root / "in")
    (root / "tiny.yaml").write_text("model: {hidden_size: 16, feature_embed_size: 8, num_clusters: 3}\n"
                                    "train: {batch_size: 32, max_epochs: 4, patience: 3, warmup_epochs: 1, "
                                    "identifier_epochs: 2, kmeans_n_init: 2, progress: false}\n")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    # --max-seeds 2: no further seed after an invalid run, and one ablation of the three (each Ray Train run costs about
    # 14 s of CI; the others differ only in the model's switches, tested in test_model.py); the long hybrid test below
    # draws further seeds.
    args = ["--input", str(root / "in"), "--config", str(root / "tiny.yaml"), "--seeds", "2", "--max-seeds", "2",
            "--ablations", "ABL2", "--out", str(root / "out"), "--tracking-uri", uri, "--num-cpus", "2", "--n-boot", "50"]
    assert flow.main(args) == 0
    ray.shutdown()
    return root, uri


@pytest.mark.slow
def test_the_flow_writes_tables_6_to_8_with_every_model_shortcut_and_the_chosen_ablation(trained):
    root, _ = trained
    tables = root / "out" / "tables"
    t6 = pd.read_csv(tables / "table6_paper.csv")
    expected = ["EMDLOT", "ABL2", *flow.BASELINES, "shortcut: sequence length",
                "shortcut: when it ends (last quarter's macro)"]
    assert sorted(t6["model"]) == sorted(expected)
    unselected = pd.read_csv(tables / "table6_unselected.csv").set_index("model")
    assert (unselected["runs"] == 2).all()  # the two paper seeds, valid or not
    runs = pd.read_csv(tables / "runs.csv")
    assert (runs.groupby("model").size() == 2).all()  # the two seeds, and no more under --max-seeds 2
    assert (t6.set_index("model")["invalid_runs"] == unselected.loc[t6["model"], "runs"].to_numpy()
            - t6.set_index("model")["runs"]).all()  # under the paper's rule an invalid run is counted, not kept
    assert set(t6.set_index("model").loc[expected, "invalid_runs"]) >= {0}
    t7 = pd.read_csv(tables / "table7_paper.csv")
    ranked = t7.dropna(subset=["avg_rank"])
    assert not ranked["kind"].eq("shortcut").any() and ranked["avg_rank"].is_monotonic_increasing
    t8 = pd.read_csv(tables / "table8_paper.csv")
    assert list(t8["model"]) == ["ABL2", "EMDLOT"]  # --ablations ABL2: the others not run
    md = (tables / "table6_paper.md").read_text()
    assert "shortcut: sequence length" in md and ("no leak seen" in md or "leaks" in md)
    averaged = pd.read_csv(tables / "table6_seed_average.csv").set_index("model")
    assert sorted(averaged.index) == sorted(f"{m} (seed average)" for m in ["EMDLOT", "ABL2"])
    assert (averaged["runs"] == 1).all()  # one ensemble per split
    for name in ("table6_paper.png", "table7_paper.png", "table8_paper.png", "confusion.png", "per_class_recall.png",
                 "table6_seed_average.png"):
        assert (tables / name).stat().st_size > 1000
    # the final EMDLOT runs' own explanations, and the report built from all of it
    assert len(list((root / "out" / "interpretations").glob("EMDLOT-*.npz"))) == len(runs[runs["model"] == "EMDLOT"])
    for name in ("figure7_modality_chapter", "figure8_cluster_features", "figure9_macro_features", "tableD1_clusters"):
        assert (root / "out" / "explanations" / f"{name}.png").stat().st_size > 1000
    report = (root / "out" / "report.html").read_text(encoding="utf-8")
    assert "Table 6" in report and report.count("data:image/png;base64,") >= 4
    # the packaged seed ensemble against every baseline on the same test firms, in the report's main tables
    paired = pd.read_csv(tables / "paired_seed_average.csv")
    assert set(paired["model"]) == {"EMDLOT (seed average)"} and sorted(paired["against"]) == sorted(flow.BASELINES)
    assert "EMDLOT minus each baseline on the same test firms" in report


@pytest.mark.slow
def test_every_run_is_a_nested_mlflow_run_and_the_best_on_validation_splits_seeds_are_registered(trained):
    root, uri = trained
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("emdlot-train")
    parent = client.search_runs([experiment.experiment_id], "tags.flow = 'train'")[0]
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    predictions = pd.read_parquet(root / "out" / "predictions.parquet")
    assert len(children) == predictions.groupby(["model", "split", "seed"]).ngroups
    assert {c.data.tags["kind"] for c in children} == {"emdlot", "ablation", "baseline", "shortcut"}
    emdlot = [c for c in children if c.data.tags["model"] == "EMDLOT"]
    chosen = next(c for c in emdlot if c.data.tags["seed"] == parent.data.tags["best.seed"])
    # chosen on validation, not on test, among the split's first --seeds seeds (never one drawn for an invalid run)
    paper = [c for c in emdlot if c.data.tags["seed_rank"] in ("0", "1")]
    assert chosen.data.metrics["val_composite"] == max(c.data.metrics["val_composite"] for c in paper)
    # the package is those two seeds, the best on validation first
    paper_seeds = {c.data.tags["seed"] for c in paper}
    packaged = parent.data.tags["package.seeds"].split(",")
    assert parent.data.tags["package.kind"] == "seed_average" and packaged[0] == chosen.data.tags["seed"]
    assert set(packaged) == paper_seeds and "package_test_average_precision" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "tables")}
    assert "tables/table6_paper.md" in artifacts and "tables/table8_paper.png" in artifacts


@pytest.mark.slow
def test_the_registered_seed_ensemble_reproduces_its_members_mean_test_predictions_from_raw_contract_files(trained):
    root, uri = trained
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    version = client.search_model_versions("name = 'emdlot'")[0]
    parent = client.get_run(version.run_id)
    split, seeds = int(parent.data.tags["best.split"]), [int(s) for s in parent.data.tags["package.seeds"].split(",")]
    assert len(seeds) == 2  # a seed ensemble
    model = mlflow.pyfunc.load_model(f"models:/emdlot/{version.version}")
    assert model.metadata.signature is not None
    manifest = pd.read_csv(root / "out" / "splits" / f"seed-{split}" / "manifest.csv", dtype={"firm_id": str}, parse_dates=["cutoff"])
    test = manifest[manifest["split"] == "test"]
    rows = contract_rows(load_inputs(root / "in"), test.set_index("firm_id")["cutoff"])
    rows = rows[rows["firm_id"].isin(test["firm_id"])]
    scored = model.predict(rows).set_index("firm_id")
    columns = ["p_Performing", "p_Extended", "p_Defaulted"]
    logged = pd.read_parquet(root / "out" / "predictions.parquet").query("model == 'EMDLOT' and split == @split and seed in @seeds")
    assert logged.groupby("firm_id").size().eq(2).all()
    mean = logged.groupby("firm_id")[columns].mean().loc[scored.index]  # the mean of the members' test predictions
    np.testing.assert_allclose(scored[columns].to_numpy(), mean.to_numpy(), atol=1e-6)
    assert (scored["predicted_class"] == mean.idxmax(axis=1).str.removeprefix("p_")).all()
    # one firm alone, twice, gives the numbers it got inside the batch
    firm = scored.index[len(scored) // 2]
    for _ in range(2):
        alone = model.predict(rows[rows["firm_id"] == firm]).set_index("firm_id")
        np.testing.assert_allclose(alone.loc[firm, columns].to_numpy(float), scored.loc[firm, columns].to_numpy(float), atol=1e-6)


@pytest.mark.long
def test_a_hybrid_ensemble_is_tabled_packaged_and_registered_and_scores_raw_files_as_it_scored_its_test_firms(tmp_path):
    """train.ensemble "hybrid" through the flow, as the product's hybrid variant runs it (each seed predicts with its
    fold models): the split's seeds blended with XGBoost on their held-out folds (emdlot.runs.ensemble), in the
    seed-average table and ensembles.parquet, and the registered package of fold models scores the chosen split's raw
    test rows as the ensemble scored them."""
    write_dataset(generate(SynthConfig(firms=240, seed=5, distressed_rate=0.25)), tmp_path / "in")
    (tmp_path / "hybrid.yaml").write_text(
        "model: {hidden_size: 16, feature_embed_size: 8, num_clusters: 3, prior_shift: true}\n"
        "train: {batch_size: 32, max_epochs: 2, patience: 2, warmup_epochs: 1, identifier_epochs: 1, kmeans_n_init: 2, "
        "progress: false, refit_on_val: true, epoch_folds: 2, ensemble: hybrid, predict_with: folds}\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert flow.main(["--input", str(tmp_path / "in"), "--config", str(tmp_path / "hybrid.yaml"), "--seeds", "2", "--max-seeds", "3",
                      "--baselines", "XGBoost", "--no-ablations", "--out", str(tmp_path / "out"), "--tracking-uri", uri,
                      "--num-cpus", "2", "--n-boot", "20"]) == 0
    ray.shutdown()
    runs = pd.read_csv(tmp_path / "out" / "tables" / "runs.csv")
    for model, group in runs.groupby("model"):  # the paper's rule drew a further seed only after an invalid run
        assert len(group) == (2 if group.sort_values("seed_rank")["valid"].head(2).all() else 3), model
    name = "EMDLOT + XGBoost hybrid (seed average)"
    averaged = pd.read_csv(tmp_path / "out" / "tables" / "table6_seed_average.csv").set_index("model")
    assert sorted(averaged.index) == ["EMDLOT (seed average)", name]
    ensembles = pd.read_parquet(tmp_path / "out" / "ensembles.parquet")
    client = mlflow.MlflowClient(tracking_uri=uri)
    version = client.search_model_versions("name = 'emdlot'")[0]
    parent = client.get_run(version.run_id)
    assert parent.data.tags["package.ensemble"].startswith("hybrid: weight") and parent.data.tags["package.fold_models"] == "2"
    split = int(parent.data.tags["best.split"])
    manifest = pd.read_csv(tmp_path / "out" / "splits" / f"seed-{split}" / "manifest.csv", dtype={"firm_id": str}, parse_dates=["cutoff"])
    test = manifest[manifest["split"] == "test"]
    rows = contract_rows(load_inputs(tmp_path / "in"), test.set_index("firm_id")["cutoff"])
    mlflow.set_tracking_uri(uri)
    scored = mlflow.pyfunc.load_model(f"models:/emdlot/{version.version}").predict(rows[rows["firm_id"].isin(test["firm_id"])])
    columns = ["p_Performing", "p_Extended", "p_Defaulted"]
    logged = ensembles.query("model == @name and split == @split").set_index("firm_id").loc[scored["firm_id"]]
    np.testing.assert_allclose(scored[columns].to_numpy(), logged[columns].to_numpy(), atol=1e-5)


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert flow.main(["--input", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "in").mkdir()
    assert flow.main(["--input", str(tmp_path / "in"), "--baselines", "SVM,Prophet"]) == 2
    err = capsys.readouterr().err
    assert "unknown ['Prophet']" in err and err.count("\n") == 1
    assert flow.main(["--input", str(tmp_path / "in"), "--ablations", "ABL2,ABL9"]) == 2
    err = capsys.readouterr().err
    assert "--ablations: unknown ['ABL9']" in err and err.count("\n") == 1
    assert flow.main(["--input", str(tmp_path / "in"), "--splits", "3", "--text-features", str(tmp_path / "t.parquet")]) == 2
    assert "--embed" in capsys.readouterr().err


def test_a_failed_run_is_a_failed_nested_run_with_its_error_and_a_finished_one_has_its_metrics(tmp_path):
    from emdlot import tracking
    from emdlot.runs.log import log_outcome

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking.mlflow_run("failures", run_name="parent", uri=uri) as parent:
        log_outcome(Outcome("SVM", "baseline", 86, 0, error="ValueError: no convergence"), {"dataset": "x"}, ["a"], TEST)
        log_outcome(Outcome("KNN", "baseline", 86, 0, proba=np.full((len(TEST), 3), 1 / 3)), {"dataset": "x"}, ["a"], TEST)
    client = mlflow.MlflowClient(tracking_uri=uri)
    children = {r.data.tags["model"]: r for r in client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert children["SVM"].info.status == "FAILED" and "no convergence" in children["SVM"].data.tags["error"]
    assert children["KNN"].info.status == "FINISHED" and children["KNN"].data.metrics["valid"] == 0.0
    assert children["KNN"].data.metrics["test_auc"] == pytest.approx(0.5)
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a listening TCP socket on `port` (Linux /proc/net/tcp; IPv6 listeners as '::')."""
    import socket
    import struct

    found = set()
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(socket.inet_ntoa(struct.pack("<I", int(address, 16))) if family == 4 else "::")
    return found


@pytest.mark.slow
def test_emdlot_ui_serves_the_store_on_localhost_with_the_runs_and_the_report(trained):
    """`emdlot ui` on the train flow's store: bound to 127.0.0.1, the experiment, its runs and the report
    artifact are served; in headless Chromium the run page shows the run a reviewer looks for."""
    import json
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import time
    import urllib.request

    root, _ = trained
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    ui = subprocess.Popen([str(Path(sys.executable).parent / "emdlot"), "ui", "--out", str(root), "--port", str(port)],
                          env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).close()
                break
            except OSError:
                if ui.poll() is not None or time.time() > deadline:
                    pytest.fail(f"emdlot ui did not come up: {ui.stdout.read() if ui.poll() is not None else 'timeout'}")
                time.sleep(0.5)
        assert listening_addresses(port) == {"127.0.0.1"}  # never 0.0.0.0
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=emdlot-train") as r:
            experiment = json.load(r)["experiment"]
        query = json.dumps({"experiment_ids": [experiment["experiment_id"]], "filter": "tags.flow = 'train'"}).encode()
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=query, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as r:
            (parent,) = json.load(r)["runs"]
        run_id = parent["info"]["run_id"]
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=report") as r:
            assert [f["path"] for f in json.load(r)["files"]] == ["report/report.html"]
        browser = shutil.which("chromium")
        if browser is None:
            if os.environ.get("EMDLOT_REQUIRE_BROWSER"):
                pytest.fail("EMDLOT_REQUIRE_BROWSER is set but chromium is not installed")
            pytest.skip("chromium not installed")
        page = f"{base}/#/experiments/{experiment['experiment_id']}/runs/{run_id}"
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              "--virtual-time-budget=20000", "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
        assert parent["info"]["run_name"] in dom  # the run page rendered with the run a reviewer opened
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
