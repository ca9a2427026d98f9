"""The EMDLOT model (paper section 3, DESIGN.md section 3).

    X (B,T,F) --feature attention--> u (B,T,d) --T-LSTM with delta_t--> h (B,T,H)
              --temporal attention over valid steps--> z_num (B,H)
    text (B,S,D) --chapter attention--> z_text (B,H)
    (z_num, z_text) --modality attention--> z (B,H) --soft clustering--> y_hat (B,3)

z_num pools all valid T-LSTM states with attention over time (not just the last state),
so the temporal weights say which quarters the prediction leaned on.
The forward pass returns the probabilities together with every attention map and the
cluster memberships, so explanations come from the same computation as the prediction.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from emdlot.model.attention import AdditiveAttention, ChapterAttention, FeatureAttention
from emdlot.model.batch import Batch
from emdlot.model.clustering import SingleHead, SoftClustering, mlp
from emdlot.model.config import ModelConfig
from emdlot.model.cross import CrossNetwork
from emdlot.model.scaling import QuantileScaler
from emdlot.model.tlstm import TLSTM
from emdlot.model.trees import ObliviousForest
from emdlot.schema import CLASSES, SECTIONS, TEXT_DIMS

MODALITIES: tuple[str, ...] = ("numeric", "text", "summary")
SUMMARY_STATS = 7  # per feature in batch["summary"]: mean, sd, min, max, last, last - mean, slope
SUMMARY_QUANTILES = 1000  # reference points per summary column with summary_scaling "quantile"


@dataclass
class Encoding:
    z: torch.Tensor  # (B, H) fused representation, before dropout
    feature_attention: torch.Tensor  # (B, T, F) alpha; 0 on padded steps
    temporal_weights: torch.Tensor  # (B, T) over valid steps; 0 on padded steps
    chapter_weights: torch.Tensor  # (B, S) over sections; 0 where the text modality is unused
    modality_weights: torch.Tensor  # (B, 3) over MODALITIES; 0 for a modality the model does not use


@dataclass
class EMDLOTOutput(Encoding):
    log_probs: torch.Tensor  # (B, C)
    probs: torch.Tensor  # (B, C)
    pi: torch.Tensor  # (B, K) cluster memberships; (B, 1) of ones without clustering
    identifier_logits: torch.Tensor | None  # (B, K) before softmax; None without clustering


@dataclass
class Interpretation:
    """One forward pass, per firm, as numpy arrays (the model's own explanation)."""

    probabilities: np.ndarray  # (N, C)
    predicted_class: np.ndarray  # (N,) index into CLASSES
    feature_attention: np.ndarray  # (N, T, F) feature x quarter map
    temporal_weights: np.ndarray  # (N, T)
    chapter_weights: np.ndarray  # (N, S), sections in SECTIONS order
    modality_weights: np.ndarray  # (N, 3), MODALITIES order
    cluster_membership: np.ndarray  # (N, K) pi
    cluster: np.ndarray  # (N,) argmax of pi

    @classmethod
    def average(cls, members: list["Interpretation"]) -> "Interpretation":
        """A seed ensemble's explanation of the same firms: the members' probabilities and attention maps
        averaged (each still sums to one per firm), the class those probabilities pick; the clusters are
        the first member's, since every seed learns its own clusters and their indices do not line up."""
        if len(members) == 1:
            return members[0]
        kept = ("predicted_class", "cluster_membership", "cluster")  # from the mean, or the lead's
        mean = {f.name: np.mean([getattr(m, f.name) for m in members], axis=0) for f in fields(cls) if f.name not in kept}
        return cls(**mean, predicted_class=mean["probabilities"].argmax(axis=1),
                   cluster_membership=members[0].cluster_membership, cluster=members[0].cluster)


class EMDLOT(nn.Module):
    def __init__(self, config: ModelConfig, num_features: int, num_sections: int = len(SECTIONS),
                 text_dim: int = TEXT_DIMS, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.config = config
        self.num_features = num_features
        self.num_sections = num_sections
        hidden = config.hidden_size
        uniform = not config.use_attention
        self.feature_attention = FeatureAttention(num_features, config.feature_embed_size, config.numeric_feature_temperature, uniform)
        self.tlstm = TLSTM(config.feature_embed_size, hidden, decay=config.decay)
        self.temporal_attention = AdditiveAttention(hidden, hidden, config.temporal_temperature, uniform=uniform)
        if config.use_text:
            self.chapter_attention = ChapterAttention(num_sections, text_dim, hidden, config.text_feature_temperature, uniform)
        if config.use_summary and config.summary_encoder == "forest":
            self.summary_encoder = ObliviousForest(SUMMARY_STATS * num_features, hidden, config.summary_trees, config.summary_tree_depth)
        elif config.use_summary:
            self.summary_encoder = mlp(SUMMARY_STATS * num_features, hidden, hidden, config.dropout)
        self.summary_cross = (CrossNetwork(SUMMARY_STATS * num_features, config.summary_cross_layers)
                              if config.use_summary and config.summary_cross_layers else None)
        self.summary_scaler = (QuantileScaler(SUMMARY_STATS * num_features, SUMMARY_QUANTILES)
                               if config.use_summary and config.summary_scaling == "quantile" else None)
        self.modalities = [m for m, used in zip(MODALITIES, (True, config.use_text, config.use_summary)) if used]
        if len(self.modalities) > 1:
            self.modality_attention = AdditiveAttention(hidden, hidden, config.modal_temperature, num_item_vectors=len(self.modalities), uniform=uniform)
        self.dropout = nn.Dropout(config.dropout)
        if config.use_clustering:
            self.head: SoftClustering | SingleHead = SoftClustering(config.num_clusters, hidden, config.head_width, num_classes, config.dropout)
        else:
            self.head = SingleHead(hidden, config.head_width, num_classes, config.dropout)
        if config.prior_shift:
            self.register_buffer("prior_shift", torch.zeros(num_classes))

    @classmethod
    def from_weights(cls, config: ModelConfig, weights: dict, num_features: int, num_sections: int = len(SECTIONS),
                     text_dim: int = TEXT_DIMS) -> "EMDLOT":
        """A fitted model for inference: built for these shapes, holding `weights` (tensors or arrays), in eval mode."""
        model = cls(config, num_features=num_features, num_sections=num_sections, text_dim=text_dim)
        model.load_state_dict({k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
        return model.eval()

    def fit_input_scaling(self, train: Batch) -> None:
        """Fit what the model reads from its training firms before training (the summary's quantiles; a
        forest's thresholds start at their values); the result lives in buffers and weights, so it is saved
        and loaded with them."""
        if self.summary_scaler is not None:
            self.summary_scaler.fit(train["summary"].cpu().numpy())
        if isinstance(getattr(self, "summary_encoder", None), ObliviousForest):
            summary = train["summary"] if self.summary_scaler is None else self.summary_scaler(train["summary"])
            self.summary_encoder.init_from(summary)

    def set_prior_shift(self, shift) -> None:
        """Put a fitted shift b (emdlot.training.calibration) into the buffer it is saved and loaded in."""
        if not self.config.prior_shift:
            raise ValueError("this model was built without prior_shift: set model.prior_shift true to give it a shift")
        self.prior_shift.copy_(torch.as_tensor(np.asarray(shift), dtype=self.prior_shift.dtype))

    @property
    def centroids(self) -> nn.Parameter | None:
        return self.head.centroids if isinstance(self.head, SoftClustering) else None

    def summary_parameters(self) -> list[nn.Parameter]:
        """The summary modality's own weights (encoder and cross layers); none without it."""
        return [p for name in ("summary_encoder", "summary_cross") if getattr(self, name, None) is not None
                for p in getattr(self, name).parameters()]

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Everything before the fused representation z (what the warm-up trains)."""
        head_ids = {id(p) for p in self.head.parameters()}
        return [p for p in self.parameters() if id(p) not in head_ids]

    def encode(self, batch: Batch) -> Encoding:
        x, mask = batch["X"], batch["mask"]
        if x.dim() != 3 or x.shape[-1] != self.num_features:
            raise ValueError(f"batch X must be (batch, steps, {self.num_features}), got {tuple(x.shape)}")
        # Leading steps that are padding for every firm of the batch change nothing (zero state, zero
        # weight): skip them, and give the maps back at full length. About a sixth of a batch of 8.
        skip = int(mask.any(dim=0).to(torch.int8).argmax()) if bool(mask.any()) else 0
        x, mask, delta_t = x[:, skip:], mask[:, skip:], batch["delta_t"][:, skip:]
        step_input, alpha = self.feature_attention(x, mask)
        hidden, _ = self.tlstm(step_input, delta_t, mask)
        z_num, temporal = self.temporal_attention(hidden, mask)
        if skip:
            alpha = nn.functional.pad(alpha, (0, 0, skip, 0))
            temporal = nn.functional.pad(temporal, (skip, 0))

        batch_size = x.shape[0]
        always = torch.ones(batch_size, dtype=torch.bool, device=z_num.device)
        items, present = [z_num], [always]
        chapters = torch.zeros(batch_size, self.num_sections, dtype=z_num.dtype, device=z_num.device)
        if self.config.use_text:
            text, text_mask = batch["text"], batch["text_mask"]
            if text.shape[1] != self.num_sections:
                raise ValueError(f"batch text has {text.shape[1]} sections, the model was built for {self.num_sections}")
            z_text, chapters = self.chapter_attention(text, text_mask)
            items.append(z_text)
            present.append(text_mask.any(dim=1))  # a firm without any section: text modality masked
        if self.config.use_summary:
            summary = batch["summary"] if self.summary_scaler is None else self.summary_scaler(batch["summary"])
            items.append(self.summary_encoder(summary if self.summary_cross is None else self.summary_cross(summary)))
            present.append(always)
        modality = torch.zeros(batch_size, len(MODALITIES), dtype=z_num.dtype, device=z_num.device)
        if len(items) == 1:
            z = z_num
            modality[:, 0] = 1.0
        else:
            z, weights = self.modality_attention(torch.stack(items, dim=1), torch.stack(present, dim=1))
            modality[:, [MODALITIES.index(m) for m in self.modalities]] = weights
        return Encoding(z=z, feature_attention=alpha, temporal_weights=temporal, chapter_weights=chapters, modality_weights=modality)

    def forward(self, batch: Batch) -> EMDLOTOutput:
        encoding = self.encode(batch)
        out = self.head(self.dropout(encoding.z))
        log_probs = out.log_probs
        if self.config.prior_shift and bool(self.prior_shift.any()):  # log p' = log p + b - logsumexp(log p + b)
            log_probs = torch.log_softmax(log_probs + self.prior_shift, dim=1)
        return EMDLOTOutput(
            **{f.name: getattr(encoding, f.name) for f in fields(Encoding)},
            log_probs=log_probs,
            probs=log_probs.exp(),
            pi=out.pi,
            identifier_logits=out.identifier_logits,
        )

    @torch.no_grad()
    def interpret(self, batch: Batch) -> Interpretation:
        """Prediction and explanation of every firm in `batch`, in eval mode (no dropout)."""
        was_training = self.training
        self.eval()
        try:
            out = self(batch)
        finally:
            self.train(was_training)
        probs = out.probs.cpu().numpy()
        pi = out.pi.cpu().numpy()
        return Interpretation(
            probabilities=probs,
            predicted_class=probs.argmax(axis=1),
            feature_attention=out.feature_attention.cpu().numpy(),
            temporal_weights=out.temporal_weights.cpu().numpy(),
            chapter_weights=out.chapter_weights.cpu().numpy(),
            modality_weights=out.modality_weights.cpu().numpy(),
            cluster_membership=pi,
            cluster=pi.argmax(axis=1),
        )
