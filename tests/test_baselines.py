"""Baselines and shortcut models on hand-made arrays, and the uncertainty helpers."""
import numpy as np
import pytest

from emdlot.data.arrays import SequenceArrays
from emdlot.evaluation.metrics import classification_metrics
from emdlot.evaluation.uncertainty import bootstrap_interval, mean_interval, summarise
from emdlot.training.baselines import TREE_BASELINES, fit_predict, shortcut_baselines

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
