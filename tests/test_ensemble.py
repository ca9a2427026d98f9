"""A seed ensemble's decision layer (emdlot.runs.ensemble, TrainConfig.ensemble): one checked shift of the members'
mean ("shift"), or that mean blended with XGBoost ("hybrid"), fitted on the members' held-out fold predictions;
packaged and scored as fitted, and tabled beside the plain seed average."""
from functools import partial
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from emdlot.config import PrepareConfig, SynthConfig
from emdlot.data.contract import load_inputs
from emdlot.data.prepare import prepare
from emdlot.data.scoring import contract_rows
from emdlot.runs import assemble_for, train_and_score
from emdlot.runs.ensemble import ENSEMBLE_FILE, TREE_FILE, Ensemble, unshifted_test_proba
from emdlot.runs.single import held_out_labels
from emdlot.synth.generate import generate, write_dataset
from emdlot.training.baselines import TREE_BASELINES, fit_predict, held_out_proba
from emdlot.training.blend import blend, fit_blend, fit_blend_weight
from emdlot.training.calibration import apply_prior_shift, check_prior_shift, ensemble_prior_shift
from emdlot.training.config import EMDLOTConfig

CONFIG = EMDLOTConfig.model_validate({
    "model": {"hidden_size": 16, "feature_embed_size": 8, "num_clusters": 3, "prior_shift": True},
    "train": {"batch_size": 32, "max_epochs": 2, "patience": 2, "warmup_epochs": 1, "identifier_epochs": 1,
              "kmeans_n_init": 2, "progress": False, "refit_on_val": True, "epoch_folds": 2, "ensemble": "hybrid"}})
SEEDS = (1, 2)
SPLIT = 86  # seeds the tree, as a split's seed does in the train flow
COARSE = np.arange(-2.0, 2.0 + 1e-9, 1.0)  # the shift grid, coarse so the checks stay fast


@pytest.fixture(scope="module", autouse=True)
def coarse_grid():
    """Every ensemble fitted here searches the coarse shift grid (the grid's own tests: test_calibration)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("emdlot.runs.ensemble.fit_blend", partial(fit_blend, grid=COARSE))
        patch.setattr("emdlot.runs.ensemble.ensemble_prior_shift", partial(ensemble_prior_shift, grid=COARSE))
        yield


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Two seeds of a small EMDLOT with a prior shift (so each keeps its folds' held-out predictions)."""
    root = tmp_path_factory.mktemp("ensemble")
    write_dataset(generate(SynthConfig(firms=240, seed=5, distressed_rate=0.25)), root / "in")
    prepare(root / "in", root / "ds", PrepareConfig(max_len=12, imputer_max_iter=3))
    parts = assemble_for(CONFIG, root / "ds")
    runs = [train_and_score(parts, CONFIG, seed, score_test=True) for seed in SEEDS]
    return SimpleNamespace(root=root, parts=parts, runs=runs, members=np.mean([unshifted_test_proba(r) for r in runs], axis=0),
                           hybrid=Ensemble.fit(runs, parts, CONFIG, SPLIT))


def test_a_shift_ensemble_shifts_its_members_unshifted_mean_by_the_check_of_their_mean_held_out_prediction(fitted):
    config = CONFIG.with_params({"ensemble": "shift"})
    ensemble = Ensemble.fit(fitted.runs, fitted.parts, config, SPLIT)
    y, fold = held_out_labels(fitted.parts, 2)
    check = check_prior_shift(y, np.mean([r.history.held_out_proba for r in fitted.runs], axis=0), fold, config.train.score_weights, COARSE)
    assert ensemble.rule == "shift" and ensemble.tree is None and ensemble.blend.weight == 1.0 and ensemble.blend.check == check
    np.testing.assert_allclose(ensemble.predict(fitted.members, fitted.parts["test"]), apply_prior_shift(fitted.members, check.shift))
    for run in fitted.runs:  # a member's own shift is undone before averaging
        np.testing.assert_allclose(apply_prior_shift(unshifted_test_proba(run), np.asarray(run.history.prior_shift)),
                                   run.test_proba, atol=1e-6)


def test_a_hybrid_blends_the_members_mean_with_xgboost_fitted_on_the_same_folds_and_firms(fitted):
    ensemble = fitted.hybrid
    parts, (factory, view) = fitted.parts, TREE_BASELINES["XGBoost"]
    y, fold = held_out_labels(parts, 2)
    members_held = np.mean([r.history.held_out_proba for r in fitted.runs], axis=0)
    tree_held = held_out_proba(factory, view, [(parts[f"cv{i}_train"], parts[f"cv{i}_val"]) for i in (1, 2)], SPLIT)
    assert ensemble.rule == "hybrid" and ensemble.blend.weight == 0.5  # train.ensemble_weight's default: equal weights
    assert ensemble.blend.check == check_prior_shift(y, blend(members_held, tree_held, 0.5), fold, grid=COARSE)
    chosen = Ensemble.fit(fitted.runs, parts, CONFIG.with_params({"ensemble_weight": None}), SPLIT)
    assert chosen.blend.weight == fit_blend_weight(y, members_held, tree_held)  # None: chosen on the held-out folds
    tree_test = fit_predict(factory, view, parts["train_val"], parts["test"], SPLIT)  # the tree learns the refit's firms
    expected = apply_prior_shift(blend(fitted.members, tree_test, ensemble.blend.weight), ensemble.blend.check.shift)
    np.testing.assert_allclose(ensemble.predict(fitted.members, parts["test"]), expected)


def test_a_hybrid_of_class_weighted_members_fits_its_tree_on_the_same_firms_smoted_as_the_yardstick_does(fitted):
    config = CONFIG.with_params({"balance": "class_weight"})
    weighted, smoted = assemble_for(config, fitted.root / "ds"), fitted.parts  # = assemble_for(config, ds, balance=True)
    assert len(weighted["train_val"]) < len(smoted["train_val"])  # the members learn from the real firms alone
    with pytest.raises(ValueError, match="tree learns from SMOTE'd firms.*cv1_train"):  # not from the members' own firms
        Ensemble.fit(fitted.runs, weighted, config, SPLIT)
    # The members' held-out firms are the same either way, so these members' hybrid is the SMOTE'd recipe's one.
    ensemble = Ensemble.fit(fitted.runs, weighted, config, SPLIT, tree_parts=smoted)
    assert ensemble.blend == fitted.hybrid.blend
    np.testing.assert_allclose(ensemble.predict(fitted.members, weighted["test"]), fitted.hybrid.predict(fitted.members, fitted.parts["test"]))
    swapped = smoted | {"cv1_val": smoted["cv2_val"], "cv2_val": smoted["cv1_val"]}
    with pytest.raises(ValueError, match="folds hold other firms"):
        Ensemble.fit(fitted.runs, weighted, config, SPLIT, tree_parts=swapped)


def test_an_ensemble_decision_needs_its_members_held_out_predictions(fitted):
    with pytest.raises(ValueError, match="model.prior_shift"):
        CONFIG.with_params({"prior_shift": False})
    with pytest.raises(ValueError, match="'average'"):
        Ensemble.fit(fitted.runs, fitted.parts, CONFIG.with_params({"ensemble": "average"}), SPLIT)
    lacking = SimpleNamespace(seed=9, history=SimpleNamespace(held_out_proba=None))
    with pytest.raises(ValueError, match="seeds \\[9\\]"):
        Ensemble.fit([fitted.runs[0], lacking], fitted.parts, CONFIG, SPLIT)


def test_a_package_with_an_ensemble_scores_new_firms_as_the_ensemble_from_files_without_pickle(fitted, tmp_path):
    from emdlot.runs.package import Scorer, _requirements, write_package
    from emdlot.training.loop import interpret

    ensemble = fitted.hybrid
    folder = write_package(tmp_path / "hybrid", [r.model for r in fitted.runs], CONFIG, fitted.root / "ds", ensemble=ensemble)
    assert (folder / ENSEMBLE_FILE).exists() and (folder / TREE_FILE).read_text().startswith("{")  # JSON, no pickle
    assert any(r.startswith("xgboost") for r in _requirements(folder))
    manifest = pd.read_csv(fitted.root / "ds" / "manifest.csv", dtype={"firm_id": str}, parse_dates=["cutoff"])
    test = manifest[manifest["split"] == "test"].set_index("firm_id")["cutoff"]
    rows = contract_rows(load_inputs(fitted.root / "in"), test)
    rows = rows[rows["firm_id"].isin(test.index)]
    scorer = Scorer(folder)
    arrays, out = scorer.interpret(rows)
    own = np.mean([apply_prior_shift(interpret(r.model, arrays, 256).probabilities, -np.asarray(r.history.prior_shift))
                   for r in fitted.runs], axis=0)
    np.testing.assert_allclose(out.probabilities, ensemble.predict(own, arrays), atol=1e-5)
    np.testing.assert_array_equal(out.predicted_class, out.probabilities.argmax(axis=1))
    assert all(float(m.prior_shift.abs().sum()) == 0.0 for m in scorer.models)  # the one shift replaces the members'
    # Without the ensemble the same members score as fitted, each with its own shift; the files of the hybrid go.
    plain = write_package(folder, [r.model for r in fitted.runs], CONFIG, fitted.root / "ds")
    assert not (plain / ENSEMBLE_FILE).exists() and not (plain / TREE_FILE).exists()
    assert not any(r.startswith("xgboost") for r in _requirements(plain))
    mean = np.mean([interpret(r.model, arrays, 256).probabilities for r in fitted.runs], axis=0)
    np.testing.assert_allclose(Scorer(plain).interpret(rows)[1].probabilities, mean, atol=1e-5)


def test_the_train_flow_tables_the_ensemble_beside_the_seed_average_and_packages_it_with_its_runs(fitted, tmp_path):
    from emdlot.evaluation.metrics import classification_metrics
    from emdlot.evaluation.tables import write_results
    from emdlot.runs.evaluate import Chosen, _choose, fit_ensemble
    from emdlot.runs.protocol import Outcome, prediction_rows

    test = fitted.parts["test"]
    finished = [Outcome("EMDLOT", "emdlot", SPLIT, rank, proba=r.test_proba, result=r) for rank, r in enumerate(fitted.runs)]
    ensemble, proba, rows = fit_ensemble(finished, fitted.parts, fitted.parts, CONFIG, SPLIT)
    assert ensemble.blend == fitted.hybrid.blend
    np.testing.assert_allclose(proba, fitted.hybrid.predict(fitted.members, test))
    assert set(rows["model"]) == {"EMDLOT + XGBoost hybrid (seed average)"} and set(rows["seed"]) == {-1}
    np.testing.assert_allclose(rows[["p_Performing", "p_Extended", "p_Defaulted"]].to_numpy(), proba)
    oracle = Outcome("oracle", "baseline", SPLIT, 0, proba=np.eye(3)[test.y])  # a valid run for the paper rule's tables
    predictions = pd.concat([prediction_rows(o, test) for o in [*finished, oracle]], ignore_index=True)
    t6 = write_results(predictions, tmp_path, n=2, n_boot=20, ensembles=rows)["table6_seed_average"].set_index("model")
    assert sorted(t6.index) == ["EMDLOT (seed average)", "EMDLOT + XGBoost hybrid (seed average)"]
    assert t6.loc["EMDLOT + XGBoost hybrid (seed average)", "f1_mean"] == pytest.approx(classification_metrics(test.y, proba).f1)
    split = Chosen(finished, fitted.root / "ds", None, test.y, ensemble, proba)
    assert _choose(None, split, "seed_average").ensemble is ensemble
    best = _choose(None, Chosen(finished, fitted.root / "ds", None, test.y, ensemble, proba), "best")
    assert len(best.runs) == 1 and best.ensemble is None and best.ensemble_proba is None  # one run, as fitted


def test_runs_that_predict_with_their_fold_models_keep_the_decisions_and_package_the_fold_models_hybrid(fitted, tmp_path):
    """train.predict_with "folds": the same fit and decisions as the refit recipe (epoch count, held-out predictions,
    shift), no refit; the run predicts with its fold models at that epoch (each with the shift), and a hybrid of such
    runs blends the fold models' unshifted mean, as its package of fold models scores new firms."""
    from emdlot.model.batch import to_batch
    from emdlot.runs.package import Scorer, write_package
    from emdlot.training.loop import predict_proba

    with pytest.raises(ValueError, match="epoch_folds"):
        EMDLOTConfig().with_params({"predict_with": "folds"})
    config = CONFIG.with_params({"predict_with": "folds"})
    parts, test = fitted.parts, fitted.parts["test"]
    run, refit = train_and_score(parts, config, SEEDS[0], score_test=True), fitted.runs[0]
    assert run.model is None and run.history.refit is None and len(run.fold_models) == 2
    assert (run.history.best_epoch, run.history.prior_shift) == (refit.history.best_epoch, refit.history.prior_shift)
    np.testing.assert_allclose(run.history.held_out_proba, refit.history.held_out_proba, atol=1e-6)
    each = [predict_proba(m, to_batch(test, with_labels=False), 256) for m in run.fold_models]  # each with the shift
    unshifted = [apply_prior_shift(p, -np.asarray(run.history.prior_shift)) for p in each]
    np.testing.assert_allclose(run.test_proba, np.mean(each, axis=0), atol=1e-6)
    np.testing.assert_allclose(run.test_interpretation.probabilities, run.test_proba, atol=1e-6)
    # Refitted to the chosen epoch, the fold models predict what the full-length folds predicted at that epoch.
    np.testing.assert_allclose(unshifted_test_proba(run), np.mean(unshifted, axis=0), atol=1e-5)
    assert not np.allclose(run.test_proba, refit.test_proba, atol=1e-3)  # other models than the refit
    ensemble = Ensemble.fit([run], parts, config, SPLIT)  # on the same held-out predictions as the refit's runs
    folder = write_package(tmp_path / "folds", run.members, config, fitted.root / "ds", ensemble=ensemble)
    scorer = Scorer(folder)
    assert len(scorer.models) == 2  # the run's two fold models, no refit
    manifest = pd.read_csv(fitted.root / "ds" / "manifest.csv", dtype={"firm_id": str}, parse_dates=["cutoff"])
    cutoffs = manifest[manifest["split"] == "test"].set_index("firm_id")["cutoff"]
    rows = contract_rows(load_inputs(fitted.root / "in"), cutoffs)
    arrays, out = scorer.interpret(rows[rows["firm_id"].isin(cutoffs.index)])
    order = pd.Series(range(len(test)), index=test.firm_id.astype(str))[arrays.firm_id.astype(str)].to_numpy()
    np.testing.assert_allclose(out.probabilities, ensemble.predict(unshifted_test_proba(run), test)[order], atol=1e-5)
