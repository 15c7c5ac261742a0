// Host-side argument handling of time_gap_embedding, shared by the CPU and CUDA entry points:
// shape/dtype/device checks (every index a kernel forms stays inside its tensor), the messages
// of the data checks (lengths in range, timestamp_fault; worded as stseq/ops/checks.py words
// them) and the problem description the kernels read.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string_view>

#include "common/checks.h"
#include "time_gap/time_gap.h"

namespace stseq {
namespace time_gap {

// One embedding table: lag-specific [W, NB, D] or shared by all lags [NB, D].
struct TableSpec {
  BucketSpec buckets;
  bool lag_specific;

  // First row of the table for lag k (1-based) in the table viewed as [rows, D].
  STSEQ_HOST_DEVICE int64_t lag_offset(int64_t k) const {
    return lag_specific ? (k - 1) * buckets.num_buckets : 0;
  }
};

struct Problem {
  int64_t batch;       // B
  int64_t seq_len;     // L
  int64_t window;      // W
  int64_t dim;         // D
  double time_unit;    // seconds per time unit
  TableSpec time;
  bool has_distance;
  TableSpec distance;  // meaningful when has_distance
};

inline Bucketing parse_bucketing(std::string_view name) {
  if (name == "log") return Bucketing::kLog;
  if (name == "linear") return Bucketing::kLinear;
  TORCH_CHECK_VALUE(false, "bucketing must be 'log' or 'linear', got '", std::string(name), "'");
}

inline TableSpec check_table(const at::Tensor& weight, const char* name, int64_t window,
                             int64_t dim, const at::Tensor& timestamps, double scale,
                             Bucketing bucketing, bool interpolate) {
  TORCH_CHECK_VALUE(weight.dim() == 2 || weight.dim() == 3, name,
                    " must have shape [W, NB, D] (one table per lag) or [NB, D] (shared), got ",
                    weight.sizes());
  check_same_device(weight, timestamps, name, "timestamps");
  TORCH_CHECK_VALUE(at::isFloatingType(weight.scalar_type()), name,
                    " must be a floating-point tensor, got ", weight.scalar_type());
  const bool lag_specific = weight.dim() == 3;
  if (lag_specific) {
    TORCH_CHECK_VALUE(weight.size(0) == window, name, " has ", weight.size(0),
                      " lag tables but window=", window);
  }
  TORCH_CHECK_VALUE(weight.size(-1) == dim, name, " has embedding size ", weight.size(-1),
                    " but time_weight has ", dim);
  const int64_t num_buckets = weight.size(-2);
  TORCH_CHECK_VALUE(num_buckets >= 1, name, " needs at least one bucket");
  TORCH_CHECK_VALUE(std::isfinite(scale) && scale > 0, "the bucket scale for ", name,
                    " must be finite and > 0, got ", scale);
  return {{scale, num_buckets, bucketing, interpolate}, lag_specific};
}

inline Problem check_args(const at::Tensor& timestamps, const at::Tensor& time_weight,
                          const std::optional<at::Tensor>& coordinates,
                          const std::optional<at::Tensor>& distance_weight, int64_t window,
                          double time_unit, double time_scale, double distance_scale,
                          std::string_view bucketing, bool interpolate) {
  check_rank(timestamps, 2, "timestamps", "[B, L]");
  TORCH_CHECK_VALUE(timestamps.scalar_type() == at::kLong || timestamps.scalar_type() == at::kDouble,
                    "timestamps must be int64 (seconds) or float64, got ", timestamps.scalar_type());
  TORCH_CHECK_VALUE(window >= 1, "window must be >= 1, got ", window);
  TORCH_CHECK_VALUE(std::isfinite(time_unit) && time_unit > 0,
                    "time_unit must be finite and > 0 seconds, got ", time_unit);
  const Bucketing mode = parse_bucketing(bucketing);
  Problem p{};
  p.batch = timestamps.size(0);
  p.seq_len = timestamps.size(1);
  p.window = window;
  p.dim = time_weight.size(-1);
  p.time_unit = time_unit;
  p.time = check_table(time_weight, "time_weight", window, p.dim, timestamps, time_scale, mode,
                       interpolate);
  TORCH_CHECK_VALUE(coordinates.has_value() == distance_weight.has_value(),
                    "coordinates and distance_weight go together: pass both or neither");
  p.has_distance = coordinates.has_value();
  if (p.has_distance) {
    const at::Tensor& coords = *coordinates;
    check_rank(coords, 3, "coordinates", "[B, L, 2] (latitude, longitude in degrees)");
    TORCH_CHECK_VALUE(coords.size(0) == p.batch && coords.size(1) == p.seq_len && coords.size(2) == 2,
                      "coordinates must have shape [B, L, 2] = [", p.batch, ", ", p.seq_len,
                      ", 2], got ", coords.sizes());
    TORCH_CHECK_VALUE(at::isFloatingType(coords.scalar_type()),
                      "coordinates must be a floating-point tensor (degrees), got ",
                      coords.scalar_type());
    check_same_device(coords, timestamps, "coordinates", "timestamps");
    TORCH_CHECK_VALUE(distance_weight->scalar_type() == time_weight.scalar_type(),
                      "distance_weight must have the dtype of time_weight (",
                      time_weight.scalar_type(), "), got ", distance_weight->scalar_type());
    p.distance = check_table(*distance_weight, "distance_weight", window, p.dim, timestamps,
                             distance_scale, mode, interpolate);
  }
  return p;
}

inline void raise_length_fault(int64_t row, int64_t length, int64_t seq_len) {
  TORCH_CHECK_VALUE(false, "lengths must be in [0, L=", seq_len, "]; lengths[", row, "] = ",
                    length);
}

// The ValueError of the fault timestamp_fault found at (row, position).
template <typename ts_t>
void raise_timestamp_fault(TimestampFault fault, int64_t row, int64_t position, ts_t value,
                           ts_t previous, ts_t first) {
  switch (fault) {
    case TimestampFault::kNone:
      return;
    case TimestampFault::kNonFinite:
      TORCH_CHECK_VALUE(false, "timestamps must be finite; row ", row, " has ", value,
                        " at position ", position);
    case TimestampFault::kOutOfRange:
      TORCH_CHECK_VALUE(false, "timestamps must be within +-2^53 s, where float64 still "
                        "resolves one second; row ", row, ", position ", position, " has ",
                        value, " (pass int64 seconds)");
    case TimestampFault::kDecreasing:
      TORCH_CHECK_VALUE(false, "timestamps must be non-decreasing within each sequence; row ",
                        row, " decreases at position ", position, " (", previous, " -> ",
                        value, ")");
    case TimestampFault::kSpanOverflow:
      TORCH_CHECK_VALUE(false, "timestamps must span at most 2^63 - 1 s within a sequence "
                        "(their gaps are int64); row ", row, ", position ", position, " has ",
                        value, ", more than that after the sequence's first event ", first);
  }
}

// The upstream gradient of the forward's [B, L, D] output.
inline void check_grad(const at::Tensor& grad, const Problem& p) {
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef({p.batch, p.seq_len, p.dim}),
                    "grad must have shape [B, L, D] = [", p.batch, ", ", p.seq_len, ", ", p.dim,
                    "], got ", grad.sizes());
}

// Coordinates as contiguous float64 [B, L, 2] (haversine runs in float64), or undefined.
inline at::Tensor coordinates_as_double(const std::optional<at::Tensor>& coordinates) {
  return coordinates.has_value() ? coordinates->to(at::kDouble).contiguous() : at::Tensor();
}

}  // namespace time_gap
}  // namespace stseq
