// The rows that run at each step of a recurrent layer, shared by every cell's plan
// (rnn/rnn_args.h, time_rnn/time_rnn_plan.h) and the CPU tiles (common/cpu_tiles.h). With the
// batch rows sorted by length, longest first, the rows that run at step s are a prefix:
// active[s] = #{b : length_b > s} (a PackedSequence's batch_sizes), and each row's length is
// #{s : active[s] > b}.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace stseq {

// [steps] active[s] from lengths [batch], non-increasing and each in [0, steps].
inline std::vector<int64_t> active_rows(const int64_t* lengths, int64_t batch, int64_t steps) {
  std::vector<int64_t> active(steps, 0);
  int64_t rows = batch;
  for (int64_t s = 0; s < steps; ++s) {
    while (rows > 0 && lengths[rows - 1] <= s) --rows;
    active[s] = rows;
  }
  return active;
}

// [batch] the steps of each row from active [S], non-increasing (rows past active[0]: 0).
inline std::vector<int64_t> row_lengths(const std::vector<int64_t>& active, int64_t batch) {
  std::vector<int64_t> lengths(batch, 0);
  for (size_t s = 0; s < active.size(); ++s) {
    const int64_t rows = std::min(active[s], batch);
    for (int64_t b = 0; b < rows; ++b) lengths[b] = static_cast<int64_t>(s) + 1;
  }
  return lengths;
}

}  // namespace stseq
