"""The command line never prints a traceback: hostile arguments, payloads, files and settings
end in one line and exit code 2 (or a normal answer), against a real database."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from passito_jobs.cli.options import apply_flags
from passito_jobs.config import ConfigError, Settings, describe
from passito_jobs.outpass.tokens import PURPOSE_APPROVAL, sign_token
from tests.conftest import TEST_SECRET_KEY
from tests.helpers import count_states, run_main

Conn = psycopg.Connection[Any]
NESTED_30000 = '{"x": ' + "[" * 30_000 + "]" * 30_000 + "}"
TOO_BIG_ID = str(2**63)


def one_line_exit_2(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("passito-jobs"), err
    assert ": error: " in lines[0], err
    return lines[0]


BAD_DISPATCH = {
    "NaN": (["--payload", '{"x": NaN}'], "argument --payload: payload must not hold NaN or Infinity"),
    "Infinity": (["--payload", '{"x": [Infinity]}'], "argument --payload: payload must not hold NaN"),
    "1e999": (["--payload", '{"x": 1e999}'], "argument --payload: payload must not hold NaN or Infinity"),
    "bare NaN": (["--payload", "NaN"], "argument --payload: must be a JSON object"),
    "NUL": (["--payload", '{"x": "\\u0000"}'], "argument --payload: payload must not hold the NUL character"),
    "lone surrogate": (
        ["--payload", '{"x": "\\ud800"}'],
        "argument --payload: payload must be valid Unicode",
    ),
    "30,000 nested arrays": (
        ["--payload", NESTED_30000],
        "argument --payload: payload must not be nested more than 100 levels deep",
    ),
    "5,000-digit number": (["--payload", '{"x": ' + "9" * 5000 + "}"], "argument --payload: not valid JSON"),
    "delay 1e300": (["--delay", "1e300"], "argument --delay: must be a duration like 30 (seconds)"),
    "delay past 100 years": (
        ["--delay", "300000000000"],
        "argument --delay: must be at most 36500d (100 years)",
    ),
    "max attempts": (["--max-attempts", "99999999999"], "argument --max-attempts: must be at most 1000"),
    "parent id 2^63": (["--depends-on", TOO_BIG_ID], "argument --depends-on: job ids are at most"),
    "priority": (["--priority", "2147483648"], "argument --priority: must be at most 2147483647"),
    "8,001-byte queue": (["--queue", "q" * 8001], "argument --queue: queue must be at most 128 characters"),
    "3,000-byte unique key": (
        ["--unique-key", "€" * 1000 + "k"],
        "argument --unique-key: unique_key must be at most 512 characters, got 1001",
    ),
    "queue with a newline": (["--queue", "a\nb"], "argument --queue: queue must not contain control"),
    "a key twice": (
        ["--payload", '{"a": 1, "a": 2}'],
        "argument --payload: the key 'a' is given more than once",
    ),
    "a nested key twice": (
        ["--payload", '{"a": [{"b": 1, "b\\u0000": 0, "b": 2}]}'],
        "argument --payload: the key 'b' is given more than once",
    ),
    "a metadata key twice": (
        ["--metadata", '{"a\\n": 1, "a\\n": 1}'],
        "argument --metadata: the key 'a\\n' is given more than once",
    ),
}


@pytest.mark.parametrize(("args", "message"), BAD_DISPATCH.values(), ids=BAD_DISPATCH.keys())
def test_bad_dispatch_arguments(
    conn: Conn, cli_in_process: dict[str, str], args: list[str], message: str
) -> None:
    code, out, err = run_main(["dispatch", "Noop", *args])
    assert message in one_line_exit_2(code, err)
    assert out == ""
    assert count_states(conn) == {}


def test_blank_type(cli_in_process: dict[str, str]) -> None:
    code, _, err = run_main(["dispatch", " \t"])
    assert "argument TYPE: job type must be a non-empty string" in one_line_exit_2(code, err)


BAD_COMMANDS = {
    "jobs retry": (["jobs", "retry", TOO_BIG_ID], "argument ID: job ids are at most 9223372036854775807"),
    "jobs cancel": (["jobs", "cancel", "1", TOO_BIG_ID], "argument ID: job ids are at most"),
    "jobs show": (["jobs", "show", TOO_BIG_ID], "argument ID: job ids are at most"),
    "jobs list": (["jobs", "list", "--limit", "99999999999999999999"], "argument --limit: must be at most"),
    "jobs prune": (
        ["jobs", "prune", "--keep-completed", "99999999999999999999d"],
        "argument --keep-completed: must be at most 36500d (100 years), got '99999999999999999999d'",
    ),
    "health": (["health", "--window", "9" * 400], "argument --window: "),
    "cleanup": (["cleanup-expired-files", "--retention-days", "99999999"], "argument --retention-days"),
    "web port": (["web", "--port", "70000"], "argument --port: 70000 is not a port number (0 to 65535) (see"),
    "health serve port": (
        ["health", "serve", "--port", "-1"],
        "argument --port: -1 is not a port number (0 to 65535) (see",
    ),
    "worker metrics port": (
        ["worker", "--metrics-port", "9" * 50],
        "argument --metrics-port: 9999999999999999999999999999999999999... is not a port number (0 to 65535)",
    ),
    "web host": (["web", "--host", "\udcff"], "argument --host: '\\udcff' is not valid UTF-8 text"),
    "web host blank": (["web", "--host", " "], "--host must not be empty"),
    "queue settings key twice": (
        ["migrate", "--queue-settings", '{"q": {"paused": true}, "q": {"paused": false}}'],
        "argument --queue-settings: the key 'q' is given more than once",
    ),
    "queue setting twice": (
        ["migrate", "--queue-settings", '{"q": {"paused": true, "paused": false}}'],
        "argument --queue-settings: the key 'paused' is given more than once",
    ),
}


@pytest.mark.parametrize(("args", "message"), BAD_COMMANDS.values(), ids=BAD_COMMANDS.keys())
def test_bad_arguments_of_other_commands(
    cli_in_process: dict[str, str], args: list[str], message: str
) -> None:
    code, _, err = run_main(args)
    assert message in one_line_exit_2(code, err)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"outpass_id": "\xff\xfe"}', "is not UTF-8 text (byte 16 cannot be decoded)"),
        (b"[" * 100_000 + b"]" * 100_000, "is nested too deeply to be an outpass"),
        (b'{"x": 1' + b"0" * 5000 + b"}", "is not valid JSON"),
        (
            b'[{"outpass_id": 1, "outpass_id": 2}]',
            "outpasses.json: the key 'outpass_id' is given more than once",
        ),
    ],
)
def test_bad_outpass_files(
    cli_in_process: dict[str, str], tmp_path: Path, content: bytes, message: str
) -> None:
    source = tmp_path / "outpasses.json"
    source.write_bytes(content)
    code, _, err = run_main(["outpass", "dispatch", "--json", str(source)])
    assert message in one_line_exit_2(code, err)


MAX_OUTPASS_INPUT = 16 * 1024 * 1024


def test_outpass_input_larger_than_the_limit(cli_in_process: dict[str, str], tmp_path: Path) -> None:
    """A file or standard input is read up to 16 MiB; beyond is refused, not read without end."""
    exactly = tmp_path / "exactly.json"
    exactly.write_bytes(b"[" + b" " * (MAX_OUTPASS_INPUT - 2) + b"]")
    code, _, err = run_main(["outpass", "dispatch", "--json", str(exactly)])
    assert "no outpasses in the input (an empty JSON array)" in one_line_exit_2(code, err)
    larger = tmp_path / "larger.json"
    larger.write_bytes(b"[" + b" " * (MAX_OUTPASS_INPUT - 1) + b"]")
    code, _, err = run_main(["outpass", "dispatch", "--json", str(larger)])
    assert one_line_exit_2(code, err).endswith(
        f"{larger} is larger than 16777216 bytes (16 MiB): split the outpasses into several runs"
    )
    code, _, err = run_main(["outpass", "dispatch", "--json", "-"], stdin=" " * (MAX_OUTPASS_INPUT + 1))
    assert "error: standard input is larger than 16777216 bytes" in one_line_exit_2(code, err)


def test_outpass_input_without_end(cli_env: dict[str, str]) -> None:
    for args, stdin in ((["--json", "/dev/zero"], subprocess.DEVNULL), (["--json", "-"], None)):
        with open("/dev/zero", "rb") as zeros:
            done = subprocess.run(
                [sys.executable, "-m", "passito_jobs", "outpass", "dispatch", *args],
                env=cli_env,
                stdin=zeros if stdin is None else stdin,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        assert "is larger than 16777216 bytes" in one_line_exit_2(done.returncode, done.stderr)


def test_outpass_input_with_an_empty_path(cli_in_process: dict[str, str]) -> None:
    code, _, err = run_main(["outpass", "dispatch", "--json", ""])
    assert one_line_exit_2(code, err).endswith(
        "error: --json: the path is empty (give a file, or - for standard input)"
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PASSITO_PRUNE_BATCH_SIZE", "3000000000", "PASSITO_PRUNE_BATCH_SIZE must be at most 2147483647"),
        (
            "PASSITO_KEEP_FAILED",
            "99999999999999999999d",
            "PASSITO_KEEP_FAILED must be at most 36500d (100 years), got '99999999999999999999d'",
        ),
        ("PASSITO_CONCURRENCY", "10001", "PASSITO_CONCURRENCY must be at most 10000"),
        ("PASSITO_BATCH_SIZE", "20000", "PASSITO_BATCH_SIZE must be at most 10000"),
        ("PASSITO_SCALE_UP_THRESHOLD", "inf", "PASSITO_SCALE_UP_THRESHOLD must be a finite number"),
        ("PASSITO_QUEUES", "emails,q\x1b", "PASSITO_QUEUES holds a bad queue name"),
        ("PASSITO_MAX_PAYLOAD_BYTES", "0", "PASSITO_MAX_PAYLOAD_BYTES must be between 1 and 104857600"),
        ("PASSITO_HEALTH_QUERY_TIMEOUT", "30d", "PASSITO_HEALTH_QUERY_TIMEOUT must be at most 1d"),
    ],
)
def test_settings_out_of_range(
    cli_in_process: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    code, _, err = run_main(["jobs", "prune"])
    assert message in one_line_exit_2(code, err)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nan", "PASSITO_FILE_RETENTION_DAYS must be a whole number, got 'nan'"),
        ("1.5", "PASSITO_FILE_RETENTION_DAYS must be a whole number, got '1.5'"),
        ("", "PASSITO_FILE_RETENTION_DAYS must be a whole number, got ''"),
        ("-1", "PASSITO_FILE_RETENTION_DAYS must be at least 1 and at most 36500 (got -1)"),
        ("0", "PASSITO_FILE_RETENTION_DAYS must be at least 1 and at most 36500 (got 0)"),
        ("36501", "PASSITO_FILE_RETENTION_DAYS must be at least 1 and at most 36500 (got 36501)"),
    ],
)
@pytest.mark.parametrize("flag", [[], ["--retention-days", "7"]])
@pytest.mark.usefixtures("cli_in_process")
def test_cleanup_refuses_a_bad_retention_setting(
    conn: Conn,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    message: str,
    flag: list[str],
) -> None:
    monkeypatch.setenv("PASSITO_FILE_RETENTION_DAYS", value)
    code, out, err = run_main(["cleanup-expired-files", *flag])
    assert one_line_exit_2(code, err).endswith(f"error: {message}")
    assert (out, count_states(conn)) == ("", {})


@pytest.mark.parametrize(
    ("value", "flag", "payload"),
    [
        (None, [], {"dry_run": False}),  # the worker's setting decides
        (" 7 ", [], {"dry_run": False, "retention_days": 7}),
        ("7", ["--retention-days", "9", "--dry-run"], {"dry_run": True, "retention_days": 9}),
    ],
)
@pytest.mark.usefixtures("cli_in_process")
def test_cleanup_sends_the_retention_it_is_given(
    conn: Conn,
    monkeypatch: pytest.MonkeyPatch,
    value: str | None,
    flag: list[str],
    payload: dict[str, Any],
) -> None:
    """PASSITO_FILE_RETENTION_DAYS set for the command (a CronJob's) is the sweep's retention."""
    if value is not None:
        monkeypatch.setenv("PASSITO_FILE_RETENTION_DAYS", value)
    code, out, err = run_main(["cleanup-expired-files", *flag])
    assert code == 0, err
    row = conn.execute("SELECT payload FROM passito_jobs.jobs WHERE id = %s", (int(out),)).fetchone()
    assert row == (payload,)


@pytest.mark.parametrize(
    ("outpass_id", "code", "says"),
    [
        ("\ud800", 1, "error: invalid token: malformed token (the outpass id is not valid Unicode text)\n"),
        ("42\n\x1b[31mFORGED", 0, "approve outpass 42\\n\\x1b[31mFORGED (valid until "),
        ("\u202e24", 0, "approve outpass \\u202e24 (valid until "),
    ],
)
def test_approval_verify_prints_a_signed_outpass_id_safely(
    monkeypatch: pytest.MonkeyPatch, outpass_id: str, code: int, says: str
) -> None:
    """A token signed with the key (the public development key, say) may carry any outpass id."""
    for name in [k for k in os.environ if k.startswith("PASSITO_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PASSITO_SECRET_KEY", TEST_SECRET_KEY)
    token = sign_token(
        TEST_SECRET_KEY.encode(),
        purpose=PURPOSE_APPROVAL,
        outpass_id=outpass_id,
        decision="approve",
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    done, out, err = run_main(["approval", "verify", token])
    assert done == code, err
    assert says in (out if code == 0 else err)
    assert len((out + err).splitlines()) == 1


UNDECODABLE = {
    "type": (["dispatch", "\udcff"], "argument TYPE: '\\udcff' is not valid UTF-8 text"),
    "queue": (
        ["dispatch", "Noop", "--queue", "caf\udce9"],
        "argument --queue: 'caf\\udce9' is not valid UTF-8",
    ),
    "unique key": (["dispatch", "Noop", "--unique-key", "\udcff"], "argument --unique-key: '\\udcff' is not"),
    "concurrency key": (
        ["dispatch", "Noop", "--concurrency-key", "\udcff"],
        "argument --concurrency-key: '\\udcff' is not valid UTF-8 text",
    ),
    "payload": (
        ["dispatch", "Noop", "--payload", '{"\udcff": 1}'],
        """argument --payload: '{"\\udcff": 1}' is not valid UTF-8 text""",
    ),
    "metadata": (
        ["dispatch", "Noop", "--metadata", '{"a": "\udcff"}'],
        """argument --metadata: '{"a": "\\udcff"}' is not valid UTF-8 text""",
    ),
    "queues pause": (["queues", "pause", "\udcff"], "argument QUEUE: '\\udcff' is not valid UTF-8 text"),
    "queues resume": (["queues", "resume", "\udcff"], "argument QUEUE: '\\udcff' is not valid UTF-8 text"),
    "queues set": (["queues", "set", "\udcff", "--rate", "1/1s"], "argument QUEUE: '\\udcff' is not valid"),
    "queue settings": (
        ["migrate", "--queue-settings", '{"\udcff": {}}'],
        """argument --queue-settings: '{"\\udcff": {}}' is not valid UTF-8 text""",
    ),
    "worker queues": (
        ["worker", "--queues", "a,\udcff"],
        "argument --queues: 'a,\\udcff' is not valid UTF-8",
    ),
    # A "\ud800" escape in JSON is a lone surrogate, and is said to be one.
    "escaped in a payload": (
        ["dispatch", "Noop", "--payload", '{"\\ud800": 1}'],
        "argument --payload: payload must be valid Unicode text (it holds an unpaired surrogate)",
    ),
    "escaped in queue settings": (
        ["migrate", "--queue-settings", '{"\\ud800": {}}'],
        "argument --queue-settings: queue must be valid Unicode text (it holds an unpaired surrogate)",
    ),
}


@pytest.mark.parametrize(("args", "message"), UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_argument_bytes_that_are_not_utf8(
    conn: Conn, cli_in_process: dict[str, str], args: list[str], message: str
) -> None:
    """Python keeps undecodable argument bytes as surrogates: they are not UTF-8, as `jobs list` says."""
    code, out, err = run_main(args)
    assert message in one_line_exit_2(code, err)
    assert (out, count_states(conn)) == ("", {})


def test_the_real_entry_point(cli_env: dict[str, str], conn: Conn) -> None:
    """A few runs through the installed command: undecodable argument bytes, a huge id, a
    setting out of range, a NaN payload."""
    command = [os.fsencode(sys.executable), b"-m", b"passito_jobs"]
    runs = [
        (
            [b"dispatch", b"Noop", b"--queue", b"caf\xe9"],
            {},
            "argument --queue: 'caf\\udce9' is not valid UTF-8",
        ),
        ([b"dispatch", b"\xff"], {}, "argument TYPE: '\\udcff' is not valid UTF-8 text"),
        ([b"queues", b"pause", b"\xff"], {}, "argument QUEUE: '\\udcff' is not valid UTF-8 text"),
        ([b"jobs", b"list", b"--type", b"\xff"], {}, "argument --type: '\\udcff' is not valid UTF-8 text"),
        ([b"jobs", b"show", TOO_BIG_ID.encode()], {}, "job ids are at most"),
        ([b"jobs", b"prune"], {"PASSITO_PRUNE_BATCH_SIZE": "3000000000"}, "must be at most 2147483647"),
        ([b"dispatch", b"Noop", b"--payload", b'{"x": NaN}'], {}, "payload must not hold NaN"),
    ]
    for args, extra, message in runs:
        done = subprocess.run(
            [*command, *args], env={**cli_env, **extra}, capture_output=True, timeout=60, check=False
        )
        err = done.stderr.decode("utf-8", "backslashreplace")
        assert "Traceback" not in err
        assert message in one_line_exit_2(done.returncode, err), args
    assert count_states(conn) == {}


# ---------------------------------------------------------------- property: no traceback, ever

HOSTILE_TEXT = [
    "",
    " ",
    "0",
    "-1",
    "1e300",
    "NaN",
    "inf",
    "99999999999999999999",
    TOO_BIG_ID,
    "9" * 5000,
    "q" * 9000,
    "a\nb",
    "\x1b[2J",
    "caf\udce9",
    "\u202e",
    "😀",
    "7d",
    "99999999999999999999d",
]
text = st.one_of(
    st.sampled_from(HOSTILE_TEXT), st.text(st.characters(blacklist_characters="\x00"), max_size=12)
)
names = st.one_of(st.sampled_from(["Noop", "emails", "q0", "T1"]), text)
numbers = st.one_of(
    st.integers(min_value=0, max_value=50).map(str),
    st.integers(min_value=-(2**65), max_value=2**65).map(str),
    text,
)
ratios = st.one_of(st.floats(min_value=0, max_value=1).map(str), numbers)
durations = st.one_of(st.from_regex(r"\d{1,22}(\.\d{1,3})?(ms|s|m|h|d)?", fullmatch=True), text)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=15,
)
payloads = st.one_of(
    st.dictionaries(st.text(max_size=5), json_values, max_size=4).map(json.dumps),
    json_values.map(json.dumps),
    st.sampled_from(
        ['{"x": NaN}', '{"x": 1e999}', '{"x": "\\u0000"}', '{"x": "\\udfff"}', NESTED_30000, "{", "[]"]
    ),
    text,
)
ids = st.lists(st.one_of(st.integers(min_value=1, max_value=40).map(str), numbers), min_size=1, max_size=3)


def optional(*pairs: tuple[str, st.SearchStrategy[str]]) -> st.SearchStrategy[list[str]]:
    """Some of the flags, each with a generated value."""
    chosen = st.lists(st.sampled_from(pairs), unique_by=lambda p: p[0], max_size=len(pairs))
    return chosen.flatmap(
        lambda flags: st.tuples(*(value for _, value in flags)).map(
            lambda values: [
                arg for (flag, _), value in zip(flags, values, strict=True) for arg in (flag, value)
            ]
        )
    )


def command(head: list[str], *rest: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    return st.tuples(*rest).map(lambda parts: head + [arg for part in parts for arg in part])


def flag(name: str) -> st.SearchStrategy[list[str]]:
    return st.sampled_from([[], [name]])


commands = st.one_of(
    command(
        ["dispatch"],
        names.map(lambda t: [t]),
        optional(
            ("--payload", payloads),
            ("--queue", names),
            ("--priority", numbers),
            ("--delay", numbers),
            ("--max-attempts", numbers),
            ("--unique-key", text),
        ),
        st.sampled_from([[], ["--depends-on"]]).flatmap(lambda f: ids.map(lambda i: f + i if f else [])),
    ),
    command(
        ["jobs", "list"],
        optional(
            ("--limit", numbers),
            ("--queue", names),
            ("--type", names),
            ("--state", st.one_of(st.sampled_from(["pending", "failed"]), text)),
        ),
        flag("--json"),
    ),
    command(["jobs", "show"], numbers.map(lambda n: [n]), flag("--json")),
    command(["jobs", "retry"], ids),
    command(["jobs", "retry", "--all-failed"], optional(("--type", names))),
    command(["jobs", "cancel"], ids),
    command(["jobs", "prune"], optional(("--keep-completed", durations), ("--keep-failed", durations))),
    command(
        ["health"],
        optional(
            ("--stale-after", durations),
            ("--stuck-after", durations),
            ("--window", durations),
            ("--max-failure-ratio", ratios),
            ("--max-failure-rate", ratios),
        ),
        flag("--json"),
        flag("--rescue"),
        flag("--recover"),
    ),
    command(["cleanup-expired-files"], optional(("--retention-days", numbers)), flag("--dry-run")),
    command(["approval", "verify"], text.map(lambda t: [t]), optional(("--decision", text))),
    command(["db"], text.map(lambda t: [t])),
    st.lists(text, max_size=4),
)


def seed(conn: Conn) -> None:
    """Jobs in every state, and rows outside the limits, for the commands to find."""
    for i in range(12):
        conn.execute("SELECT passito_jobs.dispatch(%s, queue => %s)", (f"T{i % 3}", f"q{i % 2}"))
    conn.execute("UPDATE passito_jobs.jobs SET state = 'failed', finished_at = now() WHERE id % 4 = 0")
    conn.execute("UPDATE passito_jobs.jobs SET state = 'completed', finished_at = now() WHERE id % 4 = 1")
    conn.execute(
        "INSERT INTO passito_jobs.jobs (queue, type, run_at) VALUES (repeat('q', 9000), 'Old', 'infinity')"
    )
    conn.execute("INSERT INTO passito_jobs.jobs (queue, type, run_at) VALUES (E'a\\nb', 'Old', '-infinity')")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=commands)
def test_no_command_prints_a_traceback(conn: Conn, cli_in_process: dict[str, str], args: list[str]) -> None:
    if not count_states(conn):
        seed(conn)
    code, _, err = run_main(args)  # an escaping exception fails the test, with its traceback
    # ascii(): hypothesis' pytest plugin encodes the events as UTF-8, and an argument may hold a surrogate.
    event(
        ascii(
            f"{args[0] if args else ''} {args[1] if len(args) > 1 and args[0] == 'jobs' else ''}: exit {code}"
        )
    )
    assert code in {0, 1, 2}, (args, code, err)
    assert "Traceback" not in err
    if code == 2:
        assert ": error: " in err.strip().splitlines()[-1], (args, err)


def same_json(stored: Any, given: Any) -> bool:
    """Equal as JSON: PostgreSQL keeps numbers as decimals, so 3.602879701896397e+16 comes back
    as the integer 36028797018963970, the same number in JSON."""
    if isinstance(given, float) or isinstance(stored, float):
        return isinstance(stored, int | float) and float(stored) == float(given)
    if isinstance(given, dict):
        return (
            isinstance(stored, dict)
            and stored.keys() == given.keys()
            and all(same_json(stored[k], given[k]) for k in given)
        )
    if isinstance(given, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(given)
            and all(same_json(a, b) for a, b in zip(stored, given, strict=True))
        )
    return bool(stored == given and type(stored) is type(given))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads)
def test_a_payload_is_stored_as_given_or_refused_in_one_line(
    conn: Conn, cli_in_process: dict[str, str], payload: str
) -> None:
    code, out, err = run_main(["dispatch", "Noop", "--payload", payload])
    if code == 0:
        row = conn.execute("SELECT payload FROM passito_jobs.jobs WHERE id = %s", (int(out),)).fetchone()
        assert row is not None
        assert same_json(row[0], json.loads(payload)), (row[0], payload)
    else:
        assert "argument --payload: " in one_line_exit_2(code, err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_no_outpass_file_prints_a_traceback(
    cli_in_process: dict[str, str], tmp_path: Path, content: bytes
) -> None:
    source = tmp_path / "outpass.json"
    source.write_bytes(content)
    code, _, err = run_main(["outpass", "dispatch", "--json", str(source)])
    assert code in {0, 1, 2}, (content, err)
    assert "Traceback" not in err


long_running = st.one_of(
    command(
        ["worker"],
        optional(
            ("--queues", text),
            ("--concurrency", numbers),
            ("--batch-size", numbers),
            ("--metrics-port", numbers),
            ("--shutdown-timeout", durations),
        ),
    ),
    command(
        ["supervise"],
        optional(
            ("--min-workers", numbers),
            ("--max-workers", numbers),
            ("--scale-up-threshold", numbers),
            ("--scale-down-threshold", numbers),
            ("--check-interval", durations),
            ("--cooldown", durations),
            ("--concurrency", numbers),
        ),
    ),
    command(["health", "serve"], optional(("--port", numbers))),
    command(["web"], optional(("--port", numbers), ("--host", numbers))),
    command(["demo"], optional(("--jobs", numbers), ("--workers", numbers))),
)


@settings(max_examples=300, deadline=None)
@given(args=long_running)
def test_long_running_commands_refuse_bad_flags_in_one_line(args: list[str]) -> None:
    """Commands that run until stopped are not started here: their flags are parsed and
    applied to the settings, where every bad value must be one line and exit code 2."""
    from passito_jobs import cli

    err = io.StringIO()
    code: object = None
    with contextlib.redirect_stderr(err):
        try:
            parsed = cli.build_parser().parse_args(args)
        except SystemExit as exc:
            code = exc.code
    if code is not None:
        assert code == 2
        assert ": error: " in err.getvalue()
        assert len(err.getvalue().strip().splitlines()) == 1
        return
    problem = ""
    try:
        apply_flags(parsed, Settings())
    except ConfigError as exc:
        problem = str(exc)
    assert "\n" not in problem


FUZZED_SETTINGS = [
    row["env"]
    for row in describe()
    # These would start an embedded PostgreSQL, point elsewhere or read a file: not what is tested here.
    if row["env"] not in {"PASSITO_DATABASE_URL", "PASSITO_DATABASE_URL_FILE", "PASSITO_DATA_DIR"}
]


def in_environment(value: str) -> bool:
    """Whether an environment variable can hold `value`: its bytes, as Python reads them back
    (non-UTF-8 bytes as the surrogates \udc80-\udcff), with no NUL. Another lone surrogate
    (\ud800) cannot come from an environment, and os.environ refuses to set it."""
    try:
        return b"\0" not in os.fsencode(value)
    except UnicodeEncodeError:
        return False


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(FUZZED_SETTINGS), value=st.one_of(numbers, durations).filter(in_environment))
def test_no_setting_makes_a_command_print_a_traceback(
    cli_in_process: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    with monkeypatch.context() as patch:
        patch.setenv(name, value)
        code, _, err = run_main(["jobs", "list", "--limit", "1"])
    assert code in {0, 2}, (name, value, err)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args", [["db", "url"], ["db", "start"], ["db", "stop"], ["jobs", "list"], ["migrate"]]
)
@pytest.mark.parametrize(
    ("data_dir", "reason"),
    [
        ("a regular file", "it, or a folder above it, is not a directory"),
        ("a folder under a regular file", "it, or a folder above it, is not a directory"),
        ("/proc/x", "No such file or directory"),
        ("/tmp/" + "d" * 5000, "File name too long"),
    ],
)
def test_a_data_dir_that_cannot_be_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str], data_dir: str, reason: str
) -> None:
    """Without PASSITO_DATABASE_URL, a PASSITO_DATA_DIR the system refuses is one line naming it."""
    (tmp_path / "file").write_text("")
    path = {"a regular file": tmp_path / "file", "a folder under a regular file": tmp_path / "file" / "x"}
    for name in [k for k in os.environ if k.startswith("PASSITO_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PASSITO_DATA_DIR", str(path.get(data_dir, data_dir)))
    code, out, err = run_main(args)
    if args == ["db", "url"] and data_dir == "/proc/x":  # no server there, which is true
        assert (code, err) == (
            1,
            "passito-jobs: error: the embedded PostgreSQL is not running (start it: passito-jobs db start)\n",
        )
        return
    line = one_line_exit_2(code, err)
    assert "PASSITO_DATA_DIR '" in line
    assert line.endswith(f"cannot be used: {reason}")
    assert out == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("none,basic", "PASSITO_WEB_AUTH: none cannot be combined with other modes (basic, header or token)"),
        (
            "token, None",
            "PASSITO_WEB_AUTH: none cannot be combined with other modes (basic, header or token)",
        ),
        (
            "basic,bogus",
            "PASSITO_WEB_AUTH: 'bogus' is not an authentication mode (none, basic, header or token)",
        ),
    ],
)
def test_web_auth_none_with_other_modes(monkeypatch: pytest.MonkeyPatch, value: str, message: str) -> None:
    for name in [k for k in os.environ if k.startswith("PASSITO_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PASSITO_WEB_AUTH", value)
    code, _, err = run_main(["web"])
    assert one_line_exit_2(code, err).endswith(f"error: {message}")


def test_a_database_name_with_a_line_break_is_one_line(
    cli_in_process: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    params = conninfo_to_dict(cli_in_process["PASSITO_DATABASE_URL"])
    monkeypatch.setenv("PASSITO_DATABASE_URL", make_conninfo(**{**params, "dbname": "passito\n\x1b[31m"}))
    code, _, err = run_main(["jobs", "list"])
    line = one_line_exit_2(code, err)
    assert "/passito\\n\\x1b[31m: " in line
    assert line.endswith('database "passito\\n\\x1b[31m" does not exist')
    code, _, err = run_main(["db", "url"])
    assert code == 0
    assert err.count("\n") == 1
    assert err.endswith("/passito\\n\\x1b[31m); the embedded PostgreSQL is not used\n")


def test_web_host_with_a_line_break_is_one_line(cli_in_process: dict[str, str]) -> None:
    code, _, err = run_main(["web", "--host", "a\nb"])
    assert "the dashboard would listen on a\\nb without authentication" in one_line_exit_2(code, err)
