"""Time-aware LSTM over padded batches of irregular sequences, with two ways to decay memory.

Per step, the previous memory C_{t-1} is adjusted for the time elapsed since the previous
observation (delta_t, in months), then the standard LSTM gates run on (x_t, h_{t-1}) with the
adjusted memory C* in place of C_{t-1}:

    decay="learned" (paper section 3.1, the default): a learnable vector gate on delta_t
        gamma = sigmoid(w_g * delta_t + b_g)           (w_g, b_g in R^H)
        C*    = gamma * C_{t-1}
    decay="baytas" (Baytas et al. 2017): only a short-term part decays, by a fixed function
        C_S   = tanh(W_d C_{t-1} + b_d)
        g     = 1 / log(e + delta_t)                   (1 when delta_t = 0)
        C*    = (C_{t-1} - C_S) + g * C_S

    i, f, g~, o = gates(x_t, h_{t-1});  C_t = f * C* + i * g~;  h_t = o * tanh(C_t)

Padded steps (mask False) leave (h, C) unchanged, wherever they sit in the sequence.

Speed: the recurrence is one custom autograd function with the backward pass written out by
hand. The input projections of all steps are one matrix product; each step then costs one
(learned) or two (baytas) small matrix products forward and as many backward, element-wise work
uses fused derivative kernels, and the weight gradients are one product over all steps. Rows are
ordered by the step at which their sequence starts, so step t only computes the rows that have
started (a firm with 18 of 39 quarters costs 18 steps, not 39): with pre-padded sequences about
half the work of a full batch is skipped, exactly, since a row that has not started keeps its
zero state; the weight gradients' products read the started rows alone, for the same reason.
The step loops run in C++ where a compiler could build them (emdlot.model.native): the same ATen calls,
without the interpreter's cost per step, and on one thread bit for bit the same numbers. On several threads the
C++ loops split each step's recurrent products into one column block per thread (a second core then runs the
few-row product about 2x faster, against 1.2-1.4x with the BLAS library's own threading); the numbers differ
by float rounding, as they do between thread counts anyway. benchmarks/tlstm_speed.py measures
the layer against torch.nn.LSTM, benchmarks/epoch_speed.py a training epoch.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Literal

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from emdlot.model import native

Decay = Literal["learned", "baytas"]


def elapsed_time_decay(delta_t: torch.Tensor) -> torch.Tensor:
    """g(dt) = 1 / log(e + dt): 1 for back-to-back steps, shrinking slowly as gaps grow (Baytas et al.)."""
    return 1.0 / torch.log(math.e + delta_t)


# Fused derivative kernels (what autograd itself calls): grad * y * (1 - y) and grad * (1 - y^2),
# given the activation's output y. One pass over memory instead of three.
_sigmoid_grad = torch.ops.aten.sigmoid_backward
_tanh_grad = torch.ops.aten.tanh_backward


def _started_rows(keep: torch.Tensor) -> list[int]:
    """keep (T, B, 1) with rows ordered by start step -> how many rows have started at each step."""
    started = keep[:, :, 0].to(torch.int32).cummax(dim=0).values.sum(dim=1)
    return started.tolist()


def _started_mask(active: list[int], batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, B) bool: row r has started by step t (r < active[t])."""
    return torch.arange(batch, device=device)[None, :] < torch.tensor(active, device=device)[:, None]


def _observed_steps(keep: torch.Tensor, active: list[int]) -> list[bool]:
    """Per step, whether every started row is observed there (no row carries its state through a gap)."""
    return (keep[:, :, 0] | ~_started_mask(active, keep.shape[1], keep.device)).all(dim=1).tolist()


def _started_index(active: list[int], batch: int, device: torch.device) -> torch.Tensor:
    """Flat positions t * batch + r of the rows that have started at each step (r < active[t])."""
    return torch.arange(len(active) * batch).view(len(active), batch)[_started_mask(active, batch)].to(device)


def _forward_steps(gates, retain, keep, weight_hh, weight_short, short, active, full, adjusted, tanh_memory, hidden, memory) -> None:
    """The forward recurrence, in place: `gates` (T, B, 4H) arrives holding the input projections and leaves holding
    the gate activations; `short` (baytas) arrives holding b_d and leaves holding C_S; C*, tanh(C_t), h_t and C_t
    are written into `adjusted`, `tanh_memory`, `hidden` and `memory`. `full[t]`: every started row is observed at
    step t (only emdlot.model.native's loop reads it; None here). The reference for the C++ loop of the same name."""
    steps, batch, size = hidden.shape
    baytas = weight_short is not None
    h = hidden.new_zeros(batch, size)
    c = hidden.new_zeros(batch, size)
    for t in range(steps):
        n = active[t]
        if n == 0:  # no row has started: every state is still the zero initial state
            continue
        hn, cn = h[:n], c[:n]
        a = gates[t, :n]
        if t > 0:  # the initial state is zero: step 0 needs no recurrent products
            a.addmm_(hn, weight_hh.t())
        if baytas:
            if t > 0:
                short[t, :n].addmm_(cn, weight_short.t())
            s = short[t, :n].tanh_()
            c_adj = torch.addcmul(cn, retain[t, :n], s, out=adjusted[t, :n])
        else:
            c_adj = torch.mul(retain[t, :n], cn, out=adjusted[t, :n])
        a[:, : 2 * size].sigmoid_()
        a[:, 2 * size : 3 * size].tanh_()
        a[:, 3 * size :].sigmoid_()
        i, f, g, o = a.chunk(4, dim=1)
        c_new = torch.addcmul(f * c_adj, i, g)
        h_new = o * torch.tanh(c_new, out=tanh_memory[t, :n])
        k = keep[t, :n]
        c = torch.where(k, c_new, cn, out=memory[t, :n])
        h = torch.where(k, h_new, hn, out=hidden[t, :n])
        if n < batch:  # rows not started yet: zero state, already zero in `hidden` / `memory`
            h, c = hidden[t], memory[t]


def _backward_steps(grad_hidden, grad_memory, gates, retain, keep_f, carry_f, weight_hh, weight_short, short, adjusted,
                    tanh_memory, memory, active, full, grad_gates, grad_short, grad_retain) -> None:
    """The backward recurrence, in place: fills `grad_gates` (d loss / d gate pre-activations; 0 where a row has
    not started), `grad_short` (baytas: d loss / d (W_d C + b_d)) or `grad_retain` (learned: d loss / d gamma).
    The reference for the C++ loop of the same name."""
    steps, batch, size = tanh_memory.shape
    baytas = weight_short is not None
    dh = gates.new_zeros(batch, size)
    dc = gates.new_zeros(batch, size)
    for t in range(steps - 1, -1, -1):
        if grad_hidden is not None:
            dh.add_(grad_hidden[t])
        if grad_memory is not None:
            dc.add_(grad_memory[t])
        n = active[t]
        if n == 0:
            break  # earlier steps have no started row either
        k = keep_f[t, :n]
        dhn, dcn = dh[:n], dc[:n]
        i, f, g, o = gates[t, :n].chunk(4, dim=1)
        di, df, dg, do = grad_gates[t, :n].chunk(4, dim=1)
        dh_new = dhn * k
        dc_new = _tanh_grad(dh_new * o, tanh_memory[t, :n]).addcmul_(dcn, k)
        _sigmoid_grad.grad_input(dh_new * tanh_memory[t, :n], o, grad_input=do)
        _sigmoid_grad.grad_input(dc_new * g, i, grad_input=di)
        _sigmoid_grad.grad_input(dc_new * adjusted[t, :n], f, grad_input=df)
        _tanh_grad.grad_input(dc_new * i, g, grad_input=dg)
        d_adjusted = dc_new.mul_(f)
        if baytas:
            _tanh_grad.grad_input(d_adjusted * retain[t, :n], short[t, :n], grad_input=grad_short[t, :n])
        if t == 0:
            break  # nothing flows into the fixed zero initial state
        dhn.mul_(carry_f[t, :n]).addmm_(grad_gates[t, :n], weight_hh)
        if baytas:
            dcn.mul_(carry_f[t, :n]).add_(d_adjusted).addmm_(grad_short[t, :n], weight_short)
        else:
            torch.mul(d_adjusted, memory[t - 1, :n], out=grad_retain[t, :n])
            dcn.mul_(carry_f[t, :n]).addcmul_(d_adjusted, retain[t, :n])


_PYTHON_LOOPS = SimpleNamespace(forward_steps=_forward_steps, backward_steps=_backward_steps)


def step_loops() -> SimpleNamespace:
    """The step loops the layer runs: the C++ ones where emdlot.model.native could build them, else the above."""
    return native.tlstm_steps() or _PYTHON_LOOPS


class _TLSTMFunction(torch.autograd.Function):
    """The whole layer, time-major, rows ordered by start step, with a hand-written backward.

    Inputs: x (T, B, I); retain (T, B, H) = gamma for decay "learned", or (T, B, 1) = g - 1 for
    "baytas"; keep (T, B, 1) bool; weight_ih (4H, I); bias (4H,); weight_hh (4H, H); and for "baytas"
    weight_short (H, H), bias_short (H,) (None otherwise). Gate order (i, f, g, o) as in
    torch.nn.LSTM. Outputs: hidden states and memory cells (T, B, H), carried through padded steps.
    The step loops are emdlot.model.native's C++ ones where they could be built, else the Python ones above.
    """

    @staticmethod
    def forward(ctx, x, retain, keep, weight_ih, bias, weight_hh, weight_short, bias_short):
        steps, batch, inputs = x.shape
        size = weight_hh.shape[1]
        baytas = weight_short is not None
        active = _started_rows(keep)
        loops = step_loops()  # chosen once, so the backward pass runs the same loops as this forward pass
        full = None if loops is _PYTHON_LOOPS else _observed_steps(keep, active)  # only the C++ loops read it
        # Input projections of every step in one product; the loop adds h W_hh^T in place, so
        # `gates` ends up holding the gate activations the backward pass needs.
        gates = torch.addmm(bias, x.reshape(steps * batch, inputs), weight_ih.t()).view(steps, batch, 4 * size)
        short = bias_short.expand(steps, batch, size).contiguous() if baytas else None  # -> C_S
        adjusted = x.new_zeros(steps, batch, size)  # C*
        tanh_memory = x.new_zeros(steps, batch, size)
        hidden = x.new_zeros(steps, batch, size)
        memory = x.new_zeros(steps, batch, size)
        loops.forward_steps(gates, retain, keep, weight_hh, weight_short, short, active, full,
                            adjusted, tanh_memory, hidden, memory)
        ctx.active, ctx.full, ctx.loops = active, full, loops
        ctx.save_for_backward(x, retain, keep, weight_ih, weight_hh, weight_short, hidden, memory, gates, short, adjusted, tanh_memory)
        return hidden, memory

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hidden, grad_memory):
        x, retain, keep, weight_ih, weight_hh, weight_short, hidden, memory, gates, short, adjusted, tanh_memory = ctx.saved_tensors
        active = ctx.active
        baytas = weight_short is not None
        steps, batch, size = hidden.shape
        grad_gates = torch.zeros_like(gates)
        grad_short = torch.zeros_like(short) if baytas else None
        grad_retain = None if baytas else torch.zeros_like(retain)
        keep_f = keep.to(hidden.dtype)
        carry_f = 1.0 - keep_f  # padded steps pass gradients straight through
        ctx.loops.backward_steps(grad_hidden, grad_memory, gates, retain, keep_f, carry_f, weight_hh, weight_short,
                                 short, adjusted, tanh_memory, memory, active, ctx.full, grad_gates, grad_short, grad_retain)

        # Weight gradients: one product over the started rows of all steps (a row that has not started has a
        # zero gradient, so leaving it out changes no sum, and about a third of a batch's rows are such).
        # Step t > 0 reads the states of step t-1; step 0 reads zeros and adds nothing to the recurrent weights'.
        started = _started_index(active, batch, x.device)  # flat (step, row) positions, in order
        recurrent = started[started >= batch]  # the same at t > 0; `recurrent - batch` is each one's step t-1
        all_gates = grad_gates.view(steps * batch, 4 * size)
        flat_gates = all_gates[started]
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = x.new_zeros(steps * batch, x.shape[2]).index_copy_(0, started, flat_gates @ weight_ih).view_as(x)
        grad_weight_ih = flat_gates.t() @ x.reshape(steps * batch, -1)[started]
        grad_bias = flat_gates.sum(dim=0)
        grad_weight_hh = all_gates[recurrent].t() @ hidden.view(steps * batch, size)[recurrent - batch]
        grad_weight_short = grad_bias_short = None
        if baytas:
            all_short = grad_short.view(steps * batch, size)
            grad_weight_short = all_short[recurrent].t() @ memory.view(steps * batch, size)[recurrent - batch]
            grad_bias_short = all_short[started].sum(dim=0)
        return grad_x, grad_retain, None, grad_weight_ih, grad_bias, grad_weight_hh, grad_weight_short, grad_bias_short


class TLSTM(nn.Module):
    """One T-LSTM layer, batch-first, for padded sequences with elapsed times.

    Parameter layout follows torch.nn.LSTM (gate order i, f, g, o; `weight_ih`, `weight_hh`),
    with one bias (nn.LSTM's bias_ih + bias_hh), plus the decay's own parameters:
    `decay_weight` / `decay_bias` (w_g, b_g) for "learned", `weight_short` / `bias_short`
    (W_d, b_d) for "baytas".
    """

    def __init__(self, input_size: int, hidden_size: int, decay: Decay = "learned") -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"TLSTM needs positive sizes, got input_size={input_size}, hidden_size={hidden_size}")
        if decay not in ("learned", "baytas"):
            raise ValueError(f"unknown T-LSTM decay {decay!r}; choose 'learned' (paper) or 'baytas'")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.decay = decay
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        if decay == "baytas":
            self.weight_short = nn.Parameter(torch.empty(hidden_size, hidden_size))
            self.bias_short = nn.Parameter(torch.empty(hidden_size))
        else:
            self.decay_weight = nn.Parameter(torch.empty(hidden_size))
            self.decay_bias = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) for every tensor, as torch.nn.LSTM does; the learned gate's
        bias starts at 1 (not in the paper) so memory is mostly kept until training says otherwise,
        as with the usual forget-gate bias of 1."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        if self.decay == "learned":
            nn.init.constant_(self.decay_bias, 1.0)

    def forward(self, x: torch.Tensor, delta_t: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, I), delta_t (B, T) >= 0, mask (B, T) bool -> hidden states (B, T, H), memory (B, T, H).

        Step t's outputs are the state after step t; at a padded step that is the carried
        state, so `hidden[:, -1]` is always the state after the last valid step.
        """
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"TLSTM expects x of shape (batch, steps, {self.input_size}), got {tuple(x.shape)}")
        if delta_t.shape != x.shape[:2] or mask.shape != x.shape[:2]:
            raise ValueError(f"delta_t {tuple(delta_t.shape)} and mask {tuple(mask.shape)} must both be {tuple(x.shape[:2])}")
        if delta_t.requires_grad:
            raise ValueError("delta_t is data: the T-LSTM does not differentiate with respect to elapsed time")
        if bool((delta_t < 0).any()):
            raise ValueError("delta_t holds negative elapsed times; it must be months since the previous valid step (>= 0)")
        mask = mask.to(torch.bool)
        steps = x.shape[1]
        # Rows in the order their sequences start (stable), so started rows are a prefix at every step.
        start = torch.where(mask.any(dim=1), mask.to(torch.int8).argmax(dim=1), steps)
        order = torch.argsort(start, stable=True)
        ordered = not bool((order == torch.arange(len(order), device=order.device)).all())
        if ordered:
            x, delta_t, mask = x[order], delta_t[order], mask[order]
        x_time_major = x.transpose(0, 1).contiguous()  # (T, B, I)
        dt = delta_t.to(x.dtype).t().unsqueeze(-1)  # (T, B, 1)
        keep = mask.t().unsqueeze(-1).contiguous()  # (T, B, 1)
        if self.decay == "baytas":
            retain = (elapsed_time_decay(dt) - 1.0).contiguous()
            weights = (self.weight_short, self.bias_short)
        else:
            retain = torch.sigmoid(dt * self.decay_weight + self.decay_bias).contiguous()  # gamma (T, B, H)
            weights = (None, None)
        hidden, memory = _TLSTMFunction.apply(x_time_major, retain, keep, self.weight_ih, self.bias, self.weight_hh, *weights)
        hidden, memory = hidden.transpose(0, 1), memory.transpose(0, 1)
        if ordered:
            inverse = torch.argsort(order)
            hidden, memory = hidden[inverse], memory[inverse]
        return hidden, memory
