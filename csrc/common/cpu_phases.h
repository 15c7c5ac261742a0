// Work in phases shared by the calling thread and helper threads, with no thread owning a fixed
// share: the LSTM forward's split of the hidden units at small batches (rnn/rnn_cpu_split.h),
// where each step is a phase whose items (chunks of units) need every item of the step before.
//
// A thread claims an item only once the item's phase is open (every item of the phases before
// it has finished), so a claimed item is being computed, never waiting: a thread descheduled
// before its claim owns nothing and the others go on without it; the call waits only for items
// that were claimed. The calling thread claims a phase's items from the first, the helpers from
// the last: with both running, each thread computes the same items step after step (the LSTM's
// chunks of weights stay in that core's L2: claimed in any order, every core read all of them
// each step, and H = 256, B = 8 ran slower than on one thread), and either takes over the
// other's items when that one falls behind.
// The helpers come from ATen's inter-op pool (at::launch), not from a parallel region: an
// OpenMP region ends in a barrier that waits for every thread of the team, and with one core
// kept busy by another process a thread that had not even started stalled the call for a time
// slice (issue 17: 4-row tiles of the batch, 8 ms against torch.nn's 1.9 ms). A helper that
// starts after the call returned finds every item claimed and touches only the shared counters,
// which it keeps alive; it never sees the call's memory.
#pragma once

#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#endif

namespace stseq {

namespace phases_detail {

inline void pause() {
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// A waiting thread spins (pausing) for up to kSpinTime before it yields its core on every
// further try (the calling thread) or leaves (a helper): a step's wait is at most a chunk's time
// (under 20 microseconds at B = 16, H = 256), a descheduled peer's a time slice (milliseconds).
constexpr std::chrono::microseconds kSpinTime{50};

class Wait {
 public:
  // Pauses and returns true while the wait is within kSpinTime, else returns false.
  bool spin() {
    if (spins_++ % 64 == 0) {  // the clock every 64 pauses (a few microseconds)
      const auto now = std::chrono::steady_clock::now();
      if (spins_ == 1) start_ = now;
      if (now - start_ > kSpinTime) return false;
    }
    pause();
    return true;
  }

  void spin_or_yield() {
    if (!spin()) std::this_thread::yield();
  }

 private:
  int64_t spins_ = 0;
  std::chrono::steady_clock::time_point start_;
};

struct State {
  explicit State(const std::vector<int64_t>& counts)
      : items(counts), taken(new std::atomic<uint64_t>[counts.size()]) {
    for (size_t p = 0; p < counts.size(); ++p) {
      taken[p].store(0, std::memory_order_relaxed);
      total += counts[p];
    }
  }

  std::vector<int64_t> items;                     // [phases] items of each phase
  std::unique_ptr<std::atomic<uint64_t>[]> taken;  // [phases] claims from the first << 32 | last
  int64_t total = 0;
  std::atomic<int64_t> finished{0};               // items finished, over all phases
  void (*run)(const void* item, int64_t phase, int64_t index) = nullptr;
  const void* item = nullptr;                     // valid while a claimed item has not finished

  bool all_taken(size_t p) const {
    const uint64_t t = taken[p].load(std::memory_order_relaxed);
    return static_cast<int64_t>((t >> 32) + (t & 0xffffffffu)) >= items[p];
  }

  // The index of an unclaimed item of phase p, now claimed (the lowest one with `first`, else
  // the highest), or -1 when none is left.
  int64_t claim(size_t p, bool first) {
    uint64_t t = taken[p].load(std::memory_order_relaxed);
    for (;;) {
      const int64_t front = static_cast<int64_t>(t >> 32), back = t & 0xffffffffu;
      if (front + back >= items[p]) return -1;
      const uint64_t next = first ? t + (uint64_t{1} << 32) : t + 1;
      if (taken[p].compare_exchange_weak(t, next, std::memory_order_acq_rel,
                                         std::memory_order_relaxed)) {
        return first ? front : items[p] - 1 - back;
      }
    }
  }
};

// Runs the items this thread claims, phase after phase, until every item is claimed. A helper
// leaves early when it falls behind: when a phase keeps it waiting past the spin bound, or when
// a phase it came to after joining was already taken by the others. On a busy machine a helper
// that shares its core then stops competing for it; the calling thread finishes alone.
inline void work(State& state, bool helper) {
  bool joined = false;
  int64_t open = 0;  // the items of the phases before p
  for (size_t p = 0; p < state.items.size(); open += state.items[p], ++p) {
    Wait wait;
    while (state.finished.load(std::memory_order_acquire) < open) {  // the phase before runs
      if (state.all_taken(p)) break;
      if (!helper) {
        wait.spin_or_yield();
      } else if (!wait.spin()) {
        return;
      }
    }
    bool claimed = false;
    for (int64_t i; (i = state.claim(p, !helper)) >= 0; claimed = true) {
      state.run(state.item, static_cast<int64_t>(p), i);
      state.finished.fetch_add(1, std::memory_order_release);
    }
    if (helper && joined && !claimed) return;
    joined = joined || claimed;
  }
}

}  // namespace phases_detail

// item(phase, index) for index in [0, items[phase]) of every phase, phases in order (every item
// of a phase finishes, and its writes are visible, before any item of the next one starts), on
// this thread and up to `helpers` threads of the inter-op pool, whichever claims an item first.
// Returns once every item has finished; items must not throw.
template <typename F>
void run_phases(const std::vector<int64_t>& items, int64_t helpers, const F& item) {
  auto state = std::make_shared<phases_detail::State>(items);
  if (state->total == 0) return;
  state->item = &item;
  state->run = [](const void* f, int64_t phase, int64_t index) {
    (*static_cast<const F*>(f))(phase, index);
  };
  for (int64_t t = 0; t < helpers; ++t) {
    at::launch([state] { phases_detail::work(*state, true); });
  }
  phases_detail::work(*state, false);
  // The items other threads claimed last.
  phases_detail::Wait wait;
  while (state->finished.load(std::memory_order_acquire) < state->total) wait.spin_or_yield();
}

}  // namespace stseq
