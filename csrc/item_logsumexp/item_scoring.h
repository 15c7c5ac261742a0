// Shared by the item-scoring CPU kernels (item_logsumexp_cpu.cpp, item_cross_entropy_cpu.cpp):
// the accumulation dtype, the element-wise block size and the checks of hidden [M, D], weight [N, D] and bias [N].
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <optional>

namespace stseq {
namespace item_scoring {

// float64 inputs accumulate in float64, every other floating dtype in float32.
inline at::ScalarType accumulate_type(at::ScalarType type) {
  return type == at::kDouble ? at::kDouble : at::kFloat;
}

// Rows of one element-wise block of a [rows, columns] score buffer: about 1 MiB, so that the
// passes over it (max, exp, sum, scaling) stay in L2; at least one row.
inline int64_t block_rows(int64_t columns, int64_t element_size) {
  return std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, columns * element_size));
}

inline void check_inputs(const at::Tensor& hidden, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(hidden.dim() == 2, "hidden must have shape [M, D], got ", hidden.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(1) == hidden.size(1),
                    "weight must have shape [N, D] with D = ", hidden.size(1), ", got ",
                    weight.sizes());
  TORCH_CHECK_VALUE(weight.size(0) >= 1, "weight needs at least one item (N >= 1)");
  TORCH_CHECK_VALUE(hidden.is_floating_point() && weight.scalar_type() == hidden.scalar_type(),
                    "hidden and weight must share one floating dtype, got ",
                    hidden.scalar_type(), " and ", weight.scalar_type());
  TORCH_CHECK_VALUE(hidden.device().is_cpu() && weight.device().is_cpu(),
                    "hidden and weight must be CPU tensors here");
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.size(0),
                      "bias must have shape [N] = [", weight.size(0), "], got ", bias->sizes());
    TORCH_CHECK_VALUE(bias->scalar_type() == hidden.scalar_type() && bias->device().is_cpu(),
                      "bias must be a CPU tensor of hidden's dtype ", hidden.scalar_type());
  }
}

}  // namespace item_scoring
}  // namespace stseq
