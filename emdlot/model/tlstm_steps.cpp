// The T-LSTM's step loops (emdlot/model/tlstm.py, _forward_steps and _backward_steps) in C++.
//
// Why: at batch 8 a step's tensors are a few rows, so the Python loop's interpreter and dispatch cost
// about as much as the arithmetic. These loops call the same ATen kernels on the same operands in the same
// order, so on one thread every number is bit for bit what the Python loops give (tests/test_tlstm.py checks
// it); the only other change is that a step whose started rows are all observed skips its two `where`s and the
// products by the keep mask (x * 1 and 0 + y are exact).
//
// On several intra-op threads, each step's recurrent products split their output columns into one block per
// thread (`product`). A step multiplies a few rows by a 512 x 2048 weight: the BLAS library's own threading runs
// that only 1.2-1.4x faster on two cores than on one, one column block per core about 2x. Each output element is
// still one dot product of the same operands, so the numbers differ from the library's own threading by float
// rounding only (as one thread's differ from two threads'); the split is fixed, so a seed gives the same numbers.
// Built without OpenMP (emdlot.model.native adds -fopenmp on Linux only), the products stay whole, as before.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <optional>
#include <vector>

using at::Tensor;

namespace {

constexpr int64_t kMinBlock = 64;  // narrower column blocks cost more in overhead than a second core gains
#ifdef _OPENMP
constexpr bool kSplits = true;
#else
constexpr bool kSplits = false;  // parallel_for would run the blocks one after another, each on one thread
#endif

Tensor rows(const Tensor& x, int64_t t, int64_t n) { return x.select(0, t).narrow(0, 0, n); }

// out = a @ b, or out += a @ b (accumulate); b is (K, N), out (n, N). One block of N's columns per thread.
void product(Tensor out, const Tensor& a, const Tensor& b, bool accumulate) {
  const int64_t columns = b.size(1);
  const int64_t blocks = std::min<int64_t>(at::get_num_threads(), columns / kMinBlock);
  const bool split = kSplits && blocks >= 2 && out.is_cpu() && !at::in_parallel_region();  // a GPU runs one product on its own
  if (!split) {
    if (accumulate) out.addmm_(a, b); else at::mm_out(out, a, b);
    return;
  }
  const int64_t width = (columns + blocks - 1) / blocks;
  const at::ThreadLocalState caller;  // grad mode and dispatch state are per thread: the workers take the caller's
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    const at::ThreadLocalStateGuard same_state(caller);
    for (int64_t block = first; block < last; ++block) {
      const int64_t start = block * width, count = std::min(columns, start + width) - start;
      Tensor part = out.narrow(1, start, count);
      if (accumulate) part.addmm_(a, b.narrow(1, start, count)); else at::mm_out(part, a, b.narrow(1, start, count));
    }
  });
}

}  // namespace

void forward_steps(Tensor gates, const Tensor& retain, const Tensor& keep, const Tensor& weight_hh,
                   const std::optional<Tensor>& weight_short, const std::optional<Tensor>& short_,
                   const std::vector<int64_t>& active, const std::vector<bool>& full,
                   Tensor adjusted, Tensor tanh_memory, Tensor hidden, Tensor memory) {
  const int64_t steps = gates.size(0), batch = gates.size(1), size = weight_hh.size(1);
  const bool baytas = weight_short.has_value();
  const Tensor recurrent_t = weight_hh.t();
  const Tensor short_t = baytas ? weight_short->t() : Tensor();
  Tensor h = hidden.new_zeros({batch, size});
  Tensor c = hidden.new_zeros({batch, size});
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t n = active[t];
    if (n == 0) continue;
    Tensor hn = h.narrow(0, 0, n), cn = c.narrow(0, 0, n);
    Tensor a = rows(gates, t, n);
    if (t > 0) product(a, hn, recurrent_t, true);
    Tensor c_adj = rows(adjusted, t, n);
    if (baytas) {
      Tensor s = rows(*short_, t, n);
      if (t > 0) product(s, cn, short_t, true);
      s.tanh_();
      at::addcmul_out(c_adj, cn, rows(retain, t, n), s);
    } else {
      at::mul_out(c_adj, rows(retain, t, n), cn);
    }
    a.narrow(1, 0, 2 * size).sigmoid_();
    a.narrow(1, 2 * size, size).tanh_();
    a.narrow(1, 3 * size, size).sigmoid_();
    const auto gate = a.chunk(4, 1);  // i, f, g, o
    Tensor tanh_c = rows(tanh_memory, t, n);
    if (full[t]) {  // every started row observed: the new state is the step's output as it stands
      Tensor c_out = rows(memory, t, n), h_out = rows(hidden, t, n);
      at::addcmul_out(c_out, gate[1] * c_adj, gate[0], gate[2]);
      at::tanh_out(tanh_c, c_out);
      at::mul_out(h_out, gate[3], tanh_c);
      c = c_out;
      h = h_out;
    } else {
      Tensor c_new = at::addcmul(gate[1] * c_adj, gate[0], gate[2]);
      Tensor h_new = gate[3] * at::tanh_out(tanh_c, c_new);
      Tensor k = rows(keep, t, n), c_out = rows(memory, t, n), h_out = rows(hidden, t, n);
      c = at::where_out(c_out, k, c_new, cn);
      h = at::where_out(h_out, k, h_new, hn);
    }
    if (n < batch) {
      h = hidden.select(0, t);
      c = memory.select(0, t);
    }
  }
}

void backward_steps(const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_memory,
                    const Tensor& gates, const Tensor& retain, const Tensor& keep_f, const Tensor& carry_f,
                    const Tensor& weight_hh, const std::optional<Tensor>& weight_short,
                    const std::optional<Tensor>& short_, const Tensor& adjusted, const Tensor& tanh_memory,
                    const Tensor& memory, const std::vector<int64_t>& active, const std::vector<bool>& full,
                    Tensor grad_gates, const std::optional<Tensor>& grad_short, const std::optional<Tensor>& grad_retain) {
  const int64_t steps = gates.size(0), batch = gates.size(1), size = weight_hh.size(1);
  const bool baytas = weight_short.has_value();
  Tensor dh = gates.new_zeros({batch, size});
  Tensor dc = gates.new_zeros({batch, size});
  for (int64_t t = steps - 1; t >= 0; --t) {
    if (grad_hidden) dh.add_(grad_hidden->select(0, t));
    if (grad_memory) dc.add_(grad_memory->select(0, t));
    const int64_t n = active[t];
    if (n == 0) break;  // earlier steps have no started row either
    Tensor dhn = dh.narrow(0, 0, n), dcn = dc.narrow(0, 0, n);
    const auto gate = rows(gates, t, n).chunk(4, 1);  // i, f, g, o
    auto grad = rows(grad_gates, t, n).chunk(4, 1);
    const Tensor tanh_c = rows(tanh_memory, t, n);
    Tensor dh_new, dc_new;
    if (full[t]) {
      dh_new = dhn;
      dc_new = at::tanh_backward(dh_new * gate[3], tanh_c).add_(dcn);
    } else {
      const Tensor k = rows(keep_f, t, n);
      dh_new = dhn * k;
      dc_new = at::tanh_backward(dh_new * gate[3], tanh_c).addcmul_(dcn, k);
    }
    at::sigmoid_backward_out(grad[3], dh_new * tanh_c, gate[3]);
    at::sigmoid_backward_out(grad[0], dc_new * gate[2], gate[0]);
    at::sigmoid_backward_out(grad[1], dc_new * rows(adjusted, t, n), gate[1]);
    at::tanh_backward_out(grad[2], dc_new * gate[0], gate[2]);
    Tensor d_adjusted = dc_new.mul_(gate[1]);
    if (baytas) {
      Tensor grad_s = rows(*grad_short, t, n);
      at::tanh_backward_out(grad_s, d_adjusted * rows(retain, t, n), rows(*short_, t, n));
    }
    if (t == 0) break;  // nothing flows into the fixed zero initial state
    if (full[t]) {
      product(dhn, rows(grad_gates, t, n), weight_hh, false);
      if (baytas) {
        product(dcn.copy_(d_adjusted), rows(*grad_short, t, n), *weight_short, true);
      } else {
        Tensor grad_r = rows(*grad_retain, t, n);
        at::mul_out(grad_r, d_adjusted, rows(memory, t - 1, n));
        at::mul_out(dcn, d_adjusted, rows(retain, t, n));
      }
    } else {
      const Tensor carry = rows(carry_f, t, n);
      product(dhn.mul_(carry), rows(grad_gates, t, n), weight_hh, true);
      if (baytas) {
        product(dcn.mul_(carry).add_(d_adjusted), rows(*grad_short, t, n), *weight_short, true);
      } else {
        Tensor grad_r = rows(*grad_retain, t, n);
        at::mul_out(grad_r, d_adjusted, rows(memory, t - 1, n));
        dcn.mul_(carry).addcmul_(d_adjusted, rows(retain, t, n));
      }
    }
  }
}

// Whether this build splits the recurrent products across threads (it was compiled with OpenMP).
bool splits_products() { return kSplits; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("splits_products", &splits_products, "whether the recurrent products are split across threads (OpenMP build)");
  m.def("forward_steps", &forward_steps, "T-LSTM forward step loop");
  m.def("backward_steps", &backward_steps, "T-LSTM backward step loop");
}
