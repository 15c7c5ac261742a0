"""``stseq train``: its options, its run folder and the run itself (``stseq.cli`` parses the
command line and reports errors).

The command trains models on one data set into a run folder of its own (``stseq.train.runs``):
a new ``runs/<data>/<N>/``, the folder of ``--out``, or with ``--resume`` the run it continues.
With no arguments (the main job) it first says how long it takes.
"""

import dataclasses
import inspect
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist

from stseq.backends import BACKENDS
from stseq.data import LOADERS, synthetic
from stseq.data.batching import WINDOW_PHASES
from stseq.models import BASELINES, DEFAULT_MODEL, LOSSES, MODELS
from stseq.train import runs
from stseq.train.experiment import SPLITS, data_spec, format_table, run_models
from stseq.files import remove_partial_writes
from stseq.train.logs import charts_available
from stseq.train.trainer import TrainConfig

DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 1e-2
RUNS_ROOT = "runs"
# `stseq train` with no arguments (the main job), measured: README, "Set-up: two commands".
MAIN_JOB_SECONDS = 80
MAIN_JOB_MACHINE = "a quiet 2-core AMD EPYC"
MAIN_JOB_BUSY = "66 minutes on a 2-core Intel Xeon at load average 11"


# Option value types: a bad value is an argparse error naming the option ----------------------
def positive_int(text):
    """An argparse type: an integer >= 1 (``type=positive_int``; argparse names the option
    when it raises)."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def positive_float(text):
    """An argparse type: a finite number > 0."""
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(text)
    return value


def non_negative_float(text):
    """An argparse type: a finite number >= 0."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError(text)
    return value


def probability(text):
    """An argparse type: a number in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError(text)
    return value


def device_name(text):
    """An argparse type: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise ValueError(text)
    return text


positive_int.__name__ = "positive integer"
positive_float.__name__ = "positive number"
non_negative_float.__name__ = "number >= 0"
probability.__name__ = "number in [0, 1)"
device_name.__name__ = "device (auto, cpu, cuda or cuda:N)"


def key_values(pairs, what, allowed=None):
    """["key=value", ...] -> dict, values as int, float, bool or text; keys from ``allowed``
    only (when given); ``what`` names the option in errors.

    Example::

        key_values(["num_heads=4", "dropout=0.1"], "--option")   # {"num_heads": 4, ...}
    """
    result = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} must look like KEY=VALUE, got {pair!r}")
        if allowed is not None and key not in allowed:
            raise ValueError(f"{what} {key!r} is not one of {', '.join(allowed)}")
        for convert in (int, float):
            try:
                result[key] = convert(text)
                break
            except ValueError:
                continue
        else:
            result[key] = {"true": True, "false": False}.get(text.lower(), text)
    return result


# The command ------------------------------------------------------------------------------------
def add_command(commands, formatter):
    """Add ``train`` with its options to the ``commands`` of an argparse parser (``formatter``:
    the help formatter class).

    Example::

        add_command(parser.add_subparsers(dest="command"), argparse.HelpFormatter)
    """
    train = commands.add_parser(
        "train", help="train models and print the metric table", formatter_class=formatter,
        description="Train models on one data set and print their test metrics (full ranking). "
        "With no arguments: the default time-aware model and the baselines on the embedded "
        "synthetic data, each as a fraction of the oracle. Every run writes into a new folder "
        f"{RUNS_ROOT}/<data>/<N>/ (the link {RUNS_ROOT}/<data>/latest points at the newest).")
    add = train.add_argument
    add("--model", nargs="+", default=None, choices=[*MODELS, "all"], metavar="NAME",
        help=f"models to train: {', '.join(MODELS)}, or all (default: {DEFAULT_MODEL})")
    add("--no-baselines", action="store_true", help="do not add most-popular and markov")
    add("--data", default="synthetic",
        help="synthetic, ml-100k (needs recbole 1.2.1) or the PATH of a data file")
    add("--format", choices=sorted(LOADERS), default=None,
        help="format of a data file (default: guessed for .inter and ratings.dat/csv)")
    add("--columns", default=None, help="for --format table: role=column,... with the roles "
        "user, item, timestamp (required), latitude, longitude, behavior (default: none)")
    add("--time-format", default=None, help="for --format table: seconds, milliseconds or iso "
        "(default: seconds)")
    add("--synthetic", action="append", metavar="KEY=VALUE",
        help="an option of stseq.data.synthetic, e.g. rhythm_strength=0 (repeatable; default: "
        "the generator's defaults)")
    add("--split", choices=SPLITS, default="leave-one-out", help="how to split the events into "
        "training, validation and test")
    add("--epochs", type=positive_int, default=DEFAULT_EPOCHS, help="most passes over the data")
    add("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, help="windows per step")
    add("--max-length", type=positive_int, default=50, help="events of history per window")
    add("--stride", type=positive_int, default=None, help="events between the ends of a user's "
        "consecutive training windows, at most --max-length (default: --max-length, windows "
        "that do not overlap); smaller trains every target once with at least max-length - "
        "stride + 1 events of history, at max-length / stride times the cost per epoch")
    add("--window-phase", choices=WINDOW_PHASES, default=None, help="where the training "
        "windows are cut: 'end' (the same windows every epoch, ending at each user's last "
        "training event) or 'random' (each epoch shifts each user's cuts by a random 0..stride-1 "
        "events, so the model does not fit one fixed set of windows); default: the model's, "
        "'random' for the attention models, 'end' for the others")
    add("--lr", type=positive_float, default=DEFAULT_LR, help="AdamW's peak learning rate")
    add("--weight-decay", type=non_negative_float, default=0.01, help="AdamW's weight decay")
    add("--patience", type=positive_int, default=3,
        help="stop after this many epochs without a better validation NDCG@10")
    add("--loss", choices=sorted(LOSSES), default="ce",
        help="ce: full softmax over all items; sampled: softmax over sampled negatives; bce: "
        "binary cross-entropy against sampled negatives")
    add("--num-negatives", type=positive_int, default=None,
        help="negatives per target for --loss sampled or bce (default: the loss's own)")
    add("--dim", type=positive_int, default=None, help="embedding size (default: the model's)")
    add("--dropout", type=probability, default=None, help="dropout (default: the model's)")
    add("--option", action="append", metavar="KEY=VALUE",
        help="a model constructor option, e.g. num_heads=4 (repeatable; default: none)")
    add("--backend", choices=BACKENDS, default="auto", help="stseq op implementation")
    add("--device", type=device_name, default="auto", help="auto (CUDA when present), cpu, cuda or "
        "cuda:N")
    add("--no-amp", action="store_true", help="no bfloat16 autocast on GPU")
    add("--seed", type=int, default=0, help="seed of the weights, batches and sampling")
    add("--deterministic", action="store_true", help="torch's deterministic algorithms only")
    add("--out", default=None, help=f"the run's folder (default: a new {RUNS_ROOT}/<data>/<N>)")
    add("--overwrite", action="store_true", help="with --out: replace the run already there")
    add("--resume", action="store_true", help="continue the run in --out (default: the latest "
        f"run of the data, {RUNS_ROOT}/<data>/latest), each model from its checkpoint; refused "
        "when the data or the options differ")
    add("--no-progress", action="store_true", help="no progress lines")
    train.set_defaults(run=run)


def run(args):
    """Run ``stseq train`` for parsed ``args`` (``args.argv``: the arguments after ``train``);
    returns the exit status. ``stseq.cli.main`` calls it and reports its errors.

    Example::

        stseq.cli.main(["train", "--model", "markov"])   # -> run(args)
    """
    names = _model_names(args)
    spec = _train_data(args)
    config, options = _train_config(args)
    leader = _join_process_group() == 0
    log = print if leader else _silent
    if leader and not args.argv:
        print(f"The main job: {', '.join(names)} on the synthetic data. It takes about "
              f"{MAIN_JOB_SECONDS} s on {MAIN_JOB_MACHINE}, far longer on a busy machine "
              f"({MAIN_JOB_BUSY}); each epoch shows its progress and the time left.",
              flush=True)
    out = _run_folder(args, spec, leader)
    if leader:
        _record_run(out, args, spec, names, config, options)
    start = time.perf_counter()
    try:
        rows = run_models(names, spec, config, model_options=options, out=out,
                          resume=args.resume, log=log, cache_dir=_cache_dir(spec, leader))
    except BaseException:
        if leader and args.out is None and not args.resume:
            runs.discard_run(out)  # refused before anything was saved: leave no empty run
        raise
    if leader:
        print()
        print(format_table(rows))
        print(f"\n{time.perf_counter() - start:.0f} s in all; {_written(out)}")
    return 0


def _cache_dir(spec, leader):
    """Where a data file's binary cache lives: runs/<data>/cache, beside the data's runs (rank 0
    only: other ranks parse the file themselves rather than race on the cache)."""
    if spec["source"] != "file" or not leader:
        return None
    return Path(RUNS_ROOT) / runs.data_name(spec) / "cache"


def _model_names(args):
    """The models to run: the chosen ones, after the baselines unless --no-baselines."""
    chosen = args.model or [DEFAULT_MODEL]
    names = list(MODELS) if "all" in chosen else list(dict.fromkeys(chosen))
    if not args.no_baselines:
        names = [name for name in BASELINES if name not in names] + names
    return names


def _train_data(args):
    """The ``data_spec`` of ``--data`` and its options."""
    if args.synthetic and args.data != "synthetic":
        raise ValueError("--synthetic options apply to --data synthetic only")
    if args.data in ("synthetic", "ml-100k"):
        for option in ("format", "columns", "time_format"):
            if getattr(args, option) is not None:
                raise ValueError(f"--{option.replace('_', '-')} is for data files, not "
                                 f"--data {args.data}")
        return data_spec(args.data, split=args.split,
                         synthetic=_synthetic_options(args.synthetic))
    columns = key_values(args.columns.split(",") if args.columns else None, "--columns")
    return data_spec("file", path=args.data, format=args.format, columns=columns,
                     time_format=args.time_format, split=args.split)


def _synthetic_options(pairs):
    """--synthetic KEY=VALUE pairs -> keyword arguments of ``stseq.data.synthetic``, each of
    the type of its default (an integer where the default is one, else a number)."""
    defaults = {name: parameter.default
                for name, parameter in inspect.signature(synthetic).parameters.items()}
    options = key_values(pairs, "--synthetic", list(defaults))
    for key, value in options.items():
        integer = isinstance(defaults[key], int)
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise ValueError(f"--synthetic {key} takes {'an integer' if integer else 'a number'}, "
                             f"got {value!r}")
    return options


def _train_config(args):
    """(TrainConfig, model options) of the command line."""
    if args.num_negatives is not None and args.loss == "ce":
        raise ValueError("--num-negatives applies to --loss sampled or bce")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                         max_length=args.max_length, stride=args.stride,
                         window_phase=args.window_phase, lr=args.lr,
                         weight_decay=args.weight_decay,
                         patience=args.patience, loss=args.loss,
                         num_negatives=args.num_negatives, seed=args.seed,
                         deterministic=args.deterministic, device=args.device,
                         amp=not args.no_amp, progress=not args.no_progress)
    options = {"max_length": args.max_length, "backend": args.backend,
               **({"dim": args.dim} if args.dim is not None else {}),
               **({"dropout": args.dropout} if args.dropout is not None else {}),
               **key_values(args.option, "--option")}
    return config, options


def _run_folder(args, spec, leader):
    """The run's folder: ``--out``, the latest run of the data (``--resume``) or a new numbered
    one under runs/<data>/ (rank 0 creates it; other ranks get None for a new run, which only
    rank 0 writes)."""
    if args.overwrite and args.resume:
        raise ValueError("--overwrite and --resume contradict each other: choose one")
    if args.overwrite and args.out is None:
        raise ValueError("--overwrite applies to --out DIR (without --out every run gets a new "
                         "folder)")
    name = runs.data_name(spec)
    if args.out is not None:
        if leader or args.resume:
            runs.claim_folder(args.out, overwrite=args.overwrite, resume=args.resume,
                              model_names=list(MODELS))
        return Path(args.out) if leader or args.resume else None
    if args.resume:
        folder = runs.latest_run(RUNS_ROOT, name)
        if folder is None:
            raise ValueError(f"--resume: there is no run of {name} in {RUNS_ROOT}/{name}/ to "
                             "continue; leave --resume out to start one")
        return folder
    return runs.new_run(RUNS_ROOT, name) if leader else None


def _record_run(folder, args, spec, names, config, options):
    """Write the run's run.json (a resumed run: check it trains the same models, note the
    resume and remove the torn writes of the interruption)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if not args.resume:
        runs.write_run_info(folder, {
            "command": " ".join(["stseq", "train", *args.argv]), "started": now, "data": spec,
            "models": names, "config": dataclasses.asdict(config), "model_options": options})
        return
    info = runs.read_run_info(folder)
    if info.get("models", names) != names:
        raise ValueError(f"--resume: {folder} trained {', '.join(info['models'])}, not "
                         f"{', '.join(names)}; resume it with the same --model and "
                         "--no-baselines options")
    info["resumed"] = [*info.get("resumed", []), now]
    runs.write_run_info(folder, info)
    removed = remove_partial_writes(folder)
    print(f"Resuming {folder}" + (f" (removed {removed} unfinished write{'s' * (removed > 1)} "
                                  "of the interrupted run)" if removed else ""), flush=True)


def _written(out):
    """What the run wrote, for its last line (charts only when matplotlib drew them)."""
    if out is None:
        return "nothing written (not rank 0)"
    if charts_available():
        return f"checkpoints, logs and charts in {out}/"
    return (f"checkpoints and logs in {out}/ (no charts: matplotlib is not installed, "
            "pip install stseq[plot])")


def _silent(*_):
    pass


def _join_process_group():
    """Under torchrun (WORLD_SIZE > 1): join the process group (nccl on GPU, gloo on CPU) and
    pick this process's GPU; returns the process's rank (0 without torchrun)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank()
