"""Experiments as the command line runs them: data described by a JSON-able spec (so a checkpoint
can reload it), several models trained and evaluated on one split, and the metric table with
each model as a fraction of the oracle when the data is synthetic.
"""

import logging
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from stseq import data as datasets
from stseq.data.cache import load_cached
from stseq.eval import evaluate, oracle_metrics
from stseq.models import MODELS, build_model
from stseq.train.checkpoint import (CheckpointError, data_differences, load_checkpoint,
                                    split_fingerprint)
from stseq.train.logs import plot_comparison, write_csv, write_json
from stseq.train.trainer import CHECKPOINT_NAME, Trainer, seed_everything

logger = logging.getLogger("stseq.train")

SPLITS = ("leave-one-out", "global")
TABLE_METRICS = ("NDCG@10", "HR@10")


def data_spec(source="synthetic", *, path=None, format=None, columns=None, time_format=None,
              synthetic=None, split="leave-one-out"):
    """A JSON-able description of a data set and its split, for ``load_data``.

    Args:
        source: ``"synthetic"`` (the embedded generator), ``"ml-100k"`` (MovieLens-100K from
            the recbole 1.2.1 wheel) or ``"file"``.
        path, format: the file and its ``stseq.data.LOADERS`` format (``source="file"``);
            the format is guessed from ``.inter`` / ``ratings.dat`` / ``ratings.csv`` names.
        columns, time_format: ``load_table`` arguments for ``format="table"``.
        synthetic: keyword arguments of ``stseq.data.synthetic`` (seed, strengths, sizes).
        split: ``"leave-one-out"`` or ``"global"`` (one cut time for every user).

    Example::

        spec = data_spec("synthetic", synthetic={"rhythm_strength": 0.0})
        interactions, oracle, split = load_data(spec)
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source == "synthetic":
        return {"source": source, "synthetic": dict(synthetic or {}), "split": split}
    if source == "ml-100k":
        return {"source": source, "split": split}
    if source != "file":
        raise ValueError(f"data source must be 'synthetic', 'ml-100k' or 'file', got {source!r}")
    if path is None:
        raise ValueError("a file data source needs a path")
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}")
    format = format or _guess_format(path)
    if format not in datasets.LOADERS:
        raise ValueError(f"format must be one of {sorted(datasets.LOADERS)}, got {format!r}")
    if format == "table" and not columns:
        raise ValueError("format 'table' needs a column mapping (user, item, timestamp, ...)")
    spec = {"source": source, "path": str(path), "format": format, "split": split}
    if format == "table":
        spec.update(columns=dict(columns), time_format=time_format or "seconds")
    return spec


def _guess_format(path):
    if path.suffix == ".inter":
        return "recbole"
    if path.name in ("ratings.dat", "ratings.csv"):
        return "movielens"
    raise ValueError(f"cannot tell the format of {path.name}: pass one of "
                     f"{sorted(datasets.LOADERS)}")


def load_data(spec, *, cache_dir=None, log=None):
    """(interactions, oracle or None, split) for a ``data_spec``. With ``cache_dir``, a data
    file goes through the binary cache there (``stseq.data.cache``): parsed once, memory-mapped
    after; ``log`` (e.g. print) hears whether the cache was reused, built or rebuilt.

    Example::

        interactions, oracle, split = load_data(data_spec("ml-100k"))
    """
    oracle = None
    if spec["source"] == "synthetic":
        generated = datasets.synthetic(**spec["synthetic"])
        interactions, oracle = generated.interactions, generated.oracle
    elif spec["source"] == "ml-100k":
        interactions = datasets.load_recbole(datasets.movielens_100k_path())
    else:
        options = ({"columns": spec["columns"], "time_format": spec["time_format"]}
                   if spec["format"] == "table" else {})
        if cache_dir is None:
            interactions = datasets.LOADERS[spec["format"]](spec["path"], **options)
        else:
            interactions, status = load_cached(spec["format"], spec["path"], cache_dir,
                                               **options)
            (log or print)(f"data: {status}")
    if interactions.num_events == 0:
        raise ValueError(f"no usable events after preprocessing: {interactions.report}")
    if spec["split"] == "leave-one-out":
        split = datasets.leave_one_out(interactions)
    else:
        split = datasets.global_split(interactions)
    if len(split.test) == 0:
        raise ValueError(f"the {split.name} split has no test targets: users need at least two "
                         "events")
    return interactions, oracle, split


def data_title(spec):
    """The data's name for people: ``synthetic``, ``MovieLens-100K`` or the file's path."""
    return {"synthetic": "synthetic", "ml-100k": "MovieLens-100K"}.get(spec["source"],
                                                                        spec.get("path"))


def describe(spec, interactions, split):
    """One line: the data, its size and the split."""
    name = data_title(spec)
    return (f"{name}: {interactions.num_users} users, {interactions.num_items} items, "
            f"{interactions.num_events} events; {split.name} split, {len(split.test)} test "
            f"targets, full ranking over all items")


def restore_model(state, train):
    """The model of a checkpoint ``state`` (``load_checkpoint``) with its best weights (the
    last ones while training is unfinished), on the CPU; counting baselines are refitted on
    ``train``.

    Example::

        state = load_checkpoint("runs/synthetic/timesasrec/checkpoint.pt")
        model = restore_model(state, split.train)
    """
    spec = state["spec"]
    if spec["name"] not in MODELS:
        raise ValueError(f"the checkpoint's model {spec['name']!r} is not one of "
                         f"{', '.join(MODELS)}")
    model = build_model(spec["name"], train, **spec["options"])
    if not model.trainable:
        return model.fit(train)
    model.load_state_dict(state["best_model"] if state.get("best_model") else state["model"])
    return model.eval()


def expected_fractions(oracle, targets, score, *, max_length, device=None):
    """name -> a scorer's expected metric / the oracle's, at K = 10, over ``targets``."""
    ceiling = oracle_metrics(oracle, targets, ks=(10,))
    achieved = oracle_metrics(oracle, targets, ks=(10,), score=score, max_length=max_length,
                              device=device)
    return {name: achieved[name] / ceiling[name] for name in TABLE_METRICS}


def run_models(names, spec, config, *, model_options=None, out=None, resume=False, log=print,
               cache_dir=None):
    """Train (or fit) each model of ``names`` on the data of ``spec`` and evaluate it on the
    test targets; returns the rows of the metric table (one dict per model, the oracle first
    on synthetic data). Each model's files go to ``out/<name>/``; ``summary.json``,
    ``summary.csv`` and ``comparison.png`` to ``out`` (by rank 0 only under torch.distributed).

    Args:
        names: model names of ``stseq.models.MODELS``.
        spec: ``data_spec(...)``.
        config: ``TrainConfig`` shared by all models (its ``out`` is replaced per model).
        model_options: constructor options of the trainable models (e.g. dim, backend).
        resume: continue each model from ``out/<name>/checkpoint.pt`` when it exists.
        log: where progress lines go.
        cache_dir: the binary cache of a data file (``load_data``); None: parse it each time.

    Example::

        rows = run_models(["markov", "timesasrec"], data_spec(), TrainConfig(epochs=5),
                          out="runs/synthetic")
        print(format_table(rows))
    """
    interactions, oracle, split = load_data(spec, cache_dir=cache_dir, log=log)
    log(describe(spec, interactions, split))
    out = Path(out) if out is not None else None
    rows = []
    if oracle is not None:
        realised = evaluate(oracle, split.interactions, split.test, ks=(10,),
                            max_length=config.max_length)
        rows.append({"model": "oracle", "time_aware": True,
                     **{name: realised[name] for name in TABLE_METRICS},
                     **{f"{name}/oracle": 1.0 for name in TABLE_METRICS}})
    for name in names:
        seed_everything(config.seed)
        options = {} if not MODELS[name].trainable else dict(model_options or {})
        model = _build(name, split.train, options)
        model_config = replace(config, out=str(out / name) if out is not None else None)
        log(f"{name}: {'fitting' if not model.trainable else 'training'}")
        start = time.perf_counter()
        trainer = Trainer(model, split, model_config, data_spec=spec)
        checkpoint = out / name / CHECKPOINT_NAME if out is not None else None
        if resume and checkpoint.is_file():
            log(f"{name}: resuming from {checkpoint}")
            trainer.load(checkpoint)
        result = trainer.fit()
        seconds = time.perf_counter() - start
        row = {"model": name, "time_aware": model.time_aware,
               **{metric: result["test"][metric] for metric in TABLE_METRICS}}
        if oracle is not None:
            with torch.no_grad():
                row.update({f"{metric}/oracle": value for metric, value in expected_fractions(
                    oracle, split.test, model.score, max_length=config.max_length,
                    device=next(model.parameters()).device if model.trainable else None
                ).items()})
        row.update(epochs=len(result["history"]) if model.trainable else 0,
                   best_epoch=result["best_epoch"], seconds=seconds)
        rows.append(row)
        log(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                                     if isinstance(v, float) and k != "seconds")
            + f" ({seconds:.0f} s)")
    leader = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    if out is not None and leader:
        write_json(out / "summary.json", {"data": spec, "description": describe(
            spec, interactions, split), "rows": rows})
        write_csv(out / "summary.csv", rows)
        fraction = oracle is not None
        plot_comparison({row["model"]: {metric: row[f"{metric}/oracle" if fraction else metric]
                                        for metric in TABLE_METRICS} for row in rows},
                        out / "comparison.png",
                        ylabel="fraction of the oracle (expected)" if fraction else "test value",
                        title=_chart_title(spec, split))
    return rows


def _chart_title(spec, split):
    """The comparison chart's title: the data (a file by its name), metrics, split."""
    name = Path(spec["path"]).name if spec["source"] == "file" else data_title(spec)
    return (f"{name}: test {' and '.join(TABLE_METRICS)} per model ({split.name} split, full "
            f"ranking over {split.interactions.num_items} items)")


def _build(name, train, options):
    """``build_model``, with torch's errors for impossible options (a negative size, heads
    that do not divide the width) as a ValueError that names the model and its options."""
    try:
        return build_model(name, train, **options)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"model {name!r} cannot be built with the options {options}: "
                         f"{error}") from None


def format_table(rows):
    """The metric table as text.

    Example::

        print(format_table(rows))
    """
    fraction = any("NDCG@10/oracle" in row for row in rows)
    header = ["model", "time", *TABLE_METRICS]
    if fraction:
        header += [f"{metric}/oracle" for metric in TABLE_METRICS]
    header += ["epochs", "seconds"]
    lines = [header]
    for row in rows:
        cells = [row["model"], "yes" if row["time_aware"] else "no",
                 *(f"{row[metric]:.4f}" for metric in TABLE_METRICS)]
        if fraction:
            cells += [f"{row[f'{metric}/oracle']:.3f}" for metric in TABLE_METRICS]
        cells += [str(row.get("epochs", "")), f"{row['seconds']:.0f}" if "seconds" in row else ""]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                      for i, (cell, width) in enumerate(zip(line, widths))) for line in lines]
    text.insert(1, "-" * len(text[0]))
    if fraction:
        text.append("/oracle: expected metric over the true next-item distribution, as a "
                    "fraction of ranking by it (the oracle)")
    return "\n".join(text)


def checkpoint_context(path):
    """(state, interactions, oracle, split, model) of a checkpoint written by a training run.

    Example::

        state, interactions, oracle, split, model = checkpoint_context("runs/x/checkpoint.pt")
    """
    state = load_checkpoint(path)
    if state.get("data") is None:
        raise CheckpointError(f"checkpoint {path} does not say which data it was trained on (it "
                              "was saved without data_spec)")
    interactions, oracle, split = load_data(state["data"])
    changed = data_differences(state["data_fingerprint"], split_fingerprint(split))
    if changed:
        raise CheckpointError(f"the data of {path} ({data_title(state['data'])}) has changed "
                              "since it was trained: " + "; ".join(changed))
    return state, interactions, oracle, split, restore_model(state, split.train)
