"""The run layer and the recipe switches: one run trains, scores validation, touches the test firms only
when asked; variants change what they say and nothing else; the summary modality; epoch hooks."""
from pathlib import Path

import numpy as np
import pytest
import torch

from emdlot.data.arrays import SequenceArrays
from emdlot.model import EMDLOT, MODALITIES, to_batch
from emdlot.runs import train_and_score
from emdlot.runs.single import score
from emdlot.training.config import EMDLOTConfig, training_variants, with_variant

from test_training import TEST, TRAIN, TINY, VAL

FAST = EMDLOTConfig().with_params({**TINY, "max_epochs": 4, "patience": 4})
VARIANTS = training_variants()


def poisoned(arrays: SequenceArrays) -> SequenceArrays:
    """The same firms with NaN in every observed value: any use of them raises."""
    return SequenceArrays(**{**arrays.__dict__, "X": np.where(arrays.mask[:, :, None], np.nan, 0.0).astype(np.float32)})


def test_a_run_scores_validation_always_and_test_only_when_asked():
    records = []
    result = train_and_score({"train": TRAIN, "val": VAL, "test": poisoned(TEST)}, FAST, seed=3, on_epoch=records.append)
    assert result.test_metrics is None and result.test_proba is None  # the poisoned test firms were never read
    assert [r.epoch for r in records] == list(range(1, len(result.history.epochs) + 1))
    assert result.val_score == pytest.approx(max(r.val_score for r in records))  # composite: the best epoch's
    assert result.summary()["best_epoch"] == result.history.best_epoch
    with pytest.raises(ValueError, match="non-finite"):
        train_and_score({"train": TRAIN, "val": VAL, "test": poisoned(TEST)}, FAST, seed=3, score_test=True)
    scored = train_and_score({"train": TRAIN, "val": VAL, "test": TEST}, FAST, seed=3, score_test=True)
    assert scored.test_proba.shape == (len(TEST), 3) and 0 <= scored.test_metrics.auc <= 1
    assert scored.test_cross_fit_proba is None  # no folds, no fold models
    assert scored.test_interpretation.modality_weights.shape == (len(TEST), len(MODALITIES))
    np.testing.assert_allclose(scored.val_score, result.val_score)  # scoring the test firms changes nothing else


def test_ranking_early_stopping_watches_map_and_auc():
    records = []
    train_and_score({"train": TRAIN, "val": VAL}, FAST.with_params({"early_stopping": "ranking"}), seed=3, on_epoch=records.append)
    for r in records:
        assert r.stop_score == pytest.approx(0.5 * (r.val_metrics["average_precision"] + r.val_metrics["auc"]))


def _flat(config: EMDLOTConfig) -> dict:
    return config.model.model_dump() | config.train.model_dump()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_variant_changes_what_it_says_and_nothing_else(name):
    base = EMDLOTConfig()
    changed = base.with_params(VARIANTS[name])
    diff = {k for k, v in _flat(changed).items() if _flat(base)[k] != v}
    assert diff == {k for k, v in VARIANTS[name].items() if _flat(base)[k] != v}


def test_summary_switch_off_builds_the_very_same_model_and_on_adds_a_weighted_third_modality():
    config = FAST.model
    torch.manual_seed(0)
    plain = EMDLOT(config, num_features=TRAIN.X.shape[2], num_sections=2, text_dim=4)
    torch.manual_seed(0)
    explicit = EMDLOT(config.model_copy(update={"use_summary": False}), num_features=TRAIN.X.shape[2], num_sections=2, text_dim=4)
    for (name, a), (_, b) in zip(plain.state_dict().items(), explicit.state_dict().items()):
        assert torch.equal(a, b), name
    batch = to_batch(TEST)
    out = plain.eval()(batch)
    assert torch.all(out.modality_weights[:, MODALITIES.index("summary")] == 0)

    torch.manual_seed(0)
    with_summary = EMDLOT(config.model_copy(update={"use_summary": True}), num_features=TRAIN.X.shape[2], num_sections=2, text_dim=4)
    out = with_summary.eval()(batch)
    weights = out.modality_weights
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(len(TEST)))
    assert torch.all(weights[:, MODALITIES.index("summary")] > 0)
    no_text = ~batch["text_mask"].any(dim=1)
    assert no_text.any() and torch.all(weights[no_text, MODALITIES.index("text")] == 0)
    out.log_probs.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in with_summary.summary_encoder.parameters())
    # the summary reads values and trends, not how many quarters a firm has
    assert batch["summary"].shape == (len(TEST), 7 * TRAIN.X.shape[2])


def test_refit_trains_on_training_and_validation_firms_for_the_early_stopped_epoch_count():
    config = FAST.with_params({"refit_on_val": True})
    with pytest.raises(ValueError, match="train_val"):
        train_and_score({"train": TRAIN, "val": VAL}, config, seed=3)
    parts = {"train": TRAIN, "val": VAL, "train_val": SequenceArrays.concat(TRAIN, VAL), "test": TEST}
    refit = train_and_score(parts, config, seed=3, score_test=True)
    plain = train_and_score(parts, FAST, seed=3, score_test=True)
    assert refit.history.best_epoch == plain.history.best_epoch  # the first fit is the same run
    assert len(refit.history.refit.epochs) == refit.history.best_epoch
    assert refit.val_score == plain.val_score  # validation numbers are the early-stopped model's
    assert not np.allclose(refit.test_proba, plain.test_proba)  # the model scored on test is the refit
    trial = train_and_score({**parts, "train_val": poisoned(parts["train_val"])}, config, seed=3, refit=False)
    assert trial.history.refit is None and trial.val_score == plain.val_score  # a tuning trial stops before it
    np.testing.assert_array_equal(score(trial.model, TEST, config)[2], plain.test_proba)


@pytest.mark.parametrize("refit", [False, True])
def test_a_run_resumed_from_any_checkpoint_on_disk_ends_exactly_as_an_uninterrupted_one(tmp_path, refit):
    """What a Ray Train worker restart relies on: a run continued from a saved state (weights, optimizer,
    batch order, dropout RNG) gives bit-identical weights and the same history."""
    from emdlot.runs import RunState, fit_run

    config = FAST.with_params({"refit_on_val": refit, "dropout": 0.3})
    parts = {"train": TRAIN, "val": VAL, "train_val": SequenceArrays.concat(TRAIN, VAL)}
    saved: list[Path] = []

    def checkpoint(state: RunState) -> None:
        folder = tmp_path / f"ckpt{len(saved)}"
        folder.mkdir()
        state.save(folder)
        saved.append(folder)

    whole = fit_run(parts, config, seed=5, checkpoint=checkpoint)
    assert len(saved) == len(whole.history.epochs) + (len(whole.history.refit.epochs) if refit else 0)
    for folder in (saved[1], saved[-2]):  # mid-fit, and (with refit) mid-refit
        state = RunState.load(folder)
        resumed = fit_run(parts, config, seed=5, resume=state)
        for name, value in whole.model.state_dict().items():
            assert torch.equal(value, resumed.model.state_dict()[name]), name
        assert [e.train_loss for e in resumed.history.epochs] == [e.train_loss for e in whole.history.epochs]
        assert resumed.history.best_epoch == whole.history.best_epoch
        if refit:
            assert [e.train_loss for e in resumed.history.refit.epochs] == [e.train_loss for e in whole.history.refit.epochs]
    assert RunState.load(saved[-2]).phase == ("refit" if refit else "fit")


def test_a_named_variant_is_applied_on_top_of_a_configuration_and_an_unknown_one_is_named():
    base = FAST
    assert with_variant(base, "summary").model.use_summary and not base.model.use_summary
    assert with_variant(base, "paper") == base
    with pytest.raises(ValueError, match="unknown training variant 'nope'"):
        with_variant(base, "nope")


def test_the_summary_quantiles_come_from_the_firms_the_model_trains_on_only():
    from emdlot.model.emdlot import SUMMARY_QUANTILES
    from emdlot.model.scaling import QuantileScaler

    def expected(arrays: SequenceArrays) -> torch.Tensor:
        summary = to_batch(arrays)["summary"]
        return QuantileScaler(summary.shape[1], SUMMARY_QUANTILES).fit(summary.numpy()).quantiles

    config = FAST.with_params({"use_summary": True, "summary_scaling": "quantile", "max_epochs": 2})
    fitted = train_and_score({"train": TRAIN, "val": VAL, "test": poisoned(TEST)}, config, seed=3)
    assert torch.equal(fitted.model.summary_scaler.quantiles, expected(TRAIN))  # not the validation firms'
    parts = {"train": TRAIN, "val": VAL, "train_val": SequenceArrays.concat(TRAIN, VAL)}
    refit = train_and_score(parts, config.with_params({"refit_on_val": True}), seed=3)
    assert torch.equal(refit.model.summary_scaler.quantiles, expected(parts["train_val"]))  # the refit's own firms


def test_cross_validated_epochs_average_the_folds_and_fix_the_refit_length():
    from emdlot.data.assemble import cv_folds
    from emdlot.training.loop import fit

    with pytest.raises(ValueError, match="refit_on_val"):
        FAST.with_params({"epoch_folds": 3})
    with pytest.raises(ValueError, match="at least 2"):
        FAST.with_params({"epoch_folds": 1, "refit_on_val": True})
    config = FAST.with_params({"epoch_folds": 2, "refit_on_val": True, "max_epochs": 3})
    union = SequenceArrays.concat(TRAIN, VAL)
    parts = {"train": TRAIN, "val": VAL, "train_val": union, "test": poisoned(TEST)} | cv_folds(union, 2, 3, seed=5)
    with pytest.raises(ValueError, match="cv1_train"):
        train_and_score({"train": TRAIN, "val": VAL, "train_val": union}, config, seed=3)
    result = train_and_score(parts, config, seed=3)
    folds = [fit(parts[f"cv{i}_train"], parts[f"cv{i}_val"], config, seed=3, epochs=3).history for i in (1, 2)]
    means = [np.mean([f.epochs[e].stop_score for f in folds]) for e in range(3)]
    np.testing.assert_allclose([r.stop_score for r in result.history.epochs], means)
    assert result.history.best_epoch == int(np.argmax(means)) + 1
    assert len(result.history.refit.epochs) == result.history.best_epoch  # the refit on all the firms
    auc = np.mean([f.epochs[result.history.best_epoch - 1].val_metrics["auc"] for f in folds])
    assert result.val_metrics.auc == pytest.approx(auc)  # validation numbers are the folds' mean
    trial = train_and_score({**parts, "train_val": poisoned(union)}, config, seed=3, refit=False)
    assert trial.model is None and trial.history.refit is None and trial.val_score == result.val_score


def test_a_prior_shift_is_fitted_on_the_folds_held_out_predictions_the_refit_applies_it_and_the_folds_cross_fit_test_firms(monkeypatch):
    """The shift's check gets every firm of the folds' held-out parts with its prediction at the chosen epoch and
    its fold, the refitted model applies the fitted shift where the check says it carries, none where not, and the
    run's validation numbers are then those of its folds' firms shifted as it decides (the fit and the check
    themselves: test_calibration)."""
    import emdlot.runs.single as single
    from emdlot.data.assemble import cv_folds
    from emdlot.evaluation.metrics import classification_metrics, composite_score
    from emdlot.training.calibration import ShiftCheck, apply_prior_shift
    from emdlot.model.batch import to_batch
    from emdlot.training.loop import fit, predict_proba

    with pytest.raises(ValueError, match="epoch_folds"):
        FAST.with_params({"prior_shift": True})  # no folds, nothing held out to fit it on
    seen, shift, carries = [], [0.0, 1.25, -0.5], [True]
    fold_shifts = [[0.0, 3.0, -2.0], [0.0, -2.5, 3.0]]  # b^(-1), b^(-2): each fitted without its fold
    monkeypatch.setattr(single, "check_prior_shift", lambda y, proba, fold, weights: seen.append((y, proba, fold, weights))
                        or ShiftCheck(shift, fold_shifts, nested_none=0.5, nested_shift=0.6 if carries[0] else 0.4))
    config = FAST.with_params({"epoch_folds": 2, "refit_on_val": True, "max_epochs": 3, "prior_shift": True})
    union = SequenceArrays.concat(TRAIN, VAL)
    parts = {"train": TRAIN, "val": VAL, "train_val": union, "test": TEST} | cv_folds(union, 2, 3, seed=5)
    result = train_and_score(parts, config, seed=3, score_test=True)
    best = result.history.best_epoch
    folds = [fit(parts[f"cv{i}_train"], parts[f"cv{i}_val"], config, seed=3, epochs=3) for i in (1, 2)]
    [(y, proba, fold, weights)] = seen  # the run predicted its test firms every epoch too: the folds are as without
    # The test firms' cross-fitted prediction: the fold models at the chosen epoch, unshifted, averaged.
    at_best = [fit(parts[f"cv{i}_train"], parts[f"cv{i}_val"], config, seed=3, epochs=best).model for i in (1, 2)]
    test_batch = to_batch(TEST, with_labels=False)
    np.testing.assert_allclose(result.test_cross_fit_proba, np.mean([predict_proba(m, test_batch, 256) for m in at_best], axis=0), atol=1e-6)
    np.testing.assert_array_equal(y, np.concatenate([parts[f"cv{i}_val"].y for i in (1, 2)]))
    np.testing.assert_array_equal(proba, np.concatenate([f.val_proba[best - 1] for f in folds]))
    np.testing.assert_array_equal(fold, np.repeat([0, 1], [len(parts["cv1_val"]), len(parts["cv2_val"])]))
    np.testing.assert_allclose(result.history.held_out_proba, proba)  # unshifted, for a seed ensemble's own shift
    held_y, held_fold = single.held_out_labels(parts, 2)
    np.testing.assert_array_equal(held_y, y)
    np.testing.assert_array_equal(held_fold, fold)
    assert weights == config.train.score_weights and result.history.prior_shift == shift
    assert result.history.prior_shift_check["fitted"] == shift
    assert {k: result.summary()[f"prior_shift_{k}"] for k in ("extended", "defaulted", "nested_none", "nested_shift")} == {
        "extended": 1.25, "defaulted": -0.5, "nested_none": 0.5, "nested_shift": 0.6}  # on record in MLflow
    np.testing.assert_allclose(result.model.prior_shift.numpy(), shift)
    plain = train_and_score(parts, config.with_params({"prior_shift": False}), seed=3, score_test=True)
    assert plain.history.best_epoch == best  # training itself is untouched by the switch
    np.testing.assert_allclose(result.test_proba, apply_prior_shift(plain.test_proba, np.array(shift)), atol=1e-5)
    np.testing.assert_allclose(plain.test_cross_fit_proba, result.test_cross_fit_proba)  # the shift is not in it
    # Validation as the run decides: fold k's firms shifted by b^(-k), each fold scored, the scores averaged as the
    # folds' epoch records are (without the shift: the chosen epoch's record, as `plain` has).
    decided = [classification_metrics(parts[f"cv{i}_val"].y, apply_prior_shift(f.val_proba[best - 1], np.array(b)))
               for i, f, b in zip((1, 2), folds, fold_shifts)]
    assert result.val_score == pytest.approx(np.mean([composite_score(m, config.train.score_weights) for m in decided]))
    assert result.val_metrics.average_precision == pytest.approx(np.mean([m.average_precision for m in decided]))
    assert result.val_metrics.n_predicted_classes == min(m.n_predicted_classes for m in decided)
    assert plain.val_score == plain.history.epochs[best - 1].val_score != pytest.approx(result.val_score)
    carries[0] = False
    relabelled = SequenceArrays(**{**TEST.__dict__, "y": np.roll(TEST.y, 1)})
    dropped = train_and_score(parts | {"test": relabelled}, config, seed=3, score_test=True)
    np.testing.assert_array_equal(dropped.test_cross_fit_proba, result.test_cross_fit_proba)  # test labels unread
    assert dropped.history.prior_shift == [0.0, 0.0, 0.0] and dropped.history.prior_shift_check["fitted"] == shift
    np.testing.assert_allclose(dropped.test_proba, plain.test_proba, atol=1e-6)
    assert dropped.history.shifted_val is None and (dropped.val_score, dropped.val_metrics) == (plain.val_score, plain.val_metrics)


@pytest.fixture(scope="module")
def prepared_dataset(tmp_path_factory, paper_inputs) -> Path:
    from emdlot.config import PrepareConfig
    from emdlot.data.prepare import prepare

    out = tmp_path_factory.mktemp("runs_dataset")
    prepare(paper_inputs, out, PrepareConfig())
    return out


@pytest.mark.parametrize("params, keys", [
    ({}, {"train", "val", "test"}),
    ({"refit_on_val": True}, {"train", "val", "test", "train_val"}),
    ({"refit_on_val": True, "epoch_folds": 2}, {"train", "val", "test", "train_val", "cv1_train", "cv1_val", "cv2_train", "cv2_val"}),
])
def test_assemble_for_reads_the_parts_a_configuration_needs(prepared_dataset, params, keys):
    from emdlot.data.assemble import assemble
    from emdlot.runs import assemble_for

    config = FAST.with_params(params)
    parts = assemble_for(config, prepared_dataset)
    assert set(parts) == keys
    assert set(assemble_for(config, prepared_dataset, refit=False)) == keys - {"train_val"}  # a tuning trial's parts
    real = assemble(prepared_dataset, balance=False)
    assert len(parts["train"]) > len(real["train"])  # SMOTE'd: the recipe's balance
    weighted = assemble_for(config.with_params({"balance": "class_weight"}), prepared_dataset)
    assert len(weighted["train"]) == len(real["train"])
    assert len(assemble_for(config.with_params({"balance": "class_weight"}), prepared_dataset, balance=True)["train"]) == len(parts["train"])
    # fewer SMOTE copies: each training part's smaller classes made up to the share of its largest, the loss weighted
    partial = config.with_params({"smote_ratio": 0.2})
    assert partial.train.weighs_classes and not config.train.weighs_classes
    smaller = assemble_for(partial, prepared_dataset)
    for name in [k for k in keys if k == "train" or k.endswith("_train") or k == "train_val"]:
        counts = np.bincount(smaller[name].y, minlength=3)
        assert counts[1:].tolist() == [int(np.ceil(0.2 * counts[0]))] * 2 and counts[0] == np.bincount(parts[name].y)[0]
    full = assemble_for(partial, prepared_dataset, balance=True)  # what the trees learn from: 1:1:1 whatever the ratio
    for name in [k for k in keys if k == "train" or k.endswith("_train") or k == "train_val"]:
        np.testing.assert_array_equal(full[name].y, parts[name].y)
    with pytest.raises(ValueError, match="needs balance smote"):
        config.with_params({"smote_ratio": 0.2, "balance": "class_weight"})


def test_cv_folds_are_stratified_disjoint_seeded_and_smote_stays_inside_each_fold():
    from emdlot.data.assemble import AssemblyError, cv_folds

    union = SequenceArrays.concat(TRAIN, VAL)
    folds = cv_folds(union, 3, 3, seed=5)
    vals = [set(folds[f"cv{i}_val"].firm_id) for i in (1, 2, 3)]
    assert set().union(*vals) == set(union.firm_id) and sum(map(len, vals)) == len(union)
    for i, val in enumerate(vals, 1):
        train, held = folds[f"cv{i}_train"], folds[f"cv{i}_val"]
        real = {f for f in train.firm_id if not f.startswith("smote-")}
        assert real == set(union.firm_id) - val  # the fold's firms never train, so never seed a synthetic firm
        assert np.bincount(train.y).min() == np.bincount(train.y).max()  # balanced
        assert abs(np.bincount(held.y, minlength=3) / len(held) - np.bincount(union.y) / len(union)).max() < 0.05
    again = cv_folds(union, 3, 3, seed=5)
    assert all(np.array_equal(again[k].firm_id, folds[k].firm_id) for k in folds)
    assert set(cv_folds(union, 3, 3, seed=6)["cv1_val"].firm_id) != vals[0]
    with pytest.raises(AssemblyError, match="at least 999 firms of each class"):
        cv_folds(union, 999, 3, seed=5)
