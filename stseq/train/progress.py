"""A dependency-free progress line with throughput, written to stderr."""

import sys
import time

REFRESH_SECONDS = 0.5
BAR_WIDTH = 20


class Progress:
    """One line per epoch: batches done, targets per second and the running loss. On a terminal
    the line is redrawn in place at most every 0.5 s; elsewhere only the finished line is
    written.

    Example::

        progress = Progress("epoch 1/10", total=len(batches))
        for batch in batches:
            ...
            progress.update(targets=count, loss=value)
        progress.close()
    """

    def __init__(self, label, total, *, enabled=True, stream=None):
        self.label, self.total, self.enabled = label, total, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.live = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done = self.targets = 0
        self.loss_sum = 0.0
        self.start = self.last_draw = time.perf_counter()

    @property
    def elapsed(self):
        return time.perf_counter() - self.start

    @property
    def throughput(self):
        """Targets per second so far."""
        return self.targets / max(self.elapsed, 1e-9)

    @property
    def mean_loss(self):
        return self.loss_sum / max(self.targets, 1)

    def update(self, *, targets, loss):
        """One batch done with ``targets`` predictions and mean loss ``loss``."""
        self.done += 1
        self.targets += targets
        self.loss_sum += loss * targets
        now = time.perf_counter()
        if self.live and now - self.last_draw >= REFRESH_SECONDS:
            self.last_draw = now
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def line(self):
        filled = BAR_WIDTH * self.done // max(self.total, 1)
        return (f"{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                f"{self.done}/{self.total} batches | {self.throughput:,.0f} targets/s | "
                f"loss {self.mean_loss:.4f}")

    def close(self, suffix=""):
        """Write the finished line (with ``suffix``, e.g. validation metrics)."""
        if self.enabled:
            self.stream.write(("\r" if self.live else "") + self.line()
                              + f" | {self.elapsed:.1f} s{suffix}\n")
            self.stream.flush()
