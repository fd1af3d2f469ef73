"""Response headers, HTTPS detection behind a proxy, and cross-site request forgery checks.

CSRF: the dashboard's forms carry a token equal to a cookie (double submit), and the token is one
this dashboard issued: a random nonce and its HMAC under `Dashboard.csrf_key` — the key in
PASSITO_WEB_CSRF_KEY_FILE, shared by the replicas that read it, or one made at start (`load_csrf_key`),
so a cookie planted by someone else (`passito_csrf=x` with a field `csrf=x`) is refused. The cookie
is HttpOnly and SameSite=Strict — a cross-site request does not even carry it — and `__Host-` plus
Secure behind TLS, so a sibling domain cannot plant one. Every state-changing request from a
browser must also not come from another site (Sec-Fetch-Site, else Origin). API requests with a
bearer token carry no ambient credential and need neither; other API requests must send JSON,
which a cross-site form cannot. `read_form` reads a dashboard form (url-encoded, bounded, each field once).

Percent-encoded bytes that are not UTF-8 (`%ff`, an overlong `%C0%AF`, a surrogate's `%ED%A0%80`)
are refused, in the path and the query (`check_url`, before any route) and in a form: Starlette
and uvicorn would decode them to U+FFFD, a different name than the one sent.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from passito_jobs.settings import ConfigError, printable, read_secret_file
from passito_jobs.web import params
from passito_jobs.web.board import dashboard
from passito_jobs.web.params import BadRequest
from passito_jobs.web.settings import WebSettings, is_loopback

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
CSRF_FIELD = "csrf"
MIN_CSRF_KEY = 32
"""The fewest characters of PASSITO_WEB_CSRF_KEY_FILE's key."""


class SecurityHeaders:
    """Adds the security headers to every response (and no-store to every non-static one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [h for h in HEADERS if h[0] not in present]
                if not static and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                if is_https(scope):
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_https(scope: Scope) -> bool:
    """TLS at this server, or X-Forwarded-Proto: https from a trusted proxy (the app marks it)."""
    return scope.get("scheme") == "https" or bool(scope.get("state", {}).get("forwarded_https"))


def cookie_name(request: Request) -> str:
    # `__Host-` cookies must be Secure: only behind TLS.
    return "__Host-passito_csrf" if is_https(request.scope) else "passito_csrf"


def load_csrf_key(web: WebSettings) -> bytes:
    """The key that signs CSRF tokens: the text of PASSITO_WEB_CSRF_KEY_FILE (whitespace around
    it stripped), or a random one when it is unset. ConfigError, naming the variable and the path
    and never what the file holds, for a file that cannot be read or holds a key too short."""
    if web.csrf_key_file is None:
        return secrets.token_bytes(32)
    variable, path = web.source("csrf_key_file"), str(web.csrf_key_file)
    key = read_secret_file(variable, path, "csrf_key_file").strip()
    if len(key) < MIN_CSRF_KEY:
        raise ConfigError(
            f"{variable}: {printable(path, 200)} "
            + (f"holds fewer than {MIN_CSRF_KEY} characters" if key else "is empty")
            + f" (the CSRF key must be at least {MIN_CSRF_KEY}, e.g. `openssl rand -base64 48`)",
            field="csrf_key_file",
        )
    return key.encode("utf-8")


def _signature(key: bytes, nonce: str) -> str:
    digest = hmac.new(key, nonce.encode("ascii"), "sha256").digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def issued(request: Request, token: str) -> bool:
    """Whether this dashboard issued `token` (`nonce.signature`, the signature its HMAC): this
    process, or any that signs with the same PASSITO_WEB_CSRF_KEY_FILE."""
    nonce, dot, signature = token.partition(".")
    if not dot or len(nonce) != 43 or not nonce.isascii():
        return False
    expected = _signature(dashboard(request).csrf_key, nonce)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace"))


def csrf_token(request: Request) -> str:
    """This browser's token: its cookie's if this dashboard issued it, or a new one that
    `set_csrf_cookie` will send (after a restart with a random key, or a new key, the next page a
    browser loads renews it)."""
    token = request.cookies.get(cookie_name(request), "")
    if not issued(request, token):
        token = getattr(request.state, "new_csrf", "")
        if not token:
            nonce = secrets.token_urlsafe(32)
            token = f"{nonce}.{_signature(dashboard(request).csrf_key, nonce)}"
            request.state.new_csrf = token
    return token


def set_csrf_cookie(request: Request, response: Response) -> None:
    token = getattr(request.state, "new_csrf", "")
    if token:
        response.set_cookie(
            cookie_name(request),
            token,
            httponly=True,
            samesite="strict",
            secure=is_https(request.scope),
            path="/",
        )


def check_same_site(request: Request) -> None:
    """Refuse a state-changing request that a browser sent from another site."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site not in ("same-origin", "none"):
            raise BadRequest(f"cross-site request refused (Sec-Fetch-Site: {fetch_site[:20]})", 403)
        return
    origin = request.headers.get("origin")
    if origin is not None and not same_origin(origin, request):
        raise BadRequest("cross-site request refused (its Origin is another site)", 403)


def same_origin(origin: str, request: Request) -> bool:
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    host = request.headers.get("host", "")
    return origin != "null" and parts.netloc.lower() == host.lower()


def check_form(request: Request, form: Any) -> None:
    """A form post: not cross-site, and its token matches this browser's cookie."""
    check_same_site(request)
    cookie = request.cookies.get(cookie_name(request), "")
    given = form.get(CSRF_FIELD, "")
    if (
        not isinstance(given, str)
        or not hmac.compare_digest(cookie.encode("utf-8", "replace"), given.encode("utf-8", "replace"))
        or not issued(request, given)
    ):
        raise BadRequest("the form has expired or came from another site: reload the page and try again", 403)


def check_api_post(request: Request, via: str) -> None:
    """An API action: with a bearer token nothing more; with ambient credentials (a browser's
    basic authentication, a proxy's cookie, or none on loopback) JSON from this site only."""
    if via == "token":
        return
    check_same_site(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BadRequest("send the request body as JSON (Content-Type: application/json)", 415)


MAX_FORM = 16 * 1024
MAX_FORM_FIELDS = 50
FORM_KEYS = (*params.FILTER_KEYS, "action", "confirm", "concurrency", "rate", "key_concurrency", CSRF_FIELD)
"""The fields a dashboard form may carry (each at most once)."""


async def read_form(request: Request) -> dict[str, str]:
    """A url-encoded form (the only kind the dashboard's pages send), each field once."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise BadRequest("send the form url-encoded (application/x-www-form-urlencoded)", 415)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise BadRequest(f"the form is larger than {MAX_FORM} bytes", 413)
    return params.single_values(url_pairs(body, "form field", most=MAX_FORM_FIELDS), FORM_KEYS)


def url_pairs(raw: bytes, what: str, *, most: int | None = None) -> list[tuple[str, str]]:
    """The `name=value` pairs of a query string or a url-encoded form, as `parse_qsl` reads them
    (`+` is a space, a name without `=` has an empty value), but each name and value must be
    UTF-8 once percent-decoded: 400 "... is not valid UTF-8" rather than U+FFFD in its place."""
    pieces = [piece for piece in raw.split(b"&") if piece]
    if most is not None and len(pieces) > most:
        raise BadRequest(f"too many {what}s (at most {most})")
    pairs = []
    for piece in pieces:
        name, _, value = piece.partition(b"=")
        decoded = _utf8(name, f"a {what} name")
        pairs.append((decoded, _utf8(value, f"{what} {params.shown(decoded)}")))
    return pairs


def _utf8(raw: bytes, what: str) -> str:
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not valid UTF-8") from None


_HOST = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::[0-9]{1,5})?")


def is_loopback_host(host: str) -> bool:
    """Whether a Host header names this machine: localhost, 127.0.0.0/8 or [::1], any port."""
    found = _HOST.fullmatch(host)
    if not found:
        return False
    name = found.group(1).lower()
    # An IPv6 address in a Host header is bracketed, an IPv4 one is not ([127.0.0.1] is no host).
    return is_loopback(name) and name.startswith("[") == (":" in name)


def check_loopback_host(scope: Scope) -> None:
    """Without authentication (loopback only), a request must be addressed to this machine by
    name: a page whose DNS name the attacker re-points at 127.0.0.1 (DNS rebinding) sends its
    own name as Host, and is refused (421)."""
    for name, value in scope.get("headers", []):
        if name == b"host" and not is_loopback_host(host := value.decode("latin-1")):
            raise BadRequest(
                f"this dashboard has no authentication, so it answers only requests for localhost, "
                f"127.0.0.1 or [::1], not Host {params.shown(host, 60)} (set PASSITO_WEB_AUTH to serve "
                "it under another name)",
                421,
            )


def check_url(scope: Scope) -> None:
    """The path (percent-decoded) and every query parameter are UTF-8 (BadRequest otherwise)."""
    raw_path = scope.get("raw_path")
    if raw_path is not None:
        try:
            unquote_to_bytes(raw_path).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the path is not valid UTF-8") from None
    url_pairs(scope.get("query_string", b""), "query parameter")
