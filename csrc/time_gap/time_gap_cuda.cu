// CUDA kernels of stseq::time_gap_embedding. Semantics: time_gap_cpu.cpp; per-element math:
// time_gap.h (the same bucketize / haversine_km / valid_lags as the CPU, in float64).
//
// Forward: one warp per position i = b * L + t, 8 warps per block. Lane l buckets lag
// k = first + l of the current chunk of 32 lags (the time gap, and the haversine distance when
// there is a distance table); the warp then walks the chunk lag by lag: the lag's table rows and
// weights are broadcast with __shfl_sync and every lane blends its columns d = lane, lane + 32,
// ... into registers (kCols in {1, 2, 4, 8} per lane: up to 256 columns per pass, wider D loops
// over column tiles). out[i, d] = acc / n is written coalesced; positions with n = 0 get zeros.
//
// Backward, deterministic and without floating-point atomics, once per table (time, distance):
//   1. entry e = i * W + (k - 1) (position i, lag k; E = B * L * W) gets key = its table row lo
//      and the coefficients c_lo = (1 - w_hi) / n of row lo and c_hi = w_hi / n of row lo + 1;
//      invalid lags get key = rows, a sentinel that sorts after every row;
//   2. a stable sort of the keys groups the entries by row (perm maps sorted -> entry) and a
//      searchsorted gives row r the sorted range offsets[r] .. offsets[r + 1];
//   3. grad_table[r, d] = sum over row r's entries of c_lo * grad[i, d] + sum over row r - 1's
//      entries (same lag table) of c_hi * grad[i, d]. Each range is cut into four fixed quarters,
//      one per warp, and the four partial sums are added in a fixed order, so the result is
//      bitwise the same on every run.
// Temporaries are O(B * L * W) (keys, perm, coefficients); nothing of size B * L * W * D.
//
// Both first check the values as the CPU does (lengths in range, time_gap::timestamp_fault):
// one thread per (row, slot), the smallest faulty slot by an integer atomicMin, read back with
// one synchronisation (skipped while a CUDA graph is captured), then described on the host.

#include "time_gap/time_gap_cuda.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "time_gap/time_gap_args.h"

namespace stseq {
namespace {

using time_gap::BucketWeight;
using time_gap::Problem;
using time_gap::TableSpec;

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kForwardWarps = 8;  // positions per forward block
constexpr int kForwardThreads = kForwardWarps * kWarpSize;
constexpr int kEntryThreads = 256;
constexpr int kReduceWarps = 4;  // warps sharing one table row in the backward reduction
constexpr int64_t kMaxGridX = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxGridY = 65535;

// Blocks covering `work` items at `per_block` per block, capped at `limit` (kernels grid-stride).
unsigned grid_blocks(int64_t work, int64_t per_block, int64_t limit) {
  return static_cast<unsigned>(std::min((work + per_block - 1) / per_block, limit));
}

// The rows of the batch: how many lags position i = b * L + t averages.
struct Windows {
  const int64_t* lengths;  // [B] or nullptr (every row has L events)
  int64_t seq_len;         // L
  int64_t window;          // W

  __device__ int64_t valid_lags(int64_t i) const {
    const int64_t b = i / seq_len;
    const int64_t t = i % seq_len;
    int64_t length = seq_len;
    if (lengths != nullptr) {
      const int64_t given = lengths[b];
      length = given < 0 ? 0 : (given > seq_len ? seq_len : given);
    }
    return time_gap::valid_lags(t, length, window);
  }
};

// Gap in time units between position i and its lag k, the difference taken in the timestamps'
// own type (exact for int64).
template <typename ts_t>
struct TimeGap {
  const ts_t* timestamps;  // [B, L]
  double time_unit;

  __device__ double operator()(int64_t i, int64_t k) const {
    return static_cast<double>(timestamps[i] - timestamps[i - k]) / time_unit;
  }
};

// Great-circle distance in km between the events at position i and at its lag k.
struct DistanceGap {
  const double* coordinates;  // [B, L, 2] (latitude, longitude in degrees)

  __device__ double operator()(int64_t i, int64_t k) const {
    const double* here = coordinates + 2 * i;
    const double* there = coordinates + 2 * (i - k);
    return time_gap::haversine_km(there[0], there[1], here[0], here[1]);
  }
};

// A gap measure and the table its buckets index.
template <typename Gap>
struct GapTable {
  Gap gap;
  TableSpec spec;

  __device__ BucketWeight bucket(int64_t i, int64_t k) const {
    return time_gap::bucketize(gap(i, k), spec.buckets);
  }
};

// ---------------------------------------------------------------------------------------------
// Forward

// What one lag adds: w_lo * table[row] + w_hi * table[row + 1], the second row only when
// `blend` (w_hi != 0 in float64, as on the CPU; row + 1 may be past the lag's table otherwise).
template <typename acc_t>
struct LagRow {
  int64_t row;
  acc_t w_lo;
  acc_t w_hi;
  bool blend;
};

template <typename acc_t, typename Gap>
__device__ LagRow<acc_t> lag_row(const GapTable<Gap>& table, int64_t i, int64_t k) {
  const BucketWeight bw = table.bucket(i, k);
  return {table.spec.lag_offset(k) + bw.lo, static_cast<acc_t>(1.0 - bw.w_hi),
          static_cast<acc_t>(bw.w_hi), bw.w_hi != 0.0};
}

// Lane `src_lane`'s LagRow, for the whole warp.
template <typename acc_t>
__device__ LagRow<acc_t> broadcast(const LagRow<acc_t>& mine, int src_lane) {
  const long long row = __shfl_sync(kFullMask, static_cast<long long>(mine.row), src_lane);
  return {static_cast<int64_t>(row), __shfl_sync(kFullMask, mine.w_lo, src_lane),
          __shfl_sync(kFullMask, mine.w_hi, src_lane),
          __shfl_sync(kFullMask, static_cast<int>(mine.blend), src_lane) != 0};
}

// acc[c] += the lag's blended row at column col + c * 32, for the columns < dim.
template <int kCols, typename scalar_t, typename acc_t>
__device__ void add_lag_row(acc_t (&acc)[kCols], const scalar_t* table, const LagRow<acc_t>& lag,
                            int64_t dim, int64_t col) {
  const scalar_t* lo = table + lag.row * dim;  // [D]
  const scalar_t* hi = lo + dim;               // [D], read only when lag.blend
#pragma unroll
  for (int c = 0; c < kCols; ++c) {
    const int64_t d = col + c * kWarpSize;
    if (d < dim) {
      acc[c] += lag.blend ? lag.w_lo * static_cast<acc_t>(lo[d]) +
                                lag.w_hi * static_cast<acc_t>(hi[d])
                          : static_cast<acc_t>(lo[d]);
    }
  }
}

template <typename ts_t, typename scalar_t>
struct ForwardParams {
  Windows windows;
  int64_t positions;  // B * L
  int64_t dim;        // D
  GapTable<TimeGap<ts_t>> time;
  const scalar_t* time_weight;  // [W * NB or NB, D]
  GapTable<DistanceGap> distance;
  const scalar_t* distance_weight;  // [W * NB' or NB', D], nullptr without a distance term
};

// out_row[col + c * 32] for c < kCols: the mean over the n >= 1 valid lags of position i. The
// whole warp calls it (lane-dependent col = tile start + lane).
template <int kCols, typename ts_t, typename scalar_t>
__device__ void forward_tile(const ForwardParams<ts_t, scalar_t>& p, int64_t i, int64_t n,
                             int64_t col, scalar_t* out_row) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const bool has_distance = p.distance_weight != nullptr;
  acc_t acc[kCols] = {};
  for (int64_t first = 1; first <= n; first += kWarpSize) {
    const int64_t k = first + lane;
    LagRow<acc_t> time_mine{};
    LagRow<acc_t> distance_mine{};
    if (k <= n) {
      time_mine = lag_row<acc_t>(p.time, i, k);
      if (has_distance) distance_mine = lag_row<acc_t>(p.distance, i, k);
    }
    const int chunk = static_cast<int>(n - first + 1 < kWarpSize ? n - first + 1 : kWarpSize);
    for (int j = 0; j < chunk; ++j) {
      add_lag_row(acc, p.time_weight, broadcast(time_mine, j), p.dim, col);
      if (has_distance) {
        add_lag_row(acc, p.distance_weight, broadcast(distance_mine, j), p.dim, col);
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kCols; ++c) {
    const int64_t d = col + c * kWarpSize;
    if (d < p.dim) out_row[d] = static_cast<scalar_t>(acc[c] / static_cast<acc_t>(n));
  }
}

template <int kCols, typename ts_t, typename scalar_t>
__global__ void __launch_bounds__(kForwardThreads)
    forward_kernel(ForwardParams<ts_t, scalar_t> p, scalar_t* out /* [B, L, D] */) {
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const int64_t warps_in_grid = static_cast<int64_t>(gridDim.x) * kForwardWarps;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kForwardWarps + threadIdx.x / kWarpSize;
       i < p.positions; i += warps_in_grid) {
    scalar_t* out_row = out + i * p.dim;  // [D]
    const int64_t n = p.windows.valid_lags(i);
    if (n == 0) {
      for (int64_t d = lane; d < p.dim; d += kWarpSize) out_row[d] = scalar_t(0);
      continue;
    }
    for (int64_t tile = 0; tile < p.dim; tile += kCols * kWarpSize) {
      forward_tile<kCols>(p, i, n, tile + lane, out_row);
    }
  }
}

template <int kCols, typename ts_t, typename scalar_t>
void launch_forward_kernel(const ForwardParams<ts_t, scalar_t>& p, scalar_t* out) {
  const unsigned blocks = grid_blocks(p.positions, kForwardWarps, kMaxGridX);
  forward_kernel<kCols><<<blocks, kForwardThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(p, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Columns per lane: the fewest of 1, 2, 4, 8 that cover D (8, in tiles of 256, beyond).
template <typename ts_t, typename scalar_t>
void launch_forward(const ForwardParams<ts_t, scalar_t>& p, scalar_t* out) {
  if (p.dim <= 1 * kWarpSize) return launch_forward_kernel<1>(p, out);
  if (p.dim <= 2 * kWarpSize) return launch_forward_kernel<2>(p, out);
  if (p.dim <= 4 * kWarpSize) return launch_forward_kernel<4>(p, out);
  launch_forward_kernel<8>(p, out);
}

// ---------------------------------------------------------------------------------------------
// Backward

// keys[e], c_lo[e], c_hi[e] of entry e = i * W + (k - 1); see the file comment.
template <typename acc_t, typename Gap>
__global__ void entries_kernel(Windows windows, int64_t entries, GapTable<Gap> table, int64_t rows,
                               int64_t* keys /* [E] */, acc_t* c_lo /* [E] */,
                               acc_t* c_hi /* [E] */) {
  const int64_t threads_in_grid = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < entries;
       e += threads_in_grid) {
    const int64_t i = e / windows.window;
    const int64_t k = e % windows.window + 1;
    const int64_t n = windows.valid_lags(i);
    if (k > n) {
      keys[e] = rows;
      c_lo[e] = acc_t(0);
      c_hi[e] = acc_t(0);
      continue;
    }
    const BucketWeight bw = table.bucket(i, k);
    keys[e] = table.spec.lag_offset(k) + bw.lo;
    c_lo[e] = static_cast<acc_t>((1.0 - bw.w_hi) / static_cast<double>(n));
    c_hi[e] = static_cast<acc_t>(bw.w_hi / static_cast<double>(n));
  }
}

// Sum of coeff[e] * grad[e / W, d] over quarter `quarter` of the sorted range [begin, end)
// (e = perm[j]), in sorted order. Zero coefficients are skipped, as on the CPU.
template <typename scalar_t, typename acc_t>
__device__ acc_t quarter_sum(const int64_t* perm, const acc_t* coeff, const scalar_t* grad,
                             int64_t begin, int64_t end, int quarter, int64_t window, int64_t dim,
                             int64_t d) {
  const int64_t size = end - begin;
  const int64_t first = begin + size * quarter / kReduceWarps;
  const int64_t last = begin + size * (quarter + 1) / kReduceWarps;
  acc_t sum = acc_t(0);
  for (int64_t j = first; j < last; ++j) {
    const int64_t e = perm[j];
    const acc_t c = coeff[e];
    if (c != acc_t(0)) sum += c * static_cast<acc_t>(grad[e / window * dim + d]);
  }
  return sum;
}

template <typename scalar_t, typename acc_t>
struct ReduceParams {
  const int64_t* offsets;  // [rows + 1]: row r's entries are sorted positions offsets[r] ..
  const int64_t* perm;     // [E]: sorted position -> entry
  const acc_t* c_lo;       // [E]
  const acc_t* c_hi;       // [E]
  const scalar_t* grad;    // [B, L, D]
  int64_t rows;
  int64_t buckets;         // NB: rows per lag table (a multiple of it starts a new lag)
  bool interpolate;
  int64_t window;          // W
  int64_t dim;             // D
};

// grad_table[r, d], block (32, 4) per (row, 32 columns); every row is written (0 if no entry).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kWarpSize * kReduceWarps)
    reduce_rows_kernel(ReduceParams<scalar_t, acc_t> p, scalar_t* grad_table /* [rows, D] */) {
  __shared__ acc_t partials[kReduceWarps][kWarpSize];
  const int lane = static_cast<int>(threadIdx.x);
  const int warp = static_cast<int>(threadIdx.y);
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const bool has_lower_row = p.interpolate && r % p.buckets != 0;
    for (int64_t col = static_cast<int64_t>(blockIdx.y) * kWarpSize; col < p.dim;
         col += static_cast<int64_t>(gridDim.y) * kWarpSize) {
      const int64_t d = col + lane;
      acc_t partial = acc_t(0);
      if (d < p.dim) {
        partial = quarter_sum(p.perm, p.c_lo, p.grad, p.offsets[r], p.offsets[r + 1], warp,
                              p.window, p.dim, d);
        if (has_lower_row) {
          partial += quarter_sum(p.perm, p.c_hi, p.grad, p.offsets[r - 1], p.offsets[r], warp,
                                 p.window, p.dim, d);
        }
      }
      partials[warp][lane] = partial;
      __syncthreads();
      if (warp == 0 && d < p.dim) {
        acc_t total = partials[0][lane];
        for (int w = 1; w < kReduceWarps; ++w) total += partials[w][lane];
        grad_table[r * p.dim + d] = static_cast<scalar_t>(total);
      }
      __syncthreads();
    }
  }
}

// Writes every element of grad_table (contiguous, [rows, D] viewed flat) for one table.
template <typename scalar_t, typename Gap>
void table_gradient(const Windows& windows, int64_t positions, const GapTable<Gap>& table,
                    const at::Tensor& grad /* [B, L, D] */, const at::Tensor& grad_table) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t dim = grad.size(-1);
  const int64_t buckets = table.spec.buckets.num_buckets;
  const int64_t rows = table.spec.lag_specific ? windows.window * buckets : buckets;
  const int64_t entries = positions * windows.window;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::TensorOptions index_options = grad.options().dtype(at::kLong);
  const at::TensorOptions coeff_options =
      grad.options().dtype(c10::CppTypeToScalarType<acc_t>::value);

  const at::Tensor keys = at::empty({entries}, index_options);  // [E]
  const at::Tensor c_lo = at::empty({entries}, coeff_options);  // [E]
  const at::Tensor c_hi = at::empty({entries}, coeff_options);  // [E]
  entries_kernel<acc_t><<<grid_blocks(entries, kEntryThreads, kMaxGridX), kEntryThreads, 0,
                          stream>>>(windows, entries, table, rows, keys.data_ptr<int64_t>(),
                                    c_lo.data_ptr<acc_t>(), c_hi.data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // sorted_keys [E], perm [E]; offsets [rows + 1]
  const auto [sorted_keys, perm] = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor offsets = at::searchsorted(sorted_keys, at::arange(rows + 1, index_options));

  const ReduceParams<scalar_t, acc_t> params{
      offsets.data_ptr<int64_t>(), perm.data_ptr<int64_t>(), c_lo.data_ptr<acc_t>(),
      c_hi.data_ptr<acc_t>(), grad.data_ptr<scalar_t>(), rows, buckets,
      table.spec.buckets.interpolate, windows.window, dim};
  const dim3 blocks(grid_blocks(rows, 1, kMaxGridX), grid_blocks(dim, kWarpSize, kMaxGridY));
  const dim3 threads(kWarpSize, kReduceWarps);
  reduce_rows_kernel<<<blocks, threads, 0, stream>>>(params, grad_table.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---------------------------------------------------------------------------------------------
// Data checks

// Slot b * (L + 1) checks lengths[b], slot b * (L + 1) + 1 + t position t of row b (row-major,
// as the CPU scans); *first_fault becomes the smallest faulty slot.
template <typename ts_t>
__global__ void find_fault_kernel(const ts_t* timestamps /* [B, L] */,
                                  const int64_t* lengths /* [B] or nullptr */, int64_t batch,
                                  int64_t seq_len, unsigned long long* first_fault) {
  const int64_t slots = batch * (seq_len + 1);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; s < slots;
       s += stride) {
    const int64_t b = s / (seq_len + 1);
    const int64_t t = s % (seq_len + 1) - 1;
    const int64_t given = lengths != nullptr ? lengths[b] : seq_len;
    bool fault = given < 0 || given > seq_len;
    if (t >= 0) {
      const ts_t* row = timestamps + b * seq_len;
      fault = t < min(max(given, int64_t{0}), seq_len) &&
              time_gap::timestamp_fault(row[t], row[t > 0 ? t - 1 : 0], row[0], t > 0) !=
                  time_gap::TimestampFault::kNone;
    }
    if (fault) atomicMin(first_fault, static_cast<unsigned long long>(s));
  }
}

// Raises the ValueError of the first row (then position) whose length or timestamp is bad.
template <typename ts_t>
void check_values(const at::Tensor& ts /* [B, L] */, const at::Tensor& len /* [B] or undefined */) {
  const int64_t batch = ts.size(0), seq_len = ts.size(1);
  if (batch == 0 || c10::cuda::currentStreamCaptureStatusMayInitCtx() !=
                        c10::cuda::CaptureStatus::None) {
    return;
  }
  constexpr int64_t kNoFault = std::numeric_limits<int64_t>::max();
  const at::Tensor first_fault = at::full({1}, kNoFault, ts.options().dtype(at::kLong));
  const int64_t slots = batch * (seq_len + 1);
  find_fault_kernel<ts_t><<<grid_blocks(slots, kEntryThreads, kMaxGridX), kEntryThreads, 0,
                            c10::cuda::getCurrentCUDAStream()>>>(
      ts.data_ptr<ts_t>(), len.defined() ? len.data_ptr<int64_t>() : nullptr, batch, seq_len,
      reinterpret_cast<unsigned long long*>(first_fault.data_ptr<int64_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t slot = first_fault.item<int64_t>();
  if (slot == kNoFault) return;
  const int64_t b = slot / (seq_len + 1), t = slot % (seq_len + 1) - 1;
  if (t < 0) time_gap::raise_length_fault(b, len[b].item<int64_t>(), seq_len);
  const at::Tensor row = ts[b].cpu();  // [L]
  const ts_t* values = row.data_ptr<ts_t>();
  const ts_t previous = values[t > 0 ? t - 1 : 0];
  time_gap::raise_timestamp_fault(
      time_gap::timestamp_fault(values[t], previous, values[0], t > 0), b, t, values[t],
      previous, values[0]);
}

// ---------------------------------------------------------------------------------------------
// Host helpers

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_cuda(), name, " must be a CUDA tensor, got one on ", t.device());
}

void check_cuda_inputs(const at::Tensor& timestamps, const at::Tensor& time_weight,
                       const std::optional<at::Tensor>& lengths,
                       const std::optional<at::Tensor>& coordinates,
                       const std::optional<at::Tensor>& distance_weight) {
  check_cuda(timestamps, "timestamps");
  check_cuda(time_weight, "time_weight");
  if (lengths.has_value()) check_cuda(*lengths, "lengths");
  if (coordinates.has_value()) check_cuda(*coordinates, "coordinates");
  if (distance_weight.has_value()) check_cuda(*distance_weight, "distance_weight");
}

void check_cuda_dtype(const at::Tensor& weight) {
  const at::ScalarType type = weight.scalar_type();
  TORCH_CHECK_VALUE(type == at::kFloat || type == at::kDouble || type == at::kHalf ||
                        type == at::kBFloat16,
                    "time_weight must be float32, float64, float16 or bfloat16 on CUDA, got ",
                    type);
}

template <typename F>
void dispatch_timestamps(const at::Tensor& timestamps, F&& body) {
  if (timestamps.scalar_type() == at::kLong) {
    body(int64_t{});
  } else {
    body(double{});
  }
}

Windows windows_of(const Problem& p, const at::Tensor& len) {
  return {len.defined() ? len.data_ptr<int64_t>() : nullptr, p.seq_len, p.window};
}

template <typename ts_t>
GapTable<TimeGap<ts_t>> time_table(const Problem& p, const at::Tensor& ts) {
  return {{ts.data_ptr<ts_t>(), p.time_unit}, p.time};
}

GapTable<DistanceGap> distance_table(const Problem& p, const at::Tensor& coords) {
  return {{coords.defined() ? coords.data_ptr<double>() : nullptr}, p.distance};
}

}  // namespace

at::Tensor time_gap_embedding_cuda(const at::Tensor& timestamps, const at::Tensor& time_weight,
                                 const std::optional<at::Tensor>& lengths,
                                 const std::optional<at::Tensor>& coordinates,
                                 const std::optional<at::Tensor>& distance_weight, int64_t window,
                                 double time_unit, double time_scale, double distance_scale,
                                 std::string_view bucketing, bool interpolate) {
  check_cuda_inputs(timestamps, time_weight, lengths, coordinates, distance_weight);
  const Problem p = time_gap::check_args(timestamps, time_weight, coordinates, distance_weight,
                                         window, time_unit, time_scale, distance_scale,
                                         bucketing, interpolate);
  check_cuda_dtype(time_weight);
  const c10::cuda::CUDAGuard device_guard(timestamps.device());
  const at::Tensor ts = timestamps.contiguous();                              // [B, L]
  const at::Tensor len = lengths_or_undefined(lengths, p.batch, timestamps);  // [B]
  const at::Tensor coords = time_gap::coordinates_as_double(coordinates);     // [B, L, 2]
  const at::Tensor tw = time_weight.contiguous();  // [W, NB, D] or [NB, D]
  const at::Tensor dw = p.has_distance ? distance_weight->contiguous() : at::Tensor();  // same
  at::Tensor out = at::empty({p.batch, p.seq_len, p.dim}, time_weight.options());  // [B, L, D]
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tw.scalar_type(),
                                  "time_gap_embedding_cuda", [&] {
    dispatch_timestamps(ts, [&](auto ts_tag) {
      using ts_t = decltype(ts_tag);
      check_values<ts_t>(ts, len);
      const ForwardParams<ts_t, scalar_t> params{
          windows_of(p, len), p.batch * p.seq_len, p.dim, time_table<ts_t>(p, ts),
          tw.data_ptr<scalar_t>(), distance_table(p, coords),
          dw.defined() ? dw.data_ptr<scalar_t>() : nullptr};
      launch_forward(params, out.data_ptr<scalar_t>());
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> time_gap_embedding_backward_cuda(
    const at::Tensor& grad, const at::Tensor& timestamps, const at::Tensor& time_weight,
    const std::optional<at::Tensor>& lengths, const std::optional<at::Tensor>& coordinates,
    const std::optional<at::Tensor>& distance_weight, int64_t window, double time_unit,
    double time_scale, double distance_scale, std::string_view bucketing, bool interpolate) {
  check_cuda(grad, "grad");
  check_cuda_inputs(timestamps, time_weight, lengths, coordinates, distance_weight);
  const Problem p = time_gap::check_args(timestamps, time_weight, coordinates, distance_weight,
                                         window, time_unit, time_scale, distance_scale,
                                         bucketing, interpolate);
  check_cuda_dtype(time_weight);
  time_gap::check_grad(grad, p);
  check_same_device(grad, timestamps, "grad", "timestamps");
  const c10::cuda::CUDAGuard device_guard(timestamps.device());
  const at::Tensor ts = timestamps.contiguous();                              // [B, L]
  const at::Tensor len = lengths_or_undefined(lengths, p.batch, timestamps);  // [B]
  const at::Tensor coords = time_gap::coordinates_as_double(coordinates);     // [B, L, 2]
  const at::Tensor g = grad.to(time_weight.scalar_type()).contiguous();       // [B, L, D]
  if (g.numel() == 0) {
    return {at::zeros_like(time_weight, at::MemoryFormat::Contiguous),
            p.has_distance ? at::zeros_like(*distance_weight, at::MemoryFormat::Contiguous)
                           : at::empty({0}, time_weight.options())};
  }
  // Like the tables; every element is written by the reduction.
  const at::Tensor grad_time = at::empty_like(time_weight, at::MemoryFormat::Contiguous);
  const at::Tensor grad_distance =
      p.has_distance ? at::empty_like(*distance_weight, at::MemoryFormat::Contiguous)
                     : at::empty({0}, time_weight.options());
  const Windows windows = windows_of(p, len);
  const int64_t positions = p.batch * p.seq_len;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, time_weight.scalar_type(),
                                  "time_gap_embedding_backward_cuda", [&] {
    dispatch_timestamps(ts, [&](auto ts_tag) {
      using ts_t = decltype(ts_tag);
      check_values<ts_t>(ts, len);
      table_gradient<scalar_t>(windows, positions, time_table<ts_t>(p, ts), g, grad_time);
    });
    if (p.has_distance) {
      table_gradient<scalar_t>(windows, positions, distance_table(p, coords), g, grad_distance);
    }
  });
  return {grad_time, grad_distance};
}

}  // namespace stseq

TORCH_LIBRARY_IMPL(stseq, CUDA, m) {
  m.impl("time_gap_embedding", &stseq::time_gap_embedding_cuda);
  m.impl("time_gap_embedding_backward", &stseq::time_gap_embedding_backward_cuda);
}
