"""Every error servesweep raises on purpose, in one hierarchy, and the exit codes they map to.

    ServesweepError
      UserError             exit 2: the run cannot happen as asked; the message is one line
        ConfigError           a scenario, gate spec, dataset or option that cannot be used
        TargetError           the URL is not allowed, not reachable or not OpenAI-compatible
        UnsupportedConfig     the server configuration cannot run on this device
        OutputError           the results directory cannot be written
        ReportError           a directory that holds no results to report on
        AuthError             the server refused the credentials (HTTP 401/403), or none were given
      ServerError           exit 3: a server servesweep launched failed
        ServerStartError      it did not become healthy (classified cause + log tail)
        ServerUnresponsive    the target answered, then a control call (/tokenize) timed out
      MeasurementError      a quality measurement could not be made

The CLI translates these in one place (servesweep.cli.main). Anything else, a `ValueError`
from a bug included, keeps its traceback.
"""

from __future__ import annotations

from typing import Any, Mapping

# Exit codes of every command. 0 is kept for a run that completed and passed its checks.
EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # an accuracy gate regressed, or an --assert threshold failed
EXIT_USAGE = 2  # bad input: options, files, target, output directory
EXIT_SERVER = 3  # the server failed: did not start, died or became unreachable mid-run
EXIT_ALL_FAILED = 4  # the run finished but not one measured request succeeded
EXIT_OUTPUT = 5  # results could not be written (disk full, read-only) mid-run
# sweep/report: the sweep completed but there is no recommendation to deploy (no point met the
# SLOs within the budget, ...), or the one there is failed its verification run. Distinct from 1
# (a threshold the user set failed) so that a script tells "nothing to recommend" apart.
EXIT_NO_RECOMMENDATION = 6
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM: what completed is on disk


class ServesweepError(Exception):
    """Base of every error servesweep raises on purpose."""

    exit_code = EXIT_USAGE


class UserError(ServesweepError):
    """The run cannot happen as asked. The message is the whole story, on one line."""

    exit_code = EXIT_USAGE


class ConfigError(UserError, ValueError):
    """A file or option that cannot be used; the message names the file, field and allowed values."""


class TargetError(UserError, RuntimeError):
    """The target cannot be load-tested; the message names the URL and the reason."""


class AuthError(TargetError):
    """The server answered HTTP 401 or 403: no key, or the wrong one. The message says which
    options give one (servesweep.auth); it never holds the key."""


class UnsupportedConfig(UserError, ValueError):
    """The configuration cannot run on this device; raised before anything is launched."""


class OutputError(UserError, OSError):
    """Results could not be written: checked before a run starts (bad input, exit 2), or found
    mid-run when the disk refuses (exit 5, with what was written kept)."""

    exit_code = EXIT_OUTPUT


class OutputDirError(OutputError):
    """The output directory is unusable before anything ran: a file in the way, read-only."""

    exit_code = EXIT_USAGE


class ReportError(UserError):
    """The directory holds nothing a report can be written from."""


class ServerError(ServesweepError):
    """A server servesweep launched failed."""

    exit_code = EXIT_SERVER


class ServerStartError(ServerError, RuntimeError):
    """The server did not become healthy; `cause` is a short classification."""

    def __init__(self, cause: str, detail: str, log_tail: str = "") -> None:
        self.cause = cause
        self.detail = detail
        self.log_tail = log_tail
        super().__init__(f"{cause}: {detail}" + (f"\n--- server log (tail) ---\n{log_tail}" if log_tail else ""))


class ServerUnresponsive(ServerError, TargetError):
    """The target answered its model list, then stopped answering a control call (/tokenize within
    its timeout): the server's fault, exit 3, where a target that cannot be used at all is exit 2."""


class MeasurementError(ServesweepError, RuntimeError):
    """A quality measurement (accuracy gate, drift probe) could not be made."""


def validation_problem(error: Mapping[str, Any], top_level: str = "") -> str:
    """One pydantic error (an item of `ValidationError.errors()`) as one line, `field.path:
    message`: pydantic's "Value error, " prefix dropped and a field the model forbids called an
    unknown field. `top_level` names the place when the error is not about one field."""
    where = ".".join(str(part) for part in error.get("loc", ())) or top_level
    msg = "unknown field" if error.get("type") == "extra_forbidden" else str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def validation_message(exc: Any, top_level: str = "") -> str:
    """The first problem of a pydantic ValidationError as one line (validation_problem); every
    place that turns a file's or an option's validation error into a user error says it this way."""
    return validation_problem(exc.errors()[0], top_level)
