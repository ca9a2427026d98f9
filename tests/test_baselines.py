"""Baselines and shortcut models on hand-made arrays, and the uncertainty helpers."""
import dataclasses

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from emdlot.data.arrays import SequenceArrays
from emdlot.evaluation.metrics import classification_metrics
from emdlot.evaluation.uncertainty import bootstrap_interval, mean_interval, summarise
from emdlot.training.baselines import BASELINES, TREE_BASELINES, fit_predict, held_out_fits, predict_proba, shortcut_baselines
from emdlot.training.lstm import LSTMClassifier

STEPS, FEATURES = 10, 4


def arrays(n: int, seed: int, lengths_by_class=(10, 10, 10), signal: float = 0.0) -> SequenceArrays:
    """Balanced classes; each class's sequence length is fixed by `lengths_by_class`; feature 0's last
    quarter carries `signal` times the class index."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    mask = np.zeros((n, STEPS), bool)
    for i, c in enumerate(y):
        mask[i, STEPS - lengths_by_class[c]:] = True
    X = rng.normal(size=(n, STEPS, FEATURES)).astype(np.float32) * mask[:, :, None]
    X[:, -1, 0] += signal * y
    delta_t = np.where(mask, 3.0, 0.0).astype(np.float32)
    delta_t[np.arange(n), mask.argmax(axis=1)] = 0.0
    return SequenceArrays(np.array([f"f{i}" for i in range(n)]), X, mask, delta_t,
                          np.zeros((n, 2, 3), np.float32), np.zeros((n, 2), bool), y.astype(np.int64))


def test_length_shortcut_sees_a_leaky_protocol_and_not_a_matched_one():
    factory, view = shortcut_baselines([])["shortcut: sequence length"]
    leaky = classification_metrics(arrays(90, 1, (10, 4, 2)).y, fit_predict(factory, view, arrays(90, 0, (10, 4, 2)), arrays(90, 1, (10, 4, 2)), 0))
    matched = classification_metrics(arrays(90, 1).y, fit_predict(factory, view, arrays(90, 0), arrays(90, 1), 0))
    assert leaky.auc > 0.95 and leaky.recall > 0.9
    assert matched.auc == pytest.approx(0.5, abs=0.05)


def test_end_shortcut_reads_only_the_named_last_quarter_columns():
    factory, view = shortcut_baselines([0, 2])["shortcut: when it ends (last quarter's macro)"]
    train, test = arrays(90, 0, signal=3.0), arrays(90, 1, signal=3.0)
    assert view(train).shape == (90, 2)
    assert classification_metrics(test.y, fit_predict(factory, view, train, test, 0)).auc > 0.9
    _, blind = shortcut_baselines([1, 3])["shortcut: when it ends (last quarter's macro)"]
    assert classification_metrics(test.y, fit_predict(factory, blind, train, test, 0)).auc < 0.75


@pytest.mark.parametrize("name", sorted(TREE_BASELINES))
def test_tree_baselines_learn_a_planted_signal_and_give_probabilities(name):
    factory, view = TREE_BASELINES[name]
    train, test = arrays(150, 0, signal=2.0), arrays(90, 1, signal=2.0)
    proba = fit_predict(factory, view, train, test, seed=0)
    assert proba.shape == (90, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert classification_metrics(test.y, proba).auc > 0.8


def test_a_baseline_given_folds_shifts_its_probabilities_by_what_its_own_held_out_predictions_need():
    """The training firms hold few of the minority classes, so the trees' minority probabilities come out too low
    on balanced held-out firms, in every fold alike: the shift carries and is applied."""
    from emdlot.training.calibration import check_prior_shift

    def few_minority(a: SequenceArrays) -> SequenceArrays:
        return a.subset(np.flatnonzero((a.y == 0) | (np.arange(len(a)) % 15 < 3)))

    factory, view = TREE_BASELINES["XGBoost"]
    train, test = few_minority(arrays(300, 0, signal=1.0)), arrays(90, 1, signal=1.0)
    folds = [(few_minority(arrays(300, 2 * i + 3, signal=1.0)), arrays(60, 2 * i + 4, signal=1.0)) for i in range(2)]
    plain = fit_predict(factory, view, train, test, seed=0)
    shifted = fit_predict(factory, view, train, test, seed=0, folds=folds)
    oof = np.concatenate([fit_predict(factory, view, a, b, seed=0) for a, b in folds])
    check = check_prior_shift(np.concatenate([b.y for _, b in folds]), oof, np.repeat([0, 1], 60))
    assert check.carries
    shift = check.shift
    log_ratio = np.log(shifted / plain)
    np.testing.assert_allclose(log_ratio - log_ratio[:, :1], np.tile(shift, (len(test), 1)), atol=1e-6)
    assert np.abs(shift).max() > 0.01 and not np.allclose(shifted, plain)


def test_held_out_fits_are_each_folds_own_fit_in_fold_order():
    """The fits behind the held-out predictions are kept (the hybrid's tree fold models predict new firms with them):
    fold k's fit is the model fitted on fold k's training firms alone, and its held-out rows come k-th."""
    factory, view = TREE_BASELINES["XGBoost"]
    folds = [(arrays(120, 2 * i + 3, signal=1.0 + i), arrays(30 + 15 * i, 2 * i + 4, signal=1.0)) for i in range(2)]
    test = arrays(45, 9, signal=1.0)
    held, models = held_out_fits(factory, view, folds, seed=0)
    assert held.shape == (30 + 45, 3) and len(models) == 2
    for (fold_train, fold_val), model, rows in zip(folds, models, np.split(held, [30])):
        np.testing.assert_array_equal(rows, fit_predict(factory, view, fold_train, fold_val, seed=0))
        np.testing.assert_array_equal(predict_proba(model, view, test), fit_predict(factory, view, fold_train, test, seed=0))
    assert not np.allclose(predict_proba(models[0], view, test), predict_proba(models[1], view, test))


def test_bootstrap_interval_holds_the_point_estimate_and_shrinks_with_more_firms():
    rng = np.random.default_rng(0)

    def case(n):
        y = np.arange(n) % 3
        proba = rng.dirichlet(np.ones(3), size=n) + np.eye(3)[y] * 0.6
        return y, proba / proba.sum(axis=1, keepdims=True)

    y, proba = case(60)
    point = classification_metrics(y, proba)
    small = bootstrap_interval(y, proba, n_boot=300)
    for metric, (lo, hi) in small.items():
        assert lo <= getattr(point, metric) <= hi, metric
    big = bootstrap_interval(*case(600), n_boot=300)
    for metric in small:
        assert big[metric][1] - big[metric][0] < small[metric][1] - small[metric][0], metric


def test_mean_interval_resamples_whole_splits():
    values = np.array([0.1, 0.1, 0.1, 0.9, 0.9, 0.9])
    by_run = mean_interval(values, n_boot=500)
    by_split = mean_interval(values, groups=np.array([1, 1, 1, 2, 2, 2]), n_boot=500)
    assert by_split[1] - by_split[0] > by_run[1] - by_run[0]  # two splits are less evidence than six runs
    runs = [classification_metrics(np.arange(30) % 3, np.eye(3)[(np.arange(30) + k) % 3] * 0.8 + 0.1) for k in (0, 0, 1)]
    table = summarise(runs)
    assert table["valid_runs"] == {"count": 3, "of": 3}
    assert table["recall"]["ci_low"] <= table["recall"]["mean"] <= table["recall"]["ci_high"]


# --- the nine Table 6 models ------------------------------------------------------------------------------

def firms(n: int, seed: int, signal: float = 2.0, text_signal: float = 0.0, same_sequences: bool = False,
          steps: int = 8, features: int = 5, dims: int = 4) -> SequenceArrays:
    """Balanced classes, 3..`steps` valid quarters each (pre-padded), delta_t 3 months (0 at the first step).
    Feature 1 of the last two quarters carries `signal` times the class index; text dimension 2 of both
    sections `text_signal` times it; about 15% of sections are missing (their text is noise). With
    `same_sequences` every firm has the same values, so the sequences say nothing about the firm."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    lengths = rng.integers(3, steps + 1, size=n)
    mask = np.arange(steps)[None, :] >= (steps - lengths)[:, None]
    X = rng.normal(size=(n, steps, features)).astype(np.float32)
    if same_sequences:
        X[:] = X[0]
    X[:, -2:, 1] += signal * y[:, None]
    X *= mask[:, :, None]
    delta_t = np.where(mask, 3.0, 0.0).astype(np.float32)
    delta_t[np.arange(n), mask.argmax(axis=1)] = 0.0
    text = rng.normal(size=(n, 2, dims)).astype(np.float32)
    text[:, :, 2] += text_signal * y[:, None]
    text_mask = rng.random((n, 2)) > 0.15
    return SequenceArrays(np.array([f"f{i}" for i in range(n)]), X, mask, delta_t, text, text_mask, y.astype(np.int64))


def leading_padding(data: SequenceArrays, extra: int) -> SequenceArrays:
    """`extra` more padded quarters in front; their X and delta_t hold junk the model must never read."""
    n, _, features = data.X.shape
    return dataclasses.replace(
        data,
        X=np.concatenate([np.full((n, extra, features), 99.0, np.float32), data.X], axis=1),
        mask=np.concatenate([np.zeros((n, extra), bool), data.mask], axis=1),
        delta_t=np.concatenate([np.full((n, extra), 50.0, np.float32), data.delta_t], axis=1),
    )


def macro_auc(y: np.ndarray, proba: np.ndarray) -> float:
    return roc_auc_score(y, proba, multi_class="ovr")


def test_baselines_are_table_6_in_order():
    assert list(BASELINES) == ["Logistic Regression", "SVM", "Decision Tree", "KNN", "Random Forest",
                               "LightGBM", "XGBoost", "ANN", "LSTM"]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_learns_a_planted_signal_and_gives_probabilities(name):
    factory, view = BASELINES[name]
    train, test = firms(150, 0), firms(150, 1)
    proba = fit_predict(factory, view, train, test, seed=0)
    assert proba.shape == (150, 3)
    assert (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert macro_auc(test.y, proba) > 0.8


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", ["ANN", "LSTM"])
def test_a_seed_fixes_the_probabilities(name):
    factory, view = BASELINES[name]
    train, test = firms(150, 0), firms(60, 1)
    threads, rng_state = torch.get_num_threads(), torch.get_rng_state()
    first = fit_predict(factory, view, train, test, seed=3)
    np.testing.assert_array_equal(first, fit_predict(factory, view, train, test, seed=3))
    assert not np.allclose(first, fit_predict(factory, view, train, test, seed=4), atol=1e-3)
    assert torch.get_num_threads() == threads  # the caller's torch settings are left as they were
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_lstm_output_does_not_depend_on_padding():
    train, test = firms(150, 0), firms(60, 1)
    model = LSTMClassifier(random_state=0).fit(train, train.y)
    proba = model.predict_proba(test)
    np.testing.assert_allclose(model.predict_proba(leading_padding(test, 5)), proba, atol=1e-6)
    padded_model = LSTMClassifier(random_state=0).fit(leading_padding(train, 3), train.y)
    np.testing.assert_allclose(padded_model.predict_proba(test), proba, atol=1e-5)
    # and a firm's numbers do not depend on the batch it is scored in
    np.testing.assert_allclose(model.predict_proba(test.subset(np.array([7]))), proba[[7]], atol=1e-6)


def test_lstm_reads_the_text_and_only_the_present_sections():
    train, test = (firms(n, seed, signal=0.0, text_signal=2.0, same_sequences=True) for n, seed in ((300, 0), (150, 1)))
    model = LSTMClassifier(random_state=0).fit(train, train.y)
    assert macro_auc(test.y, model.predict_proba(test)) > 0.8
    # without its text the same model has nothing to go on
    no_text = dataclasses.replace(test, text_mask=np.zeros_like(test.text_mask))
    assert macro_auc(test.y, model.predict_proba(no_text)) < 0.65
    # whatever a missing section holds is never read
    junk = dataclasses.replace(test, text=np.where(test.text_mask[:, :, None], test.text, 1e3))
    np.testing.assert_array_equal(model.predict_proba(junk), model.predict_proba(test))


def test_lstm_refuses_input_it_cannot_read():
    train = firms(30, 0)
    with pytest.raises(TypeError, match="SequenceArrays"):
        LSTMClassifier().fit(train.X, train.y)
    empty = dataclasses.replace(train, mask=train.mask.copy())
    empty.mask[4] = False
    with pytest.raises(ValueError, match="'f4'"):
        LSTMClassifier().fit(empty, train.y)


def test_the_protocol_baselines_learn_from_the_firms_a_refit_learns_from():
    """With parts["train_val"] (a refit recipe), every comparison model fits on it, not on the training firms
    alone: otherwise EMDLOT's refit would learn from firms its comparison never saw. With `shift_folds` they
    get the prior shift from the same folds EMDLOT's is fitted on."""
    import ray

    from emdlot.runs.protocol import ProtocolSettings, baseline_runs, seed_of

    train, extra, test = arrays(60, 0, signal=0.5), arrays(60, 1, signal=2.0), arrays(60, 2, signal=1.0)
    settings = ProtocolSettings(baselines=("Logistic Regression",), shortcuts=False, seeds=1, n_valid=0)
    factory, view = BASELINES["Logistic Regression"]
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        for parts, fitted_on in (({"train": train, "test": test}, train),
                                 ({"train": train, "train_val": SequenceArrays.concat(train, extra), "test": test},
                                  SequenceArrays.concat(train, extra))):
            [outcome] = list(baseline_runs(parts, split=0, macro_columns=[], settings=settings))
            np.testing.assert_allclose(outcome.proba, fit_predict(factory, view, fitted_on, test, seed_of(0)))
        folds = [(arrays(45, 3, signal=0.5), arrays(30, 4, signal=0.5)), (arrays(45, 5, signal=0.5), arrays(30, 6, signal=0.5))]
        parts = {"train": train, "test": test} | {f"cv{i}_{part}": fold[j] for i, fold in enumerate(folds, 1)
                                                  for j, part in enumerate(("train", "val"))}
        [outcome] = list(baseline_runs(parts, split=0, macro_columns=[], settings=settings, shift_folds=2))
        np.testing.assert_allclose(outcome.proba, fit_predict(factory, view, train, test, seed_of(0), folds))
    finally:
        ray.shutdown()
    assert not np.allclose(fit_predict(factory, view, train, test, seed_of(0)),
                           fit_predict(factory, view, SequenceArrays.concat(train, extra), test, seed_of(0)), atol=1e-3)
