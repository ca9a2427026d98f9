"""Macro metrics, composite score and the three-class penalty on cases worked out by hand."""
import numpy as np
import pytest

from emdlot.evaluation.metrics import (
    CompositeWeights,
    classification_metrics,
    composite_score,
    three_class_penalty,
)

# Two firms per class. Predictions: class 0 gets one of its two right (firm 1 is called class 1),
# classes 1 and 2 are found completely; firm 5 ranks above firm 1 for class 0.
Y = np.array([0, 0, 1, 1, 2, 2])
PROBA = np.array([
    [0.80, 0.10, 0.10],
    [0.40, 0.50, 0.10],
    [0.10, 0.70, 0.20],
    [0.20, 0.60, 0.20],
    [0.10, 0.20, 0.70],
    [0.45, 0.05, 0.50],
])
RECALL = (1 / 2 + 1 + 1) / 3
F1 = (2 / 3 + 0.8 + 1) / 3  # class 0: P=1, R=1/2; class 1: P=2/3, R=1; class 2: P=R=1
MAP = ((1 + 2 / 3) / 2 + 1 + 1) / 3  # class 0 positives at ranks 1 and 3
AUC = (7 / 8 + 1 + 1) / 3  # class 0: one of 2x4 positive/negative pairs is misordered


def test_macro_metrics_hand_computed():
    m = classification_metrics(Y, PROBA)
    assert m.recall == pytest.approx(RECALL)
    assert m.f1 == pytest.approx(F1)
    assert m.average_precision == pytest.approx(MAP)
    assert m.auc == pytest.approx(AUC)
    assert m.n_predicted_classes == 3 and m.covers_all_classes


def test_composite_score_uses_the_configured_weights():
    m = classification_metrics(Y, PROBA)
    assert composite_score(m) == pytest.approx(0.4 * RECALL + 0.3 * F1 + 0.2 * MAP + 0.1 * AUC)
    recall_only = CompositeWeights(recall=1.0, f1=0.0, average_precision=0.0, auc=0.0)
    assert composite_score(m, recall_only) == pytest.approx(RECALL)


def test_perfect_predictions_score_one():
    proba = np.eye(3)[Y] * 0.9 + 0.1 / 3
    m = classification_metrics(Y, proba)
    assert (m.recall, m.f1, m.average_precision, m.auc) == pytest.approx((1.0, 1.0, 1.0, 1.0))
    assert composite_score(m) == pytest.approx(1.0)


@pytest.mark.parametrize("predicted, penalty", [([0, 0, 0, 0, 0, 0], -2 / 3), ([0, 0, 1, 1, 1, 1], -1 / 3)])
def test_missing_predicted_classes_get_the_penalty_below_every_valid_score(predicted, penalty):
    proba = np.full((6, 3), 0.1)
    proba[np.arange(6), predicted] = 0.8
    m = classification_metrics(Y, proba)
    assert not m.covers_all_classes
    assert composite_score(m) == pytest.approx(penalty)
    assert three_class_penalty(m.n_predicted_classes) == pytest.approx(penalty)
    worst_valid = classification_metrics(Y, np.roll(np.eye(3), 1, axis=1)[Y] * 0.8 + 0.2 / 3)  # every firm wrong
    assert worst_valid.covers_all_classes and composite_score(worst_valid) >= 0 > composite_score(m)


def test_float32_probabilities_that_do_not_sum_exactly_to_one_are_accepted():
    proba = (PROBA * (1 + 3e-7)).astype(np.float32)
    assert classification_metrics(Y, proba).auc == pytest.approx(AUC)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="no Defaulted rows"):
        classification_metrics(np.array([0, 1, 1, 0]), PROBA[:4])
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        classification_metrics(Y, PROBA[:, :2])
    with pytest.raises(ValueError, match="labels \\[3\\]"):
        classification_metrics(np.array([0, 1, 2, 3, 0, 1]), PROBA)
    bad = PROBA.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="row 4"):
        classification_metrics(Y, bad)
    with pytest.raises(ValueError, match="all zero"):
        CompositeWeights(recall=0, f1=0, average_precision=0, auc=0)
    with pytest.raises(ValueError):
        CompositeWeights(recall=-0.1)


def test_a_decision_rule_sets_recall_f1_and_validity_and_leaves_the_ranking_scores_to_the_probabilities():
    """`predicted` (a decision on top of the probabilities, such as a shift used only to decide): recall, F1 and the
    classes predicted from it, mAP and AUC from the probabilities, as sklearn scores each."""
    from sklearn.metrics import f1_score, recall_score

    decided = np.roll(PROBA.argmax(axis=1), 1)  # other classes than the argmax
    m = classification_metrics(Y, PROBA, predicted=decided)
    assert m.recall == pytest.approx(recall_score(Y, decided, average="macro")) != pytest.approx(RECALL)
    assert m.f1 == pytest.approx(f1_score(Y, decided, average="macro"))
    assert (m.average_precision, m.auc) == (pytest.approx(MAP), pytest.approx(AUC))
    one = classification_metrics(Y, PROBA, predicted=np.zeros_like(Y))
    assert one.n_predicted_classes == 1 and not one.covers_all_classes  # validity follows the decision
    assert classification_metrics(Y, PROBA, predicted=PROBA.argmax(axis=1)) == classification_metrics(Y, PROBA)
    with pytest.raises(ValueError, match="one class index"):
        classification_metrics(Y, PROBA, predicted=decided[:-1])
