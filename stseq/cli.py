"""The ``stseq`` command: ``stseq info``, ``stseq bench``, ``stseq train``, ``stseq evaluate``,
``stseq recommend``.

An error a user can cause (a bad option, a missing or unreadable file, a checkpoint that cannot
be used) ends the command with exit status 2 and one line on stderr, ``stseq <command>: error:
...``; ``stseq --debug <command> ...`` (or ``STSEQ_DEBUG=1``) shows the traceback instead.
"""

import argparse
import csv
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

# Errors a user causes through the command line (bad options, files, checkpoints): one line.
USER_ERRORS = (ValueError, OSError, ImportError, csv.Error, OverflowError, MemoryError)


class UsageError(Exception):
    """A command line that does not parse (reported like argparse's errors, in one line)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors raised as ``UsageError`` so ``main`` reports them in one line."""

    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default ("off" for flags) unless the text gives it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or action.required or \
                not action.option_strings:
            return text
        if action.const is True and action.default is False:
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


# stseq info | bench ---------------------------------------------------------------------------
def _info(args):
    import json

    from stseq.info import format_info, info

    report = info()
    print(json.dumps(report, indent=2) if args.json else "\n".join(format_info(report)))
    return 0


def _bench(args):
    from stseq.bench import main as bench_main

    return bench_main(args)


# stseq evaluate | recommend -------------------------------------------------------------------
def _evaluate(args):
    from stseq.eval import evaluate
    from stseq.train.experiment import checkpoint_context, describe, expected_fractions

    state, interactions, oracle, split, model = checkpoint_context(_checkpoint_file(
        args.checkpoint))
    targets = split.test if args.targets == "test" else split.valid
    max_length = state["config"]["max_length"]
    print(describe(state["data"], interactions, split))
    print(f"{state['spec']['name']} (epoch {state['best_epoch']} of {state['epoch']}), "
          f"{args.targets} targets:")
    score = model.score
    chunked = getattr(model, "item_scores", score)  # models rank by item chunks
    result = evaluate(chunked, split.interactions, targets, ks=(10, 20), max_length=max_length,
                      exclude_seen=args.exclude_seen, negatives=args.negatives)
    print(_format_evaluation(result))
    if oracle is not None and args.negatives is None and not args.exclude_seen:
        fractions = expected_fractions(oracle, targets, score, max_length=max_length)
        print("fraction of the oracle (expected): " + ", ".join(
            f"{name} {value:.3f}" for name, value in fractions.items()))
    return 0


def _format_evaluation(result):
    """The metrics, and, where ties change them, the same metrics with ties counted against the
    target, explained."""
    lines = [f"{result.num_targets} targets, {result.protocol['ranking']}: " + ", ".join(
        f"{name} {value:.4f}" for name, value in result.metrics.items())]
    tied = {name: value for name, value in result.pessimistic.items()
            if value != result.metrics[name]}
    if tied:
        lines.append("with ties against the target (items scored exactly as high as it ranked "
                     "ahead of it, the worst case; above, behind it): " + ", ".join(
                         f"{name} {value:.4f}" for name, value in tied.items()))
    return "\n".join(lines)


def _recommend(args):
    import numpy as np

    from stseq.eval import recommend
    from stseq.train.experiment import checkpoint_context

    state, interactions, _, _, model = checkpoint_context(_checkpoint_file(args.checkpoint))
    raw_users = [str(user) for user in interactions.user_ids]
    lookup = {user: index for index, user in enumerate(raw_users)}
    missing = [user for user in args.user if user not in lookup]
    if missing:
        raise ValueError(f"unknown user id {missing[0]!r} (the data has {len(raw_users)} users, "
                         f"e.g. {', '.join(raw_users[:3])})")
    users = np.array([lookup[user] for user in args.user], dtype=np.int64)
    if args.at_time is not None:
        _check_query_time(args.at_time, interactions, users, args.user)
    chunked = getattr(model, "item_scores", model.score)  # models rank by item chunks
    top = recommend(chunked, interactions, users, k=args.k, at_time=args.at_time,
                    exclude_seen=args.exclude_seen, max_length=state["config"]["max_length"])
    print("user\trank\titem\tscore")
    for row, user in enumerate(args.user):
        for rank, (item, value) in enumerate(zip(top.items[row].tolist(),
                                                 top.scores[row].tolist()), 1):
            print(f"{user}\t{rank}\t{interactions.item_ids[item]}\t{value:.4f}")
    print(f"score: {_score_meaning(model)}", file=sys.stderr)
    return 0


def _check_query_time(at_time, interactions, users, raw_users):
    """--at-time must not be before a user's last event (the history would be in its future)."""
    import numpy as np

    last = interactions.timestamps[interactions.offsets[users] + interactions.lengths[users] - 1]
    early = np.flatnonzero(at_time < last)
    if len(early):
        user, seconds = raw_users[early[0]], int(last[early[0]])
        when = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise ValueError(f"--at-time {at_time} is before user {user}'s last event ({seconds} s, "
                         f"{when}): recommendations follow the whole history, so give a time at "
                         "or after it, or leave --at-time out")


def _score_meaning(model):
    """What ``recommend``'s score column holds for ``model``."""
    name = model.spec["name"]
    if name == "most-popular":
        return "the item's number of training events (the same ranking for everyone)"
    if name == "markov":
        return ("how often the item followed the user's last item in the training data, plus "
                "a popularity share below 1 that orders the items never seen after it")
    if getattr(model, "transition_prior", None) is not None:
        return (f"the natural log of the probability that {name} gives the item as the user's "
                "next one (0 is certain; -2.3 is 10%)")
    return (f"{name}'s logit for the item (a log-probability up to a constant shared by all "
            "items of a user: only differences matter)")


def _checkpoint_file(path):
    """``path``, or the error a user needs when it is a run folder rather than a checkpoint."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*/checkpoint.pt")) or sorted(path.glob("checkpoint.pt"))
        hint = f", e.g. {found[-1]}" if found else ""
        raise ValueError(f"{path} is a folder: pass a checkpoint.pt file{hint}")
    return path


# The parser -----------------------------------------------------------------------------------
def _add_evaluate_and_recommend(commands):
    from stseq.train.command import RUNS_ROOT, positive_int

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a trained checkpoint", formatter_class=_HelpFormatter,
        description="Reload a checkpoint and its data and print its metrics (full ranking).")
    evaluate.add_argument("checkpoint", help="a checkpoint.pt written by stseq train, e.g. "
                          f"{RUNS_ROOT}/synthetic/latest/time-decay-gru/checkpoint.pt")
    evaluate.add_argument("--targets", choices=["test", "valid"], default="test",
                          help="which targets of the split")
    evaluate.add_argument("--exclude-seen", action="store_true",
                          help="drop each user's already seen items from the ranking")
    evaluate.add_argument("--negatives", type=positive_int, default=None,
                          help="rank against this many sampled negatives, metrics labelled "
                          "sampled_ (default: all items)")
    evaluate.set_defaults(run=_evaluate)
    recommend = commands.add_parser(
        "recommend", help="top-k items for users", formatter_class=_HelpFormatter,
        description="Top-k items for users after their whole history, as tab-separated user, "
        "rank, item, score. The score is the model's log-probability of the item for neural "
        "models, a count for most-popular and markov (explained on stderr).")
    recommend.add_argument("checkpoint", help="a checkpoint.pt written by stseq train")
    recommend.add_argument("--user", nargs="+", required=True, help="raw user id(s)")
    recommend.add_argument("-k", type=positive_int, default=10, help="items per user")
    recommend.add_argument("--at-time", type=int, default=None, help="when the recommendation "
                           "is asked for, in seconds since 1970 UTC, at or after the user's last "
                           "event (default: the time of that event)")
    recommend.add_argument("--exclude-seen", action="store_true",
                           help="never recommend an item the user already has")
    recommend.set_defaults(run=_recommend)


def build_parser():
    """The ``stseq`` argument parser (usage errors raise ``UsageError``).

    Example::

        args = build_parser().parse_args(["train", "--epochs", "3"])
    """
    from stseq.train.command import add_command, positive_int

    parser = _Parser(prog="stseq", description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also STSEQ_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="what is built and usable on this machine",
                               formatter_class=_HelpFormatter)
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.set_defaults(run=_info)
    bench = commands.add_parser("bench", help="time stseq ops against their peers",
                                formatter_class=_HelpFormatter)
    bench.add_argument("--quick", action="store_true", help="one representative shape per op")
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run")
    bench.add_argument("--ops", nargs="+", default=None, help="ops to run (default: all but data)")
    bench.add_argument("--repeats", type=positive_int, default=None,
                       help="timed repeats per case (default: 3 with --quick, else 10)")
    bench.add_argument("--scale", nargs="?", type=positive_int, const=10_000_000, default=None,
                       metavar="EVENTS",
                       help="with --ops scoring: the catalogue-scale run instead of the grid, "
                            "on a generated Taobao-shaped log of EVENTS events (default 10^7; "
                            "EVENTS/100 users, 0.15*EVENTS items), kept under the temp folder")
    bench.add_argument("--out", default=None,
                       help="folder for the JSON results (default: none written)")
    bench.set_defaults(run=_bench)
    add_command(commands, _HelpFormatter)
    _add_evaluate_and_recommend(commands)
    return parser


def main(argv=None):
    """Run the ``stseq`` command line with ``argv`` (default ``sys.argv[1:]``); returns the exit
    status: 0 done, 2 a user error (one line on stderr), 130 interrupted.

    Example::

        main(["evaluate", "runs/synthetic/latest/markov/checkpoint.pt"])
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(_one_line(error), file=sys.stderr)
        return 2
    except SystemExit as done:  # --help
        return done.code
    debug = args.debug or os.environ.get("STSEQ_DEBUG", "") not in ("", "0")
    args.argv = argv[argv.index(args.command) + 1:]
    try:
        return args.run(args)
    except (*USER_ERRORS, UsageError) as error:
        if debug:
            raise
        print(f"stseq {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"stseq {args.command}: interrupted" + (
            "; `stseq train --resume` continues from the last finished epoch"
            if args.command == "train" else ""), file=sys.stderr)
        return 130


def _one_line(error):
    """An exception as one line: its message with newlines folded (its type when the message
    alone would not say what happened)."""
    if isinstance(error, MemoryError):
        return "not enough memory for this data and these options"
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (OverflowError, csv.Error)):
        return f"{type(error).__name__}: {text}"
    return text


if __name__ == "__main__":
    sys.exit(main())
