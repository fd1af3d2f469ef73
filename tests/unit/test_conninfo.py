"""A database password never shows in a message, whatever the shape of the connection string."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from passito_jobs.config import ConfigError, Settings
from passito_jobs.logs import JsonFormatter, TextFormatter
from passito_jobs.queue.conninfo import Redactor, describe_target, mask, parse, redact, redacted_line
from passito_jobs.queue.errors import InvalidDatabaseUrlError

SECRET = "s3cr3t-pw"

# (connection string, what the message must still say)
MALFORMED = [
    (f"app:{SECRET}@db.example/passito", 'missing "="'),  # no scheme
    (f"app:{SECRET}@db.example/passito", "a URL starts with postgresql://"),
    ("postgresql://app:50%off-s3cr3t@db/passito", "invalid percent-encoded token"),  # unencoded %
    (f"postgresql://app:{SECRET}@[::1/passito", 'matching "]"'),  # unclosed [
    (f"postgresql://app:{SECRET}@db:99999/passito", 'invalid port "99999"'),
    (f"postgresql://app:{SECRET}@db:abc/passito", 'invalid port "abc"'),
    (f"host=db password={SECRET} port=x5432", 'invalid port "x5432"'),
    (f"host=db password='{SECRET}' bogus=1", 'invalid connection option "bogus"'),
    (f"host=db password='{SECRET} dbname=x", "unterminated quoted string"),
    (f"postgresql://app:{SECRET}@db/passito?bogus=1", 'invalid URI query parameter: "bogus"'),
    (f"postgresql://db/passito?user=app&password={SECRET}&nope", "missing key/value separator"),
    (f"postgresql://app:my {SECRET}@db/passito", "unexpected spaces"),
    (f"postgresql://app:{SECRET}%00@db/passito", "forbidden value %00"),
    (f"postgresql://app:{SECRET}@db/passito\x00", "NUL character"),
    (f"postgresql://app:{SECRET}\udcff@db/passito", "not valid UTF-8"),
    (f"postgresql://app:{SECRET}/x@db:1/passito", "invalid port"),  # an unencoded / in the password
]


@pytest.mark.parametrize(("url", "says"), MALFORMED)
def test_a_malformed_url_says_what_is_wrong_with_the_password_masked(url: str, says: str) -> None:
    with pytest.raises(InvalidDatabaseUrlError) as caught:
        parse(url)
    message = str(caught.value)
    assert SECRET not in message
    assert "s3cr3t" not in message
    assert says in message
    assert message.startswith("not a valid PostgreSQL connection string: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"postgresql://app:{SECRET}@db:5432/passito", "postgresql://app:***@db:5432/passito"),
        (f"postgres://app:{SECRET}@db", "postgres://app:***@db"),
        (f"app:{SECRET}@db/passito", "app:***@db/passito"),
        (f"postgresql://app:p@ss:{SECRET}@db/passito", "postgresql://app:***@db/passito"),
        (f"postgresql://app:{SECRET}@db/x?sslmode=require", "postgresql://app:***@db/x?sslmode=require"),
        (
            f"postgresql://db/x?user=app&password={SECRET}&sslmode=off",
            "postgresql://db/x?user=app&password=***&sslmode=off",
        ),
        (f"host=db password={SECRET} dbname=x", "host=db password=*** dbname=x"),
        (f"host=db password = '{SECRET} x' dbname=x", "host=db password = *** dbname=x"),
        (f"host=db sslpassword={SECRET}", "host=db sslpassword=***"),
        (f"host=db PASSWORD={SECRET}", "host=db PASSWORD=***"),
        ("postgresql://app@db:5432/passito", "postgresql://app@db:5432/passito"),  # nothing to mask
        ("host=/var/run/postgresql dbname=x", "host=/var/run/postgresql dbname=x"),
    ],
)
def test_mask_hides_every_password_and_keeps_the_rest(url: str, masked: str) -> None:
    assert mask(url) == masked


def test_redact_masks_the_string_the_pieces_a_message_quotes_and_the_password() -> None:
    url = f"postgresql://app:{SECRET}@db.example:5432/passito"
    text = (
        f'bad "{url}"; token "{SECRET[2:]}"; host \'{SECRET}@db\'; '
        f'free {SECRET}; decoded {SECRET}; the host "db.example" stays'
    )
    redacted = redact(text, url)
    assert "s3cr3t" not in redacted
    assert "cr3t" not in redacted
    assert '"postgresql://app:***@db.example:5432/passito"' in redacted
    assert '"db.example"' in redacted
    assert redact(text, None) == text
    # A percent-encoded password is masked in both spellings.
    encoded = "postgresql://app:p%40ss-w0rd@db/x"
    assert redact("auth failed for p@ss-w0rd and p%40ss-w0rd", encoded) == "auth failed for *** and ***"


def test_describe_target_names_the_server_without_credentials() -> None:
    assert describe_target(f"postgresql://app:{SECRET}@db.example:6432/passito") == "db.example:6432/passito"
    assert describe_target(f"host=/run/pg password={SECRET} dbname=x") == "socket /run/pg:5432/x"
    assert describe_target(f"app:{SECRET}@db/passito") == "(malformed database URL)"
    # A failover URL names each host with its port; one port serves every host.
    failover = f"postgresql://app:{SECRET}@a.example:5432,b.example:5433/q?target_session_attrs=read-write"
    assert describe_target(failover) == "a.example:5432,b.example:5433/q"
    assert describe_target(f"host=a,b port=6432 password={SECRET} dbname=q") == "a:6432,b:6432/q"
    assert describe_target("host=a,b,c port=1,2 dbname=q") == "a:1,b:2,c:5432/q"
    # libpq takes the first @ as the end of userinfo; the rest of the password must not show as host.
    assert describe_target("postgresql://app:p@ss-w0rd@db/passito") == "***@db:5432/passito"


def test_a_target_with_a_line_break_is_described_on_one_line() -> None:
    assert describe_target("postgresql://app@db/passito%0A") == "db:5432/passito\\n"
    assert describe_target("host='a\nb' dbname='x\x1b[31m'") == "a\\nb:5432/x\\x1b[31m"


def test_an_error_quoting_a_name_with_a_line_break_stays_whole_on_one_line() -> None:
    url = f"postgresql://app:{SECRET}@127.0.0.1:5432/passito%0A"
    error = Exception('connection failed: FATAL:  database "passito\n" does not exist')
    assert redacted_line(error, url) == 'connection failed: FATAL:  database "passito\\n" does not exist'


def test_the_setting_is_checked_once_with_the_password_masked() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PASSITO_DATABASE_URL": f"app:{SECRET}@db/passito"})
    message = str(caught.value)
    assert message.startswith("PASSITO_DATABASE_URL: not a valid PostgreSQL connection string: ")
    assert SECRET not in message
    assert "app:***@db/passito" in message
    url = f"postgresql://app:{SECRET}@db/passito"
    assert Settings.from_env({"PASSITO_DATABASE_URL": url}).database.url == url


def _record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, None) if exc else None
    return logging.LogRecord("passito_jobs.worker", logging.WARNING, __file__, 1, message, (), info)


def test_log_lines_pass_through_the_redactor() -> None:
    url = f"postgresql://app:{SECRET}@db/passito"
    line = f"Database error: cannot use {url}"
    error = RuntimeError(f"connection string {url!r}")
    text = TextFormatter("Worker", "w:1", lambda t: redact(t, url)).format(_record(line, error))
    assert SECRET not in text
    assert "postgresql://app:***@db/passito" in text
    data = json.loads(JsonFormatter("Worker", "w:1", lambda t: redact(t, url)).format(_record(line, error)))
    assert SECRET not in json.dumps(data)
    assert data["message"] == "Database error: cannot use postgresql://app:***@db/passito"


# Passwords of every shape, in every place a connection string can carry one, followed by every
# kind of damage. Each password starts and ends with a marker that appears nowhere else, so any
# piece of it that shows (as libpq splits a malformed string) carries a marker.
MARK = "\u03a9"
PASSWORDS = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00" + MARK), min_size=2, max_size=24
).map(lambda core: f"{MARK}{core}{MARK}")
TEMPLATES = [
    "postgresql://app:{pw}@db.example:5432/passito",
    "postgres://app:{pw}@db.example/passito",
    "app:{pw}@db.example/passito",
    "postgresql://:{pw}@db.example/passito",
    "postgresql://db.example/passito?user=app&password={pw}",
    "postgresql://db.example/passito?password={pw}&sslmode=disable",
    "host=db.example password={pw} dbname=passito",
    "host=db.example password='{pw_quoted}' dbname=passito",
]
DAMAGE = ["", ":99999", "[", "%", "%zz", "?x", "?=", " bogus", "'", "\\", "@", ":abc/x"]


@given(pw=PASSWORDS, template=st.sampled_from(TEMPLATES), damage=st.sampled_from(DAMAGE))
@example(pw=f"{MARK}50%off{MARK}", template=TEMPLATES[0], damage="")
@example(pw=f"{MARK}a@b/c?d{MARK}", template=TEMPLATES[0], damage="")
@example(pw=f"{MARK}x@y?z{MARK}", template=TEMPLATES[2], damage="")
@example(pw=f"{MARK}a&b c{MARK}", template=TEMPLATES[4], damage="")
@example(pw=f"{MARK}x y'z\\{MARK}", template=TEMPLATES[7], damage="'")
def test_no_shape_of_url_shows_its_password(pw: str, template: str, damage: str) -> None:
    quoted = pw.replace("\\", "\\\\").replace("'", "\\'")
    url = template.format(pw=pw, pw_quoted=quoted) + damage
    shown = [mask(url), describe_target(url)]
    try:
        parse(url)
    except InvalidDatabaseUrlError as exc:
        shown.append(str(exc))
    for text in shown:
        assert MARK not in text, text


URLS = [url for url, _ in MALFORMED] + [
    f"postgresql://passito:{SECRET}@db.internal:5432/passito?sslmode=require",
    "postgresql://app:p%40ss%20w0rd@db/passito",
    "postgresql://a:pw@db/x",  # a password too short to search for in free text
    f"host=db user=app password='{SECRET} x' dbname=x",
]
pieces = st.sampled_from(['"', "'", " ", "=", "@", ":", "queue=emails", "job_id=12", "\n"])


@given(url=st.sampled_from(URLS), data=st.data())
def test_the_fast_redactor_masks_exactly_what_redact_masks(url: str, data: st.DataObject) -> None:
    """Log lines go through Redactor (a few substring tests first); it must change exactly the
    texts `redact` changes, and in the same way."""
    fragments = st.builds(
        lambda a, b: url[min(a, b) : max(a, b)], st.integers(0, len(url)), st.integers(0, len(url))
    )
    text = "".join(data.draw(st.lists(st.one_of(pieces, fragments, st.text(max_size=8)), max_size=8)))
    assert Redactor(url)(text) == redact(text, url)


def test_a_job_line_passes_the_redactor_unchanged_and_a_quoted_secret_does_not() -> None:
    url = f"postgresql://passito:{SECRET}@db.internal:5432/passito"
    redactor = Redactor(url)
    line = "[Worker pod:1][INFO] Processing Job #12 (Noop) job_id=12 job_type=Noop queue=default"
    assert redactor(line) is line
    assert SECRET not in redactor(f'failed: missing "=" after "passito:{SECRET}@db"')
    assert SECRET not in redactor(f"password {SECRET} in free text")
    assert Redactor(None)(url) == url  # no database URL: nothing to mask
