// How many LSTM forward calls in this process took the split of hidden units across threads
// (rnn_cpu_split.h). That path's results equal the one-thread path's bitwise, so this count is
// how tests know it ran: stseq._C._lstm_split_forward_calls() (csrc/bindings.cpp). No ATen here:
// bindings.cpp includes it.
#pragma once

#include <atomic>
#include <cstdint>

namespace stseq {
namespace rnn {

inline std::atomic<int64_t>& lstm_split_forward_calls() {
  static std::atomic<int64_t> count{0};
  return count;
}

}  // namespace rnn
}  // namespace stseq
