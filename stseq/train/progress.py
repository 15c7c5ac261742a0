"""A dependency-free progress line with throughput, written to stderr."""

import sys
import time

REFRESH_SECONDS = 0.5  # on a terminal: the line redrawn in place
LOG_SECONDS = 30.0  # elsewhere (a log file, a pipe): a new line this often
BAR_WIDTH = 20


class Progress:
    """One line per epoch: batches done, targets per second, the running loss and the time
    left in the epoch. The line is written as soon as the epoch starts; on a terminal it is
    redrawn in place at most every 0.5 s, elsewhere a new line is written every 30 s, and the
    finished line ends it.

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
        self.done = self.targets = self.width = 0
        self.loss_sum = 0.0
        self.start = self.last_draw = time.perf_counter()
        if enabled:
            self._draw()

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

    @property
    def seconds_left(self):
        """Estimated seconds to the end of the epoch at the pace so far (None before the first
        batch)."""
        if not self.done:
            return None
        return self.elapsed / self.done * max(self.total - self.done, 0)

    def update(self, *, targets, loss):
        """One batch done with ``targets`` predictions and mean loss ``loss``."""
        self.done += 1
        self.targets += targets
        self.loss_sum += loss * targets
        if self.enabled and time.perf_counter() - self.last_draw >= (
                REFRESH_SECONDS if self.live else LOG_SECONDS):
            self._draw()

    def _draw(self):
        self.last_draw = time.perf_counter()
        self._write(self.line(), end="" if self.live else "\n")

    def _write(self, text, end):
        """On a terminal: over the current line (padded to hide a longer previous one)."""
        if self.live:
            text, self.width = "\r" + text.ljust(self.width), len(text)
        self.stream.write(text + end)
        self.stream.flush()

    def line(self):
        """The progress line: label, bar, batches, throughput, loss and time left."""
        filled = BAR_WIDTH * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        text = f"{self.label} [{bar}] {self.done}/{self.total} batches"
        if not self.done:
            return text + " | starting"
        left = self.seconds_left
        return (f"{text} | {self.throughput:,.0f} targets/s | loss {self.mean_loss:.4f}"
                + (f" | {left:.0f} s left" if left else ""))

    def close(self, suffix=""):
        """Write the finished line (with ``suffix``, e.g. validation metrics)."""
        if self.enabled:
            self._write(f"{self.line()} | {self.elapsed:.1f} s{suffix}", end="\n")
