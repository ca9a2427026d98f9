"""Short training runs on a small synthetic set with planted signal: learning, determinism, early stopping, initialisation."""
import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from emdlot.data.arrays import SequenceArrays
from emdlot.evaluation.metrics import classification_metrics
from emdlot.model import EMDLOT, to_batch
from emdlot.training.config import EMDLOTConfig
from emdlot.training import evaluate, fit, initialise_clusters, interpret, predict_proba
from emdlot.training.init import encode_all

STEPS, FEATURES = 8, 6
TINY = dict(hidden_size=16, feature_embed_size=8, num_clusters=3, batch_size=16, learning_rate=5e-3,
            max_epochs=25, patience=6, warmup_epochs=2, identifier_epochs=3, kmeans_n_init=3, progress=False)




def planted_arrays(n: int, seed: int) -> SequenceArrays:
    """Three balanced classes: Extended firms drift up on feature 0, Defaulted firms on feature 1 toward
    their last quarters, and Extended firms' risk-factor text is shifted; the rest is noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    rng.shuffle(y)
    x = np.zeros((n, STEPS, FEATURES), np.float32)
    mask = np.zeros((n, STEPS), bool)
    delta_t = np.zeros((n, STEPS), np.float32)
    for i in range(n):
        length = rng.integers(3, STEPS + 1)
        mask[i, STEPS - length:] = True
        x[i, STEPS - length:] = rng.normal(size=(length, FEATURES))
        ramp = np.linspace(0.0, 2.0, length)
        x[i, STEPS - length:, 0] += ramp * (y[i] == 1)
        x[i, STEPS - length:, 1] += ramp * (y[i] == 2)
        gaps = rng.choice([3.0, 6.0], size=length, p=[0.8, 0.2])
        gaps[0] = 0.0
        delta_t[i, STEPS - length:] = gaps
    text = rng.normal(size=(n, 2, 4)).astype(np.float32)
    text[:, 1, 0] += 1.5 * (y == 1)
    text_mask = rng.random(n) < 0.8
    text[~text_mask] = 0.0
    return SequenceArrays(firm_id=np.array([f"s{seed}-{i}" for i in range(n)]), X=x, mask=mask, delta_t=delta_t,
                          text=text, text_mask=text_mask, y=y.astype(np.int64))


TRAIN, VAL, TEST = planted_arrays(150, 0), planted_arrays(60, 1), planted_arrays(60, 2)
CONFIG = EMDLOTConfig().with_params(TINY)


@pytest.fixture(scope="module")
def runs():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fit(TRAIN, VAL, CONFIG, seed=7), fit(TRAIN, VAL, CONFIG, seed=7), fit(TRAIN, VAL, CONFIG, seed=8)
    finally:
        torch.set_num_threads(previous)


def test_short_run_learns_all_three_classes(runs):
    first, _, _ = runs
    proba = predict_proba(first.model, to_batch(TEST), batch_size=32)
    metrics = classification_metrics(TEST.y, proba)
    assert metrics.n_predicted_classes == 3
    assert metrics.recall > 0.6 and metrics.auc > 0.75  # chance: 1/3 and 0.5
    losses = [e.train_cross_entropy for e in first.history.epochs]
    assert losses[-1] < losses[0]


def test_same_seed_is_bit_identical_and_another_seed_differs(runs):
    first, again, other = runs
    assert [e.train_loss for e in first.history.epochs] == [e.train_loss for e in again.history.epochs]
    assert first.history.init == again.history.init
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name
    batch = to_batch(TEST)
    assert np.array_equal(predict_proba(first.model, batch, 32), predict_proba(again.model, batch, 32))
    assert not torch.equal(first.model.tlstm.weight_hh, other.model.tlstm.weight_hh)


def test_best_epoch_weights_are_restored_and_patience_is_respected(runs):
    for result in runs:
        history = result.history
        _, score, _ = evaluate(result.model, to_batch(VAL), 64, CONFIG.train.score_weights)
        assert score == pytest.approx(history.best_score, abs=1e-12)
        assert history.epochs[history.best_epoch - 1].val_score == history.best_score
        assert max(e.val_score for e in history.epochs) == history.best_score
        if history.stopped_early:
            assert len(history.epochs) == history.best_epoch + CONFIG.train.patience
        else:
            assert len(history.epochs) == CONFIG.train.max_epochs


def test_initialisation_puts_centroids_on_kmeans_centres_and_teaches_the_identifier():
    torch.manual_seed(3)
    model = EMDLOT(CONFIG.model, num_features=FEATURES, num_sections=2, text_dim=4)
    batch = to_batch(TRAIN)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = initialise_clusters(model, batch, CONFIG.train, seed=3, generator=torch.Generator().manual_seed(3))

    assert len(report.warmup_losses) == CONFIG.train.warmup_epochs
    assert not torch.equal(before["tlstm.weight_hh"], model.tlstm.weight_hh)  # the encoder was warmed up
    z = encode_all(model, batch, 64).numpy().astype(np.float64)
    kmeans = KMeans(n_clusters=3, n_init=CONFIG.train.kmeans_n_init, random_state=3).fit(z)
    np.testing.assert_allclose(model.centroids.detach().numpy(), kmeans.cluster_centers_, rtol=1e-5, atol=1e-6)
    assert report.cluster_sizes == np.bincount(kmeans.labels_, minlength=3).tolist()
    assert report.kmeans_inertia == pytest.approx(kmeans.inertia_)
    assert report.identifier_accuracy > 0.5  # three clusters: chance is about 1/3
    assert report.identifier_losses[-1] < report.identifier_losses[0]
    assert torch.equal(before["head.heads.weight_z"], model.head.heads.weight_z)  # heads wait for end-to-end training


@pytest.mark.parametrize("ablation", ["ABL1", "ABL2", "ABL3"])
def test_ablations_train_through_the_same_loop(ablation):
    config = CONFIG.ablation(ablation).with_params({"max_epochs": 2})
    result = fit(TRAIN, VAL, config, seed=1)
    assert len(result.history.epochs) == 2
    assert (result.history.init is None) == (ablation == "ABL2")
    explanation = interpret(result.model, TEST, batch_size=25)
    assert explanation.probabilities.shape == (len(TEST), 3)
    if ablation == "ABL1":
        assert np.all(explanation.modality_weights[:, 1] == 0)
    if ablation == "ABL3":
        np.testing.assert_allclose(explanation.feature_attention[TEST.mask], 1 / FEATURES, rtol=1e-6)


def test_validation_without_every_class_is_refused():
    val = VAL.subset(np.flatnonzero(VAL.y != 2))
    with pytest.raises(ValueError, match="no Defaulted firms"):
        fit(TRAIN, val, CONFIG, seed=0)


def test_the_summary_encoder_learns_at_its_own_rate_when_one_is_set():
    model = EMDLOT(CONFIG.with_params({"use_summary": True, "summary_encoder": "forest", "summary_trees": 4}).model,
                   num_features=FEATURES, num_sections=2, text_dim=4)
    own = {id(p) for p in model.summary_parameters()}
    assert own and own == {id(p) for p in model.summary_encoder.parameters()}
    [same] = CONFIG.train.optimizer(model.parameters(), model.summary_parameters()).param_groups  # not set: one rate
    assert same["lr"] == CONFIG.train.learning_rate and len(same["params"]) == len(list(model.parameters()))
    rest, summary = CONFIG.with_params({"summary_learning_rate": 0.01}).train.optimizer(
        model.parameters(), model.summary_parameters()).param_groups
    assert summary["lr"] == 0.01 and {id(p) for p in summary["params"]} == own
    assert rest["lr"] == CONFIG.train.learning_rate and not own & {id(p) for p in rest["params"]}
    # a forest run trains end to end and, like every run, a seed gives the same numbers
    config = CONFIG.with_params({"use_summary": True, "summary_encoder": "forest", "summary_trees": 8,
                                 "summary_tree_depth": 2, "summary_learning_rate": 0.01, "max_epochs": 3})
    first, again = fit(TRAIN, VAL, config, seed=2), fit(TRAIN, VAL, config, seed=2)
    np.testing.assert_array_equal(predict_proba(first.model, to_batch(TEST), 64), predict_proba(again.model, to_batch(TEST), 64))
