"""CAMELOT-style initialisation of the soft clustering (paper section 3.5, DESIGN.md 3.7).

1. Warm-up: train the encoder with a plain (single) head on cross-entropy, briefly.
2. K-Means (scikit-learn) on the encoder outputs z of the training firms.
3. The model's centroids start at the K-Means centres.
4. The identifier is pre-trained to predict the K-Means labels from z.
End-to-end training (emdlot.training.loop) starts from there. Without clustering
(ablation ABL2) there is nothing to initialise.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch.nn import functional as F
from tqdm.auto import tqdm

from emdlot.model.batch import Batch, batch_size_of, eval_in_chunks, shuffled_batches, take
from emdlot.model.clustering import SingleHead, SoftClustering
from emdlot.model.losses import balancing_weights
from emdlot.training.config import TrainConfig
from emdlot.model.emdlot import EMDLOT
from emdlot.schema import CLASSES


@dataclass
class InitReport:
    warmup_losses: list[float]  # mean cross-entropy per warm-up epoch
    kmeans_inertia: float
    cluster_sizes: list[int]  # training firms per K-Means cluster
    identifier_losses: list[float]  # mean cross-entropy per identifier epoch
    identifier_accuracy: float  # share of training firms the identifier puts in their K-Means cluster

    def as_dict(self) -> dict:
        return asdict(self)


def encode_all(model: EMDLOT, batch: Batch, batch_size: int) -> torch.Tensor:
    """Fused representations z of every row, in eval mode (no dropout)."""
    return eval_in_chunks(model, batch, batch_size, lambda rows: model.encode(rows).z)


def warm_up_encoder(model: EMDLOT, train: Batch, config: TrainConfig, generator: torch.Generator) -> list[float]:
    """Train encoder + a throw-away plain head on cross-entropy for `warmup_epochs`."""
    plain_head = SingleHead(model.config.hidden_size, model.config.head_width, len(CLASSES), model.config.dropout).to(config.device)
    params = model.encoder_parameters() + list(plain_head.parameters())
    optimizer = config.optimizer(params, model.summary_parameters())
    model.train()
    losses = []
    weights = balancing_weights(train["y"], len(CLASSES)) if config.weighs_classes else None
    for _ in tqdm(range(config.warmup_epochs), desc="warm-up", unit="epoch", disable=not config.progress, leave=False):
        total, count = 0.0, 0
        for index in shuffled_batches(batch_size_of(train), config.batch_size, generator):
            rows = take(train, index)
            z = model.encode(rows).z
            loss = F.nll_loss(plain_head(model.dropout(z)).log_probs, rows["y"], weight=weights)
            optimizer.zero_grad()
            loss.backward()
            if config.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip_norm)
            optimizer.step()
            total += loss.item() * len(index)
            count += len(index)
        losses.append(total / count)
    return losses


def pretrain_identifier(clustering: SoftClustering, z: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
                        generator: torch.Generator) -> tuple[list[float], float]:
    """Fit the identifier to the K-Means labels on fixed z; returns losses and final accuracy."""
    identifier = clustering.identifier
    optimizer = config.optimizer(identifier.parameters())
    identifier.train()
    losses = []
    for _ in tqdm(range(config.identifier_epochs), desc="identifier", unit="epoch", disable=not config.progress, leave=False):
        total = 0.0
        for index in shuffled_batches(len(z), config.batch_size, generator):
            loss = F.cross_entropy(identifier(z[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        losses.append(total / len(z))
    identifier.eval()
    with torch.no_grad():
        accuracy = float((identifier(z).argmax(dim=1) == labels).float().mean())
    return losses, accuracy


def initialise_clusters(model: EMDLOT, train: Batch, config: TrainConfig, seed: int, generator: torch.Generator) -> InitReport | None:
    """Run the four initialisation steps on the training rows; None for a model without clustering."""
    if not isinstance(model.head, SoftClustering):
        return None
    num_clusters = model.config.num_clusters
    if batch_size_of(train) < num_clusters:
        raise ValueError(f"K-Means initialisation needs at least num_clusters={num_clusters} training firms, got {batch_size_of(train)}")
    warmup_losses = warm_up_encoder(model, train, config, generator)

    z = encode_all(model, train, config.eval_batch_size)
    kmeans = KMeans(n_clusters=num_clusters, n_init=config.kmeans_n_init, random_state=seed)
    labels = kmeans.fit_predict(z.cpu().numpy().astype(np.float64))
    with torch.no_grad():
        model.head.centroids.copy_(torch.as_tensor(kmeans.cluster_centers_, dtype=z.dtype))

    label_tensor = torch.as_tensor(labels, dtype=torch.int64, device=z.device)
    identifier_losses, accuracy = pretrain_identifier(model.head, z, label_tensor, config, generator)
    model.train()
    return InitReport(
        warmup_losses=warmup_losses,
        kmeans_inertia=float(kmeans.inertia_),
        cluster_sizes=np.bincount(labels, minlength=num_clusters).tolist(),
        identifier_losses=identifier_losses,
        identifier_accuracy=accuracy,
    )
