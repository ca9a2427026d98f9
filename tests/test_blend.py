"""The hybrid (emdlot.training.blend): EMDLOT's and a tree's probabilities blended with a weight chosen on held-out
folds, then the checked prior shift of the blend."""
import numpy as np
import pytest

from emdlot.training.blend import Blend, blend, fit_blend, fit_blend_weight, ranking
from emdlot.training.calibration import ShiftCheck, apply_prior_shift, check_prior_shift

COARSE = np.arange(-2.0, 2.0 + 1e-9, 1.0)  # the shift grid, coarse so the tests stay fast


def noisy_model(y: np.ndarray, signal: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities from logits `signal` on the true class plus the model's own noise (so two models err apart)."""
    logits = rng.normal(0.0, 1.0, size=(len(y), 3))
    logits[np.arange(len(y)), y] += signal
    logits[:, 0] += 1.5  # the majority leans Performing, as a few minority firms leave a model
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def labels(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(3, size=n, p=[0.8, 0.12, 0.08])


def test_two_models_that_err_apart_get_a_weight_between_them_and_the_blend_ranks_new_firms_better_than_either():
    rng = np.random.default_rng(0)
    y = labels(1500, rng)
    a, b = noisy_model(y, 1.2, rng), noisy_model(y, 1.2, rng)
    w = fit_blend_weight(y, a, b)
    assert 0.2 <= w <= 0.8
    y_new = labels(1500, rng)  # new firms: the weight carries to them
    a_new, b_new = noisy_model(y_new, 1.2, rng), noisy_model(y_new, 1.2, rng)
    assert ranking(y_new, blend(a_new, b_new, w)) > max(ranking(y_new, a_new), ranking(y_new, b_new)) + 0.01


def test_a_model_without_signal_gets_no_weight_and_ties_go_to_emdlot():
    rng = np.random.default_rng(1)
    y = labels(900, rng)
    informed, blind = noisy_model(y, 2.5, rng), noisy_model(y, 0.0, rng)
    assert fit_blend_weight(y, blind, informed) == 0.0
    assert fit_blend_weight(y, informed, blind) == 1.0
    assert fit_blend_weight(y, informed, informed.copy()) == 1.0  # every weight scores the same


def test_the_hybrid_is_its_blend_shifted_by_the_check_of_the_blended_held_out_predictions():
    rng = np.random.default_rng(2)
    y, fold = labels(900, rng), np.arange(900) % 3
    timid = np.array([0.0, -2.0, -2.0])  # both models' minority too low, so a shift is worth making
    a, b = (apply_prior_shift(noisy_model(y, 1.5, rng), timid) for _ in range(2))
    fitted = fit_blend(y, fold, a, b, grid=COARSE)
    check = check_prior_shift(y, blend(a, b, fitted.weight), fold, grid=COARSE)
    assert fitted.check == check and check.carries and check.fitted[1] > 0
    y_new = labels(300, rng)
    a_new, b_new = (apply_prior_shift(noisy_model(y_new, 1.5, rng), timid) for _ in range(2))
    np.testing.assert_allclose(fitted.apply(a_new, b_new), apply_prior_shift(blend(a_new, b_new, fitted.weight), check.shift))
    np.testing.assert_allclose(fitted.apply(a_new, b_new).sum(axis=1), 1.0)
    # A fixed weight is kept as given; w = 1 is EMDLOT alone with its own checked shift.
    alone = fit_blend(y, fold, a, b, weight=1.0, grid=COARSE)
    assert alone.weight == 1.0 and alone.check == check_prior_shift(y, a, fold, grid=COARSE)
    np.testing.assert_allclose(alone.apply(a_new, b_new), apply_prior_shift(a_new, alone.check.shift))


def test_an_unchecked_hybrid_applies_the_fitted_shift_where_the_check_dropped_it():
    check = ShiftCheck(fitted=[0.0, 1.0, -1.0], fold_shifts=[[0.0, 1.0, -1.0]] * 2, nested_none=0.5, nested_shift=0.4)
    dropped = Blend(weight=0.5, check=check)
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    np.testing.assert_allclose(dropped.apply(p, p), p)  # checked: no shift
    np.testing.assert_allclose(dropped.apply(p, p, checked=False), apply_prior_shift(p, np.array([0.0, 1.0, -1.0])))
    assert dropped.as_dict()["prior_shift"] == [0.0, 0.0, 0.0] and dropped.as_dict()["weight"] == 0.5


def test_a_blend_of_different_firms_is_refused():
    with pytest.raises(ValueError, match="same firms"):
        blend(np.full((4, 3), 1 / 3), np.full((5, 3), 1 / 3), 0.5)
