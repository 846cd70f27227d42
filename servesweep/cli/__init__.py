"""Command line: `servesweep run | demo | sweep | report | compare | gate | capacity | project | locust`.

One module per command registers its options and turns results into printing and an exit code;
the work lives below (loadtest, sweep, quality, reports). `main` is the one place that maps
servesweep's errors to exit codes (servesweep.errors); anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from servesweep import __version__, auth
from servesweep.cli import capacity, compare, demo, gate, headroom, locust, project, report, run, sweep
from servesweep.errors import EXIT_INTERRUPTED, ServesweepError

COMMANDS = (run, demo, sweep, headroom, report, compare, gate, capacity, project, locust)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="servesweep", description="Load tests for LLM inference servers.")
    parser.add_argument("--version", action="version", version=f"servesweep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with auth.using(auth.ServerAuth()):
        try:
            # Credentials (servesweep.auth): out of the URL, into the process's setting, for every request.
            url, server_auth = auth.resolve(getattr(args, "url", None), getattr(args, "api_key", None),
                                            getattr(args, "header", None) or [])
            if getattr(args, "url", None):
                args.url = url
            auth.use(server_auth)
            return args.handler(args)
        except ServesweepError as exc:
            print(f"servesweep: error: {auth.current().redact(str(exc).splitlines()[0])}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("servesweep: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
