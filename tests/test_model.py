"""The assembled model: attention normalisation and masks, gradients, ablations, interpretation, config, input checks."""
import numpy as np
import pytest
import torch
import yaml

from emdlot.data.arrays import SequenceArrays
from emdlot.model import EMDLOT, ModelConfig, to_batch
from emdlot.training.config import EMDLOTConfig, load_emdlot_config
from emdlot.model.attention import AdditiveAttention, masked_softmax
from emdlot.model.losses import emdlot_loss

STEPS, FEATURES, SECTIONS, TEXT_DIM = 6, 5, 2, 4
SMALL = dict(hidden_size=12, feature_embed_size=6, num_clusters=3, dropout=0.0)




def random_arrays(n=7, seed=0) -> SequenceArrays:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, STEPS + 1, size=n)
    lengths[0] = STEPS
    mask = np.arange(STEPS)[None, :] >= STEPS - lengths[:, None]  # pre-padded
    x = rng.normal(size=(n, STEPS, FEATURES)).astype(np.float32) * mask[:, :, None]
    delta_t = (rng.integers(1, 3, size=(n, STEPS)) * 3.0).astype(np.float32) * mask
    text_mask = np.ones(n, dtype=bool)
    text_mask[[1, 4]] = False
    text = rng.normal(size=(n, SECTIONS, TEXT_DIM)).astype(np.float32) * text_mask[:, None, None]
    return SequenceArrays(firm_id=np.array([f"firm{i}" for i in range(n)]), X=x, mask=mask, delta_t=delta_t,
                          text=text, text_mask=text_mask, y=np.arange(n) % 3)


def build(seed=0, **changes) -> EMDLOT:
    torch.manual_seed(seed)
    return EMDLOT(ModelConfig(**{**SMALL, **changes}), num_features=FEATURES, num_sections=SECTIONS, text_dim=TEXT_DIM)


def test_attention_weights_sum_to_one_over_their_axis_and_respect_masks():
    arrays = random_arrays()
    batch = to_batch(arrays)
    out = build().eval()(batch)
    mask, section_mask = batch["mask"], batch["text_mask"]
    text_mask = section_mask.any(dim=1)
    ones = torch.ones_like

    alpha_sums = out.feature_attention.sum(-1)  # over features, per valid quarter
    torch.testing.assert_close(alpha_sums[mask], ones(alpha_sums[mask]))
    assert torch.all(out.feature_attention[~mask] == 0)
    torch.testing.assert_close(out.temporal_weights.sum(-1), ones(out.temporal_weights[:, 0]))
    assert torch.all(out.temporal_weights[~mask] == 0)
    torch.testing.assert_close(out.chapter_weights[text_mask].sum(-1), ones(out.chapter_weights[text_mask][:, 0]))
    assert torch.all(out.chapter_weights[~section_mask] == 0)
    torch.testing.assert_close(out.modality_weights.sum(-1), ones(out.modality_weights[:, 0]))
    assert torch.all(out.modality_weights[~text_mask, 1] == 0)
    assert torch.all(out.modality_weights[text_mask, 1] > 0)
    torch.testing.assert_close(out.pi.sum(-1), ones(out.pi[:, 0]))
    torch.testing.assert_close(out.probs.sum(-1), ones(out.probs[:, 0]))
    assert out.pi.shape == (len(arrays), 3)


def test_a_missing_section_gets_no_chapter_weight_and_its_values_are_never_read():
    arrays = random_arrays()
    arrays.text_mask[0] = [False, True]  # firm 0 has only its second section
    arrays.text_mask[2] = [True, False]
    model = build().eval()
    out = model(to_batch(arrays))
    assert out.chapter_weights[0].tolist() == [0.0, 1.0] and out.chapter_weights[2].tolist() == [1.0, 0.0]
    assert out.modality_weights[0, 1] > 0 and out.modality_weights[2, 1] > 0  # the text modality stays
    changed = SequenceArrays(**{**arrays.__dict__, "text": arrays.text.copy()})
    changed.text[0, 0] = 50.0
    changed.text[2, 1] = -50.0
    torch.testing.assert_close(model(to_batch(changed)).probs, out.probs)
    changed.text[0, 1] = 50.0  # a present section is read
    assert not torch.allclose(model(to_batch(changed)).probs[0], out.probs[0])


def test_firm_without_text_ignores_its_text_values():
    arrays = random_arrays()
    model = build().eval()
    before = model(to_batch(arrays)).probs
    arrays.text[1] = 100.0  # firm 1 has text_mask False
    after = model(to_batch(arrays)).probs
    torch.testing.assert_close(after, before)


def test_prediction_does_not_depend_on_how_much_padding_precedes():
    arrays = random_arrays()
    model = build().eval()
    base = model(to_batch(arrays))
    pad = 3
    longer = SequenceArrays(
        firm_id=arrays.firm_id, y=arrays.y, text=arrays.text, text_mask=arrays.text_mask,
        X=np.concatenate([np.full((len(arrays), pad, FEATURES), 7.0, np.float32), arrays.X], axis=1),
        mask=np.concatenate([np.zeros((len(arrays), pad), bool), arrays.mask], axis=1),
        delta_t=np.concatenate([np.full((len(arrays), pad), 5.0, np.float32), arrays.delta_t], axis=1),
    )
    padded = model(to_batch(longer))
    torch.testing.assert_close(padded.probs, base.probs)
    torch.testing.assert_close(padded.temporal_weights[:, pad:], base.temporal_weights)
    torch.testing.assert_close(padded.feature_attention[:, pad:], base.feature_attention)


def test_gradients_reach_every_parameter():
    batch = to_batch(random_arrays())
    model = build(dropout=0.3).train()
    out = model(batch)
    emdlot_loss(out.log_probs, batch["y"], out.pi, model.centroids, 0.035, 0.004).total.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reaches {missing}"


def test_temperature_sharpens_or_flattens_attention():
    torch.manual_seed(0)
    items = torch.randn(4, 5, 3)
    mask = torch.ones(4, 5, dtype=torch.bool)
    cold = AdditiveAttention(3, 3, temperature=0.5)
    hot = AdditiveAttention(3, 3, temperature=3.0)
    hot.load_state_dict(cold.state_dict())
    entropy = lambda w: -(w * w.log()).sum(-1)
    assert torch.all(entropy(hot(items, mask)[1]) > entropy(cold(items, mask)[1]))


def test_masked_softmax_all_masked_row_is_zero_not_nan():
    w = masked_softmax(torch.randn(2, 3), torch.tensor([[True, False, True], [False, False, False]]))
    assert w[0, 1] == 0 and w[0].sum().item() == pytest.approx(1.0)
    assert torch.equal(w[1], torch.zeros(3))


def test_abl1_no_text_uses_only_the_numeric_modality():
    arrays = random_arrays()
    model = build(use_text=False).eval()
    out = model(to_batch(arrays))
    assert torch.all(out.modality_weights[:, 0] == 1) and torch.all(out.modality_weights[:, 1] == 0)
    assert torch.all(out.chapter_weights == 0)
    assert not any("chapter" in name or "modality" in name for name, _ in model.named_parameters())
    arrays.text += 5.0
    torch.testing.assert_close(model(to_batch(arrays)).probs, out.probs)


def test_abl2_no_clustering_has_one_head_and_no_cluster_terms():
    batch = to_batch(random_arrays())
    model = build(use_clustering=False)
    out = model(batch)
    assert model.centroids is None and out.identifier_logits is None
    assert torch.equal(out.pi, torch.ones(len(batch["y"]), 1))
    terms = emdlot_loss(out.log_probs, batch["y"], out.pi, model.centroids, 0.035, 0.004)
    assert terms.distribution.item() == 0 and terms.separation.item() == 0


def test_abl3_no_attention_weighs_uniformly_and_has_no_scoring_parameters():
    batch = to_batch(random_arrays())
    out = build(use_attention=False).eval()(batch)
    mask, text_mask = batch["mask"], batch["text_mask"].any(dim=1)
    torch.testing.assert_close(out.feature_attention[mask], torch.full_like(out.feature_attention[mask], 1 / FEATURES))
    lengths = mask.sum(-1, keepdim=True).float()
    torch.testing.assert_close(out.temporal_weights, mask.float() / lengths)
    torch.testing.assert_close(out.chapter_weights[text_mask], torch.full_like(out.chapter_weights[text_mask], 0.5))
    used = out.modality_weights[text_mask][:, :2]  # numeric and text; no summary modality in this model
    torch.testing.assert_close(used, torch.full_like(used, 0.5))
    assert torch.all(out.modality_weights[~text_mask, 0] == 1)
    names = [name for name, _ in build(use_attention=False).named_parameters()]
    assert not any("score_vector" in name or "pool.project" in name for name in names)


def test_interpret_comes_from_the_same_forward_pass_and_keeps_the_mode():
    batch = to_batch(random_arrays())
    model = build(dropout=0.5).train()
    explanation = model.interpret(batch)
    assert model.training  # restored
    model.eval()
    out = model(batch)
    np.testing.assert_allclose(explanation.probabilities, out.probs.detach().numpy())
    np.testing.assert_allclose(explanation.feature_attention, out.feature_attention.detach().numpy())
    np.testing.assert_allclose(explanation.temporal_weights, out.temporal_weights.detach().numpy())
    np.testing.assert_allclose(explanation.chapter_weights, out.chapter_weights.detach().numpy())
    np.testing.assert_allclose(explanation.modality_weights, out.modality_weights.detach().numpy())
    np.testing.assert_allclose(explanation.cluster_membership, out.pi.detach().numpy())
    assert explanation.feature_attention.shape == (7, STEPS, FEATURES)
    np.testing.assert_array_equal(explanation.cluster, explanation.cluster_membership.argmax(1))
    np.testing.assert_array_equal(explanation.predicted_class, explanation.probabilities.argmax(1))


def test_config_defaults_are_the_table5_optimum_and_yaml_round_trips(tmp_path):
    config = EMDLOTConfig()
    assert (config.model.hidden_size, config.model.dropout, config.model.num_clusters) == (512, 0.3, 8)
    assert (config.model.modal_temperature, config.model.numeric_feature_temperature, config.model.text_feature_temperature) == (2.6, 0.9, 0.55)
    assert config.train.learning_rate == 0.0006175651418191845 and config.train.weight_decay == 1.0162398945608497e-06
    assert (config.train.cluster_loss_weight, config.train.dist_loss_weight, config.train.patience, config.train.batch_size) == (0.004, 0.035, 13, 8)

    path = tmp_path / "emdlot.yaml"
    path.write_text(yaml.safe_dump({"model": {"hidden_size": 256, "use_text": False}, "train": {"patience": 5, "score_weights": {"recall": 1.0}}}))
    loaded = load_emdlot_config(path)
    assert loaded.model.hidden_size == 256 and not loaded.model.use_text and loaded.train.patience == 5
    assert loaded.train.score_weights.recall == 1.0 and loaded.model.dropout == 0.3
    path.write_text(yaml.safe_dump({"model": {"hiden_size": 256}}))
    with pytest.raises(ValueError, match=r"(?s)emdlot\.yaml.*hiden_size"):
        load_emdlot_config(path)


def test_flat_hyperparameters_route_to_their_section():
    config = EMDLOTConfig().with_params({"hidden_size": 768, "batch_size": 32, "dist_loss_weight": 0.05})
    assert config.model.hidden_size == 768 and config.train.batch_size == 32 and config.train.dist_loss_weight == 0.05
    with pytest.raises(ValueError, match="unknown EMDLOT hyperparameter 'hidden'"):
        EMDLOTConfig().with_params({"hidden": 3})
    with pytest.raises(ValueError):
        EMDLOTConfig().with_params({"dropout": 1.5})
    assert not EMDLOTConfig().ablation("ABL3").model.use_attention


def test_bad_arrays_are_reported_with_firm_and_position():
    arrays = random_arrays()
    arrays.X[2, -1, 3] = np.nan
    with pytest.raises(ValueError, match=r"'firm2' \(row 2\).*step 5, feature column 3"):
        to_batch(arrays)
    arrays = random_arrays()
    arrays.delta_t[3, -1] = -3.0
    with pytest.raises(ValueError, match=r"delta_t: firm 'firm3'"):
        to_batch(arrays)
    arrays = random_arrays()
    arrays.mask[5] = False
    with pytest.raises(ValueError, match=r"'firm5' \(row 5\) has no valid quarter"):
        to_batch(arrays)


def test_values_at_padded_positions_are_never_seen():
    arrays = random_arrays()
    padded = ~arrays.mask
    assert padded.any()
    arrays.X[padded] = np.nan
    arrays.delta_t[padded] = -1.0
    arrays.text[~arrays.text_mask] = np.nan
    batch = to_batch(arrays)
    assert torch.isfinite(build().eval()(batch).probs).all()


@pytest.mark.parametrize("item_vectors", [None, STEPS])
def test_attention_scored_on_observed_steps_only_equals_its_equations_on_every_step(item_vectors):
    """The levels score present items only (for speed); weights, outputs and gradients are still the
    docstrings' formulas evaluated over every step, with 0 weight where the mask is False (one scoring vector,
    or one per item position as the modality level has)."""
    from emdlot.model.attention import FeatureAttention

    torch.manual_seed(3)
    x, mask = torch.randn(5, STEPS, FEATURES), torch.rand(5, STEPS) < 0.6
    mask[0], mask[1] = True, False  # a firm seen at every step, and one at none
    features, temporal = FeatureAttention(FEATURES, 4, 0.9), AdditiveAttention(FEATURES, 3, 1.3, num_item_vectors=item_vectors)
    step_input, alpha = features(x, mask)
    pooled, weights = temporal(x, mask)
    (step_input.square().sum() + alpha.square().sum() + pooled.square().sum()).backward()
    fast = [p.grad.clone() for p in (*features.parameters(), *temporal.parameters())]
    for p in (*features.parameters(), *temporal.parameters()):
        p.grad = None

    embedded = x.unsqueeze(-1) * features.embed_weight + features.embed_bias  # (B, T, F, d) at every step
    ref_alpha = torch.softmax(torch.tanh(embedded) @ features.score_vector / 0.9, dim=-1) * mask.unsqueeze(-1)
    ref_input = (ref_alpha.unsqueeze(-1) * embedded).sum(dim=2)
    scores = (torch.tanh(temporal.project(x)) * temporal.score_vector).sum(-1) / 1.3
    ref_weights = torch.where(mask, torch.softmax(scores.masked_fill(~mask, -torch.inf), dim=-1), 0.0).nan_to_num()
    ref_pooled = (ref_weights.unsqueeze(-1) * x).sum(dim=1)
    torch.testing.assert_close(alpha, ref_alpha)
    torch.testing.assert_close(step_input, ref_input)
    torch.testing.assert_close(weights, ref_weights)
    torch.testing.assert_close(pooled, ref_pooled)
    (ref_input.square().sum() + ref_alpha.square().sum() + ref_pooled.square().sum()).backward()
    for got, want in zip(fast, (p.grad for p in (*features.parameters(), *temporal.parameters()))):
        torch.testing.assert_close(got, want)


def test_a_seed_ensembles_interpretation_averages_probabilities_and_maps_and_keeps_the_leads_clusters():
    from emdlot.model import Interpretation

    batch = to_batch(random_arrays(12, seed=4))
    members = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        members.append(EMDLOT(ModelConfig(**SMALL), num_features=FEATURES, num_sections=SECTIONS, text_dim=TEXT_DIM).eval().interpret(batch))
    mean = Interpretation.average(members)
    np.testing.assert_allclose(mean.probabilities, np.mean([m.probabilities for m in members], axis=0))
    assert np.array_equal(mean.predicted_class, mean.probabilities.argmax(axis=1))
    np.testing.assert_allclose(mean.temporal_weights.sum(axis=1), 1.0, atol=1e-5)  # still a distribution per firm
    np.testing.assert_allclose(mean.feature_attention, np.mean([m.feature_attention for m in members], axis=0))
    assert mean.cluster is members[0].cluster and mean.cluster_membership is members[0].cluster_membership
    assert not np.allclose(members[0].probabilities, members[1].probabilities)  # the seeds differ
    assert Interpretation.average(members[:1]) is members[0]


def test_cross_layers_multiply_the_inputs_into_every_layer_and_zero_layers_change_nothing():
    from emdlot.model.cross import CrossNetwork

    torch.manual_seed(0)
    x0 = torch.randn(5, 4, dtype=torch.float64)
    cross = CrossNetwork(4, 2).double()
    (w0, b0), (w1, b1) = [(layer.weight, layer.bias) for layer in cross.layers]
    x1 = x0 * (x0 @ w0.T + b0) + x0
    torch.testing.assert_close(cross(x0), x0 * (x1 @ w1.T + b1) + x1)
    one = CrossNetwork(4, 1).double()
    with torch.no_grad():
        one.layers[0].bias.zero_()
    # bias-free, one layer: x0 + x0 (W x0), so doubling the input doubles the linear part and quadruples the product
    product = one(x0) - x0
    torch.testing.assert_close(one(2 * x0) - 2 * x0, 4 * product)
    assert torch.equal(CrossNetwork(4, 0)(x0), x0)
    config = ModelConfig(**SMALL, use_summary=True, use_text=False)
    torch.manual_seed(1)
    plain = EMDLOT(config, num_features=FEATURES, num_sections=SECTIONS, text_dim=TEXT_DIM)
    torch.manual_seed(1)
    crossed = EMDLOT(config.model_copy(update={"summary_cross_layers": 2}), num_features=FEATURES, num_sections=SECTIONS, text_dim=TEXT_DIM)
    assert plain.summary_cross is None and set(plain.state_dict()) < set(crossed.state_dict())
    assert {k for k in set(crossed.state_dict()) - set(plain.state_dict())} == {f"summary_cross.layers.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")}
    batch = to_batch(random_arrays(6, seed=3))
    crossed.eval()(batch).log_probs[:, 1].sum().backward()
    assert crossed.summary_cross.layers[0].weight.grad.abs().sum() > 1e-6  # it is trained


def test_quantile_scaler_is_scikit_learns_quantile_transformer_and_identity_until_fitted():
    from sklearn.preprocessing import QuantileTransformer

    from emdlot.model.scaling import QuantileScaler

    rng = np.random.default_rng(0)
    # heavy tails, ties (rounded values, a constant column, a block of ones) and unseen values beyond both ends
    train = np.concatenate([rng.standard_t(2, (400, 2)), np.round(rng.normal(size=(400, 2)), 1), np.zeros((400, 1))], axis=1)
    train[:60, 4] = 1.0
    new = np.concatenate([rng.standard_t(2, (80, 2)) * 4, np.round(rng.normal(size=(80, 2)), 1), rng.normal(size=(80, 1))], axis=1)
    scaler = QuantileScaler(5, 200)
    x = torch.tensor(new, dtype=torch.float32)
    assert torch.equal(scaler(x), x)
    scaler.fit(train)
    reference = QuantileTransformer(n_quantiles=200, output_distribution="normal", subsample=None).fit(train)
    np.testing.assert_allclose(scaler(torch.tensor(new)).numpy(), reference.transform(new), atol=1e-6)
    np.testing.assert_allclose(scaler(torch.tensor(train)).numpy(), reference.transform(train), atol=1e-6)
    # fewer rows than reference points still gives a monotone map onto N(0, 1) scores
    few = QuantileScaler(5, 200).fit(train[:50])
    out = few(torch.tensor(np.sort(new, axis=0))).numpy()
    assert np.all(np.diff(out, axis=0) >= 0) and np.all(np.abs(out) <= 5.2)


def test_quantile_scaled_summary_is_fitted_on_the_given_firms_and_travels_with_the_weights():
    config = ModelConfig(**SMALL, use_summary=True, summary_scaling="quantile", use_text=False)
    train, other = to_batch(random_arrays(40, seed=1)), to_batch(random_arrays(40, seed=2))
    torch.manual_seed(0)
    model = EMDLOT(config, num_features=FEATURES, num_sections=SECTIONS, text_dim=TEXT_DIM)
    model.fit_input_scaling(train)
    raw = train["summary"]
    scaled = model.summary_scaler(raw)
    # ranks kept column by column, mapped onto normal scores within the clip
    order = raw.argsort(dim=0)
    assert torch.all(torch.diff(scaled.gather(0, order), dim=0) >= 0) and scaled.abs().max() <= 5.2
    assert scaled.median(dim=0).values.abs().max() < 1.0 and not torch.allclose(scaled, raw)
    torch.manual_seed(0)
    refitted = EMDLOT(config, num_features=FEATURES, num_sections=SECTIONS, text_dim=TEXT_DIM)
    refitted.fit_input_scaling(other)
    assert not torch.equal(refitted.summary_scaler.quantiles, model.summary_scaler.quantiles)  # the firms decide
    loaded = EMDLOT.from_weights(config, model.state_dict(), num_features=FEATURES, num_sections=SECTIONS, text_dim=TEXT_DIM)
    torch.testing.assert_close(loaded(other).probs, model.eval()(other).probs, rtol=0, atol=0)
    assert not torch.allclose(refitted.eval()(other).probs, model(other).probs)


def test_sparsemax_is_the_projection_onto_the_simplex():
    from emdlot.model.trees import sparsemax

    torch.manual_seed(0)
    z = torch.randn(200, 7, dtype=torch.float64) * 2
    p = sparsemax(z)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(200, dtype=torch.float64))
    # p = max(z - tau, 0) with one tau per row: every kept entry is z shifted by the same amount
    tau = (z - p)[p > 0]
    rows = torch.nonzero(p > 0)[:, 0]
    for r in range(200):
        assert torch.allclose(tau[rows == r], tau[rows == r][0])
    # the projection is no farther from z than random points of the simplex
    others = torch.distributions.Dirichlet(torch.ones(7, dtype=torch.float64)).sample((50,))
    assert ((p - z).norm(dim=-1)[:, None] <= (others[None] - z[:, None]).norm(dim=-1) + 1e-12).all()
    torch.testing.assert_close(sparsemax(torch.tensor([[3.0, 0.0, -1.0]])), torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(sparsemax(torch.tensor([[0.5, 0.0]])), torch.tensor([[0.75, 0.25]]))


def test_an_oblivious_forest_routes_each_input_down_soft_paths_that_sum_to_one():
    from emdlot.model.trees import ObliviousForest

    torch.manual_seed(0)
    x = torch.randn(64, 6)
    forest = ObliviousForest(6, 3, num_trees=4, depth=2)
    forest.init_from(x)
    chosen = forest.chosen(x)  # (N, T, D): every threshold starts at some firm's chosen value
    assert all(bool((chosen[:, t, d] == forest.thresholds[t, d]).any()) for t in range(4) for d in range(2))
    with torch.no_grad():  # one-hot choices and near-hard splits: the forest becomes a table lookup
        forest.choice_logits.fill_(-10.0)
        forest.choice_logits[:, 0, 1] = 10.0  # level 0 reads column 1
        forest.choice_logits[:, 1, 4] = 10.0  # level 1 reads column 4
        forest.thresholds.zero_()
        forest.log_temperatures.fill_(-12.0)
    leaf = (x[:, 1] > 0).long() + 2 * (x[:, 4] > 0).long()  # bit d of the leaf index: right at level d
    expected = forest.responses[:, leaf].mean(0)  # (N, 3): the mean over trees of each input's leaf response
    torch.testing.assert_close(forest(x), expected, atol=1e-4, rtol=0)
    # soft splits: every input's leaf weights sum to one, so equal responses give that response back
    soft = ObliviousForest(6, 3, num_trees=4, depth=3)
    soft.init_from(x)
    with torch.no_grad():
        soft.responses.copy_(torch.arange(3.0).expand(4, 8, 3))
    torch.testing.assert_close(soft(x), torch.arange(3.0).expand(64, 3), atol=1e-5, rtol=0)


def test_a_forest_summary_encoder_starts_from_the_training_firms_trains_and_round_trips():
    config = ModelConfig(**SMALL, use_summary=True, use_text=False, summary_scaling="quantile", summary_encoder="forest",
                         summary_trees=8, summary_tree_depth=2)
    torch.manual_seed(0)
    model = EMDLOT(config, num_features=FEATURES, num_sections=SECTIONS, text_dim=TEXT_DIM)
    batch = to_batch(random_arrays(20, seed=1))
    before = model.summary_encoder.thresholds.detach().clone()
    model.fit_input_scaling(batch)
    assert not torch.equal(before, model.summary_encoder.thresholds)  # started inside the training firms' values
    model.eval()(batch).log_probs[:, 1].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.summary_encoder.parameters())
    loaded = EMDLOT.from_weights(config, model.state_dict(), num_features=FEATURES, num_sections=SECTIONS, text_dim=TEXT_DIM)
    torch.testing.assert_close(loaded(batch).probs, model(batch).probs)
