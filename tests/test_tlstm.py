"""The T-LSTM layer (both decays) against a step-by-step reference, against nn.LSTM, and its padding/decay behaviour."""
import math
import os
import sys
import time

import pytest
import torch

from emdlot.model.tlstm import TLSTM, elapsed_time_decay


DECAYS = ("learned", "baytas")


def reference_tlstm(layer: TLSTM, x, delta_t, mask):
    """The paper's learned gate or Baytas et al. written out one step at a time with plain autograd ops."""
    batch, steps, _ = x.shape
    size = layer.hidden_size
    h = x.new_zeros(batch, size)
    c = x.new_zeros(batch, size)
    hs, cs = [], []
    for t in range(steps):
        if layer.decay == "baytas":
            short = torch.tanh(c @ layer.weight_short.T + layer.bias_short)
            g = (1.0 / torch.log(math.e + delta_t[:, t])).unsqueeze(1)
            c_adj = (c - short) + g * short
        else:
            gamma = torch.sigmoid(delta_t[:, t].unsqueeze(1) * layer.decay_weight + layer.decay_bias)
            c_adj = gamma * c
        pre = x[:, t] @ layer.weight_ih.T + h @ layer.weight_hh.T + layer.bias
        i = torch.sigmoid(pre[:, :size])
        f = torch.sigmoid(pre[:, size:2 * size])
        cand = torch.tanh(pre[:, 2 * size:3 * size])
        o = torch.sigmoid(pre[:, 3 * size:])
        c_new = f * c_adj + i * cand
        h_new = o * torch.tanh(c_new)
        keep = mask[:, t].unsqueeze(1)
        c = torch.where(keep, c_new, c)
        h = torch.where(keep, h_new, h)
        hs.append(h)
        cs.append(c)
    return torch.stack(hs, 1), torch.stack(cs, 1)


def irregular_inputs(batch=4, steps=7, features=5, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, features, generator=gen, dtype=dtype)
    delta_t = torch.randint(0, 4, (batch, steps), generator=gen).to(dtype) * 3.0  # 0, 3, 6, 9 months
    mask = torch.ones(batch, steps, dtype=torch.bool)
    mask[0, :3] = False  # pre-padded
    mask[1, 2] = False  # a hole in the middle
    mask[2, -2:] = False  # post-padded
    return x, delta_t, mask


@pytest.mark.parametrize("decay", DECAYS)
def test_matches_step_by_step_reference_in_values_and_gradients(decay):
    torch.manual_seed(1)
    layer = TLSTM(5, 6, decay=decay)
    x, delta_t, mask = irregular_inputs()
    delta_t[:, 0] = 2.0  # a gap at a row's first step moves the adjusted memory too (Baytas: C* = (g - 1) C_S)
    x.requires_grad_(True)
    hidden, memory = layer(x, delta_t, mask)
    weights = torch.randn_like(hidden)
    (hidden * weights).sum().add_((memory * weights.flip(0)).sum()).backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()} | {"x": x.grad.clone()}

    layer.zero_grad()
    x.grad = None
    ref_hidden, ref_memory = reference_tlstm(layer, x, delta_t, mask)
    (ref_hidden * weights).sum().add_((ref_memory * weights.flip(0)).sum()).backward()
    ref_grads = {name: p.grad for name, p in layer.named_parameters()} | {"x": x.grad}

    torch.testing.assert_close(hidden, ref_hidden, atol=1e-6, rtol=0)
    torch.testing.assert_close(memory, ref_memory, atol=1e-6, rtol=0)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-5, msg=f"gradient of {name}")


@pytest.mark.parametrize("decay", DECAYS)
def test_hand_written_backward_passes_gradcheck(decay):
    torch.manual_seed(2)
    layer = TLSTM(3, 4, decay=decay).double()
    x, delta_t, mask = irregular_inputs(batch=3, steps=5, features=3, dtype=torch.float64)
    names = [name for name, _ in layer.named_parameters()]

    def run(x, *weights):
        return torch.func.functional_call(layer, dict(zip(names, weights)), (x, delta_t, mask))

    inputs = (x.requires_grad_(True),) + tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    assert torch.autograd.gradcheck(run, inputs)


@pytest.mark.parametrize("decay", DECAYS)
def test_zero_elapsed_time_equals_torch_lstm_with_copied_weights(decay):
    """Baytas: g(0) = 1 leaves memory as it is; learned: a gate held open (gamma = 1) does the same."""
    torch.manual_seed(3)
    layer = TLSTM(5, 8, decay=decay)
    if decay == "learned":
        with torch.no_grad():
            layer.decay_bias.fill_(40.0)
    lstm = torch.nn.LSTM(5, 8, batch_first=True)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(layer.weight_ih)
        lstm.weight_hh_l0.copy_(layer.weight_hh)
        lstm.bias_ih_l0.copy_(layer.bias * 0.25)
        lstm.bias_hh_l0.copy_(layer.bias * 0.75)
    x = torch.randn(4, 9, 5)
    hidden, memory = layer(x, torch.zeros(4, 9), torch.ones(4, 9, dtype=torch.bool))
    expected, (h_n, c_n) = lstm(x)
    torch.testing.assert_close(hidden, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(memory[:, -1], c_n[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(hidden[:, -1], h_n[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("decay", DECAYS)
def test_padded_steps_change_nothing_wherever_they_are(decay):
    torch.manual_seed(4)
    layer = TLSTM(5, 6, decay=decay)
    x, delta_t, _ = irregular_inputs(batch=3, steps=6)
    full = torch.ones(3, 6, dtype=torch.bool)
    hidden, memory = layer(x, delta_t, full)

    # Append and prepend padded steps holding garbage values and gaps.
    junk_x = torch.full((3, 4, 5), 1e3)
    junk_dt = torch.full((3, 4), 99.0)
    off = torch.zeros(3, 4, dtype=torch.bool)
    padded_x = torch.cat([junk_x, x, junk_x], 1)
    padded_dt = torch.cat([junk_dt, delta_t, junk_dt], 1)
    padded_mask = torch.cat([off, full, off], 1)
    padded_hidden, padded_memory = layer(padded_x, padded_dt, padded_mask)

    assert torch.equal(padded_hidden[:, 4:10], hidden)
    assert torch.equal(padded_memory[:, 4:10], memory)
    assert torch.equal(padded_hidden[:, :4], torch.zeros(3, 4, 6))  # nothing seen yet: initial state
    assert torch.equal(padded_hidden[:, -1], hidden[:, -1])  # state carried through the trailing pads
    assert torch.equal(padded_memory[:, -1], memory[:, -1])


def test_elapsed_time_decay_is_one_at_zero_and_falls_with_the_gap():
    gaps = torch.tensor([0.0, 1.0, 3.0, 6.0, 12.0, 60.0])
    g = elapsed_time_decay(gaps)
    assert g[0].item() == pytest.approx(1.0)
    assert torch.all(g[1:] < g[:-1])
    assert g[3].item() == pytest.approx(1.0 / math.log(math.e + 6.0))


def write_once_then_hold(layer: TLSTM) -> TLSTM:
    """Gates set so that step 1 (input 0 = 1) writes the candidate and step 2 (input 0 = 0) only carries
    the memory forward: the forget gate open, the input gate shut, no recurrent weights."""
    size = layer.hidden_size
    with torch.no_grad():
        for p in (layer.weight_ih, layer.weight_hh, layer.bias):
            p.zero_()
        layer.weight_ih[:size, 0] = 60.0  # input gate: open at step 1 (x_0 = 1) ...
        layer.bias[:size] = -30.0  # ... shut at step 2 (x_0 = 0)
        layer.bias[size:2 * size] = 30.0  # forget gate open
    return layer


def test_longer_gap_discounts_more_of_the_short_term_memory():
    """With the forget gate open and nothing new written, step 2's memory is C* = C_L + g(dt) * C_S."""
    torch.manual_seed(5)
    size = 4
    layer = write_once_then_hold(TLSTM(2, size, decay="baytas"))
    with torch.no_grad():
        layer.weight_ih[2 * size:3 * size, 1] = torch.randn(size) * 2  # step 1 writes a candidate
    x = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    mask = torch.ones(1, 2, dtype=torch.bool)

    def memory(gap: float) -> torch.Tensor:
        with torch.no_grad():
            return layer(x, torch.tensor([[0.0, gap]]), mask)[1][0]

    c1 = memory(0.0)[0]
    short = torch.tanh(layer.weight_short.detach() @ c1 + layer.bias_short.detach())
    long_term = c1 - short
    moved = []
    for gap in (0.0, 3.0, 12.0, 120.0):
        c2 = memory(gap)[1]
        torch.testing.assert_close(c2, long_term + elapsed_time_decay(torch.tensor(gap)) * short, atol=1e-5, rtol=0)
        moved.append((c2 - c1).norm().item())
    # No gap keeps the memory; each longer gap discounts more of the short-term part.
    assert moved[0] == pytest.approx(0.0, abs=1e-5)
    assert moved[1] > 0 and moved == sorted(moved)
    assert (memory(1e6)[1] - long_term).norm() < (memory(3.0)[1] - long_term).norm()


def test_rejects_negative_elapsed_time_and_bad_shapes():
    layer = TLSTM(2, 3)
    x = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="negative elapsed"):
        layer(x, torch.tensor([[0.0, -1.0]]), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(batch, steps, 2\)"):
        layer(torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool))


def test_learned_gate_decays_memory_more_over_longer_gaps_when_its_weight_says_so():
    """C* = sigmoid(w dt + b) C: with w < 0 a longer gap keeps less of the memory, per dimension."""
    torch.manual_seed(6)
    size = 3
    layer = write_once_then_hold(TLSTM(1, size, decay="learned"))
    with torch.no_grad():
        layer.bias[2 * size:3 * size] = 0.5  # candidate tanh(0.5) written at step 1
        layer.decay_weight.copy_(torch.tensor([-0.5, -0.1, 0.0]))
        layer.decay_bias.fill_(2.0)
    x = torch.tensor([[[1.0], [0.0]]])
    kept = []
    for gap in (0.0, 3.0, 12.0):
        with torch.no_grad():
            memory = layer(x, torch.tensor([[0.0, gap]]), torch.ones(1, 2, dtype=torch.bool))[1][0]
        gamma = torch.sigmoid(gap * layer.decay_weight.detach() + 2.0)
        torch.testing.assert_close(memory[1], gamma * memory[0], atol=1e-5, rtol=0)
        kept.append(memory[1] / memory[0])
    assert kept[2][0] < kept[1][0] < kept[0][0]  # strongly negative weight: decays with the gap
    torch.testing.assert_close(kept[2][2], kept[0][2])  # zero weight: the gap does not matter


@pytest.mark.parametrize("decay", DECAYS)
def test_each_row_is_computed_as_if_it_were_alone(decay):
    """Rows are reordered by start step and unstarted rows skipped: a batch equals its rows one by one,
    in values and in gradients."""
    torch.manual_seed(7)
    layer = TLSTM(4, 5, decay=decay)
    x, delta_t, mask = irregular_inputs(batch=4, steps=7, features=4)
    mask[3, :5] = False  # starts latest; row 0 starts at step 3: out of order
    x.requires_grad_(True)
    hidden, memory = layer(x, delta_t, mask)
    hidden.sum().add(memory.square().sum()).backward()
    batch_grads = [p.grad.clone() for p in layer.parameters()]
    for row in range(4):
        h1, m1 = layer(x[row:row + 1], delta_t[row:row + 1], mask[row:row + 1])
        torch.testing.assert_close(h1[0], hidden[row], atol=1e-6, rtol=0)
        torch.testing.assert_close(m1[0], memory[row], atol=1e-6, rtol=0)
    layer.zero_grad()
    for row in range(4):
        h1, m1 = layer(x[row:row + 1], delta_t[row:row + 1], mask[row:row + 1])
        h1.sum().add(m1.square().sum()).backward()
    for got, want in zip(batch_grads, (p.grad for p in layer.parameters())):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# The C++ step loops (emdlot.model.native) against the Python ones: the same numbers, bit for bit.

def run_layer(decay, x, delta_t, mask, size=24):
    """Outputs and every gradient of one layer (seeded weights) on these inputs, under the current loops."""
    torch.manual_seed(3)
    layer = TLSTM(x.shape[2], size, decay=decay)
    x = x.clone().requires_grad_(True)
    hidden, memory = layer(x, delta_t, mask)
    (hidden.pow(2).sum() + memory.sin().sum()).backward()
    return [hidden, memory, x.grad] + [p.grad for p in layer.parameters()]


def batch_of_eight(seed=0):
    """A batch like training's: pre-padded rows of different lengths, one all-padding row, holes in the middle."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 11, 5, generator=gen)
    delta_t = torch.rand(8, 11, generator=gen) * 9.0
    mask = torch.ones(8, 11, dtype=torch.bool)
    for row, lead in enumerate((0, 3, 1, 6, 2, 9, 0, 11)):
        mask[row, :lead] = False
    mask[0, 4] = mask[2, 9] = mask[6, 10] = False
    return x, delta_t, mask


def native_loops(monkeypatch):
    """The built C++ step loops, switched on for this test (`require` where CI requires them), or a skip."""
    from emdlot.model import native

    monkeypatch.setenv("EMDLOT_NATIVE_TLSTM", "require" if os.environ.get("EMDLOT_NATIVE_TLSTM") == "require" else "auto")
    module = native.tlstm_steps()
    if module is None:
        pytest.skip("the C++ step loops could not be built here (no C++ compiler)")
    return module


def all_nonzero(outputs):
    """The outputs and every gradient carry signal (a comparison of zeros would prove nothing)."""
    return outputs[0].abs().sum() > 0 and all(g.abs().sum() > 0 for g in outputs[2:])


@pytest.mark.parametrize("decay", DECAYS)
def test_native_step_loops_give_the_python_loops_numbers_bit_for_bit(decay, monkeypatch):
    native_loops(monkeypatch)
    x, delta_t, mask = batch_of_eight()
    fast = run_layer(decay, x, delta_t, mask)
    monkeypatch.setenv("EMDLOT_NATIVE_TLSTM", "off")
    slow = run_layer(decay, x, delta_t, mask)
    for a, b in zip(fast, slow, strict=True):
        assert torch.equal(a, b)
    assert all_nonzero(fast)


@pytest.mark.parametrize("decay", DECAYS)
def test_native_loops_on_two_threads_split_the_recurrent_products_and_keep_the_numbers(decay, monkeypatch):
    """Hidden size 128 on two threads: each step's recurrent products run as one column block per thread (the
    forward's 512 gate columns and the backward's 128 state columns). Each block is the same dot products, so the
    numbers agree with the Python loops (the BLAS library's own threading) to float rounding, and two runs agree
    bit for bit; a block written to the wrong columns, or a race between them, would fail both."""
    module = native_loops(monkeypatch)
    if sys.platform.startswith("linux"):  # built with -fopenmp there, so the blocks run on torch's threads
        assert module.splits_products()
    x, delta_t, mask = batch_of_eight()
    torch.set_num_threads(2)
    split = run_layer(decay, x, delta_t, mask, size=128)
    assert all(torch.equal(a, b) for a, b in zip(split, run_layer(decay, x, delta_t, mask, size=128), strict=True))
    monkeypatch.setenv("EMDLOT_NATIVE_TLSTM", "off")
    python = run_layer(decay, x, delta_t, mask, size=128)
    for a, b in zip(split, python, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all_nonzero(split)


def test_native_mode_off_runs_python_loops_and_a_failed_build_warns_once_or_fails_under_require(monkeypatch):
    from emdlot.model import native, tlstm

    monkeypatch.setenv("EMDLOT_NATIVE_TLSTM", "off")
    assert tlstm.step_loops().forward_steps is tlstm._forward_steps
    monkeypatch.setattr(native, "_build", lambda: (None, RuntimeError("c++: command not found")))
    native._warn_once.cache_clear()
    monkeypatch.setenv("EMDLOT_NATIVE_TLSTM", "auto")
    x, delta_t, mask = batch_of_eight(seed=1)
    with pytest.warns(RuntimeWarning, match="could not be built .*command not found"):
        reference = run_layer("learned", x, delta_t, mask)
    monkeypatch.setenv("EMDLOT_NATIVE_TLSTM", "off")
    for a, b in zip(reference, run_layer("learned", x, delta_t, mask), strict=True):
        assert torch.equal(a, b)
    monkeypatch.setenv("EMDLOT_NATIVE_TLSTM", "require")
    with pytest.raises(RuntimeError, match="require.*command not found"):
        run_layer("learned", x, delta_t, mask)
    monkeypatch.setenv("EMDLOT_NATIVE_TLSTM", "fast")
    with pytest.raises(ValueError, match="EMDLOT_NATIVE_TLSTM='fast'"):
        run_layer("learned", x, delta_t, mask)


def test_native_build_removes_a_stale_lock_and_keeps_a_live_one(tmp_path, monkeypatch):
    """torch's loader waits for its lock file to go: one left by a killed build must not hang every later process."""
    import torch.utils.cpp_extension as cpp_extension

    from emdlot.model import native

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    loaded = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: loaded.append(kwargs["name"]) or "module")
    lock = native.build_directory(tmp_path, torch.__version__) / "lock"
    lock.parent.mkdir()
    for age, kept in ((native.STALE_LOCK_S + 60, False), (5, True)):
        lock.touch()
        os.utime(lock, (time.time() - age,) * 2)
        native._build.cache_clear()
        try:
            assert native._build() == ("module", None)
        finally:
            native._build.cache_clear()
        assert lock.exists() == kept
    assert loaded == [native.NAME, native.NAME]
