"""The rules every control-plane call to a server follows (model list, /tokenize, /metrics,
/health, the quality probes): no redirect is followed.

A load test is allowed to reach loopback addresses only (unless --allow-remote), and the checks
are made on the URL given. A server that answers 3xx with a `Location` elsewhere would otherwise
lead servesweep's HTTP clients (urllib and aiohttp follow redirects by default) to connect to an
address nobody checked. So a redirect is an answer like an error: it is reported, with where it
pointed, and not followed. The load generator's own client (servesweep.loadgen.http) never
follows redirects either.

  urlopen(url_or_request, timeout)   urllib's, without redirects: a 3xx raises HTTPError
  redirect_error(url, status, location) -> str   the one-line message naming the redirect
  NO_REDIRECTS                        keyword arguments for aiohttp requests (allow_redirects=False)
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

NO_REDIRECTS: dict[str, Any] = {"allow_redirects": False}


def redirect_error(url: str, status: int, location: str | None) -> str:
    where = f"to {location}" if location else "without a Location"
    return (f"{url} answered HTTP {status}, a redirect {where}; servesweep does not follow redirects: "
            "give the address it points to (the server's own URL)")


def is_redirect(status: int) -> bool:
    return 300 <= status < 400


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        raise urllib.error.HTTPError(req.full_url, code, redirect_error(req.full_url, code, headers.get("Location")),
                                     headers, fp)


_OPENER = urllib.request.build_opener(_RefuseRedirects())


def urlopen(url: str | urllib.request.Request, timeout: float) -> Any:
    """`urllib.request.urlopen` that never follows a redirect (HTTPError with the 3xx instead)."""
    return _OPENER.open(url, timeout=timeout)
