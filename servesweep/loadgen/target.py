"""Checks made before any load is sent: is the URL allowed, reachable, and what does it serve."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from servesweep.controlplane import NO_REDIRECTS, auth_error, is_auth_failure, is_redirect, redirect_error
from servesweep.errors import TargetError

__all__ = ["TargetError", "TargetInfo", "check_loopback", "probe_target"]


@dataclass(frozen=True)
class TargetInfo:
    base_url: str
    model: str
    max_model_len: int | None
    root: str | None  # the model path the server reports, where it does


def check_loopback(base_url: str) -> None:
    """Refuse targets outside this machine: load tests here only go to loopback addresses."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(f"{base_url!r} is not an http(s) URL")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise TargetError(f"cannot resolve host of {base_url}: {exc}") from None
    for info in infos:
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            raise TargetError(
                f"{base_url} resolves to {info[4][0]}, which is not a loopback address; "
                "pass --allow-remote to load-test a server on another machine"
            )


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object without a 'data' list"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a JSON array"
    return "a JSON string" if isinstance(value, str) else "a JSON number" if isinstance(value, (int, float)) else "JSON"


async def probe_target(
    session: aiohttp.ClientSession, base_url: str, model: str | None, timeout_s: float = 5.0
) -> TargetInfo:
    """Fail within seconds, naming the URL, when the target is dead or not OpenAI-compatible."""
    url = base_url.rstrip("/") + "/v1/models"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s), **NO_REDIRECTS) as resp:
            if is_redirect(resp.status):
                raise TargetError(redirect_error(url, resp.status, resp.headers.get("Location")))
            if is_auth_failure(resp.status):
                raise auth_error(url, resp.status)
            if resp.status != 200:
                raise TargetError(
                    f"{url} answered HTTP {resp.status}; is {base_url} an OpenAI-compatible server?"
                )
            try:
                listing = await resp.json(content_type=None)
            except ValueError:
                raise TargetError(f"{url} did not answer with JSON; is {base_url} an OpenAI-compatible server?") from None
    except TimeoutError:
        raise TargetError(f"{url} did not answer within {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise TargetError(f"cannot reach {base_url}: {exc}") from None
    if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        raise TargetError(f"{url} answered {_json_kind(listing)} instead of a model list: "
                          f"{base_url} is not an OpenAI-compatible server")
    served = [m for m in listing["data"] if isinstance(m, dict) and isinstance(m.get("id"), str)]
    if not served:
        raise TargetError(f"{url} lists no models")
    if model is None:
        entry = served[0]
    else:
        entry = next((m for m in served if m["id"] == model), None)
        if entry is None:
            names = ", ".join(m["id"] for m in served)
            raise TargetError(f"{base_url} does not serve model {model!r}; it serves: {names}")
    max_len, root = entry.get("max_model_len"), entry.get("root")
    return TargetInfo(base_url.rstrip("/"), entry["id"],
                      max_len if isinstance(max_len, int) and not isinstance(max_len, bool) else None,
                      root if isinstance(root, str) else None)
