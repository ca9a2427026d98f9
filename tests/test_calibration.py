"""The prior shift: a per-class shift of log-probabilities fitted on held-out predictions, in numpy (trees)
and in EMDLOT's output layer (the `prior_shift` buffer)."""
import numpy as np
import pytest
import torch

from emdlot.training.calibration import apply_prior_shift, check_prior_shift, ensemble_prior_shift, fit_prior_shift, fold_labels


COARSE = np.arange(-4.0, 4.5, 1.0)  # the default grid's range at twice its step: a quarter of the candidates, for speed


def calibrated_sample(n: int, prior: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from per-firm posteriors that are exactly right (so a model reporting them is calibrated)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, 3)) + np.log(prior)
    posterior = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in posterior])
    return y, posterior


def test_an_under_confident_minority_is_pushed_up_and_that_holds_on_firms_the_fit_never_saw():
    from sklearn.metrics import recall_score

    from emdlot.evaluation.metrics import classification_metrics, composite_score

    prior = np.array([0.9, 0.06, 0.04])
    timid = np.array([0.0, -2.5, -2.5])  # minority probabilities far too low, as SMOTE's copies leave them
    y_fit, posterior_fit = calibrated_sample(3000, prior, seed=1)
    shift = fit_prior_shift(y_fit, apply_prior_shift(posterior_fit, timid))
    assert shift[0] == 0.0 and shift[1] > 1.0 and shift[2] > 1.0
    y, posterior = calibrated_sample(3000, prior, seed=2)  # new firms from the same world
    before, after = apply_prior_shift(posterior, timid), apply_prior_shift(apply_prior_shift(posterior, timid), shift)
    assert recall_score(y, after.argmax(axis=1), average="macro") > recall_score(y, before.argmax(axis=1), average="macro") + 0.1
    assert composite_score(classification_metrics(y, after)) > composite_score(classification_metrics(y, before))


def test_where_no_shift_scores_better_none_is_made():
    """Separated classes: every small shift decides the same, so the tie goes to no shift at all."""
    y = np.repeat([0, 1, 2], [40, 5, 5])
    proba = np.full((50, 3), 0.01)
    proba[np.arange(50), y] = 0.98
    np.testing.assert_array_equal(fit_prior_shift(y, proba), np.zeros(3))


def test_a_shift_whose_fits_carry_across_folds_is_kept():
    """Every fold's minority is equally timid: a shift fitted without fold k lifts fold k too, so the fit stands."""
    timid = np.array([0.0, -2.5, -2.5])
    y, posterior = calibrated_sample(3000, np.array([0.9, 0.06, 0.04]), seed=3)
    fold = np.arange(3000) % 3
    check = check_prior_shift(y, apply_prior_shift(posterior, timid), fold, grid=COARSE)
    assert check.carries and check.nested_shift > check.nested_none + 0.05
    np.testing.assert_array_equal(check.shift, check.fitted)
    np.testing.assert_array_equal(check.fitted, fit_prior_shift(y, apply_prior_shift(posterior, timid), grid=COARSE))
    assert len(check.fold_shifts) == 3 and all(s[1] > 1.0 and s[2] > 1.0 for s in check.fold_shifts)


def test_a_shift_whose_fits_disagree_across_folds_is_dropped():
    """One fold's minority probabilities are far too low, the other's far too high: each fold's shift, fitted on the
    other, moves it the wrong way, so no shift is applied although the pooled fit found one."""
    prior = np.array([0.9, 0.06, 0.04])
    y_a, p_a = calibrated_sample(2000, prior, seed=4)
    y_b, p_b = calibrated_sample(2000, prior, seed=5)
    y = np.concatenate([y_a, y_b])
    proba = np.concatenate([apply_prior_shift(p_a, np.array([0.0, -3.0, -3.0])),
                            apply_prior_shift(p_b, np.array([0.0, 3.0, 3.0]))])
    check = check_prior_shift(y, proba, np.repeat([0, 1], 2000), grid=COARSE)
    assert check.fold_shifts[0][1] < 0 < check.fold_shifts[1][1]  # fitted on the bold fold, then on the timid one
    assert not check.carries and check.nested_shift < check.nested_none
    np.testing.assert_array_equal(check.shift, np.zeros(3))
    with pytest.raises(ValueError, match="at least 2 folds"):
        check_prior_shift(y, proba, np.zeros(len(y)))


def test_applying_a_shift_keeps_rows_normalised_and_zero_changes_nothing():
    _, posterior = calibrated_sample(50, np.array([0.5, 0.3, 0.2]), seed=2)
    shifted = apply_prior_shift(posterior, np.array([0.0, 1.0, -0.5]))
    np.testing.assert_allclose(shifted.sum(axis=1), 1.0)
    ratio = np.log(shifted / posterior)
    np.testing.assert_allclose(ratio - ratio[:, :1], np.tile([0.0, 1.0, -0.5], (50, 1)), atol=1e-12)
    np.testing.assert_allclose(apply_prior_shift(posterior, np.zeros(3)), posterior)


def test_a_fit_without_every_class_is_refused():
    with pytest.raises(ValueError, match=r"every class.*\[2, 1, 0\]"):
        fit_prior_shift(np.array([0, 0, 1]), np.full((3, 3), 1 / 3))


def test_the_model_applies_its_shift_as_numpy_does_and_saves_it():
    from emdlot.model import EMDLOT, to_batch
    from emdlot.model.config import ModelConfig

    from test_training import TEST

    config = ModelConfig(hidden_size=8, feature_embed_size=4, num_clusters=2, use_text=False, prior_shift=True)
    torch.manual_seed(0)
    model = EMDLOT(config, num_features=TEST.X.shape[2]).eval()
    plain = EMDLOT(config.model_copy(update={"prior_shift": False}), num_features=TEST.X.shape[2]).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "prior_shift"})
    batch = to_batch(TEST)
    with torch.no_grad():
        before = model(batch).probs.numpy()
        assert torch.equal(model(batch).probs, plain(batch).probs)  # a zero shift: the very same numbers
        shift = np.array([0.0, 1.5, -0.25])
        model.set_prior_shift(shift)
        after = model(batch).probs.numpy()
        np.testing.assert_allclose(after, apply_prior_shift(before, shift), atol=1e-6)
        loaded = EMDLOT.from_weights(config, model.state_dict(), num_features=TEST.X.shape[2])
        assert torch.equal(loaded(batch).probs, model(batch).probs)
        assert (model.interpret(batch).predicted_class == after.argmax(axis=1)).all()
    with pytest.raises(ValueError, match="prior_shift true"):
        plain.set_prior_shift(shift)


def test_a_seed_ensemble_is_shifted_once_on_its_members_mean_held_out_prediction():
    """Two members, one timid and one bold about the minority: the ensemble's shift is the check of their mean (not of
    either member), and the folds and labels it is checked on come from the folds in order."""
    y, posterior = calibrated_sample(600, np.array([0.9, 0.06, 0.04]), seed=7)
    held_y, fold = fold_labels([y[:200], y[200:400], y[400:]])
    np.testing.assert_array_equal(held_y, y)
    np.testing.assert_array_equal(fold, np.repeat([0, 1, 2], 200))
    members = [apply_prior_shift(posterior, np.array([0.0, -3.0, -3.0])), apply_prior_shift(posterior, np.array([0.0, 0.5, 0.5]))]
    grid = np.arange(-3.0, 3.5, 1.5)  # coarse, for speed
    check = ensemble_prior_shift(held_y, fold, members, grid=grid)
    assert check == check_prior_shift(y, (members[0] + members[1]) / 2, fold, grid=grid)
    own = [fit_prior_shift(y, m, grid=grid).tolist() for m in members]
    assert check.fitted not in own and own[0] != own[1]
