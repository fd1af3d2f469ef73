"""Database connection strings in messages: the password never shows, whatever the string's shape.

libpq and psycopg quote the connection string, or a piece of it, in their errors
(`missing "=" after "app:secret@host/db"`, `invalid percent-encoded token: "sec%ret"`,
`failed to resolve host 'ss@db'`). A malformed string cannot be parsed to find its password,
so the secret parts are located by their shape instead, deliberately too widely: the userinfo
after the first `:` up to the `@` that ends it (URL form, with or without a scheme), and the
value of every `password=` and the like (key=value form and URL query). `redact` removes
them from any text: the whole string, quoted pieces of it, and the password itself.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Conninfo

from passito_jobs.queue.errors import InvalidDatabaseUrlError
from passito_jobs.queue.limits import printable

MASK = "***"
MIN_FREE_TEXT_SECRET = 4
"""Shorter passwords are masked wherever the connection string (or a piece of it) is quoted,
but not searched for in free text: that would garble every message, and protect nothing."""

_SCHEME = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")
_KEY_VALUE = re.compile(r"^\s*[A-Za-z_]+\s*=")
SECRET_KEYWORDS = ("password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key")
_SECRET_KEY = re.compile(rf"(?i)(^|[\s?&])(?:{'|'.join(SECRET_KEYWORDS)})\s*=\s*")
_INVALID = "not a valid PostgreSQL connection string"

Span = tuple[int, int]


@cache
def _next_setting() -> dict[str, re.Pattern[str]]:
    """Where a value ends: before the next `keyword=` that libpq knows. A password may hold
    spaces, `&` or `?` by mistake; only a real keyword tells where the next setting starts."""
    keywords = "|".join(sorted((o.keyword.decode() for o in Conninfo.get_defaults()), key=len, reverse=True))
    return {
        "key_value": re.compile(rf"(?i)\s+(?:{keywords})\s*="),
        "query": re.compile(rf"(?i)[?&](?:{keywords})="),
    }


def secret_spans(url: str) -> list[Span]:
    """Where the secrets of `url` are, as merged (start, end) index ranges."""
    spans: list[Span] = []
    start = _SCHEME.match(url)
    base = start.end() if start else 0
    if start or not _KEY_VALUE.match(url):
        spans += _userinfo_password(url, base, len(url))
    # A URL pasted into a key=value string, or spaces in a malformed URL: each piece too.
    for token in re.finditer(r"\S*@\S*", url):
        scheme = _SCHEME.match(token.group())
        spans += _userinfo_password(url, token.start() + (scheme.end() if scheme else 0), token.end())
    for key in _SECRET_KEY.finditer(url):
        spans.append((key.end(), _value_end(url, key.end(), in_query=key.group(1) in ("?", "&"))))
    return _merge(spans)


def _userinfo_password(url: str, start: int, end: int) -> list[Span]:
    """`user:password@` in url[start:end]: the password span, up to the last @ before the
    query (or the last @ at all, when no real query parameter follows)."""
    part = url[start:end]
    query = _next_setting()["query"].search(part)
    at = part.rfind("@", 0, query.start()) if query else part.rfind("@")
    colon = part.find(":", 0, at) if at >= 0 else -1
    return [(start + colon + 1, start + at)] if colon >= 0 else []


def _value_end(url: str, start: int, *, in_query: bool) -> int:
    if not in_query and url.startswith("'", start):
        index = start + 1
        while index < len(url) and url[index] != "'":
            index += 2 if url[index] == "\\" else 1
        return min(index + 1, len(url))
    stop = _next_setting()["query" if in_query else "key_value"].search(url, start)
    return stop.start() if stop else len(url)


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for begin, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged


def _mask_range(url: str, spans: list[Span], begin: int, end: int) -> str:
    """url[begin:end] with its secret parts replaced by the mask."""
    out, at = [], begin
    for s_begin, s_end in spans:
        if s_end <= begin or s_begin >= end:
            continue
        out += [url[at : max(at, s_begin)], MASK]
        at = max(at, s_end)
    out.append(url[at:end])
    return "".join(out)


@lru_cache(maxsize=8)
def mask(url: str) -> str:
    """`url` with every password replaced by `***` (`postgresql://app:***@db/passito`)."""
    return _mask_range(url, list(_sources(url)[0][1]), 0, len(url))


@lru_cache(maxsize=8)
def _sources(url: str) -> tuple[tuple[str, tuple[Span, ...]], ...]:
    """`url` as written and percent-decoded (messages quote either), each with its secret spans."""
    return tuple((source, tuple(secret_spans(source))) for source in dict.fromkeys((url, unquote(url))))


def mask_fragment(fragment: str, url: str) -> str:
    """A piece of `url` as a message may quote it (as written or percent-decoded): masked
    where any place it could come from overlaps a secret."""
    for source, spans in _sources(url):
        begin = source.find(fragment) if fragment and spans else -1
        while begin >= 0:
            end = begin + len(fragment)
            if any(s_begin < end and begin < s_end for s_begin, s_end in spans):
                return _mask_range(source, list(spans), begin, end)
            begin = source.find(fragment, begin + 1)
    return fragment


@lru_cache(maxsize=8)
def _secrets(url: str) -> tuple[str, ...]:
    """The secret values of `url` as they may appear in free text (raw, decoded and as parsed),
    longest first."""
    found: set[str] = set()
    for begin, end in secret_spans(url):
        raw = url[begin:end]
        unquoted = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith("'") else raw
        found |= {raw, unquote(raw), unquoted}
    try:
        parsed = conninfo_to_dict(url)
    except (psycopg.Error, ValueError):
        parsed = {}
    found |= {str(parsed[key]) for key in SECRET_KEYWORDS if parsed.get(key)}
    return tuple(sorted((s for s in found if len(s) >= MIN_FREE_TEXT_SECRET), key=len, reverse=True))


def _mask_quoted(text: str, url: str) -> str:
    """Mask what follows each quote in `text` as far as it is a piece of `url`. libpq quotes
    pieces with `"%s"`, and a piece may itself hold quotes, so the extent of a quoted piece is
    found by matching it against the URL rather than by looking for the closing quote."""
    out: list[str] = []
    done = 0
    for quote in re.finditer(r"[\"']", text):
        begin = end = quote.end()
        if begin <= done:
            continue  # inside a piece already masked
        while end < len(text) and text[begin : end + 1] in url:
            end += 1
        if end > begin:
            out += [text[done:begin], mask_fragment(text[begin:end], url)]
            done = end
    out.append(text[done:])
    return "".join(out)


def redact(text: str, url: str | None) -> str:
    """`text` without any secret of the connection string `url`: the string itself, pieces of it
    that the text quotes, and its passwords are masked."""
    if not url or not text:
        return text
    text = _mask_quoted(text.replace(url, mask(url)), url)
    for secret in _secrets(url):
        text = text.replace(secret, MASK)
    return text


_QUOTED_FIELDS = ("host", "hostaddr", "port", "dbname", "user")
"""What libpq quotes of the connection string in its errors: none of it is a secret."""


def _escape_quoted_fields(text: str, url: str) -> str:
    """`text` with each field of `url` that holds a line break or another control character
    (a database name ending in a newline) escaped where it is quoted: the error stays whole
    on one line instead of being cut in the middle of the name."""
    try:
        info = parse(url)
    except InvalidDatabaseUrlError:
        return text
    for field in _QUOTED_FIELDS:
        value = info.get(field) or ""
        if value and printable(value) != value:
            text = text.replace(value, printable(value))
    return text


def redacted_line(exc: BaseException, url: str) -> str:
    """The first non-empty line of an error, its secrets masked first (a cut could leave half a
    password behind): how an error that may quote the URL becomes one line."""
    text = _escape_quoted_fields(redact(str(exc), url), url)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return printable(lines[0]) if lines else type(exc).__name__


class Redactor:
    """`redact(text, url)` for every log line of a process, with a fast path: `redact` can
    change a text only where it holds the URL, one of its secrets, or a quote (libpq quotes
    pieces of the URL), so a line with none of these, like almost every job line, is returned
    after a few substring tests."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        found = sorted({url, *_secrets(url)}, key=len) if url else []
        # A needle that holds a shorter one is found whenever that one is: test the short ones.
        self._needles = tuple(n for i, n in enumerate(found) if not any(m in n for m in found[:i]))

    def __call__(self, text: str) -> str:
        if self.url is None:
            return text
        if '"' in text or "'" in text:
            return redact(text, self.url)
        for needle in self._needles:
            if needle in text:
                return redact(text, self.url)
        return text


def parse(url: str) -> dict[str, str]:
    """The settings of a connection string; InvalidDatabaseUrlError (password masked) if malformed."""
    if "\x00" in url:
        raise InvalidDatabaseUrlError(f"{_INVALID}: it contains a NUL character")
    try:
        url.encode("utf-8")
        info = {key: str(value) for key, value in conninfo_to_dict(url).items()}
    except UnicodeEncodeError:
        raise InvalidDatabaseUrlError(f"{_INVALID}: it is not valid UTF-8 text") from None
    except psycopg.Error as exc:
        # Mask before folding the lines: a quoted piece must still match the string.
        reason = " ".join(redact(str(exc), url).split()) or type(exc).__name__
        hint = ""
        if not _SCHEME.match(url) and not _KEY_VALUE.match(url):
            hint = " (a URL starts with postgresql://, e.g. postgresql://user:password@host:5432/dbname)"
        raise InvalidDatabaseUrlError(f"{_INVALID}: {reason}{hint}") from None
    for port in info.get("port", "").split(","):
        if port.strip() and not (re.fullmatch(r"[0-9]{1,5}", port.strip()) and 1 <= int(port) <= 65535):
            raise InvalidDatabaseUrlError(
                f'{_INVALID}: invalid port "{mask_fragment(port.strip(), url)}" (a number from 1 to 65535)'
            )
    return info


def describe_target(url: str) -> str:
    """host:port/dbname of a connection string, without credentials (for messages)."""
    try:
        info = parse(url)
    except InvalidDatabaseUrlError:
        return "(malformed database URL)"
    hosts = (info.get("host") or "localhost").split(",")
    ports = (info.get("port") or "5432").split(",")
    if len(ports) == 1:
        ports *= len(hosts)  # libpq: one port serves every host
    # A multi-host URL (failover, `target_session_attrs`) names each host with its own port.
    targets = []
    for index, raw in enumerate(hosts):
        host = mask_fragment(raw or "localhost", url)
        port = mask_fragment((ports[index] if index < len(ports) else "") or "5432", url)
        targets.append(f"socket {host}:{port}" if host.startswith("/") else f"{host}:{port}")
    dbname = mask_fragment(info.get("dbname") or info.get("user") or "", url)
    # printable: a name with a newline or an escape sequence in it stays on one line.
    return printable(f"{','.join(targets)}/{dbname}".rstrip("/"))
