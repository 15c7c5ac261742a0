"""The ``stseq`` command: ``stseq info``, ``stseq bench``."""

import argparse
import json
import sys


def _info(args):
    from stseq.info import format_info, info

    report = info()
    print(json.dumps(report, indent=2) if args.json else "\n".join(format_info(report)))
    return 0


def _bench(args):
    from stseq.bench import main as bench_main

    return bench_main(args)


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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
