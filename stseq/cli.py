"""The ``stseq`` command: ``stseq info``, ``stseq bench``, ``stseq train``, ``stseq evaluate``,
``stseq recommend``."""

import argparse
import json
import sys
import time

DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 1e-2


def _info(args):
    from stseq.info import format_info, info

    report = info()
    print(json.dumps(report, indent=2) if args.json else "\n".join(format_info(report)))
    return 0


def _bench(args):
    from stseq.bench import main as bench_main

    return bench_main(args)


def _key_values(pairs, what):
    """["key=value", ...] -> dict, values as int, float or text."""
    result = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} must look like KEY=VALUE, got {pair!r}")
        for convert in (int, float):
            try:
                result[key] = convert(text)
                break
            except ValueError:
                continue
        else:
            result[key] = {"true": True, "false": False}.get(text.lower(), text)
    return result


def _train(args):
    from stseq.models import BASELINES, DEFAULT_MODEL, MODELS
    from stseq.train import TrainConfig
    from stseq.train.experiment import data_spec, format_table, run_models

    chosen = args.model or [DEFAULT_MODEL]
    names = list(MODELS) if "all" in chosen else list(chosen)
    if not args.no_baselines:
        names = [name for name in BASELINES if name not in names] + names
    if args.data in ("synthetic", "ml-100k"):
        if args.format is not None:
            raise ValueError(f"--format is for data files, not --data {args.data}")
        spec = data_spec(args.data, synthetic=_key_values(args.synthetic, "--synthetic"),
                         split=args.split)
    else:
        columns = _key_values(args.columns.split(",") if args.columns else None, "--columns")
        spec = data_spec("file", path=args.data, format=args.format, columns=columns,
                         time_format=args.time_format, split=args.split)
    if args.synthetic and args.data != "synthetic":
        raise ValueError("--synthetic options apply to --data synthetic only")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                         max_length=args.max_length, lr=args.lr, weight_decay=args.weight_decay,
                         patience=args.patience, loss=args.loss,
                         num_negatives=args.num_negatives, seed=args.seed,
                         deterministic=args.deterministic, device=args.device,
                         amp=not args.no_amp, progress=not args.no_progress)
    options = {"max_length": args.max_length, "backend": args.backend,
               **({"dim": args.dim} if args.dim is not None else {}),
               **({"dropout": args.dropout} if args.dropout is not None else {}),
               **_key_values(args.option, "--option")}
    out = args.out or f"runs/{args.data if args.data in ('synthetic', 'ml-100k') else 'data'}"
    start = time.perf_counter()
    rows = run_models(names, spec, config, model_options=options, out=out, resume=args.resume)
    print()
    print(format_table(rows))
    print(f"\n{time.perf_counter() - start:.0f} s in all; checkpoints, logs and charts in {out}/")
    return 0


def _evaluate(args):
    from stseq.eval import evaluate
    from stseq.train.experiment import checkpoint_context, describe, expected_fractions

    state, interactions, oracle, split, model = checkpoint_context(args.checkpoint)
    targets = split.test if args.targets == "test" else split.valid
    max_length = state["config"]["max_length"]
    print(describe(state["data"], interactions, split))
    print(f"{state['spec']['name']} (epoch {state['best_epoch']} of {state['epoch']}), "
          f"{args.targets} targets:")
    score = model.score
    result = evaluate(score, split.interactions, targets, ks=(10, 20), max_length=max_length,
                      exclude_seen=args.exclude_seen, negatives=args.negatives)
    print(result)
    if oracle is not None and args.negatives is None and not args.exclude_seen:
        fractions = expected_fractions(oracle, targets, score, max_length=max_length)
        print("fraction of the oracle (expected): " + ", ".join(
            f"{name} {value:.3f}" for name, value in fractions.items()))
    return 0


def _recommend(args):
    import numpy as np

    from stseq.eval import recommend
    from stseq.train.experiment import checkpoint_context

    state, interactions, _, _, model = checkpoint_context(args.checkpoint)
    raw_users = [str(user) for user in interactions.user_ids]
    lookup = {user: index for index, user in enumerate(raw_users)}
    missing = [user for user in args.user if user not in lookup]
    if missing:
        raise ValueError(f"unknown user id {missing[0]!r} (the data has {len(raw_users)} users, "
                         f"e.g. {', '.join(raw_users[:3])})")
    users = np.array([lookup[user] for user in args.user], dtype=np.int64)
    top = recommend(model.score, interactions, users, k=args.k, at_time=args.at_time,
                    exclude_seen=args.exclude_seen, max_length=state["config"]["max_length"])
    print("user\trank\titem\tscore")
    for row, user in enumerate(args.user):
        for rank, (item, value) in enumerate(zip(top.items[row].tolist(),
                                                 top.scores[row].tolist()), 1):
            print(f"{user}\t{rank}\t{interactions.item_ids[item]}\t{value:.4f}")
    return 0


def _add_train(commands):
    from stseq.backends import BACKENDS
    from stseq.data import LOADERS
    from stseq.models import DEFAULT_MODEL, LOSSES, MODELS
    from stseq.train.experiment import SPLITS

    train = commands.add_parser(
        "train", help="train models and print the metric table",
        description="Train models on one data set and print their test metrics (full ranking). "
        "With no arguments: the default time-aware model and the baselines on the embedded "
        "synthetic data, each as a fraction of the oracle.")
    train.add_argument("--model", nargs="+", default=None, choices=[*MODELS, "all"],
                       metavar="NAME",
                       help=f"models to train: {', '.join(MODELS)}, or all (default "
                       f"{DEFAULT_MODEL})")
    train.add_argument("--no-baselines", action="store_true",
                       help="do not add most-popular and markov")
    train.add_argument("--data", default="synthetic",
                       help="synthetic (default), ml-100k (needs recbole 1.2.1) or a file PATH")
    train.add_argument("--format", choices=sorted(LOADERS), default=None,
                       help="format of a data file (guessed for .inter and ratings.dat/csv)")
    train.add_argument("--columns", default=None,
                       help="for --format table: role=column,... (user, item, timestamp, ...)")
    train.add_argument("--time-format", default=None, help="for --format table: seconds, "
                       "milliseconds or iso")
    train.add_argument("--synthetic", action="append", metavar="KEY=VALUE",
                       help="stseq.data.synthetic option, e.g. rhythm_strength=0 (repeatable)")
    train.add_argument("--split", choices=SPLITS, default="leave-one-out")
    train.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    train.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    train.add_argument("--max-length", type=int, default=50)
    train.add_argument("--lr", type=float, default=DEFAULT_LR)
    train.add_argument("--weight-decay", type=float, default=0.01)
    train.add_argument("--patience", type=int, default=3)
    train.add_argument("--loss", choices=sorted(LOSSES), default="ce",
                       help="ce: full softmax (default); sampled; bce")
    train.add_argument("--num-negatives", type=int, default=None)
    train.add_argument("--dim", type=int, default=None, help="embedding size")
    train.add_argument("--dropout", type=float, default=None)
    train.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="model constructor option, e.g. num_heads=4 (repeatable)")
    train.add_argument("--backend", choices=BACKENDS, default="auto")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on GPU")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--deterministic", action="store_true")
    train.add_argument("--out", default=None, help="output folder (default runs/<data>)")
    train.add_argument("--resume", action="store_true",
                       help="continue each model from its checkpoint in the output folder")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(run=_train)


def _add_evaluate_and_recommend(commands):
    evaluate = commands.add_parser("evaluate", help="evaluate a trained checkpoint")
    evaluate.add_argument("checkpoint", help="checkpoint.pt written by stseq train")
    evaluate.add_argument("--targets", choices=["test", "valid"], default="test")
    evaluate.add_argument("--exclude-seen", action="store_true",
                          help="drop each user's already seen items from the ranking")
    evaluate.add_argument("--negatives", type=int, default=None,
                          help="rank against this many sampled negatives (labelled sampled_)")
    evaluate.set_defaults(run=_evaluate)
    recommend = commands.add_parser("recommend", help="top-k items for users")
    recommend.add_argument("checkpoint", help="checkpoint.pt written by stseq train")
    recommend.add_argument("--user", nargs="+", required=True, help="raw user id(s)")
    recommend.add_argument("-k", type=int, default=10)
    recommend.add_argument("--at-time", type=int, default=None,
                           help="query time in seconds (default: each user's last event)")
    recommend.add_argument("--exclude-seen", action="store_true")
    recommend.set_defaults(run=_recommend)


def build_parser():
    parser = argparse.ArgumentParser(prog="stseq", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="what is built and usable on this machine")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.set_defaults(run=_info)
    bench = commands.add_parser("bench", help="time stseq ops against their peers")
    bench.add_argument("--quick", action="store_true", help="one representative shape per op")
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    bench.add_argument("--ops", nargs="+", default=None, help="ops to run (default: all)")
    bench.add_argument("--repeats", type=int, default=None, help="timed repeats per case")
    bench.add_argument("--out", default=None, help="folder for the JSON results")
    bench.set_defaults(run=_bench)
    _add_train(commands)
    _add_evaluate_and_recommend(commands)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command in ("train", "evaluate", "recommend"):
        try:
            return args.run(args)
        except (ValueError, FileNotFoundError) as error:
            print(f"stseq {args.command}: error: {error}", file=sys.stderr)
            return 2
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
