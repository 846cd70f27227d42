"""servesweep's workloads in Locust: its web UI, headless runs, and distributed workers.

`servesweep locust` (servesweep.cli.locust) starts Locust with the packaged locustfile
(`LOCUSTFILE`). Modules here that import Locust (plugin, user) are only imported inside a Locust
process, since importing Locust monkey-patches the standard library for gevent.
"""

from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().parent / "locustfiles" / "servesweep_llm.py"
