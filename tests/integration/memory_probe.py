"""Client memory growth over a long closed-loop level against a stand-in server, run in its own
process (tests/integration/test_memory_growth.py): `python memory_probe.py URL OUT FIRST LAST`.

tracemalloc snapshots are taken when the FIRST-th and the LAST-th record are written, inside the
run, and the growth between them is printed as JSON: in total, and without the latency
distributions' exact values (servesweep.loadgen.distribution, which keeps up to 131,072 values
each by design before it folds them into a fixed-size histogram). Everything else a run holds per
request (records, connections, statistics) must not grow with the request count.

`--keep-records` makes the runner keep every record in memory (RunnerOptions(keep_records=True)),
the regression the test must be able to see."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import resource
import sys
import tracemalloc
from pathlib import Path

ADDRESS_SPACE_LIMIT = 4 * 2**30  # a runaway allocation fails here instead of taking the machine


def main() -> None:
    url, out, first, last = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    keep_records = "--keep-records" in sys.argv
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    from servesweep import loadtest
    from servesweep.loadgen import distribution
    from servesweep.loadgen import load_runner as runner
    from servesweep.loadgen.arrivals import LoadLevel
    from servesweep.loadgen.workload import Workload

    snapshots: dict[int, tracemalloc.Snapshot] = {}

    class Probe(loadtest.RecordWriter):
        def write(self, record) -> None:
            super().write(record)
            if self.count in (first, last):
                snapshots[self.count] = tracemalloc.take_snapshot()

    loadtest.RecordWriter = Probe
    if keep_records:
        original = runner.LoadRunner.__init__

        def keeping(self, *args, options=None, **kwargs) -> None:
            options = dataclasses.replace(options or runner.RunnerOptions(), keep_records=True)
            original(self, *args, options=options, **kwargs)

        runner.LoadRunner.__init__ = keeping
        loadtest.LoadRunner = runner.LoadRunner
    config = loadtest.LoadTestConfig(base_url=url, out_dir=out, show_progress=False,
                                     levels=[LoadLevel(concurrency=32, num_requests=last + 64)],
                                     workload=Workload(input_len=16, output_len=8))
    tracemalloc.start()
    summary = asyncio.run(loadtest.run_load_test(config))
    mine = [tracemalloc.Filter(False, distribution.__file__)]
    total = sum(s.size_diff for s in snapshots[last].compare_to(snapshots[first], "filename"))
    rest = sum(s.size_diff for s in snapshots[last].filter_traces(mine).compare_to(
        snapshots[first].filter_traces(mine), "filename"))
    print(json.dumps({"completed": summary["completed"], "failed": summary["failed"], "requests": last - first,
                      "growth_bytes": total, "growth_without_distributions_bytes": rest}))


if __name__ == "__main__":
    main()
