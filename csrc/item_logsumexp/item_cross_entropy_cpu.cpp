// item_cross_entropy on the CPU: the per-row losses of
// F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction="none", ignore_index,
// label_smoothing) and, when asked, the gradients of their sum, computed during the forward
// (Liger-Kernel's fused linear cross-entropy) row chunk by row chunk over all N items, so that
// no [M, N] matrix ever exists and the scores are produced once:
//
//   for each chunk of R rows (the [R, N] score buffer is the only large temporary):
//     S = hidden[rows] @ weight^T + bias                                   [R, N]  GEMM 1
//     per block of rows that fits in L2 (parallel over blocks): max, S <- exp(S - max), sum,
//       lse = max + log(sum)
//       loss = (1 - eps) (lse - S_target) + eps (lse - mean_j S_j)     (0 on ignored rows)
//       S <- w (S / sum - eps / N) - w (1 - eps) onehot(target)    = w dloss/dS
//     d_hidden[rows] = S @ weight                                          [R, D]  GEMM 2
//     d_weight += S^T @ hidden[rows]       d_bias += S^T 1                 [N, D]  GEMM 3
//
// With the transition mixture (log_keep, log_prior [M] given) the loss is
// -log(exp(log_keep) p_target + exp(log_prior)) = -logaddexp(log_keep - ce, log_prior), ce the
// cross-entropy above (label_smoothing 0); its gradient in the scores is pi (P - onehot) with
// pi = exp(log_keep - ce + loss) the model's share, so the same pass computes it with w scaled
// by pi, and the gradients of log_keep and log_prior are -pi and -(1 - pi) per row.
//
// Three [M, N]-sized GEMMs in all, as F.linear + F.cross_entropy forward and backward. w is the
// row's weight: 1 in the forward (0 on rows whose target is ignore_index); the backward op
// scales the stored gradients by grad_output when it is one value on every counted row (sum,
// mean: the losses of a training step), and otherwise runs the pass again with w = grad_output.
// Chunks run in a fixed order and each row block is one thread's, so results are bitwise
// reproducible (no atomics). NaN/inf as F.cross_entropy: a row with a NaN or +inf score, or
// only -inf scores, has a NaN loss and NaN gradients; a -inf target score gives an inf loss.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "item_logsumexp/item_scoring.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

namespace stseq {
namespace {

using item_scoring::accumulate_type;

struct CrossEntropy {
  at::Tensor losses;                                  // [M]
  at::Tensor grad_hidden, grad_weight, grad_bias;     // [M, D], [N, D], [N] (or [0])
  at::Tensor grad_log_keep, grad_log_prior;           // [M] (or [0])
};

// The transition mixture's two per-row log-weights, both given or both absent.
struct Mixture {
  const std::optional<at::Tensor>& log_keep;   // [M] log of the model's weight, log(1 - w)
  const std::optional<at::Tensor>& log_prior;  // [M] log(w q_target), -inf without a prior
};

// torch.logaddexp's value: log(e^x + e^y), x where x == y is infinite.
template <typename scalar_t>
scalar_t log_add_exp(scalar_t x, scalar_t y) {
  if (x == y && std::isinf(x)) {
    return x;
  }
  const scalar_t high = std::max(x, y);
  return high + std::log1p(std::exp(-std::abs(x - y)));
}

void check_arguments(const at::Tensor& hidden, const at::Tensor& weight,
                     const std::optional<at::Tensor>& bias, const at::Tensor& targets,
                     const Mixture& mixture, int64_t ignore_index, double label_smoothing,
                     int64_t chunk_rows) {
  item_scoring::check_inputs(hidden, weight, bias);
  const int64_t rows = hidden.size(0), items = weight.size(0);
  TORCH_CHECK_VALUE(targets.dim() == 1 && targets.size(0) == rows &&
                        targets.scalar_type() == at::kLong && targets.device().is_cpu(),
                    "targets must be a CPU int64 tensor of shape [M] = [", rows, "], got ",
                    targets.scalar_type(), " ", targets.sizes());
  const at::Tensor counted = targets != ignore_index;
  TORCH_CHECK_VALUE(!(counted & ((targets < 0) | (targets >= items))).any().item<bool>(),
                    "targets must be item ids in [0, N = ", items, ") or ignore_index (",
                    ignore_index, ")");
  TORCH_CHECK_VALUE(label_smoothing >= 0.0 && label_smoothing <= 1.0,
                    "label_smoothing must be in [0, 1], got ", label_smoothing);
  TORCH_CHECK_VALUE(chunk_rows >= 1, "chunk_rows must be >= 1, got ", chunk_rows);
  TORCH_CHECK_VALUE(mixture.log_keep.has_value() == mixture.log_prior.has_value(),
                    "log_keep and log_prior go together (the transition mixture)");
  if (mixture.log_keep.has_value()) {
    for (const at::Tensor& x : {*mixture.log_keep, *mixture.log_prior}) {
      TORCH_CHECK_VALUE(x.dim() == 1 && x.size(0) == rows && x.device().is_cpu() &&
                            x.scalar_type() == accumulate_type(hidden.scalar_type()),
                        "log_keep and log_prior must be CPU tensors of shape [M] = [", rows,
                        "] in ", accumulate_type(hidden.scalar_type()), ", got ",
                        x.scalar_type(), " ", x.sizes());
    }
    TORCH_CHECK_VALUE(label_smoothing == 0.0,
                      "label_smoothing must be 0 with the transition mixture");
  }
}

// The pass described at the top. row_weights [M] (accumulation dtype) or undefined: no gradient.
template <typename scalar_t>
CrossEntropy cross_entropy_pass(const at::Tensor& hidden, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, const at::Tensor& targets,
                                const Mixture& mixture, const at::Tensor& row_weights,
                                int64_t ignore_index, double label_smoothing,
                                int64_t chunk_rows) {
  const auto accumulate = accumulate_type(hidden.scalar_type());
  const at::Tensor rows = hidden.to(accumulate).contiguous();     // [M, D]
  const at::Tensor items = weight.to(accumulate).contiguous();    // [N, D]
  const int64_t num_rows = rows.size(0), num_items = items.size(0), dim = rows.size(1);
  const bool with_grad = row_weights.defined();
  const at::Tensor target_ids = targets.contiguous();
  const int64_t* target = target_ids.data_ptr<int64_t>();
  const scalar_t* row_weight = with_grad ? row_weights.data_ptr<scalar_t>() : nullptr;
  const bool mixed = mixture.log_keep.has_value();
  const at::Tensor keep_values = mixed ? mixture.log_keep->contiguous() : at::Tensor();
  const at::Tensor prior_values = mixed ? mixture.log_prior->contiguous() : at::Tensor();
  const scalar_t* log_keep = mixed ? keep_values.data_ptr<scalar_t>() : nullptr;
  const scalar_t* log_prior = mixed ? prior_values.data_ptr<scalar_t>() : nullptr;
  const scalar_t eps = static_cast<scalar_t>(label_smoothing);
  const scalar_t inverse_items = scalar_t(1) / static_cast<scalar_t>(num_items);

  CrossEntropy out;
  out.losses = at::zeros({num_rows}, rows.options());
  scalar_t* loss = out.losses.data_ptr<scalar_t>();
  out.grad_hidden = with_grad ? at::zeros({num_rows, dim}, rows.options()) : rows.new_empty({0});
  out.grad_weight = with_grad ? at::zeros({num_items, dim}, rows.options()) : rows.new_empty({0});
  out.grad_bias = with_grad && bias.has_value() ? at::zeros({num_items}, rows.options())
                                                : rows.new_empty({0});
  out.grad_log_keep = with_grad && mixed ? at::zeros({num_rows}, rows.options())
                                         : rows.new_empty({0});
  out.grad_log_prior = with_grad && mixed ? at::zeros({num_rows}, rows.options())
                                          : rows.new_empty({0});
  scalar_t* grad_keep = with_grad && mixed ? out.grad_log_keep.data_ptr<scalar_t>() : nullptr;
  scalar_t* grad_prior = with_grad && mixed ? out.grad_log_prior.data_ptr<scalar_t>() : nullptr;
  std::vector<scalar_t> weight_of_row(num_rows);  // w, times pi with the mixture
  const std::optional<at::Tensor> item_bias =
      bias.has_value() ? std::optional<at::Tensor>(bias->to(accumulate)) : std::nullopt;
  const int64_t chunk = std::max<int64_t>(1, std::min(chunk_rows, num_rows));
  at::Tensor buffer = at::empty({num_rows == 0 ? 0 : chunk, num_items}, rows.options());
  const at::Tensor ones = at::ones({chunk}, rows.options());
  const int64_t block = item_scoring::block_rows(num_items, sizeof(scalar_t));

  for (int64_t start = 0; start < num_rows; start += chunk) {
    const int64_t count = std::min(chunk, num_rows - start);
    at::Tensor scores = buffer.narrow(0, 0, count);               // [R, N]
    const at::Tensor chunk_hidden = rows.narrow(0, start, count);  // [R, D]
    if (item_bias.has_value()) {
      at::addmm_out(scores, *item_bias, chunk_hidden, items.t());
    } else {
      at::mm_out(scores, chunk_hidden, items.t());
    }
    const int64_t blocks = (count + block - 1) / block;
    at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
      for (int64_t b = first; b < last; ++b) {
        const int64_t begin = b * block, size = std::min(block, count - begin);
        at::Tensor view = scores.narrow(0, begin, size);  // [r, N], contiguous
        scalar_t* data = view.data_ptr<scalar_t>();
        at::Tensor row_sum = label_smoothing > 0 ? view.sum(1) : at::Tensor();  // [r]
        at::Tensor row_max = view.amax(1);                                      // NaN wins
        std::vector<scalar_t> target_score(size);
        for (int64_t i = 0; i < size; ++i) {
          const int64_t t = target[start + begin + i];
          target_score[i] = t == ignore_index ? scalar_t(0) : data[i * num_items + t];
        }
        view.sub_(row_max.unsqueeze(1)).exp_();
        const at::Tensor exp_sum = view.sum(1);
        const scalar_t* maximum = row_max.data_ptr<scalar_t>();
        const scalar_t* total = exp_sum.data_ptr<scalar_t>();
        at::Tensor factor = at::empty({size}, rows.options());   // w / sum
        at::Tensor offset = at::empty({size}, rows.options());   // w eps / N
        scalar_t* factor_data = factor.data_ptr<scalar_t>();
        scalar_t* offset_data = offset.data_ptr<scalar_t>();
        for (int64_t i = 0; i < size; ++i) {
          const int64_t row = start + begin + i;
          const bool counted = target[row] != ignore_index;
          const scalar_t lse = maximum[i] + std::log(total[i]);
          scalar_t w = with_grad && counted ? row_weight[row] : scalar_t(0);
          if (counted) {
            loss[row] = (scalar_t(1) - eps) * (lse - target_score[i]);
            if (label_smoothing > 0) {
              const scalar_t mean = row_sum.data_ptr<scalar_t>()[i] * inverse_items;
              loss[row] += eps * (lse - mean);
            }
            if (mixed) {
              const scalar_t model = log_keep[row] - loss[row];  // log((1 - w) p_target)
              loss[row] = -log_add_exp(model, log_prior[row]);
              const scalar_t share = std::exp(model + loss[row]);  // pi
              if (with_grad) {
                grad_keep[row] = -share * w;
                grad_prior[row] = -std::exp(log_prior[row] + loss[row]) * w;
              }
              w *= share;
            }
          }
          weight_of_row[row] = w;
          factor_data[i] = w / total[i];
          offset_data[i] = w * eps * inverse_items;
        }
        if (!with_grad) {
          continue;
        }
        view.mul_(factor.unsqueeze(1));
        if (label_smoothing > 0) {
          view.sub_(offset.unsqueeze(1));
        }
        for (int64_t i = 0; i < size; ++i) {
          const int64_t row = start + begin + i;
          if (target[row] != ignore_index) {
            data[i * num_items + target[row]] -= weight_of_row[row] * (scalar_t(1) - eps);
          }
        }
      }
    });
    if (!with_grad) {
      continue;
    }
    at::Tensor chunk_grad_hidden = out.grad_hidden.narrow(0, start, count);  // [R, D]
    at::mm_out(chunk_grad_hidden, scores, items);
    out.grad_weight.addmm_(scores.t(), chunk_hidden);
    if (item_bias.has_value()) {
      out.grad_bias.addmv_(scores.t(), ones.narrow(0, 0, count));
    }
  }
  return out;
}

CrossEntropy run(const at::Tensor& hidden, const at::Tensor& weight,
                 const std::optional<at::Tensor>& bias, const at::Tensor& targets,
                 const Mixture& mixture, const at::Tensor& row_weights, int64_t ignore_index,
                 double label_smoothing, int64_t chunk_rows) {
  if (accumulate_type(hidden.scalar_type()) == at::kDouble) {
    return cross_entropy_pass<double>(hidden, weight, bias, targets, mixture, row_weights,
                                      ignore_index, label_smoothing, chunk_rows);
  }
  return cross_entropy_pass<float>(hidden, weight, bias, targets, mixture, row_weights,
                                   ignore_index, label_smoothing, chunk_rows);
}

}  // namespace

using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Outputs item_cross_entropy_cpu(const at::Tensor& hidden, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, const at::Tensor& targets,
                               const std::optional<at::Tensor>& log_keep,
                               const std::optional<at::Tensor>& log_prior, int64_t ignore_index,
                               double label_smoothing, int64_t chunk_rows, bool compute_grad) {
  const Mixture mixture{log_keep, log_prior};
  check_arguments(hidden, weight, bias, targets, mixture, ignore_index, label_smoothing,
                  chunk_rows);
  const auto accumulate = accumulate_type(hidden.scalar_type());
  const at::Tensor unit = compute_grad
                              ? at::ones({hidden.size(0)}, hidden.options().dtype(accumulate))
                              : at::Tensor();
  CrossEntropy out = run(hidden, weight, bias, targets, mixture, unit, ignore_index,
                         label_smoothing, chunk_rows);
  return {out.losses,      out.grad_hidden,   out.grad_weight,
          out.grad_bias,   out.grad_log_keep, out.grad_log_prior};
}

// Gradients of sum_m grad[m] loss[m]: the stored ones (those of sum_m loss[m]) scaled when grad
// is one finite value on every counted row, else the pass again with row weights grad.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
item_cross_entropy_backward_cpu(const at::Tensor& grad, const at::Tensor& hidden,
                                const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                const at::Tensor& targets,
                                const std::optional<at::Tensor>& log_keep,
                                const std::optional<at::Tensor>& log_prior,
                                const at::Tensor& grad_hidden, const at::Tensor& grad_weight,
                                const at::Tensor& grad_bias, const at::Tensor& grad_log_keep,
                                const at::Tensor& grad_log_prior, int64_t ignore_index,
                                double label_smoothing, int64_t chunk_rows) {
  const Mixture mixture{log_keep, log_prior};
  check_arguments(hidden, weight, bias, targets, mixture, ignore_index, label_smoothing,
                  chunk_rows);
  const int64_t num_rows = hidden.size(0), num_items = weight.size(0), dim = hidden.size(1);
  TORCH_CHECK_VALUE(grad.dim() == 1 && grad.size(0) == num_rows,
                    "grad must have shape [M] = [", num_rows, "], got ", grad.sizes());
  const auto accumulate = accumulate_type(hidden.scalar_type());
  const at::Tensor counted = targets != ignore_index;
  const at::Tensor weights = at::where(counted, grad.to(accumulate), 0.0).contiguous();  // [M]
  const at::Tensor counted_grad = weights.masked_select(counted);
  const bool uniform = counted_grad.numel() == 0 ||
                       (counted_grad.isfinite().all().item<bool>() &&
                        (counted_grad.amax() == counted_grad.amin()).item<bool>());
  const auto matches = [&](const at::Tensor& x, at::IntArrayRef shape) {
    return x.scalar_type() == accumulate && x.device().is_cpu() && x.sizes() == shape;
  };
  const bool mixed = log_keep.has_value();
  const bool stored = matches(grad_hidden, {num_rows, dim}) &&
                      matches(grad_weight, {num_items, dim}) &&
                      (!bias.has_value() || matches(grad_bias, {num_items})) &&
                      (!mixed || (matches(grad_log_keep, {num_rows}) &&
                                  matches(grad_log_prior, {num_rows})));
  CrossEntropy out;
  if (uniform && stored) {
    const double scale = counted_grad.numel() ? counted_grad[0].item<double>() : 0.0;
    out.grad_hidden = grad_hidden * weights.unsqueeze(1);
    out.grad_weight = grad_weight * scale;
    out.grad_bias = grad_bias * scale;
    out.grad_log_keep = mixed ? grad_log_keep * weights : grad_log_keep.clone();
    out.grad_log_prior = mixed ? grad_log_prior * weights : grad_log_prior.clone();
  } else {
    out = run(hidden, weight, bias, targets, mixture, weights, ignore_index, label_smoothing,
              chunk_rows);
  }
  const auto bias_type = bias.has_value() ? bias->scalar_type() : weight.scalar_type();
  return {out.grad_hidden.to(hidden.scalar_type()), out.grad_weight.to(weight.scalar_type()),
          bias.has_value() ? out.grad_bias.to(bias_type)
                           : at::zeros({num_items}, weight.options().dtype(bias_type)),
          out.grad_log_keep, out.grad_log_prior};
}

}  // namespace stseq

// log_keep, log_prior: the transition mixture's [M] log-weights (both or neither); chunk_rows:
// rows per chunk ([chunk_rows, N] scores at once); compute_grad: also return the gradients of
// the losses' sum in hidden, weight, bias, log_keep, log_prior (else empty [0] tensors; [0]
// also for bias and the mixture's when they are absent).
TORCH_LIBRARY_FRAGMENT(stseq, m) {
  m.def(
      "item_cross_entropy(Tensor hidden, Tensor weight, Tensor? bias, Tensor targets, "
      "Tensor? log_keep, Tensor? log_prior, int ignore_index, float label_smoothing, "
      "int chunk_rows, bool compute_grad) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "item_cross_entropy_backward(Tensor grad, Tensor hidden, Tensor weight, Tensor? bias, "
      "Tensor targets, Tensor? log_keep, Tensor? log_prior, Tensor grad_hidden, "
      "Tensor grad_weight, Tensor grad_bias, Tensor grad_log_keep, Tensor grad_log_prior, "
      "int ignore_index, float label_smoothing, int chunk_rows) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(stseq, CPU, m) {
  m.impl("item_cross_entropy", &stseq::item_cross_entropy_cpu);
  m.impl("item_cross_entropy_backward", &stseq::item_cross_entropy_backward_cpu);
}
