"""A server process servesweep started: launch, wait for health, watch, stop.

The server runs in its own process group (its workers inherit it), so stopping means signalling
the group: SIGINT, wait, SIGTERM, wait, SIGKILL. Every live server is stopped at interpreter
exit and on SIGTERM/SIGHUP; on Linux the server's leader also gets SIGTERM if servesweep itself
is killed outright (PR_SET_PDEATHSIG), so no server outlives the tool that started it.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import Callable

from servesweep import controlplane
from servesweep.errors import ServerStartError

_LIVE: set["ServerProcess"] = set()
_LIVE_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def die_with_parent() -> None:
    """In a child between fork and exec: SIGTERM it when the parent dies (PR_SET_PDEATHSIG)."""
    _die_with_parent()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _child_setup(cpus: list[int] | None) -> Callable[[], None]:
    def setup() -> None:
        _die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)  # the whole server (its workers inherit it) stays on these cores
    return setup


class ServerProcess:
    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        host: str,
        port: int,
        env: dict[str, str] | None = None,
        health_path: str = "/health",
        classify: Callable[[str], str] | None = None,
        cpus: list[int] | None = None,
    ) -> None:
        self.argv = argv
        self.log_path = log_path
        self.host = host
        self.port = port
        self.env = env
        self.health_path = health_path
        self.classify = classify or (lambda _log: "server exited")
        self.cpus = cpus
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=_child_setup(self.cpus) if sys.platform.startswith("linux") else None,
            )
        except FileNotFoundError as exc:
            raise ServerStartError("server executable not found", str(exc)) from None
        finally:
            log.close()
        with _LIVE_LOCK:
            _LIVE.add(self)
        _install_cleanup_handlers()

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return "".join(deque(f, maxlen=lines)).rstrip()
        except FileNotFoundError:
            return ""

    def _healthy(self) -> bool:
        try:
            with controlplane.urlopen(self.base_url + self.health_path, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_healthy(self, timeout_s: float, on_tick: Callable[[float], None] | None = None) -> float:
        """Block until /health answers 200; raise ServerStartError at once if the process exits."""
        assert self.proc is not None
        start = time.monotonic()
        while True:
            code = self.proc.poll()
            if code is not None:
                tail = self.log_tail()
                self.stop()
                raise ServerStartError(self.classify(tail), f"server exited with code {code} before it was healthy", tail)
            if self._healthy():
                self.startup_s = time.monotonic() - start
                return self.startup_s
            elapsed = time.monotonic() - start
            if elapsed > timeout_s:
                tail = self.log_tail()
                self.stop()
                raise ServerStartError("start-up timeout", f"no healthy {self.health_path} after {timeout_s:.0f} s", tail)
            if on_tick is not None:
                on_tick(elapsed)
            time.sleep(0.5)

    def poll_failure(self) -> str | None:
        """A reason if the server has died (for aborting a run), else None."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is None:
            return None
        tail = self.log_tail(60)
        cause = self.classify(tail)
        return f"server process exited with code {code} during the run ({cause}); log: {self.log_path}"

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGINT, SIGTERM, then SIGKILL to the whole process group."""
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid  # start_new_session made the leader's pid the group id
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if not _group_alive(pgid):
                break
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _group_alive(pgid):
                proc.poll()
                time.sleep(0.1)
        proc.poll()
        with _LIVE_LOCK:
            _LIVE.discard(self)


def _group_alive(pgid: int) -> bool:
    """True while any process of the group is alive (zombies of our own child are reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg succeeds while the leader is an unreaped zombie: reap it and look again.
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    return _group_has_members(pgid)


def _group_has_members(pgid: int) -> bool:
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # Fields after the command name (which may contain spaces) start after the last ')'.
        rest = stat[stat.rfind(")") + 2:].split()
        if len(rest) > 2 and rest[2] == str(pgid) and rest[0] != "Z":
            return True
    if not os.path.isdir("/proc"):
        return True
    return False


def stop_all_servers() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        server.stop(grace_s=5.0)


_handlers_installed = False


def _install_cleanup_handlers() -> None:
    """Stop live servers at exit and on SIGTERM/SIGHUP (SIGINT arrives as KeyboardInterrupt)."""
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    _handlers_installed = True
    atexit.register(stop_all_servers)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: object, previous: object = previous) -> None:
            stop_all_servers()
            if callable(previous):
                previous(signum, frame)
            else:
                raise SystemExit(128 + signum)

        signal.signal(sig, handler)


def classify_log(log_tail: str, causes: list[tuple[str, str]]) -> str:
    """Name the likely cause of a server failure from the end of its log: the cause of the first
    pattern that matches (each backend keeps its own list)."""
    for pattern, cause in causes:
        if re.search(pattern, log_tail):
            return cause
    return "server exited (see log)"
