"""What makes ibsr-serve safe to put on a network: an API key, closed CORS, and the host check.

- API key (`--api-key`, $IBSR_API_KEY): every request must carry it, as `Authorization: Bearer
  KEY` or `X-Api-Key: KEY`, else 401 JSON. Only the page's own files (`GET /`, `/static/...`)
  are exempt: they are the files of the ibsr package, the same for every installation, and
  hold nothing of the index; the page has to load before it can ask for the key. Keys are
  compared in constant time (`hmac.compare_digest`), so the time to refuse one says nothing
  about how much of it was right.
- CORS: closed unless origins are named (`--cors-origin`): no CORS headers, so a page of
  another site cannot read the answers in its visitors' browsers.
- `check_exposure`: refuse to listen beyond loopback without a key, unless told `--insecure`.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware

from ibsr.errors import IbsrError

PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = ("/",)
# What a cross-origin page may send and read (only for --cors-origin origins).
CORS_HEADERS = ["Authorization", "X-Api-Key", "Content-Type"]
CORS_EXPOSED = ["X-Ibsr-Version", "Retry-After"]


def secure(app, api_key: str | None, cors_origins: tuple[str, ...]) -> None:
    """Add the key check, then CORS around it (outermost, so a browser can read a 401 and its
    preflight requests, which never carry the key, are answered)."""
    if api_key:
        app.add_middleware(ApiKeyAuth, api_key=api_key)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=CORS_HEADERS, expose_headers=CORS_EXPOSED)


def presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    """The key a request carries: `Authorization: Bearer KEY`, else `X-Api-Key: KEY`."""
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return token.strip()
    return headers.get(b"x-api-key")


class ApiKeyAuth:
    """ASGI middleware: 401 JSON for a request without the key (or with another one)."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self._public(scope) and not self._authorized(scope):
            response = JSONResponse({"error": "missing or wrong API key: send `Authorization: Bearer KEY` or "
                                              "`X-Api-Key: KEY` (the page: open it as /#key=KEY)"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        await self.app(scope, receive, send)

    def _authorized(self, scope) -> bool:
        key = presented_key(dict(scope["headers"]))
        return key is not None and hmac.compare_digest(key, self.key)

    @staticmethod
    def _public(scope) -> bool:
        path = scope["path"]
        return scope["method"] in ("GET", "HEAD") and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES))


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine: localhost or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    if not is_loopback(host) and not api_key and not insecure:
        raise IbsrError(f"--host {host} accepts connections from other machines and no API key is set: pass "
                        "--api-key KEY (or set IBSR_API_KEY), or --insecure to serve without one")


def check_api_key(key: str) -> None:
    """A key must fit in an HTTP header as it is (printable ASCII, no spaces)."""
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise IbsrError("--api-key must be printable ASCII without spaces (e.g. `openssl rand -hex 32`)")


def check_origin(origin: str) -> str:
    """A CORS origin is `scheme://host[:port]` exactly as browsers send it, or `*` (any)."""
    parts = urlsplit(origin)
    if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc
                          or parts.path or parts.query or parts.fragment):
        raise IbsrError(f"--cors-origin {origin!r} is not an origin: give scheme://host[:port], e.g. "
                        "https://example.org (no path, no trailing slash)")
    return origin
