// Tiles of batch rows for the CPU time loops of every recurrent cell (the LSTM/GRU loops of
// rnn/rnn_cpu_launcher.h and the time-aware cells' loop of time_rnn/time_rnn_cpu_launcher.h):
// one thread carries one tile through every step on its own, so no thread waits for another
// inside the time loop (rows are independent). cut_tiles() gives up to one tile per thread, cut
// where the running sum of the rows' steps crosses equal shares of the total (rows sorted by
// length do unequal work), each tile at least `min_rows` rows so that its small GEMMs stay
// efficient; for_each_tile() runs them in one parallel region.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/active_rows.h"

namespace stseq {

// Batch rows [begin, end) that one thread carries through every step.
struct CpuTile {
  int64_t begin;
  int64_t end;
};

// active [S]: rows [0, active[s]) run at step s (so row b runs #{s : active[s] > b} steps).
inline std::vector<CpuTile> cut_tiles(const std::vector<int64_t>& active, int64_t min_rows) {
  std::vector<CpuTile> tiles;
  if (active.empty() || active[0] == 0) return tiles;
  const int64_t rows = active[0];  // the rows with at least one step
  const int64_t count = std::clamp<int64_t>(rows / min_rows, 1, at::get_num_threads());
  const std::vector<int64_t> work = row_lengths(active, rows);  // [rows] steps of row b
  int64_t total = 0;
  for (int64_t w : work) total += w;
  int64_t begin = 0, done = 0;
  for (int64_t b = 0; b < rows; ++b) {
    done += work[b];
    const int64_t next = static_cast<int64_t>(tiles.size()) + 1;
    if (next < count && done * count >= total * next && b + 1 - begin >= min_rows) {
      tiles.push_back({begin, b + 1});
      begin = b + 1;
    }
  }
  tiles.push_back({begin, rows});
  return tiles;
}

// fn(tile) for every tile, one thread per tile, each thread running under the caller's
// thread-local state (grad mode, inference mode, the dispatcher's autograd exclusion) for the
// ATen calls it makes.
template <typename F>
void for_each_tile(const std::vector<CpuTile>& tiles, const F& fn) {
  const at::ThreadLocalState state;
  at::parallel_for(0, static_cast<int64_t>(tiles.size()), 1, [&](int64_t first, int64_t last) {
    const at::ThreadLocalStateGuard guard(state);
    for (int64_t t = first; t < last; ++t) fn(tiles[t]);
  });
}

}  // namespace stseq
