"""`servesweep capacity DIR --peak-rps R`: replicas, GPU-hours and cost per SKU for a peak load."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from servesweep.cli.common import console, from_options
from servesweep.errors import ConfigError, EXIT_OK
from servesweep.reports.capacity import (
    DEFAULT_HEADROOM,
    goodput_by_sku,
    plan_capacity,
    read_prices,
    render_markdown,
    write_capacity,
)
from servesweep.analysis.recommend import analyse
from servesweep.reports.render import write_report
from servesweep.files import read_yaml_file


def register(sub: Any) -> None:
    p = sub.add_parser("capacity", help="replicas, GPU-hours/day and cost per SKU for a peak load, from a sweep")
    p.add_argument("results_dir", type=Path)
    p.add_argument("--peak-rps", type=float, default=None, help="peak requests per second to serve")
    p.add_argument("--headroom", type=float, default=None,
                   help=f"fraction of goodput held back per replica (default {DEFAULT_HEADROOM})")
    p.add_argument("--sku-prices", type=Path, default=None, help="YAML {sku: {usd_per_gpu_hour: X}}")
    p.add_argument("--profile", type=str, default=None,
                   help="24 comma-separated hourly fractions of the peak (hour 0 first)")
    p.add_argument("--gpus-per-replica", type=int, default=1)
    p.add_argument("--energy-price", type=float, default=None, metavar="USD_PER_KWH",
                   help="price of a kWh: adds the measured GPU energy's cost per 1M output tokens")
    p.set_defaults(handler=cmd_capacity)


def cmd_capacity(args: argparse.Namespace) -> int:
    df, result = analyse(args.results_dir)
    scenario = read_yaml_file(args.results_dir / "scenario.json", "scenario", ConfigError) or {}
    section = scenario.get("capacity") or {}
    peak = args.peak_rps if args.peak_rps is not None else section.get("peak_rps")
    if peak is None:
        raise ConfigError("give --peak-rps (or a capacity: {peak_rps: ...} section in the scenario)")
    profile = ([float(x) for x in args.profile.split(",")] if args.profile else section.get("profile"))
    prices_path = args.sku_prices or (Path(section["prices"]) if section.get("prices") else None)
    prices = read_prices(prices_path) if prices_path else None
    ok = df[df.status == "ok"]
    tokens = ok.output_token_throughput.sum() / ok.request_throughput.sum() if len(ok) and ok.request_throughput.sum() else None
    report = from_options(lambda: plan_capacity(
        goodput_by_sku(result, args.gpus_per_replica), peak,
        headroom=args.headroom if args.headroom is not None else section.get("headroom", DEFAULT_HEADROOM),
        profile=profile, prices=prices, output_tokens_per_request=float(tokens) if tokens else None,
        price_source=str(prices_path) if prices_path else None,
        usd_per_kwh=args.energy_price if args.energy_price is not None else section.get("usd_per_kwh")))
    json_path, md_path = write_capacity(report, args.results_dir)
    console.print(render_markdown(report), soft_wrap=True, markup=False)
    paths = write_report(args.results_dir, analysis=(df, result))  # the report gains its capacity section and plot
    console.print(f"capacity: {json_path}, {md_path}, {paths['html']}")
    return EXIT_OK
