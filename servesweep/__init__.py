"""servesweep: measure LLM inference servers under load.

The public pieces: `servesweep.errors` (every error servesweep raises on purpose and the exit
codes), `servesweep.backends.BACKENDS` (the server kinds), `servesweep.loadtest.run_load_test`
(one load test), `servesweep.sweep.sweep_runner.SweepRunner` (a scenario's sweep) and
`servesweep.reports.render.write_report` (a report from results). The command line is
`servesweep.cli.main`.
"""

from servesweep.errors import (
    ConfigError,
    MeasurementError,
    OutputError,
    ReportError,
    ServerError,
    ServerStartError,
    ServesweepError,
    TargetError,
    UnsupportedConfig,
    UserError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "MeasurementError", "OutputError", "ReportError", "ServerError", "ServerStartError",
    "ServesweepError", "TargetError", "UnsupportedConfig", "UserError", "__version__",
]
