"""The LSTM comparison model of the paper's Table 6: a plain torch.nn.LSTM on the inputs EMDLOT sees.

Per step the LSTM reads the quarter's features plus log(1 + delta_t) (the months since the previous
valid step, log-scaled so a long gap does not saturate the gates). Its final hidden state is concatenated
with the flat text (masked sections already zeroed by the caller) and the per-section text flags, and one
linear layer maps that to class logits. No attention, no time decay, no clustering: the point of the
baseline is to show what those add.

Padding cannot change the output: each row's valid steps are moved to the front in their original order
and the batch is packed, so the LSTM never runs over a padded step, wherever padding sits.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


def compact_valid_steps(X: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, I), (B, T) bool -> the valid steps of each row moved to the front in order, and their count (B,)."""
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # valid steps first, order kept
    compact = torch.gather(X, 1, order[:, :, None].expand(-1, -1, X.shape[2]))
    return compact, mask.sum(dim=1)


class SequenceLSTM(nn.Module):
    """torch.nn.LSTM over (X, log1p(delta_t)) + flat text + text flags -> linear head -> logits."""

    def __init__(self, num_features: int, num_sections: int, text_dim: int, num_classes: int = 3,
                 hidden_size: int = 32, num_layers: int = 1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(num_features + 1, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size + num_sections * text_dim + num_sections, num_classes)

    def forward(self, X: torch.Tensor, mask: torch.Tensor, delta_t: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor) -> torch.Tensor:
        """X (B, T, F), mask (B, T) bool, delta_t (B, T) months, text (B, S, D), text_mask (B, S) -> logits (B, C).
        Every row needs at least one valid step (an empty sequence has no final state)."""
        steps = torch.cat([X, torch.log1p(delta_t.clamp_min(0.0))[:, :, None]], dim=2)
        compact, lengths = compact_valid_steps(steps, mask)
        packed = pack_padded_sequence(compact, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)  # hidden (layers, B, H), rows back in input order
        flags = text_mask.to(text.dtype)
        text_flat = (text * flags[:, :, None]).flatten(1)  # a missing section must read as 0, whatever it holds
        return self.head(torch.cat([hidden[-1], text_flat, flags], dim=1))
