"""Who the app answers: only its user.

* Bound to a loopback address (the default), the app answers only requests whose
  ``Host`` (and ``Origin``, when a browser sends one) names a loopback address or
  ``localhost``: a web page the user visits cannot reach it through a name that it
  points at 127.0.0.1 (DNS rebinding), since the browser then sends that name.
* Bound beyond loopback (``serve --host``), the app asks every request for its token,
  as Jupyter's server does: open ``http://HOST:PORT/?token=TOKEN`` once, the app keeps
  the token in a cookie for that browser (and drops it from the address); scripts may
  send ``Authorization: token TOKEN`` instead.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from urllib.parse import urlencode, urlsplit

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """``host`` (a name or address, IPv6 with or without brackets) is this machine only."""
    host = host.strip().strip("[]").lower().rstrip(".")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host part of a ``Host`` header (``name:port``, ``[v6]:port``), lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    name, _, port = header.rpartition(":")
    return name if name and port.isdigit() else header


def new_token() -> str:
    return secrets.token_hex(24)


class Access:
    """The check run before every request: ``refusal(request)`` is ``None`` for a
    request the app answers, else ``(status, message)``."""

    def __init__(self, host: str = "127.0.0.1", token: str | None = None):
        self.host = host
        self.loopback = is_loopback(host)
        if not self.loopback and not token:
            raise ValueError(f"serving on {host!r} (beyond this machine) needs a token")
        self.token = token
        digest = hashlib.sha256((token or "").encode()).hexdigest()[:12]
        self.cookie = f"jaxdissect_{digest}"

    def url_suffix(self) -> str:
        """What to append to the app's address so that a browser gets in."""
        return "" if self.token is None else "?" + urlencode({"token": self.token})

    def _token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def refusal(self, request) -> tuple[int, str] | None:
        if self.loopback:
            name = host_name(request.headers.get("Host", ""))
            if not is_loopback(name):
                return 403, (f"Host {name!r} is not an address of this server: it answers "
                             "only http://127.0.0.1 and http://localhost")
            origin = request.headers.get("Origin")
            if origin and origin != "null" and not is_loopback(urlsplit(origin).hostname or ""):
                return 403, f"requests from {origin!r} are refused: the app answers its own pages"
        if self.token is None:
            return None
        auth = request.headers.get("Authorization", "")
        given = (auth[6:].strip() if auth.lower().startswith("token ") else None) \
            or request.args.get("token") or request.cookies.get(self.cookie)
        if not self._token_ok(given):
            return 403, ("this server asks for its token: open the address that "
                         "jaxdissect serve printed (it ends in ?token=...)")
        return None


def register(app, access: Access) -> None:
    """Refuses what ``access`` refuses; a page opened with ``?token=`` gets the cookie
    and is sent on to its address without the token."""
    from flask import abort, redirect, request

    @app.before_request
    def check_access():
        refused = access.refusal(request)
        if refused is not None:
            abort(*refused)
        if access.token is not None and "token" in request.args and request.method == "GET":
            args = {k: v for k, v in request.args.items(multi=True) if k != "token"}
            target = request.path + ("?" + urlencode(args) if args else "")
            response = redirect(target, code=303)
            response.set_cookie(access.cookie, access.token, httponly=True, samesite="Strict")
            return response
        return None
