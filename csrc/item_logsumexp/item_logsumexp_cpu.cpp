// item_logsumexp on the CPU: the log-sum-exp of every row's scores over the whole item catalogue,
// computed item chunk by item chunk so that no [M, N] score matrix ever exists.
//
//   forward:  for each chunk c of items (C items):
//               S = hidden [M, D] @ weight[c]^T [D, C] + bias[c]           (one ATen GEMM)
//               online max/sum: m' = max(m, max_j S), sum' = sum e^(m - m') + sum_j e^(S - m')
//             lse = log(sum) + m                                         [M]
//             (the element-wise passes on blocks of rows that fit in L2, parallel over blocks)
//   backward: for each chunk c: recompute P = e^(S - lse) [M, C], then with g = grad [M]:
//               d_hidden += P @ weight[c]  (times g at the end)
//               d_weight[c] = P^T @ (g * hidden)    d_bias[c] = P^T @ g
//
// The GEMMs and the element-wise passes are ATen's, parallel over rows and columns inside each
// call; the chunks run in a fixed order, so results are bitwise reproducible (no atomics).
// Memory: O(M * C) for one chunk's scores besides the inputs and gradients.
//
// NaN/inf as torch.logsumexp(F.linear(hidden, weight, bias), 1): a NaN score makes the row NaN,
// a +inf score makes it +inf, a row of -inf gives -inf (the shift is 0 when the running max is
// infinite, and a zero running sum is never rescaled, so no 0 * inf appears).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "item_logsumexp/item_scoring.h"

#include <algorithm>
#include <limits>

namespace stseq {
namespace {

// Softmax values below 2^-24 (float32's resolution next to 1) cannot change a float32 gradient
// sum they are added to; the opt-in gradient filter skips chunks made only of such values.
constexpr double kFilterThreshold = 1.0 / 16777216.0;

using item_scoring::accumulate_type;

void check_inputs(const at::Tensor& hidden, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, int64_t chunk_size) {
  item_scoring::check_inputs(hidden, weight, bias);
  TORCH_CHECK_VALUE(chunk_size >= 1, "chunk_size must be >= 1, got ", chunk_size);
}

// S = hidden @ weight[start:end]^T (+ bias[start:end]) in the accumulation dtype: [M, C].
at::Tensor chunk_scores(const at::Tensor& hidden, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, int64_t start, int64_t end) {
  at::Tensor weight_chunk = weight.slice(0, start, end).to(hidden.scalar_type());  // [C, D]
  if (!bias.has_value()) {
    return at::mm(hidden, weight_chunk.t());
  }
  return at::addmm(bias->slice(0, start, end).to(hidden.scalar_type()), hidden,
                   weight_chunk.t());
}

}  // namespace

at::Tensor item_logsumexp_cpu(const at::Tensor& hidden, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, int64_t chunk_size,
                              bool gradient_filter) {
  check_inputs(hidden, weight, bias, chunk_size);
  const auto accumulate = accumulate_type(hidden.scalar_type());
  const at::Tensor rows = hidden.to(accumulate).contiguous();  // [M, D]
  const int64_t num_items = weight.size(0);
  const double inf = std::numeric_limits<double>::infinity();
  at::Tensor running_max = at::full({rows.size(0)}, -inf, rows.options());  // [M]
  at::Tensor shift = at::zeros_like(running_max);    // finite: the running max, or 0 if infinite
  at::Tensor running_sum = at::zeros_like(running_max);  // sum of e^(S - shift) so far
  for (int64_t start = 0; start < num_items; start += chunk_size) {
    const int64_t end = std::min(num_items, start + chunk_size);
    at::Tensor scores = chunk_scores(rows, weight, bias, start, end);  // [M, C]
    // The element-wise passes run on blocks of rows that stay in L2, one thread per block.
    const int64_t block = item_scoring::block_rows(end - start, scores.element_size());
    at::parallel_for(0, (rows.size(0) + block - 1) / block, 1, [&](int64_t first, int64_t last) {
      for (int64_t b = first; b < last; ++b) {
        const int64_t begin = b * block, size = std::min(block, rows.size(0) - begin);
        at::Tensor part = scores.narrow(0, begin, size);                 // [r, C]
        at::Tensor part_max = running_max.narrow(0, begin, size);        // [r]
        at::Tensor part_shift = shift.narrow(0, begin, size);
        at::Tensor part_sum = running_sum.narrow(0, begin, size);
        at::Tensor new_max = at::maximum(part_max, part.amax(1));       // NaN propagates
        at::Tensor new_shift = new_max.masked_fill(new_max.abs() == inf, 0.0);
        at::Tensor rescaled = at::where(part_sum == 0, part_sum,
                                        part_sum * (part_shift - new_shift).exp());
        part.sub_(new_shift.unsqueeze(1)).exp_();
        part_sum.copy_(rescaled + part.sum(1));
        part_max.copy_(new_max);
        part_shift.copy_(new_shift);
      }
    });
  }
  return running_sum.log_().add_(shift);  // [M]
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> item_logsumexp_backward_cpu(
    const at::Tensor& grad, const at::Tensor& hidden, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& lse, int64_t chunk_size,
    bool gradient_filter) {
  check_inputs(hidden, weight, bias, chunk_size);
  const int64_t num_rows = hidden.size(0), num_items = weight.size(0);
  TORCH_CHECK_VALUE(grad.dim() == 1 && grad.size(0) == num_rows && lse.dim() == 1 &&
                        lse.size(0) == num_rows,
                    "grad and lse must have shape [M] = [", num_rows, "], got ", grad.sizes(),
                    " and ", lse.sizes());
  const auto accumulate = accumulate_type(hidden.scalar_type());
  const at::Tensor rows = hidden.to(accumulate).contiguous();                 // [M, D]
  const at::Tensor grad_column = grad.to(accumulate).unsqueeze(1);            // [M, 1]
  const at::Tensor lse_column = lse.to(accumulate).unsqueeze(1);              // [M, 1]
  // grad is folded in on the D side: d_weight = P^T (grad * hidden), d_hidden = grad * (P W).
  const at::Tensor rows_scaled = rows * grad_column;                          // [M, D]
  const at::Tensor grad_vector = grad_column.squeeze(1);                      // [M]
  at::Tensor grad_hidden = at::zeros_like(rows);                              // [M, D]
  at::Tensor grad_weight = at::empty({num_items, rows.size(1)}, rows.options());  // [N, D]
  at::Tensor grad_bias = at::empty({num_items}, rows.options());              // [N]
  for (int64_t start = 0; start < num_items; start += chunk_size) {
    const int64_t end = std::min(num_items, start + chunk_size);
    at::Tensor grad_weight_chunk = grad_weight.slice(0, start, end);          // [C, D]
    at::Tensor grad_bias_chunk = grad_bias.slice(0, start, end);              // [C]
    at::Tensor weight_chunk = weight.slice(0, start, end).to(accumulate);     // [C, D]
    // S rounded first, then S - lse, as torch's logsumexp backward computes it (folding -lse
    // into the GEMM would keep digits of S that lse has lost when |bias| >> |hidden . weight|)
    at::Tensor probs = chunk_scores(rows, weight, bias, start, end);         // [M, C]
    probs.sub_(lse_column).exp_();  // the softmax over all N items, this chunk's columns
    if (gradient_filter && probs.numel() > 0 &&
        at::where(at::isnan(probs), 1.0, probs).max().item<double>() < kFilterThreshold) {
      grad_weight_chunk.zero_();
      grad_bias_chunk.zero_();
      continue;
    }
    grad_hidden.addmm_(probs, weight_chunk);
    at::mm_out(grad_weight_chunk, probs.t(), rows_scaled);
    at::mv_out(grad_bias_chunk, probs.t(), grad_vector);
  }
  grad_hidden.mul_(grad_column);
  const auto bias_type = bias.has_value() ? bias->scalar_type() : weight.scalar_type();
  return {grad_hidden.to(hidden.scalar_type()), grad_weight.to(weight.scalar_type()),
          grad_bias.to(bias_type)};
}

}  // namespace stseq

// One chunk of items per step; chunk_size items (>= 1); gradient_filter lets backward skip a
// chunk whose softmax values are all below 2^-24 (exact when false).
TORCH_LIBRARY_FRAGMENT(stseq, m) {
  m.def(
      "item_logsumexp(Tensor hidden, Tensor weight, Tensor? bias, int chunk_size, "
      "bool gradient_filter) -> Tensor");
  m.def(
      "item_logsumexp_backward(Tensor grad, Tensor hidden, Tensor weight, Tensor? bias, "
      "Tensor lse, int chunk_size, bool gradient_filter) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(stseq, CPU, m) {
  m.impl("item_logsumexp", &stseq::item_logsumexp_cpu);
  m.impl("item_logsumexp_backward", &stseq::item_logsumexp_backward_cpu);
}
