"""Metric logs (JSON and CSV) and charts (PNG, when matplotlib is installed), each written
atomically (``stseq.files.atomic_write``): a reader never sees a half-written file."""

import csv
import importlib.util
import json
import logging
from pathlib import Path

from stseq.files import atomic_write

logger = logging.getLogger("stseq.train")


def write_json(path, value):
    """Write ``value`` as indented JSON to ``path`` (folders created).

    Example::

        write_json("runs/x/results.json", {"test": {"NDCG@10": 0.41}})
    """
    text = json.dumps(value, indent=2, default=float) + "\n"
    with atomic_write(path, "w", encoding="utf-8") as file:
        file.write(text)


def write_csv(path, rows):
    """Write a list of flat dicts as CSV, columns in first-seen order.

    Example::

        write_csv("runs/x/metrics.csv", [{"epoch": 1, "loss": 5.1}, {"epoch": 2, "loss": 4.8}])
    """
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_write(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def charts_available():
    """Whether matplotlib is installed, so that the ``plot_*`` functions draw charts.

    Example::

        if not charts_available():
            print("no charts: pip install stseq[plot]")
    """
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    if not charts_available():
        logger.info("matplotlib is not installed: no charts (pip install stseq[plot])")
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history, path, *, metric="NDCG@10"):
    """Training loss and validation ``metric`` per epoch -> PNG at ``path``; returns the path,
    or None without matplotlib.

    Example::

        plot_curves(trainer.history, "runs/x/curves.png")
    """
    plt = _pyplot()
    if plt is None or not history:
        return None
    epochs = [row["epoch"] for row in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [row["train_loss"] for row in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="training loss")
    key = f"valid_{metric}"
    if any(key in row for row in history):
        right.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o")
    right.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    return _save(plt, figure, path)


def plot_comparison(results, path, *, metrics=("NDCG@10", "HR@10"), ylabel="value",
                    title="model comparison"):
    """Grouped bars: ``results`` maps model name -> {metric: value} -> PNG at ``path`` with
    ``title`` above; returns the path, or None without matplotlib.

    Example::

        plot_comparison({"markov": {"NDCG@10": 0.78}, "timesasrec": {"NDCG@10": 0.9}},
                        "runs/comparison.png", ylabel="fraction of the oracle",
                        title="synthetic: test targets, full ranking")
    """
    plt = _pyplot()
    if plt is None or not results:
        return None
    names = list(results)
    width = 0.8 / len(metrics)
    figure, axes = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 3.8))
    for index, metric in enumerate(metrics):
        positions = [n + (index - (len(metrics) - 1) / 2) * width for n in range(len(names))]
        axes.bar(positions, [results[name].get(metric, 0.0) for name in names], width,
                 label=metric)
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10, wrap=True)
    axes.legend()
    return _save(plt, figure, path)


def _save(plt, figure, path):
    """Write ``figure`` as PNG to ``path`` atomically (labels and title never cut off)."""
    figure.tight_layout()
    with atomic_write(path, "wb") as file:
        figure.savefig(file, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return Path(path)
