"""`servesweep gate`: measure a task-level metric and block a deploy on regression.

    servesweep gate --spec FILE [--url URL | --backend vllm --model DIR --precision P]
                    [--reference RESULT.json | --reference-precision P | --reference-url URL]
                    [--under-load N] --out DIR

Exit 0 when the gate holds, 1 when it fails, 2 when it could not be measured. DIR/gate.json
holds the verdict and the numbers either way; DIR/reference.json holds a reference measured in
this run, reusable with --reference.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from servesweep.auth import split_url
from servesweep.backends import BACKENDS, DEFAULT_KIND, backend_for
from servesweep.cli.common import add_auth_options, console, dummy_weights_option
from servesweep.errors import ConfigError
from servesweep.loadgen.target import check_loopback
from servesweep.precision import PRECISION_NAMES
from servesweep.quality.gate.run import GateRun, evaluate
from servesweep.results import ensure_writable_dir, write_json


def register(sub: Any) -> None:
    gate = sub.add_parser("gate", help="accuracy gate: measure a task-level metric against a reference; "
                                       "exit 0 pass, 1 regression, 2 not measured")
    gate.add_argument("--spec", type=Path, required=True, help="gate spec (YAML or JSON)")
    gate.add_argument("--out", type=Path, required=True, help="results directory for gate.json")
    target = gate.add_argument_group("the configuration under test")
    target.add_argument("--url", default=None, help="attach to a running server")
    add_auth_options(target)
    target.add_argument("--backend", choices=sorted(BACKENDS), default=None, help="launch this server")
    target.add_argument("--model", default=None, help="with --backend: model directory; with --url: served name")
    target.add_argument("--precision", choices=PRECISION_NAMES, default=None,
                        help="with --backend: precision to serve (default bf16); with --url: label only")
    target.add_argument("--max-model-len", type=int, default=None)
    target.add_argument("--load-format", choices=["auto", "dummy"], default=None)
    target.add_argument("--server-arg", action="append", default=[], metavar="ARG")
    target.add_argument("--startup-timeout", type=float, default=900.0)
    target.add_argument("--allow-remote", action="store_true")
    ref = gate.add_argument_group("the reference (default with --backend: the spec's reference_precision)")
    refs = ref.add_mutually_exclusive_group()
    refs.add_argument("--reference", type=Path, default=None,
                      help="a stored result: an earlier run's gate.json or reference.json")
    ref.add_argument("--reference-precision", choices=PRECISION_NAMES, default=None,
                     help="with --backend: launch the same model at this precision and measure it first; "
                          "with --reference-url: the precision that server runs (a label)")
    refs.add_argument("--reference-url", default=None, help="a running server at the reference precision")
    gate.add_argument("--record-reference", action="store_true",
                      help="only measure the target and write DIR/reference.json (no verdict)")
    gate.add_argument("--under-load", type=int, default=None, metavar="N",
                      help="measure the target while N concurrent streaming requests (the default workload) run "
                           "against it; judged against the reference measured unloaded")
    gate.set_defaults(handler=cmd_gate)


def cmd_gate(args: argparse.Namespace) -> int:
    if args.reference and args.reference_precision:
        raise ConfigError("--reference-precision does not apply to a stored --reference")
    if args.reference_url and split_url(args.reference_url)[1] is not None:
        # The reference's URL is stored as the verdict's source: credentials in it would be written out.
        raise ConfigError("--reference-url has credentials in it (user:password@): give them with --api-key or "
                          "--header, which every request to both servers carries")
    if not args.allow_remote:
        # Every URL, before anything is measured (the reference first) or created.
        for url in (args.url, args.reference_url):
            if url:
                check_loopback(url)
    ensure_writable_dir(args.out)
    run = GateRun(
        spec=args.spec, out=args.out, url=args.url, backend=args.backend, model=args.model,
        precision=args.precision, reference=args.reference, reference_precision=args.reference_precision,
        reference_url=args.reference_url, record_reference=args.record_reference, allow_remote=args.allow_remote,
        under_load=args.under_load,
        server_options={"max_model_len": args.max_model_len, "startup_timeout_s": args.startup_timeout,
                        "extra_args": args.server_arg,
                        # --load-format is vLLM's option: servers without dummy weights ignore it.
                        **({"dummy_weights": dummy_weights_option(args.load_format)}
                           if backend_for(args.backend or DEFAULT_KIND).config_class.dummy_weights_supported
                           else {})},
        log=lambda text: console.print(text, soft_wrap=True),
    )
    result = evaluate(run)
    colour = {"passed": "green", "failed": "red", "error": "yellow"}[result.status]
    console.print(f"accuracy gate {result.message}", style=colour, soft_wrap=True)
    if not args.record_reference or result.status == "error":
        write_json(args.out / "gate.json", result.model_dump(mode="json"))
        console.print(f"results: {args.out / 'gate.json'}", soft_wrap=True)
    return result.exit_code
