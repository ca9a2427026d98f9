"""Each loss term on small cases worked out by hand."""
import math

import pytest
import torch

from emdlot.model.clustering import ClusterHeads, mixture_log_probs
from emdlot.model.losses import classification_loss, distribution_loss, emdlot_loss, separation_loss


def test_distribution_loss_is_zero_for_uniform_cluster_use():
    assert distribution_loss(torch.full((5, 4), 0.25)).item() == pytest.approx(0.0, abs=1e-7)
    # Each firm in one cluster, but the batch uses all four equally: still uniform use.
    assert distribution_loss(torch.eye(4)).item() == pytest.approx(0.0, abs=1e-7)


def test_distribution_loss_is_one_when_the_batch_uses_one_cluster():
    pi = torch.zeros(6, 3)
    pi[:, 1] = 1.0
    assert distribution_loss(pi).item() == pytest.approx(1.0, abs=1e-6)


def test_distribution_loss_hand_computed_partial_use():
    pi = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])  # mean use (0.5, 0.25, 0.25)
    entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert distribution_loss(pi).item() == pytest.approx(1.0 - entropy / math.log(3), abs=1e-6)


def test_distribution_loss_is_zero_for_a_single_cluster():
    assert distribution_loss(torch.ones(3, 1)).item() == 0.0


def test_separation_loss_hand_computed_and_falls_as_centroids_move_apart():
    two = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert separation_loss(two).item() == pytest.approx(1 / 5)
    three = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])  # distances 5, 10, 5
    assert separation_loss(three).item() == pytest.approx(3 / 20)
    assert separation_loss(2 * three).item() == pytest.approx(separation_loss(three).item() / 2)
    assert separation_loss(torch.zeros(1, 2)).item() == 0.0


def test_separation_gradient_pushes_centroids_apart():
    centroids = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    separation_loss(centroids).backward()
    moved = centroids.detach() - 0.1 * centroids.grad
    assert torch.pdist(moved).mean() > torch.pdist(centroids.detach()).mean()
    assert separation_loss(moved) < separation_loss(centroids.detach())


def test_mixture_cross_entropy_hand_computed():
    pi = torch.tensor([[0.25, 0.75]])
    heads = torch.tensor([[[0.2, 0.5, 0.3], [0.6, 0.2, 0.2]]])
    log_probs = mixture_log_probs(pi.log(), heads.log())
    torch.testing.assert_close(log_probs.exp(), torch.tensor([[0.25 * 0.2 + 0.75 * 0.6, 0.275, 0.25 * 0.3 + 0.75 * 0.2]]))
    assert classification_loss(log_probs, torch.tensor([1])).item() == pytest.approx(-math.log(0.275), rel=1e-6)


def test_total_is_the_weighted_sum_and_the_one_head_model_has_no_cluster_terms():
    log_probs = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    y = torch.tensor([0, 2])
    pi = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
    centroids = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    terms = emdlot_loss(log_probs, y, pi, centroids, dist_loss_weight=0.035, cluster_loss_weight=0.004)
    ce = -(math.log(0.7) + math.log(0.8)) / 2
    usage = [0.85, 0.15]
    dist = 1 + sum(u * math.log(u) for u in usage) / math.log(2)
    assert terms.cross_entropy.item() == pytest.approx(ce, rel=1e-6)
    assert terms.distribution.item() == pytest.approx(dist, rel=1e-5)
    assert terms.separation.item() == pytest.approx(0.5)
    assert terms.total.item() == pytest.approx(ce + 0.035 * dist + 0.004 * 0.5, rel=1e-6)

    single = emdlot_loss(log_probs, y, torch.ones(2, 1), None, dist_loss_weight=0.035, cluster_loss_weight=0.004)
    assert single.distribution.item() == 0.0 and single.separation.item() == 0.0
    assert single.total.item() == pytest.approx(ce, rel=1e-6)


def test_each_cluster_head_reads_its_own_centroid():
    torch.manual_seed(0)
    heads = ClusterHeads(num_clusters=3, latent_size=4, hidden_size=5, num_classes=3, dropout=0.0)
    z = torch.randn(2, 4)
    centroids = torch.randn(3, 4)
    out = heads(z, centroids)
    for k in range(3):  # head k is an ordinary two-layer MLP on [z ; c_k]
        inputs = torch.cat([z, centroids[k].expand(2, 4)], dim=1)
        weight_in = torch.cat([heads.weight_z[k], heads.weight_centroid[k]])
        hidden = torch.relu(inputs @ weight_in + heads.bias_in[k])
        expected = torch.log_softmax(hidden @ heads.weight_out[k] + heads.bias_out[k], dim=-1)
        torch.testing.assert_close(out[:, k], expected)
    moved = centroids.clone()
    moved[1] += 1.0
    changed = heads(z, moved)
    torch.testing.assert_close(changed[:, [0, 2]], out[:, [0, 2]])
    assert not torch.allclose(changed[:, 1], out[:, 1])


def test_focal_loss_is_cross_entropy_at_gamma_zero_and_down_weights_rows_already_right():
    log_probs = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]))
    y = torch.tensor([0, 2, 2])
    assert classification_loss(log_probs, y, 0.0).item() == pytest.approx(classification_loss(log_probs, y).item())
    by_hand = -sum((1 - p) ** 2 * math.log(p) for p in (0.9, 0.3, 0.8)) / 3
    assert classification_loss(log_probs, y, 2.0).item() == pytest.approx(by_hand, rel=1e-6)
    easy = classification_loss(log_probs[:1], y[:1], 2.0) / classification_loss(log_probs[:1], y[:1])
    hard = classification_loss(log_probs[1:2], y[1:2], 2.0) / classification_loss(log_probs[1:2], y[1:2])
    assert easy.item() == pytest.approx(0.01, rel=1e-5) and hard.item() == pytest.approx(0.49, rel=1e-5)


def test_class_weights_make_a_rare_class_count_as_much_as_a_common_one():
    from emdlot.model.losses import balancing_weights

    y = torch.tensor([0] * 8 + [1] * 2 + [2] * 0)
    w = balancing_weights(y, 3)
    assert w.tolist() == pytest.approx([10 / 24, 10 / 6, 0.0])
    # weighted CE over imbalanced rows equals plain CE over the same rows duplicated to balance
    log_probs = torch.log_softmax(torch.randn(10, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    balanced = torch.cat([torch.arange(8), torch.tensor([8, 9] * 4)])
    for gamma in (0.0, 2.0):
        weighted = classification_loss(log_probs, y, gamma, w)
        duplicated = classification_loss(log_probs[balanced], y[balanced], gamma)
        assert weighted.item() == pytest.approx(duplicated.item(), rel=1e-6)


def test_label_smoothing_bounds_how_sure_the_model_is_rewarded_for_being():
    log_probs = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3]]))
    y = torch.tensor([0, 2])
    eps = 0.3
    by_hand = sum((1 - eps) * -math.log(row[label]) - eps / 3 * sum(math.log(p) for p in row)
                  for row, label in (((0.9, 0.05, 0.05), 0), ((0.2, 0.5, 0.3), 2))) / 2
    assert classification_loss(log_probs, y, label_smoothing=eps).item() == pytest.approx(by_hand, rel=1e-6)
    # without smoothing a surer right answer always costs less; with it, past 1 - eps + eps / K, it costs more
    def cost(p_right: float, smoothing: float) -> float:
        row = torch.log(torch.tensor([[p_right, (1 - p_right) / 2, (1 - p_right) / 2]]))
        return classification_loss(row, torch.tensor([0]), label_smoothing=smoothing).item()
    assert cost(0.999, 0.0) < cost(0.8, 0.0)
    assert cost(0.999, eps) > cost(0.8, eps)
    with pytest.raises(ValueError, match="alternatives"):
        classification_loss(log_probs, y, 2.0, label_smoothing=eps)
