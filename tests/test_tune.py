"""flows/tune.py: the Table 5 space, seeded search, nested MLflow runs, a best configuration train can read,
resume after an interruption, and one-line errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from ray.tune.search.optuna import OptunaSearch

from emdlot.config import ConfigError, PrepareConfig, SynthConfig
from emdlot.training.config import load_emdlot_config
from emdlot.tuning.space import paper_optimum, read_space, tune_space
from emdlot.tuning.trial import OBJECTIVE
from flows_loader import load_flow

ROOT = Path(__file__).resolve().parents[1]
TINY_BASE = """model: {hidden_size: 8, feature_embed_size: 4, num_clusters: 2}
train: {batch_size: 64, max_epochs: 2, patience: 2, warmup_epochs: 1, identifier_epochs: 1, kmeans_n_init: 1}
"""
TINY_SPACE = """hidden_size: {choice: [4, 8]}
dropout: {quniform: [0.1, 0.5, 0.1]}
learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
num_clusters: {qrandint: [2, 3, 1]}
"""


flow = load_flow("tune")


def test_space_file_is_table5_value_for_value():
    space = read_space()
    assert space == {
        "hidden_size": {"choice": [256, 512, 768, 1024]},
        "dropout": {"quniform": [0.1, 0.7, 0.1]},
        "learning_rate": {"loguniform": [1e-5, 1e-2]},
        "weight_decay": {"loguniform": [1e-6, 1e-3]},
        "num_clusters": {"qrandint": [2, 8, 1]},
        "cluster_loss_weight": {"quniform": [0.0005, 0.005, 0.0005]},
        "dist_loss_weight": {"quniform": [0.02, 0.08, 0.005]},
        "modal_temperature": {"quniform": [1.0, 3.0, 0.1]},
        "numeric_feature_temperature": {"quniform": [0.5, 0.99, 0.05]},
        "text_feature_temperature": {"quniform": [0.5, 0.99, 0.05]},
        "patience": {"qrandint": [5, 20, 1]},
        "batch_size": {"choice": [8, 16, 32]},
    }
    domains = tune_space(space)
    assert domains["hidden_size"].categories == [256, 512, 768, 1024]
    assert (domains["learning_rate"].lower, domains["learning_rate"].upper) == (1e-5, 1e-2)
    assert (domains["num_clusters"].lower, domains["num_clusters"].upper) == (2, 8)  # qrandint: both ends included
    optimum = paper_optimum(space)
    assert optimum["hidden_size"] == 512 and optimum["batch_size"] == 8 and optimum["patience"] == 13
    assert optimum["numeric_feature_temperature"] == 0.9 and optimum["text_feature_temperature"] == 0.55


def test_unknown_or_malformed_space_entries_are_named(tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text("hidden_size: {choice: [8]}\nhidden_sise: {choice: [8]}\n")
    with pytest.raises(ConfigError, match=r"space.yaml: unknown hyperparameter 'hidden_sise'"):
        read_space(bad)
    bad.write_text("dropout: {uniformish: [0.1, 0.2]}\n")
    with pytest.raises(ConfigError, match="dropout: expected one of"):
        read_space(bad)


def _suggestions(seed: int, n: int = 5) -> list[dict]:
    space = read_space()
    searcher = OptunaSearch(metric=OBJECTIVE, mode="max", seed=None, points_to_evaluate=[paper_optimum(space)],
                            sampler=__import__("optuna").samplers.TPESampler(seed=seed))
    searcher.set_search_properties(OBJECTIVE, "max", tune_space(space))
    return [searcher.suggest(f"t{i}") for i in range(n)]


def test_same_seed_and_space_give_the_same_first_trials_starting_with_the_paper_optimum():
    first, again, other = _suggestions(86), _suggestions(86), _suggestions(7)
    assert first == again
    assert first[0] == paper_optimum(read_space())
    assert first[1:] != other[1:]


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory):
    from emdlot.data.prepare import prepare
    from emdlot.synth import generate, write_dataset

    root = tmp_path_factory.mktemp("tune")
    write_dataset(generate(SynthConfig(firms=1000, seed=3)), root / "in")
    prepare(root / "in", root / "ds", PrepareConfig(seed=86))
    (root / "base.yaml").write_text(TINY_BASE)
    (root / "space.yaml").write_text(TINY_SPACE)
    return root


def _args(root: Path, out: Path, trials: int, *extra: str) -> list[str]:
    return ["--data", str(root / "ds"), "--trials", str(trials), "--config", str(root / "base.yaml"),
            "--space", str(root / "space.yaml"), "--out", str(out), "--num-cpus", "2",
            "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}", *extra]


def _children(root: Path, parent_id: str):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_run(parent_id).info.experiment_id
    return client, client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")


def test_a_three_trial_search_nests_its_trials_and_writes_a_best_config_train_can_read(tiny_search):
    out = tiny_search / "search3"
    assert flow.main(_args(tiny_search, out, 3, "--asha", "--grace-epochs", "1", "--variant", "ranking_stop")) == 0
    parent_id = json.loads((out / "search.json").read_text())["parent_run_id"]
    client, children = _children(tiny_search, parent_id)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert all(run.info.status == "FINISHED" for run in children)  # stopped by ASHA or the cap is no failure
    assert {run.data.tags.get("stopped_by") for run in children} <= {None, "scheduler"}
    stopped = sum(run.data.tags.get("stopped_by") == "scheduler" for run in children)
    assert parent.data.metrics["stopped_early_by_scheduler"] == stopped
    assert all(len(client.get_metric_history(run.info.run_id, OBJECTIVE)) >= 1 for run in children)
    # The named recipe is on every trial's base. A trial that ran to its decision ends on the run's own validation
    # score (here at the epoch its ranking rule chose), one report after its last epoch, even at the epoch cap with
    # ASHA on; that last value is what the search ranks it by.
    assert parent.data.params["variant"] == "ranking_stop"
    assert all(run.data.params["train.early_stopping"] == "ranking" for run in children)
    decided = [run for run in children if "final_val_composite" in run.data.metrics]
    frame = {str(row["trial_id"]): row[OBJECTIVE] for _, row in pd.read_csv(out / "trials.csv").iterrows()}
    assert decided and all(run.data.tags.get("stopped_by") is None for run in decided)
    for run in decided:
        last = max(client.get_metric_history(run.info.run_id, OBJECTIVE), key=lambda m: m.step)
        assert last.step == run.data.metrics["final_epochs"] + 1
        assert last.value == frame[run.data.tags["trial_id"]] == pytest.approx(run.data.metrics["final_val_composite"])
    best = load_emdlot_config(out / "best_config.yaml")
    assert best.model.hidden_size in (4, 8) and best.train.max_epochs == 2  # the trial's values on the base
    assert parent.data.tags["best.hidden_size"] == str(best.model.hidden_size)
    assert parent.data.metrics["trials"] == 3 and parent.data.metrics["paper_optimum_rank"] >= 1
    artifacts = {a.path for a in client.list_artifacts(parent_id, "search")}
    assert {"search/best_config.yaml", "search/trials.csv", "search/optimisation_history.png"} <= artifacts
    # the paper's optimum (here: the base's values of the searched names) ran first
    first = min(children, key=lambda run: run.info.start_time)
    assert first.data.params["model.hidden_size"] == "8" and first.data.params["model.dropout"] == "0.3"


@pytest.mark.long
def test_a_search_interrupted_after_some_trials_resumes_without_repeating_any(tiny_search):
    out = tiny_search / "search_resume"
    command = [sys.executable, str(ROOT / "flows" / "tune.py"), *_args(tiny_search, out, 4)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600  # about 40 s on an idle 2-core machine; generous for a loaded one

    def reported() -> list[Path]:  # trials that have reported at least one epoch
        return [p for p in out.glob("table5/run_trial_*/result.json") if p.stat().st_size > 0]

    while time.time() < deadline and len(reported()) < 2 and proc.poll() is None:
        time.sleep(1)
    assert proc.poll() is None and len(reported()) >= 2, proc.stdout.read().decode()[-3000:] if proc.poll() is not None else "too slow"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: Tune saves its state and stops
    proc.wait(timeout=120)
    assert flow.main(_args(tiny_search, out, 4, "--resume")) == 0
    parent_id = json.loads((out / "search.json").read_text())["parent_run_id"]
    trials = [json.loads(p.read_text().splitlines()[-1]) for p in out.glob("table5/run_trial_*/result.json")]
    assert len(trials) == 4
    configs = [tuple(sorted(t["config"].items())) for t in trials]
    assert len(set(configs)) == 4  # none repeated
    client, children = _children(tiny_search, parent_id)
    assert len({run.data.tags["trial_id"] for run in children}) == 4


def test_bad_invocations_fail_in_one_line(tiny_search, tmp_path, capsys):
    assert flow.main(["--data", str(tmp_path / "nope"), "--trials", "1"]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err
    bad = tmp_path / "space.yaml"
    bad.write_text("hidden: {choice: [8]}\n")
    assert flow.main(_args(tiny_search, tmp_path / "o", 1)[:-2] + ["--space", str(bad)]) == 2
    assert "unknown hyperparameter 'hidden'" in capsys.readouterr().err
    assert flow.main(_args(tiny_search, tmp_path / "o", 1)[:-2] + ["--tracking-uri", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "cannot be reached" in err and len(err.strip().splitlines()) == 1
    assert flow.main(_args(tiny_search, tmp_path / "fresh", 1, "--resume")) == 2
    assert "no search to resume" in capsys.readouterr().err
    assert flow.main(_args(tiny_search, tmp_path / "o", 1, "--variant", "nope")) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "unknown training variant 'nope'" in err and "ranking_stop" in err
    base_outside = _args(tiny_search, tmp_path / "o", 1)
    base_outside[base_outside.index("--space") + 1] = str(ROOT / "emdlot" / "configs" / "tune_space.yaml")
    assert flow.main(base_outside) == 2  # the tiny base's hidden_size 8 is no Table 5 choice
    assert "hidden_size=8 lies outside the search space" in capsys.readouterr().err
    config = tmp_path / "base.yaml"
    config.write_text("model: {hidden_size: 8, hiden: 3}\n")
    bad_config = _args(tiny_search, tmp_path / "o", 1)
    bad_config[bad_config.index("--config") + 1] = str(config)
    assert flow.main(bad_config) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "base.yaml" in err and "hiden" in err


def test_a_failing_trial_is_a_failed_child_run_and_the_search_goes_on_with_cv_epochs_in_the_base(tiny_search, tmp_path):
    space = tmp_path / "space.yaml"  # a width of 0 is refused when the trial builds its configuration
    space.write_text("feature_embed_size: {choice: [0, 4]}\nlearning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n")
    base = tmp_path / "base.yaml"  # and a base whose trials choose their epoch count by 2-fold CV (it needs the folds)
    base.write_text(TINY_BASE.replace("kmeans_n_init: 1}", "kmeans_n_init: 1, refit_on_val: true, epoch_folds: 2}")
                    .replace("num_clusters: 2}", "num_clusters: 2, prior_shift: true}"))  # and fit a shift on them
    out = tmp_path / "search_fail"
    args = _args(tiny_search, out, 4)
    args[args.index("--space") + 1], args[args.index("--config") + 1] = str(space), str(base)
    assert flow.main(args) == 0
    parent_id = json.loads((out / "search.json").read_text())["parent_run_id"]
    client, children = _children(tiny_search, parent_id)
    failed = [run for run in children if run.info.status == "FAILED"]
    zero_width = [run for run in children if run.data.params.get("model.feature_embed_size") in (None, "0")]
    assert len(children) == 4 and len(failed) == len(zero_width) >= 1
    assert all("feature_embed_size" in run.data.tags["error"] for run in failed)
    finished = [run for run in children if run.info.status == "FINISHED"]
    assert finished  # the first trial (the base's width 4) and others ran
    assert all(run.data.params["train.epoch_folds"] == "2" and "final_val_composite" in run.data.metrics for run in finished)
    assert all("final_prior_shift_nested_shift" in run.data.metrics for run in finished)  # the shift was checked
    assert (out / "best_config.yaml").exists()


def test_an_off_grid_upper_bound_is_trimmed_to_the_last_grid_point():
    domain = tune_space(read_space())["numeric_feature_temperature"]
    assert (domain.lower, domain.upper) == (0.5, 0.95)
    draws = {round(domain.sample(), 2) for _ in range(400)}
    assert draws <= {round(0.5 + 0.05 * i, 2) for i in range(10)} and 0.95 in draws and 0.5 in draws
