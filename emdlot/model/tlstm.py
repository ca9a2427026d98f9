"""Time-aware LSTM (Baytas et al. 2017) over padded batches of irregular sequences.

Per step, the previous memory is split into a short-term part that decays with the
elapsed time and a long-term part that does not:

    C_S  = tanh(W_d C_{t-1} + b_d)            short-term memory
    g    = 1 / log(e + delta_t)               elapsed-time decay (1 when delta_t = 0)
    C*   = (C_{t-1} - C_S) + g * C_S          adjusted previous memory
    then the standard LSTM gates on (x_t, h_{t-1}), with C* in place of C_{t-1}.

Padded steps (mask False) leave (h, C) unchanged, wherever they sit in the sequence.

Speed: the layer is one custom autograd function with the backward pass written out by
hand. The input projections of all steps are one matrix product; each step then costs two
matrix products forward (h W_hh^T, C W_d^T) and two backward, element-wise work uses fused
derivative kernels, and the weight gradients are one product over all steps together (as
fused RNN kernels do). On this 2-core CPU (hidden 512, 39 steps, batch 64) a plain autograd
loop took about 2.5x the time of torch.nn.LSTM, the same loop under torch.compile about 1.5x
(after ~80 s of compiling), this layer about 1.35x with no compile step;
benchmarks/tlstm_speed.py measures it.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable


def elapsed_time_decay(delta_t: torch.Tensor) -> torch.Tensor:
    """g(dt) = 1 / log(e + dt): 1 for back-to-back steps, shrinking slowly as gaps grow."""
    return 1.0 / torch.log(math.e + delta_t)


# Fused derivative kernels (what autograd itself calls): grad * y * (1 - y) and grad * (1 - y^2),
# given the activation's output y. One pass over memory instead of three.
_sigmoid_grad = torch.ops.aten.sigmoid_backward
_tanh_grad = torch.ops.aten.tanh_backward


class _TLSTMFunction(torch.autograd.Function):
    """The whole layer, time-major, with a hand-written backward pass.

    Inputs: x (T, B, I); decay (T, B, 1); keep (T, B, 1) bool; weight_ih (4H, I); bias (4H,);
    weight_hh (4H, H); weight_short (H, H); bias_short (H,). Gate order (i, f, g, o) as in
    torch.nn.LSTM. Outputs: hidden states (T, B, H) and memory cells (T, B, H), both carried
    unchanged through padded steps.
    """

    @staticmethod
    def forward(ctx, x, decay, keep, weight_ih, bias, weight_hh, weight_short, bias_short):
        steps, batch, inputs = x.shape
        size = weight_hh.shape[1]
        # Input projections of every step in one product; the loop adds h W_hh^T in place, so
        # `gates` ends up holding the gate activations the backward pass needs.
        gates = torch.addmm(bias, x.reshape(steps * batch, inputs), weight_ih.t()).view(steps, batch, 4 * size)
        short = bias_short.expand(steps, batch, size).contiguous()  # becomes C_S = tanh(W_d C + b_d)
        adjusted = torch.empty_like(short)  # C*
        tanh_memory = torch.empty_like(short)
        hidden = torch.empty_like(short)
        memory = torch.empty_like(short)

        h = x.new_zeros(batch, size)
        c = x.new_zeros(batch, size)
        decay_minus_one = decay - 1.0
        for t in range(steps):
            if t > 0:  # the initial state is zero: step 0 needs no recurrent products
                short[t].addmm_(c, weight_short.t())
                gates[t].addmm_(h, weight_hh.t())
            s = short[t].tanh_()
            c_adj = torch.addcmul(c, decay_minus_one[t], s, out=adjusted[t])
            a = gates[t]
            a[:, : 2 * size].sigmoid_()
            a[:, 2 * size : 3 * size].tanh_()
            a[:, 3 * size :].sigmoid_()
            i, f, g, o = a.chunk(4, dim=1)
            c_new = torch.addcmul(f * c_adj, i, g)
            h_new = o * torch.tanh(c_new, out=tanh_memory[t])
            c = torch.where(keep[t], c_new, c, out=memory[t])
            h = torch.where(keep[t], h_new, h, out=hidden[t])

        ctx.save_for_backward(x, decay_minus_one, keep, weight_ih, weight_hh, weight_short, hidden, memory, gates, short, adjusted, tanh_memory)
        return hidden, memory

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hidden, grad_memory):
        x, decay_minus_one, keep, weight_ih, weight_hh, weight_short, hidden, memory, gates, short, adjusted, tanh_memory = ctx.saved_tensors
        steps, batch, size = hidden.shape
        grad_gates = torch.empty_like(gates)  # d loss / d gate pre-activations
        grad_short = torch.empty_like(short)  # d loss / d (W_d C + b_d)
        dh = hidden.new_zeros(batch, size)
        dc = hidden.new_zeros(batch, size)
        keep_f = keep.to(hidden.dtype)
        carry_f = 1.0 - keep_f  # padded steps pass gradients straight through
        for t in range(steps - 1, -1, -1):
            if grad_hidden is not None:
                dh.add_(grad_hidden[t])
            if grad_memory is not None:
                dc.add_(grad_memory[t])
            k = keep_f[t]
            i, f, g, o = gates[t].chunk(4, dim=1)
            di, df, dg, do = grad_gates[t].chunk(4, dim=1)
            dh_new = dh * k
            dc_new = _tanh_grad(dh_new * o, tanh_memory[t]).addcmul_(dc, k)
            _sigmoid_grad.grad_input(dh_new * tanh_memory[t], o, grad_input=do)
            _sigmoid_grad.grad_input(dc_new * g, i, grad_input=di)
            _sigmoid_grad.grad_input(dc_new * adjusted[t], f, grad_input=df)
            _tanh_grad.grad_input(dc_new * i, g, grad_input=dg)
            d_adjusted = dc_new.mul_(f)
            _tanh_grad.grad_input(d_adjusted * decay_minus_one[t], short[t], grad_input=grad_short[t])
            if t > 0:  # nothing flows into the fixed zero initial state
                dh.mul_(carry_f[t]).addmm_(grad_gates[t], weight_hh)
                dc.mul_(carry_f[t]).add_(d_adjusted).addmm_(grad_short[t], weight_short)

        # Weight gradients: one product over all steps. Step t > 0 reads the states of step t-1;
        # step 0 reads zeros and adds nothing to the recurrent weights' gradients.
        flat_gates = grad_gates.view(steps * batch, 4 * size)
        grad_x = (flat_gates @ weight_ih).view_as(x) if ctx.needs_input_grad[0] else None
        grad_weight_ih = flat_gates.t() @ x.reshape(steps * batch, -1)
        grad_bias = flat_gates.sum(dim=0)
        grad_weight_hh = grad_gates[1:].reshape(-1, 4 * size).t() @ hidden[:-1].reshape(-1, size)
        grad_weight_short = grad_short[1:].reshape(-1, size).t() @ memory[:-1].reshape(-1, size)
        grad_bias_short = grad_short.view(steps * batch, size).sum(dim=0)
        return grad_x, None, None, grad_weight_ih, grad_bias, grad_weight_hh, grad_weight_short, grad_bias_short


class TLSTM(nn.Module):
    """One T-LSTM layer, batch-first, for padded sequences with elapsed times.

    Parameter layout follows torch.nn.LSTM (gate order i, f, g, o; `weight_ih`, `weight_hh`),
    with one bias (nn.LSTM's bias_ih + bias_hh) plus the short-term memory map
    `weight_short` / `bias_short` (W_d, b_d).
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"TLSTM needs positive sizes, got input_size={input_size}, hidden_size={hidden_size}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.weight_short = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_short = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) for every tensor, as torch.nn.LSTM does."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

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
        x_time_major = x.transpose(0, 1).contiguous()  # (T, B, I)
        decay = elapsed_time_decay(delta_t.to(x.dtype)).t().unsqueeze(-1).contiguous()  # (T, B, 1)
        keep = mask.to(torch.bool).t().unsqueeze(-1).contiguous()  # (T, B, 1)
        hidden, memory = _TLSTMFunction.apply(x_time_major, decay, keep, self.weight_ih, self.bias, self.weight_hh, self.weight_short, self.bias_short)
        return hidden.transpose(0, 1), memory.transpose(0, 1)
