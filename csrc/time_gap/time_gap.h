// Windowed spatio-temporal gap embedding: the per-element math shared by the CPU and CUDA
// kernels. Host and device compile the same functions, so both backends bucket identically.
//
// For position t of a row and lag k (1..W, t - k >= 0):
//   gap  = (ts[t] - ts[t-k]) / time_unit                      (time units, >= 0)
//   pos  = scale * log1p(gap)   (log bucketing)  or  scale * gap  (linear bucketing)
//   lo   = floor(pos) clipped to [0, NB-1];  w_hi = pos - lo when interpolating (0 otherwise)
//   row  = (1 - w_hi) * table[k][lo] + w_hi * table[k][lo + 1]
// The distance term does the same with the haversine distance (km) between the two events.
// timestamp_fault: the data check of each timestamp, the same on both backends.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace stseq {
namespace time_gap {

enum class Bucketing : int { kLog = 0, kLinear = 1 };

// How a non-negative gap (time units or kilometres) maps to a fractional bucket position.
struct BucketSpec {
  double scale;          // bucket position per unit of log1p(gap) or of gap
  int64_t num_buckets;   // NB: rows of the table (per lag when the table is lag-specific)
  Bucketing bucketing;
  bool interpolate;      // blend the two neighbouring buckets by the fractional position
};

// The table row a gap falls in and the weight of the next row up (0 unless interpolating).
struct BucketWeight {
  int64_t lo;     // in [0, NB-1]
  double w_hi;    // in [0, 1); the weight of row lo is 1 - w_hi, of row lo + 1 is w_hi
};

STSEQ_HOST_DEVICE inline BucketWeight bucketize(double gap, const BucketSpec& spec) {
  const double value = spec.bucketing == Bucketing::kLog ? log1p(gap) : gap;
  const double pos = spec.scale * value;
  // `!(pos > 0)` also catches NaN: never index outside the table whatever the input.
  if (!(pos > 0.0)) return {0, 0.0};
  const double last = static_cast<double>(spec.num_buckets - 1);
  if (pos >= last) return {spec.num_buckets - 1, 0.0};
  const double lo = floor(pos);
  return {static_cast<int64_t>(lo), spec.interpolate ? pos - lo : 0.0};
}

// Great-circle distance in kilometres between two points given in degrees (haversine formula on
// a sphere of the mean Earth radius).
STSEQ_HOST_DEVICE inline double haversine_km(double lat1, double lon1, double lat2, double lon2) {
  constexpr double kEarthRadiusKm = 6371.0088;
  constexpr double kRadiansPerDegree = 0.017453292519943295;
  const double sin_dlat = sin(0.5 * (lat2 - lat1) * kRadiansPerDegree);
  const double sin_dlon = sin(0.5 * (lon2 - lon1) * kRadiansPerDegree);
  double a = sin_dlat * sin_dlat +
             cos(lat1 * kRadiansPerDegree) * cos(lat2 * kRadiansPerDegree) * sin_dlon * sin_dlon;
  a = a < 0.0 ? 0.0 : (a > 1.0 ? 1.0 : a);
  return 2.0 * kEarthRadiusKm * asin(sqrt(a));
}

// What is wrong with the timestamp `value` of a row, if anything (`previous`: the one before it,
// when `has_previous`; `first`: the row's first). float64 must be finite and within +-2^53 s,
// where it still resolves one second; int64 may be at most 2^63 - 1 s after the row's first
// event, so that every gap of the row fits in int64; both never decrease.
enum class TimestampFault : int { kNone, kNonFinite, kOutOfRange, kDecreasing, kSpanOverflow };

STSEQ_HOST_DEVICE inline TimestampFault timestamp_fault(double value, double previous,
                                                        double /*first*/, bool has_previous) {
  constexpr double kFloat64Seconds = 9007199254740992.0;  // 2^53
  const double magnitude = fabs(value);
  if (!(magnitude < HUGE_VAL)) return TimestampFault::kNonFinite;  // NaN or +-inf
  if (magnitude > kFloat64Seconds) return TimestampFault::kOutOfRange;
  if (has_previous && value < previous) return TimestampFault::kDecreasing;
  return TimestampFault::kNone;
}

STSEQ_HOST_DEVICE inline TimestampFault timestamp_fault(int64_t value, int64_t previous,
                                                        int64_t first, bool has_previous) {
  constexpr int64_t kInt64Max = 9223372036854775807LL;
  if (has_previous && value < previous) return TimestampFault::kDecreasing;
  // value - first > kInt64Max <=> first < value - kInt64Max, computable for value >= 0; for
  // value < 0 the gap to any first <= value is at most value - INT64_MIN <= kInt64Max.
  if (value >= 0 && first < value - kInt64Max) return TimestampFault::kSpanOverflow;
  return TimestampFault::kNone;
}

// Number of lags averaged at position t of a row with `length` valid events: 0 for padding and
// for the first event (nothing earlier), else min(window, t).
STSEQ_HOST_DEVICE inline int64_t valid_lags(int64_t t, int64_t length, int64_t window) {
  if (t >= length) return 0;
  return t < window ? t : window;
}

}  // namespace time_gap
}  // namespace stseq
