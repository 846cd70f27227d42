"""The Locust user: one closed-loop LLM client sending streamed completions or chat requests.

Each user holds one keep-alive connection and sends its next request the moment the previous one
ends (closed loop; open-loop Poisson or gamma arrivals stay in `servesweep run`). A request's
response is fed to servesweep's recorder (`Exchange`) straight from the socket reads, so TTFT,
ITL, TPOT and e2e are measured exactly as `servesweep run` measures them; the finished record is
written to servesweep's records and logged on Locust's statistics (servesweep.locust.reporting).
"""

from __future__ import annotations

import time

import gevent
from gevent import GreenletExit
from locust import User, constant, task

from servesweep.loadgen.exchange import Exchange
from servesweep.loadgen.failures import failure_of
from servesweep.loadgen.records import ERROR_CANCELLED, ERROR_CONNECTION, RequestRecord
from servesweep.locust.plugin import STATE
from servesweep.locust.reporting import report_record
from servesweep.locust.transport import GeventConnection

# After a failed connection, a user waits this long before its next request, so a server that is
# down is not hammered in a tight loop (the failures still count and show in Locust's UI).
CONNECT_RETRY_S = 0.1
_clock = time.perf_counter


class LLMUser(User):
    """Streams OpenAI-compatible completions drawn from servesweep's workload, back to back."""

    wait_time = constant(0)

    def on_start(self) -> None:
        config = STATE.config
        if config is None:
            raise RuntimeError("servesweep: no run configuration in this process")
        STATE.ensure_prompts()  # returns at once unless this process is still building them
        self.connection = GeventConnection(config.base_url)
        self.timeout_s = config.workload.request_timeout_s
        self.stream = config.workload.stream
        self.keep_text = config.keep_text
        self.exact_length = config.workload.ignore_eos  # an answer with fewer tokens was cut short

    def on_stop(self) -> None:
        connection = getattr(self, "connection", None)  # absent when on_start failed
        if connection is not None:
            connection.close()

    @task
    def complete(self) -> None:
        state = STATE
        prepared, record = state.next_request()
        t0 = state.t0
        record.sent_s = _clock() - t0
        exchange = Exchange(record, t0, self.stream, self.keep_text, self.exact_length)
        try:
            with gevent.Timeout(self.timeout_s, TimeoutError(f"no complete response within {self.timeout_s:g} s")):
                self.connection.request(prepared.request, exchange)
        except GreenletExit:
            # Locust stops users by killing their greenlets: the request is cut off, kept as
            # cancelled in servesweep's records and, as Locust does, left out of its statistics.
            self.connection.close()
            _finish(record, ERROR_CANCELLED, "cancelled before completion (the test stopped)")
            state.add_record(record)
            raise
        except Exception as exc:  # noqa: BLE001  (the asyncio client's map: loadgen/failures.py)
            _finish(record, *failure_of(exc))
        if record.end_s is None:
            record.end_s = _clock() - t0
        state.add_record(record)
        report_record(self.environment, record, state.path, state.url)
        if record.error_kind == ERROR_CONNECTION:
            gevent.sleep(CONNECT_RETRY_S)


def _finish(record: RequestRecord, kind: str, message: str) -> None:
    record.error_kind, record.error_message = kind, message
    if record.end_s is None:
        record.end_s = _clock() - STATE.t0
