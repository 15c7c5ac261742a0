// Work in phases shared by the calling thread and helper threads, with no thread owning a fixed
// share: the LSTM forward's split of the hidden units at small batches (rnn/rnn_cpu_split.h),
// where each step is a phase whose items (chunks of units) need every item of the step before.
//
// A thread claims an item only once the item's phase is open (every item of the phases before
// it has finished), so a claimed item is being computed, never waiting: a thread that starts
// late or is descheduled before its claim owns nothing and the others go on without it; the
// call waits only for items that were claimed. The calling thread claims a phase's items from
// the first, the helpers from the last: with both running, each thread computes the same items
// step after step (the LSTM's chunks of weights stay in that core's L2: claimed in any order,
// every core read all of them each step, and H = 256, B = 8 ran slower than on one thread), and
// either takes over the other's items when that one falls behind.
//
// The helpers are the threads of an OpenMP region (at::parallel_for): after any parallel ATen
// op they are spinning and join at once. Measured (issue 17, quiet, two threads, L = 50,
// interleaved with torch.nn.LSTM, ratios torch.nn / stseq): helpers woken from ATen's inter-op
// pool (at::launch) instead shared their core with the OpenMP threads still spinning after
// torch.nn's call and gained nothing over one thread (H = 256, B = 16: 0.62x against 0.98x with
// the region's threads; B = 8: 0.67x against 0.97x). The region ends in a barrier, though, that
// waits for every thread of the team, and with one core busy with another process a helper
// that had not started yet holds the call for a time slice (H = 128, B = 16: 4.3 ms against
// torch.nn's 1.6 ms). run_phases reports such waits so that the caller can stop splitting for
// a while (rnn/rnn_cpu_split.h).
#pragma once

#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
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

// A wait of the calling thread this long is a stall (a helper descheduled or not yet started),
// reported by run_phases: longer than any item (the LSTM's longest, a 64-row block of a chunk
// of its input projection, takes about 0.1 ms at H = 256) or a sleeping thread's wake-up,
// shorter than a time slice.
constexpr std::chrono::microseconds kStallTime{500};

class Wait {
 public:
  // Pauses and returns true while the wait is within kSpinTime, else returns false.
  bool spin() {
    if (spins_++ % 64 == 0) {  // the clock every 64 pauses (a few microseconds)
      now_ = std::chrono::steady_clock::now();
      if (spins_ == 1) start_ = now_;
      if (now_ - start_ > kSpinTime) return false;
    }
    pause();
    return true;
  }

  // Whether the wait (as of its last clock reading) has lasted kStallTime.
  bool stalled() const { return spins_ > 0 && now_ - start_ > kStallTime; }

 private:
  int64_t spins_ = 0;
  std::chrono::steady_clock::time_point start_, now_;
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
  const void* item = nullptr;                     // the callable run() calls

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

// Runs the items this thread claims, phase after phase, until every item is claimed (and, on
// the calling thread, has finished); returns whether this thread stalled (kStallTime) waiting
// for another one. A helper leaves early when it falls behind: when a phase keeps it waiting
// past kSpinTime, or when a phase it came to after joining was already taken by the others. On
// a busy machine a helper that shares its core then stops competing for it; the calling thread
// finishes alone.
inline bool work(State& state, bool helper) {
  bool joined = false, stalled = false;
  int64_t open = 0;  // the items of the phases before p
  for (size_t p = 0; p < state.items.size(); open += state.items[p], ++p) {
    Wait wait;
    while (state.finished.load(std::memory_order_acquire) < open) {  // the phase before runs
      if (state.all_taken(p)) break;
      if (wait.spin()) continue;
      if (helper) return false;
      std::this_thread::yield();
    }
    stalled = stalled || wait.stalled();
    bool claimed = false;
    for (int64_t i; (i = state.claim(p, !helper)) >= 0; claimed = true) {
      state.run(state.item, static_cast<int64_t>(p), i);
      state.finished.fetch_add(1, std::memory_order_release);
    }
    if (helper && joined && !claimed) return false;
    joined = joined || claimed;
  }
  if (helper) return false;
  Wait wait;  // the items other threads claimed last
  while (state.finished.load(std::memory_order_acquire) < state.total) {
    if (!wait.spin()) std::this_thread::yield();
  }
  return stalled || wait.stalled();
}

}  // namespace phases_detail

// item(phase, index) for index in [0, items[phase]) of every phase, phases in order (every item
// of a phase finishes, and its writes are visible, before any item of the next one starts), on
// this thread and up to `helpers` more threads of an OpenMP region, whichever claims an item
// first; items must not throw. Returns, once every item has finished and every thread has left
// the region, whether the calling thread stalled (waited kStallTime) for another one: a thread
// descheduled in its item, or one the region's end waited for after all the work was done.
template <typename F>
bool run_phases(const std::vector<int64_t>& items, int64_t helpers, const F& item) {
  phases_detail::State state(items);
  if (state.total == 0) return false;
  state.item = &item;
  state.run = [](const void* f, int64_t phase, int64_t index) {
    (*static_cast<const F*>(f))(phase, index);
  };
  bool stalled = false;
  std::chrono::steady_clock::time_point done;
  at::parallel_for(0, helpers + 1, 1, [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) {
      if (t > 0) {
        phases_detail::work(state, true);
        continue;
      }
      stalled = phases_detail::work(state, false);  // the calling thread (OpenMP's master)
      done = std::chrono::steady_clock::now();
    }
  });
  return stalled || std::chrono::steady_clock::now() - done > phases_detail::kStallTime;
}

}  // namespace stseq
