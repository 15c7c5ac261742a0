// CPU kernels of stseq::time_gap_embedding: forward parallel over the batch, backward parallel
// over embedding columns so that every table gradient is summed in one fixed order
// (bitwise reproducible whatever the thread count). No [B, L, W, D] intermediate. Both first
// check the values (lengths in range, time_gap::timestamp_fault), as the Python layer does.
#include "time_gap/time_gap_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "time_gap/time_gap_args.h"

namespace stseq {
namespace {

using time_gap::BucketWeight;
using time_gap::Problem;
using time_gap::TableSpec;

// Raw pointers of one call; coordinates are float64 [B, L, 2] when present.
template <typename ts_t>
struct Inputs {
  const ts_t* timestamps;    // [B, L]
  const int64_t* lengths;    // [B] or nullptr (every row has L events)
  const double* coordinates; // [B, L, 2] or nullptr

  int64_t length(int64_t b, int64_t seq_len) const {
    return lengths ? std::clamp<int64_t>(lengths[b], 0, seq_len) : seq_len;
  }
};

// Raises the ValueError of the first row (then position) whose length or timestamp is bad.
template <typename ts_t>
void check_values(const Inputs<ts_t>& in, int64_t batch, int64_t seq_len) {
  for (int64_t b = 0; b < batch; ++b) {
    if (in.lengths != nullptr && (in.lengths[b] < 0 || in.lengths[b] > seq_len)) {
      time_gap::raise_length_fault(b, in.lengths[b], seq_len);
    }
    const ts_t* row = in.timestamps + b * seq_len;  // [L]
    const int64_t length = in.length(b, seq_len);
    for (int64_t t = 0; t < length; ++t) {
      const ts_t previous = row[t > 0 ? t - 1 : 0];
      time_gap::raise_timestamp_fault(time_gap::timestamp_fault(row[t], previous, row[0], t > 0),
                                      b, t, row[t], previous, row[0]);
    }
  }
}

template <typename ts_t>
BucketWeight time_bucket(const Inputs<ts_t>& in, const Problem& p, int64_t i, int64_t k) {
  // i = b * L + t; the difference is taken in the timestamps' own type (exact for int64).
  const double gap = static_cast<double>(in.timestamps[i] - in.timestamps[i - k]) / p.time_unit;
  return time_gap::bucketize(gap, p.time.buckets);
}

template <typename ts_t>
BucketWeight distance_bucket(const Inputs<ts_t>& in, const Problem& p, int64_t i, int64_t k) {
  const double* here = in.coordinates + 2 * i;
  const double* there = in.coordinates + 2 * (i - k);
  return time_gap::bucketize(time_gap::haversine_km(there[0], there[1], here[0], here[1]),
                             p.distance.buckets);
}

// acc[0:D] += (1 - w_hi) * table[row] + w_hi * table[row + 1]
template <typename scalar_t, typename acc_t>
void add_row(acc_t* acc, const scalar_t* table, int64_t row, double w_hi, int64_t dim) {
  const scalar_t* lo = table + row * dim;
  if (w_hi == 0.0) {
    for (int64_t d = 0; d < dim; ++d) acc[d] += static_cast<acc_t>(lo[d]);
    return;
  }
  const acc_t w = static_cast<acc_t>(w_hi);
  const acc_t w_lo = static_cast<acc_t>(1.0 - w_hi);
  const scalar_t* hi = lo + dim;
  for (int64_t d = 0; d < dim; ++d) {
    acc[d] += w_lo * static_cast<acc_t>(lo[d]) + w * static_cast<acc_t>(hi[d]);
  }
}

template <typename ts_t, typename scalar_t>
void forward_kernel(const Inputs<ts_t>& in, const Problem& p, const scalar_t* time_weight,
                    const scalar_t* distance_weight, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t L = p.seq_len, D = p.dim;
  at::parallel_for(0, p.batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(D);  // [D]
    for (int64_t b = begin; b < end; ++b) {
      const int64_t length = in.length(b, L);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = b * L + t;
        scalar_t* out_row = out + i * D;  // [D]
        const int64_t n = time_gap::valid_lags(t, length, p.window);
        if (n == 0) {
          std::fill(out_row, out_row + D, scalar_t(0));
          continue;
        }
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t k = 1; k <= n; ++k) {
          const BucketWeight tb = time_bucket(in, p, i, k);
          add_row(acc.data(), time_weight, p.time.lag_offset(k) + tb.lo, tb.w_hi, D);
          if (p.has_distance) {
            const BucketWeight db = distance_bucket(in, p, i, k);
            add_row(acc.data(), distance_weight, p.distance.lag_offset(k) + db.lo, db.w_hi, D);
          }
        }
        for (int64_t d = 0; d < D; ++d) out_row[d] = static_cast<scalar_t>(acc[d] / acc_t(n));
      }
    }
  });
}

// One (position, lag) contribution to a table gradient: grad[row] += c_lo * g[position],
// grad[row + 1] += c_hi * g[position]. row < 0 marks a slot with no contribution.
template <typename acc_t>
struct Contribution {
  int64_t row;
  acc_t c_lo;
  acc_t c_hi;
};

// Slot (b * L + t) * W + (k - 1) holds the contribution of position t, lag k to one table.
template <typename ts_t, typename acc_t, typename BucketFn>
std::vector<Contribution<acc_t>> contributions(const Inputs<ts_t>& in, const Problem& p,
                                               const TableSpec& table, BucketFn bucket) {
  const int64_t L = p.seq_len, W = p.window;
  std::vector<Contribution<acc_t>> slots(p.batch * L * W, Contribution<acc_t>{-1, 0, 0});
  at::parallel_for(0, p.batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t length = in.length(b, L);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = b * L + t;
        const int64_t n = time_gap::valid_lags(t, length, W);
        for (int64_t k = 1; k <= n; ++k) {
          const BucketWeight bw = bucket(in, p, i, k);
          slots[i * W + k - 1] = {table.lag_offset(k) + bw.lo,
                                  static_cast<acc_t>((1.0 - bw.w_hi) / n),
                                  static_cast<acc_t>(bw.w_hi / n)};
        }
      }
    }
  });
  return slots;
}

// grad_table[rows, D] from the slots; each thread owns a range of columns and walks every slot
// in order, so each element is summed in the same order on every run.
template <typename scalar_t, typename acc_t>
void scatter_contributions(const std::vector<Contribution<acc_t>>& slots, const scalar_t* grad,
                           int64_t window, int64_t dim, scalar_t* grad_table) {
  at::parallel_for(0, dim, 16, [&](int64_t d0, int64_t d1) {
    for (size_t s = 0; s < slots.size(); ++s) {
      const Contribution<acc_t>& c = slots[s];
      if (c.row < 0) continue;
      const scalar_t* g = grad + static_cast<int64_t>(s) / window * dim;  // [D] of position
      scalar_t* lo = grad_table + c.row * dim;
      for (int64_t d = d0; d < d1; ++d) lo[d] += static_cast<scalar_t>(c.c_lo * g[d]);
      if (c.c_hi != acc_t(0)) {
        scalar_t* hi = lo + dim;
        for (int64_t d = d0; d < d1; ++d) hi[d] += static_cast<scalar_t>(c.c_hi * g[d]);
      }
    }
  });
}

template <typename F>
void dispatch_timestamps(const at::Tensor& timestamps, F&& body) {
  if (timestamps.scalar_type() == at::kLong) {
    body(int64_t{});
  } else {
    body(double{});
  }
}

void check_cpu_dtype(const at::Tensor& weight) {
  TORCH_CHECK_VALUE(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble,
                    "time_weight must be float32 or float64 on CPU (float16 and bfloat16 tables "
                    "run on CUDA), got ", weight.scalar_type());
}

}  // namespace

at::Tensor time_gap_embedding_cpu(const at::Tensor& timestamps, const at::Tensor& time_weight,
                                  const std::optional<at::Tensor>& lengths,
                                  const std::optional<at::Tensor>& coordinates,
                                  const std::optional<at::Tensor>& distance_weight,
                                  int64_t window, double time_unit, double time_scale,
                                  double distance_scale, std::string_view bucketing,
                                  bool interpolate) {
  const Problem p = time_gap::check_args(timestamps, time_weight, coordinates, distance_weight,
                                         window, time_unit, time_scale, distance_scale,
                                         bucketing, interpolate);
  check_cpu_dtype(time_weight);
  const at::Tensor ts = timestamps.contiguous();
  const at::Tensor len = lengths_or_undefined(lengths, p.batch, timestamps);
  const at::Tensor coords = time_gap::coordinates_as_double(coordinates);
  const at::Tensor tw = time_weight.contiguous();
  const at::Tensor dw = p.has_distance ? distance_weight->contiguous() : at::Tensor();
  at::Tensor out = at::empty({p.batch, p.seq_len, p.dim}, time_weight.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(tw.scalar_type(), "time_gap_embedding_cpu", [&] {
    dispatch_timestamps(ts, [&](auto ts_tag) {
      using ts_t = decltype(ts_tag);
      const Inputs<ts_t> in{ts.data_ptr<ts_t>(), len.defined() ? len.data_ptr<int64_t>() : nullptr,
                            coords.defined() ? coords.data_ptr<double>() : nullptr};
      check_values(in, p.batch, p.seq_len);
      forward_kernel<ts_t, scalar_t>(in, p, tw.data_ptr<scalar_t>(),
                                     dw.defined() ? dw.data_ptr<scalar_t>() : nullptr,
                                     out.data_ptr<scalar_t>());
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> time_gap_embedding_backward_cpu(
    const at::Tensor& grad, const at::Tensor& timestamps, const at::Tensor& time_weight,
    const std::optional<at::Tensor>& lengths, const std::optional<at::Tensor>& coordinates,
    const std::optional<at::Tensor>& distance_weight, int64_t window, double time_unit,
    double time_scale, double distance_scale, std::string_view bucketing, bool interpolate) {
  const Problem p = time_gap::check_args(timestamps, time_weight, coordinates, distance_weight,
                                         window, time_unit, time_scale, distance_scale,
                                         bucketing, interpolate);
  check_cpu_dtype(time_weight);
  time_gap::check_grad(grad, p);
  const at::Tensor ts = timestamps.contiguous();
  const at::Tensor len = lengths_or_undefined(lengths, p.batch, timestamps);
  const at::Tensor coords = time_gap::coordinates_as_double(coordinates);
  const at::Tensor g = grad.to(time_weight.scalar_type()).contiguous();
  at::Tensor grad_time = at::zeros_like(time_weight, at::MemoryFormat::Contiguous);
  at::Tensor grad_distance = p.has_distance
                                 ? at::zeros_like(*distance_weight, at::MemoryFormat::Contiguous)
                                 : at::empty({0}, time_weight.options());
  if (g.numel() == 0) return {grad_time, grad_distance};
  AT_DISPATCH_FLOATING_TYPES(time_weight.scalar_type(), "time_gap_embedding_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_timestamps(ts, [&](auto ts_tag) {
      using ts_t = decltype(ts_tag);
      const Inputs<ts_t> in{ts.data_ptr<ts_t>(), len.defined() ? len.data_ptr<int64_t>() : nullptr,
                            coords.defined() ? coords.data_ptr<double>() : nullptr};
      check_values(in, p.batch, p.seq_len);
      const auto time_slots = contributions<ts_t, acc_t>(in, p, p.time, time_bucket<ts_t>);
      scatter_contributions(time_slots, g.data_ptr<scalar_t>(), p.window, p.dim,
                            grad_time.data_ptr<scalar_t>());
      if (p.has_distance) {
        const auto distance_slots =
            contributions<ts_t, acc_t>(in, p, p.distance, distance_bucket<ts_t>);
        scatter_contributions(distance_slots, g.data_ptr<scalar_t>(), p.window, p.dim,
                              grad_distance.data_ptr<scalar_t>());
      }
    });
  });
  return {grad_time, grad_distance};
}

}  // namespace stseq

// The op family's schemas and CPU impls (CUDA impls: time_gap_cuda.cu).
TORCH_LIBRARY_FRAGMENT(stseq, m) {
  m.def(
      "time_gap_embedding(Tensor timestamps, Tensor time_weight, Tensor? lengths, "
      "Tensor? coordinates, Tensor? distance_weight, int window, float time_unit, "
      "float time_scale, float distance_scale, str bucketing, bool interpolate) -> Tensor");
  m.def(
      "time_gap_embedding_backward(Tensor grad, Tensor timestamps, Tensor time_weight, "
      "Tensor? lengths, Tensor? coordinates, Tensor? distance_weight, int window, "
      "float time_unit, float time_scale, float distance_scale, str bucketing, "
      "bool interpolate) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(stseq, CPU, m) {
  m.impl("time_gap_embedding", &stseq::time_gap_embedding_cpu);
  m.impl("time_gap_embedding_backward", &stseq::time_gap_embedding_backward_cpu);
}
