// Argument checks shared by every op's host code. Each names the argument in its message; they
// guard memory safety of the kernels (the Python layer adds the data checks with row/position).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

namespace stseq {

inline void check_rank(const at::Tensor& t, int64_t rank, const char* name, const char* shape) {
  TORCH_CHECK_VALUE(t.dim() == rank, name, " must have shape ", shape, ", got ", t.sizes());
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* name,
                              const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name,
                    " is on ", ref.device(), "; move them to one device");
}

// `lengths` as a contiguous int64 [B] tensor on the device of `like`, or an undefined tensor.
inline at::Tensor lengths_or_undefined(const std::optional<at::Tensor>& lengths, int64_t batch,
                                       const at::Tensor& like) {
  if (!lengths.has_value()) return at::Tensor();
  const at::Tensor& len = *lengths;
  check_rank(len, 1, "lengths", "[B]");
  TORCH_CHECK_VALUE(len.size(0) == batch, "lengths must have B=", batch, " entries, got ",
                    len.size(0));
  TORCH_CHECK_VALUE(!at::isFloatingType(len.scalar_type()) && !at::isComplexType(len.scalar_type()),
                    "lengths must be an integer tensor, got ", len.scalar_type());
  check_same_device(len, like, "lengths", "timestamps");
  return len.to(at::kLong).contiguous();
}

}  // namespace stseq
