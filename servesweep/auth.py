"""Credentials for the server under test: where they come from, how every request carries them, and
how they are kept out of everything servesweep writes.

Sources. The API key, first found: `--api-key`, the scenario's `api_key_env` (the NAME of an
environment variable: a key never sits in a scenario file, which is copied into the results), then
`OPENAI_API_KEY`; it is sent as `Authorization: Bearer KEY`. `--header 'Name: value'` (repeatable)
adds any header a gateway wants. Credentials in the URL (`http://user:pass@host`) are taken out of
it and sent as `Authorization: Basic`, so the URL that is printed and stored has none.

Every request carries them: the load's own (servesweep.loadgen.http encodes them into each request)
and every control-plane call (servesweep.controlplane: the model list, /tokenize, /metrics, health,
quality probes), in this process, its worker processes (handed over with the job) and Locust's
processes (handed over in the environment, SERVESWEEP_AUTH, never on a command line, where `ps`
shows it). The process-wide setting is made once, by the command line (`use`).

Redaction: no result file, log or console line holds a key. Only header NAMES are ever described;
`redact` replaces every secret value (and a launched server's `--api-key VALUE`) where text could
carry one, such as a server's error message or a command line.
"""

from __future__ import annotations

import base64
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson

from servesweep.errors import ConfigError

ENV_API_KEY = "OPENAI_API_KEY"
ENV_HANDOVER = "SERVESWEEP_AUTH"  # to child processes (Locust): JSON [[name, value], ...]
REDACTED = "<redacted>"
# Options of servers whose value is a secret, for the command lines servesweep records.
SECRET_OPTIONS = ("--api-key", "--api_key")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)


@dataclass(frozen=True, slots=True)
class ServerAuth:
    """The headers every request to the server carries, and where the key came from (a name,
    never a value). Printing it shows header names only."""

    headers: tuple[tuple[str, str], ...] = ()
    key_source: str | None = None  # "--api-key", "OPENAI_API_KEY", "scenario api_key_env X", "URL"

    def __repr__(self) -> str:
        return f"ServerAuth(headers={[name for name, _ in self.headers]}, values {REDACTED})"

    __str__ = __repr__

    def as_dict(self) -> dict[str, str]:
        return dict(self.headers)

    def wire(self) -> bytes:
        """The header lines as they go into a raw HTTP/1.1 request."""
        return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in self.headers)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every string that must never be written: each header value, the key inside a Bearer
        value, the user:password inside a Basic one, and the password alone."""
        found: list[str] = []
        for _, value in self.headers:
            found.append(value)
            scheme, _, credential = value.partition(" ")
            if credential and scheme.lower() == "bearer":
                found.append(credential)
            elif credential and scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(credential).decode()
                except ValueError:
                    continue
                found += [decoded, decoded.partition(":")[2]]
        return tuple(s for s in found if len(s) >= 4)  # shorter strings would redact ordinary text

    def describe(self) -> dict[str, object] | None:
        """What the summary may say: the header names and the key's source, no value."""
        if not self.headers:
            return None
        return {"headers": [name for name, _ in self.headers], "key_source": self.key_source}

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def with_key(self, key: str, source: str) -> "ServerAuth":
        """This auth with `Authorization: Bearer key` in place of any Authorization header."""
        rest = tuple((n, v) for n, v in self.headers if n.lower() != "authorization")
        return ServerAuth((("Authorization", f"Bearer {_header_value(key, source)}"),) + rest, source)


_current = ServerAuth()


def current() -> ServerAuth:
    """The process's credentials (none unless the command line, a worker job or Locust set them)."""
    return _current


def use(auth: ServerAuth) -> None:
    global _current
    _current = auth


@contextmanager
def using(auth: ServerAuth) -> Iterator[ServerAuth]:
    """`auth` for the duration of a command (tests run several in one process)."""
    before = current()
    use(auth)
    try:
        yield auth
    finally:
        use(before)


def _header_value(value: str, what: str) -> str:
    # Header values go into raw request bytes: a CR or LF would inject headers or a request.
    if not value or any(c in value for c in "\r\n\0") or not value.isprintable():
        raise ConfigError(f"{what}: empty, or holds a line break or control character")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(f"{what}: holds characters an HTTP header cannot carry") from None
    return value


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value` from --header, checked (a value is never echoed in the error)."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.match(name):
        raise ConfigError(f"--header {name or '?'}: expected 'Name: value' with an HTTP header name")
    if name.lower() in ("host", "content-length", "content-type", "transfer-encoding", "connection"):
        raise ConfigError(f"--header {name}: servesweep sets this header itself")
    return name, _header_value(value, f"--header {name}")


def split_url(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without `user:password@`, and those credentials as an Authorization: Basic header."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return clean, ("Authorization", f"Basic {token}")


def resolve(url: str | None, api_key: str | None, headers: list[str],
            environ: Mapping[str, str] = os.environ) -> tuple[str | None, ServerAuth]:
    """The URL without credentials and the auth the command line, the URL and the environment give."""
    extra = tuple(parse_header(h) for h in headers)
    basic = None
    if url:
        url, basic = split_url(url)
    auth = ServerAuth(extra)
    if api_key is not None:
        if basic is not None:
            raise ConfigError("give the credentials in the URL or --api-key, not both")
        return url, auth.with_key(api_key, "--api-key")
    if basic is not None:
        return url, ServerAuth((basic,) + tuple((n, v) for n, v in extra if n.lower() != "authorization"), "URL")
    if any(n.lower() == "authorization" for n, _ in extra):
        return url, ServerAuth(extra, "--header")
    key = environ.get(ENV_API_KEY)
    return url, auth.with_key(key, ENV_API_KEY) if key else auth


def with_scenario_key(auth: ServerAuth, env_name: str | None, environ: Mapping[str, str] = os.environ) -> ServerAuth:
    """A scenario's `api_key_env`: that variable's key, unless --api-key, the URL or --header gave one."""
    if env_name is None or auth.key_source in ("--api-key", "URL", "--header"):
        return auth
    key = environ.get(env_name)
    if not key:
        raise ConfigError(f"the scenario's api_key_env names {env_name}, which is not set in the environment")
    return auth.with_key(key, f"scenario api_key_env {env_name}")


def handover(auth: ServerAuth) -> dict[str, str]:
    """Environment entries that give a child process these credentials (`from_handover`)."""
    return {ENV_HANDOVER: orjson.dumps([list(h) for h in auth.headers]).decode()} if auth.headers else {}


def from_handover(environ: Mapping[str, str] = os.environ) -> ServerAuth:
    text = environ.get(ENV_HANDOVER)
    if not text:
        return ServerAuth()
    return ServerAuth(tuple((str(n), str(v)) for n, v in orjson.loads(text)), "handed over")


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with the value of every SECRET_OPTIONS option (and every known secret) hidden."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
        elif arg in SECRET_OPTIONS:
            out.append(arg)
            hide_next = True
        elif arg.startswith(tuple(f"{o}=" for o in SECRET_OPTIONS)):
            out.append(arg.partition("=")[0] + "=" + REDACTED)
        else:
            out.append(current().redact(arg))
    return out
