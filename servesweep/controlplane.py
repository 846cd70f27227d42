"""The rules every control-plane call to a server follows (model list, /tokenize, /metrics,
/health, the quality probes): no redirect is followed, and the run's credentials (servesweep.auth)
go with every call.

A load test is allowed to reach loopback addresses only (unless --allow-remote), and the checks
are made on the URL given. A server that answers 3xx with a `Location` elsewhere would otherwise
lead servesweep's HTTP clients (urllib and aiohttp follow redirects by default) to connect to an
address nobody checked. So a redirect is an answer like an error: it is reported, with where it
pointed, and not followed. The load generator's own client (servesweep.loadgen.http) never
follows redirects either.

  urlopen(url_or_request, timeout)   urllib's, without redirects, with the credentials: a 3xx raises HTTPError
  session(**kwargs)                   an aiohttp ClientSession whose requests carry the credentials
  redirect_error(url, status, location) -> str   the one-line message naming the redirect
  NO_REDIRECTS                        keyword arguments for aiohttp requests (allow_redirects=False)
  auth_error(url, status) -> AuthError   a 401/403, said as an authentication failure
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import aiohttp

from servesweep import auth
from servesweep.errors import AuthError

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
    """`urllib.request.urlopen` that never follows a redirect (HTTPError with the 3xx instead),
    with the run's credentials."""
    request = url if isinstance(url, urllib.request.Request) else urllib.request.Request(url)
    for name, value in auth.current().headers:
        request.add_header(name, value)
    return _OPENER.open(request, timeout=timeout)


def session(**kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session whose every request carries the run's credentials."""
    return aiohttp.ClientSession(headers=auth.current().as_dict(), **kwargs)


def is_auth_failure(status: int) -> bool:
    return status in (401, 403)


def auth_error(url: str, status: int) -> AuthError:
    """A 401 or 403 as one line: which credentials were sent (their source, never their value)."""
    given = auth.current().key_source or (", ".join(n for n, _ in auth.current().headers) or None)
    if given is None:
        how = ("the server wants credentials and none were given: pass --api-key KEY, set OPENAI_API_KEY, "
               "or --header 'Name: value' for a gateway")
    else:
        how = f"the server refused the credentials given ({given}): check the key"
    return AuthError(f"authentication failure: {url} answered HTTP {status}; {how}")
