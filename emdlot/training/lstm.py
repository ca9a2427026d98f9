"""The LSTM baseline as an sklearn-style estimator whose X is a SequenceArrays.

So the results table can treat it like every other comparison model (emdlot.training.baselines.fit_predict):
fit(arrays, y) / predict_proba(arrays) / classes_. Training is a fixed number of epochs (no early stopping:
the baselines get no validation data, like the tabular ones), on the CPU, and deterministic: the seed fixes
the initial weights and the batch order, torch's global RNG state is restored afterwards, and the thread
count is pinned to one for the duration (small matrices: more threads only contend, and a fixed count keeps
the float sums identical from run to run).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from emdlot.data.arrays import SequenceArrays
from emdlot.model.batch import check_arrays
from emdlot.model.lstm import SequenceLSTM


@contextmanager
def _single_thread() -> Iterator[None]:
    """One torch thread inside (results then do not depend on the machine's core count); the caller's after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def _seeded_single_thread(seed: int) -> Iterator[None]:
    """torch.manual_seed(seed) and one thread inside; the caller's RNG state and thread count after."""
    with torch.random.fork_rng(devices=[]), _single_thread():
        torch.manual_seed(seed)
        yield


class LSTMClassifier(ClassifierMixin, BaseEstimator):
    """torch.nn.LSTM on (X, mask, delta_t) + flat text -> class probabilities. Defaults: one layer of 32 units
    (a few hundred training firms cannot support more), Adam at 3e-3 for 30 epochs of batch 64 (converges on
    SMOTE-balanced sets of a few hundred to a few thousand firms without a validation set)."""

    def __init__(self, hidden_size: int = 32, num_layers: int = 1, epochs: int = 30, batch_size: int = 64,
                 learning_rate: float = 3e-3, weight_decay: float = 0.0, eval_batch_size: int = 1024,
                 random_state: int = 0) -> None:
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.eval_batch_size = eval_batch_size
        self.random_state = random_state

    def fit(self, X: SequenceArrays, y: np.ndarray) -> "LSTMClassifier":
        tensors = self._tensors(X, "train", fit_text_scale=True)
        self.classes_, target = np.unique(np.asarray(y), return_inverse=True)
        target = torch.as_tensor(target, dtype=torch.int64)
        n = len(target)
        with _seeded_single_thread(self.random_state):
            self.module_ = SequenceLSTM(X.X.shape[2], X.text.shape[1], X.text.shape[2], num_classes=len(self.classes_),
                                        hidden_size=self.hidden_size, num_layers=self.num_layers)
            optimizer = torch.optim.Adam(self.module_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
            loss_fn = nn.CrossEntropyLoss()
            generator = torch.Generator().manual_seed(self.random_state)
            self.module_.train()
            for _ in range(self.epochs):
                for rows in torch.randperm(n, generator=generator).split(self.batch_size):
                    optimizer.zero_grad()
                    loss = loss_fn(self.module_(*(t[rows] for t in tensors)), target[rows])
                    loss.backward()
                    optimizer.step()
            self.module_.eval()
        return self

    def predict_proba(self, X: SequenceArrays) -> np.ndarray:
        tensors = self._tensors(X, "X")
        with _single_thread(), torch.no_grad():
            chunks = [torch.softmax(self.module_(*(t[rows] for t in tensors)), dim=1)
                      for rows in torch.arange(len(X)).split(self.eval_batch_size)]
        return torch.cat(chunks).numpy().astype(np.float64)

    def predict(self, X: SequenceArrays) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def _tensors(self, arrays: SequenceArrays, name: str, fit_text_scale: bool = False) -> tuple[torch.Tensor, ...]:
        """Checked input tensors in forward's order. The text is standardised with the training firms'
        statistics (PCA components differ in scale by orders of magnitude; the sequences arrive standardised
        already), then missing sections are zeroed, so a missing section reads as 0 = the training mean."""
        if not isinstance(arrays, SequenceArrays):
            raise TypeError(f"LSTMClassifier reads SequenceArrays, got {type(arrays).__name__}")
        check_arrays(arrays, name)
        mask = np.asarray(arrays.mask, dtype=bool)
        text_mask = np.asarray(arrays.text_mask, dtype=bool)
        text = np.where(text_mask[:, :, None], arrays.text, 0.0)
        if fit_text_scale:
            present = np.maximum(text_mask.sum(axis=0), 1)[:, None]  # (S, 1)
            self.text_mean_ = text.sum(axis=0) / present
            spread = np.sqrt((np.where(text_mask[:, :, None], text - self.text_mean_, 0.0) ** 2).sum(axis=0) / present)
            self.text_scale_ = np.where(spread > 1e-8, spread, 1.0)
        text = np.where(text_mask[:, :, None], (text - self.text_mean_) / self.text_scale_, 0.0)
        return (torch.as_tensor(np.where(mask[:, :, None], arrays.X, 0.0), dtype=torch.float32),
                torch.as_tensor(mask),
                torch.as_tensor(np.where(mask, arrays.delta_t, 0.0), dtype=torch.float32),
                torch.as_tensor(text, dtype=torch.float32),
                torch.as_tensor(text_mask))
