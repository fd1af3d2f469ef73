"""SendOutpassEmail and SendParentApproval against a real SMTP server (aiosmtpd) on loopback.

TLS uses a throwaway self-signed certificate made here with `cryptography`; the client trusts
it only through PASSITO_SMTP_CA_FILE, so certificate verification is really exercised.
"""

from __future__ import annotations

import email
import email.policy
import ipaddress
import logging
import re
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from passito_jobs.outpass.model import Outpass
from passito_jobs.outpass.outpass_email import MissingPdfError, send_outpass_email, send_outpass_email_job
from passito_jobs.outpass.parent_approval import send_parent_approval
from passito_jobs.outpass.settings import JobSettings
from passito_jobs.outpass.storage import Storage
from passito_jobs.outpass.tokens import PURPOSE_APPROVAL, InvalidTokenError, verify_token
from passito_jobs.registry import PermanentError
from tests.helpers import free_port, run_cli
from tests.outpasses import context, job_settings, sample_payload

USER, PASSWORD = "passito", "correct horse battery staple"
SENDER = "Passito Outpasses <no-reply@passito.example.edu>"
PDF_BYTES = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"  # every byte value


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: str | None

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Recorder:
    """An aiosmtpd handler that keeps what it receives; refuses @refused.example.org."""

    received: list[Received] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.endswith("@refused.example.org"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        login = session.auth_data.login.decode() if session.authenticated else None
        # session.ssl is set by STARTTLS only; with implicit TLS the transport itself is TLS.
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        self.received.append(
            Received(str(envelope.mail_from), list(envelope.rcpt_tos), envelope.content, tls, login)
        )
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == USER.encode()
            and auth_data.password == PASSWORD.encode()
        )
        # handled=False: aiosmtpd then answers "535 credentials invalid" itself.
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, valid for a day."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "passito test SMTP")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = Certificate(folder / "cert.pem", folder / "key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@dataclass
class Server:
    recorder: Recorder
    port: int


def start_server(**kwargs: Any) -> Iterator[Server]:
    recorder = Recorder()
    port = free_port()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        server_hostname="localhost",
        authenticator=recorder.authenticate,
        **kwargs,
    )
    controller.start()
    try:
        yield Server(recorder, port)
    finally:
        controller.stop()


@pytest.fixture
def plain_server() -> Iterator[Server]:
    yield from start_server()


@pytest.fixture
def starttls_server(certificate: Certificate) -> Iterator[Server]:
    """STARTTLS required before MAIL, AUTH only over TLS."""
    yield from start_server(
        tls_context=certificate.server_context(), require_starttls=True, auth_require_tls=True
    )


@pytest.fixture
def tls_server(certificate: Certificate) -> Iterator[Server]:
    """Implicit TLS from the first byte (port 465 style). aiosmtpd's auth_require_tls only
    knows STARTTLS, so it is off here: the whole connection is TLS anyway."""
    yield from start_server(ssl_context=certificate.server_context(), auth_require_tls=False)


def smtp_env(server: Server, **extra: str) -> dict[str, str]:
    return {
        "PASSITO_SMTP_HOST": "127.0.0.1",
        "PASSITO_SMTP_PORT": str(server.port),
        "PASSITO_SMTP_FROM": SENDER,
        "PASSITO_SMTP_TIMEOUT": "10",
        **extra,
    }


def with_pdf(settings: JobSettings, outpass_id: str = "42") -> bytes:
    Storage(settings.storage_dir).write_atomic(Storage(settings.storage_dir).pdf(outpass_id), PDF_BYTES)
    return PDF_BYTES


def assert_student_email(received: Received) -> None:
    assert received.mail_from == "no-reply@passito.example.edu"
    assert received.rcpt_tos == ["aanya.sharma@example.org"]
    assert_student_message(received.message)


def assert_student_message(message: EmailMessage) -> None:
    assert message["From"] == SENDER
    assert message["To"] == "Aanya Sharma <aanya.sharma@example.org>"
    assert message["Subject"] == "Your outpass No. 42: Chennai Central, Sat 1 Mar 2025, 09:00 UTC+05:30"
    assert message["Message-ID"] == "<outpass-42.student.job-7@passito.example.edu>"
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_body(("plain",))
    assert body is not None
    assert "Your outpass No. 42 is attached" in body.get_content()
    attachments = list(message.iter_attachments())
    assert [(a.get_content_type(), a.get_filename()) for a in attachments] == [
        ("application/pdf", "outpass-42.pdf")
    ]
    assert attachments[0].get_content() == PDF_BYTES  # byte-identical after base64 both ways


def test_the_student_email_goes_over_starttls_with_auth(
    starttls_server: Server, certificate: Certificate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = smtp_env(
        starttls_server,
        PASSITO_SMTP_SECURITY="starttls",
        PASSITO_SMTP_USER=USER,
        PASSITO_SMTP_PASSWORD=PASSWORD,
        PASSITO_SMTP_CA_FILE=str(certificate.cert),
    )
    settings = job_settings(tmp_path / "storage", **env)
    with_pdf(settings)
    # Through the registered handler, configured from the environment as in a worker.
    for name, value in {**env, "PASSITO_STORAGE_DIR": str(settings.storage_dir)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PASSITO_SECRET_KEY", settings.outpass.secret_key or "")
    result = send_outpass_email_job(context("SendOutpassEmail", sample_payload()))
    assert [r.tls for r in starttls_server.recorder.received] == [True]
    assert starttls_server.recorder.received[0].login == USER
    assert_student_email(starttls_server.recorder.received[0])
    assert result["backend"] == "smtp"
    assert result["smtp"] == f"127.0.0.1:{starttls_server.port}"
    assert (result["to"], result["already_sent"]) == ("aanya.sharma@example.org", False)


def test_implicit_tls(tls_server: Server, certificate: Certificate, tmp_path: Path) -> None:
    settings = job_settings(
        tmp_path / "storage",
        **smtp_env(
            tls_server,
            PASSITO_SMTP_SECURITY="tls",
            PASSITO_SMTP_USER=USER,
            PASSITO_SMTP_PASSWORD=PASSWORD,
            PASSITO_SMTP_CA_FILE=str(certificate.cert),
        ),
    )
    with_pdf(settings)
    send_outpass_email(Outpass.from_payload(sample_payload()), settings, job_id=7)
    [received] = tls_server.recorder.received
    assert (received.tls, received.login) == (True, USER)
    assert_student_email(received)


def test_an_untrusted_certificate_stops_the_send(starttls_server: Server, tmp_path: Path) -> None:
    """Without PASSITO_SMTP_CA_FILE the self-signed certificate is not trusted: nothing is sent,
    and the error is retried (an admin can fix the trust store)."""
    settings = job_settings(
        tmp_path / "storage", **smtp_env(starttls_server, PASSITO_SMTP_SECURITY="starttls")
    )
    with_pdf(settings)
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        send_outpass_email(Outpass.from_payload(sample_payload()), settings, job_id=7)
    assert not isinstance(caught.value, PermanentError)
    assert starttls_server.recorder.received == []
    assert not Storage(settings.storage_dir).sent_marker("42", "student", 7).exists()


def test_a_wrong_password_is_refused_and_retried(
    starttls_server: Server, certificate: Certificate, tmp_path: Path
) -> None:
    settings = job_settings(
        tmp_path / "storage",
        **smtp_env(
            starttls_server,
            PASSITO_SMTP_USER=USER,
            PASSITO_SMTP_PASSWORD="wrong",
            PASSITO_SMTP_CA_FILE=str(certificate.cert),
        ),
    )
    with_pdf(settings)
    with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
        send_outpass_email(Outpass.from_payload(sample_payload()), settings, job_id=7)
    assert not isinstance(caught.value, PermanentError)
    assert starttls_server.recorder.received == []


def test_a_retry_after_a_recorded_send_sends_nothing(plain_server: Server, tmp_path: Path) -> None:
    settings = job_settings(tmp_path / "storage", **smtp_env(plain_server, PASSITO_SMTP_SECURITY="none"))
    with_pdf(settings)
    outpass = Outpass.from_payload(sample_payload())
    first = send_outpass_email(outpass, settings, job_id=7)
    again = send_outpass_email(outpass, settings, job_id=7)  # attempt 2 of the same job
    assert len(plain_server.recorder.received) == 1
    assert (first["already_sent"], again["already_sent"]) == (False, True)
    assert again["message_id"] == first["message_id"]
    # A new job for the same outpass (the app re-sent it) is a new email.
    send_outpass_email(outpass, settings, job_id=8)
    assert [r.message["Message-ID"] for r in plain_server.recorder.received] == [
        "<outpass-42.student.job-7@passito.example.edu>",
        "<outpass-42.student.job-8@passito.example.edu>",
    ]


def test_a_refused_recipient_fails_permanently(plain_server: Server, tmp_path: Path) -> None:
    settings = job_settings(tmp_path / "storage", **smtp_env(plain_server, PASSITO_SMTP_SECURITY="none"))
    with_pdf(settings)
    outpass = Outpass.from_payload(sample_payload(student_email="nobody@refused.example.org"))
    with pytest.raises(PermanentError, match=r"refused the recipient .*550 5\.1\.1 No such user here"):
        send_outpass_email(outpass, settings, job_id=7)
    assert plain_server.recorder.received == []


def test_a_missing_pdf_is_retried_not_sent(plain_server: Server, tmp_path: Path) -> None:
    settings = job_settings(tmp_path / "storage", **smtp_env(plain_server, PASSITO_SMTP_SECURITY="none"))
    with pytest.raises(MissingPdfError, match=r"no PDF at outpasses/42/outpass\.pdf"):
        send_outpass_email(Outpass.from_payload(sample_payload()), settings, job_id=7)
    assert plain_server.recorder.received == []


def test_non_ascii_names_are_encoded_not_injected(plain_server: Server, tmp_path: Path) -> None:
    settings = job_settings(tmp_path / "storage", **smtp_env(plain_server, PASSITO_SMTP_SECURITY="none"))
    with_pdf(settings)
    name = 'Aanyā "Śarmā", Jr.'
    send_outpass_email(Outpass.from_payload(sample_payload(student_name=name)), settings, job_id=7)
    [received] = plain_server.recorder.received
    raw_headers = received.data.split(b"\r\n\r\n", 1)[0].decode("ascii")  # 7-bit on the wire
    assert "=?utf-8?" in raw_headers
    to = received.message["To"]
    assert (to.addresses[0].display_name, to.addresses[0].addr_spec) == (name, "aanya.sharma@example.org")
    assert received.rcpt_tos == ["aanya.sharma@example.org"]


def approval_links(message: EmailMessage) -> dict[str, str]:
    body = message.get_body(("plain",))
    assert body is not None
    links = re.findall(
        r"https://passito\.example\.edu/outpass/(approve|deny)\?token=(\S+)", body.get_content()
    )
    return {decision: parse_qs(f"token={token}")["token"][0] for decision, token in links}


def test_the_parent_gets_approve_and_deny_links_with_signed_tokens(
    plain_server: Server, tmp_path: Path
) -> None:
    settings = job_settings(tmp_path / "storage", **smtp_env(plain_server, PASSITO_SMTP_SECURITY="none"))
    result = send_parent_approval(Outpass.from_payload(sample_payload()), settings, job_id=9)
    [received] = plain_server.recorder.received
    message = received.message
    assert received.rcpt_tos == ["rohan.sharma@example.org"]
    assert message["To"] == "Rohan Sharma <rohan.sharma@example.org>"
    assert message["Subject"].startswith("Outpass request from Aanya Sharma: Chennai Central")
    html = message.get_body(("html",))
    assert html is not None
    assert 'href="https://passito.example.edu/outpass/approve?token=' in html.get_content()
    links = approval_links(message)
    key = settings.signing_key
    for decision in ("approve", "deny"):
        claims = verify_token(links[decision], key, purpose=PURPOSE_APPROVAL, decision=decision)
        assert (claims.outpass_id, claims.decision) == ("42", decision)
        assert claims.expires_at.isoformat() == result["links_expire_at"]
        assert claims.expires_at - datetime.now(UTC) > timedelta(days=2, hours=23)  # the 3d default
    with pytest.raises(InvalidTokenError, match="wrong decision"):
        verify_token(links["approve"], key, purpose=PURPOSE_APPROVAL, decision="deny")


def test_approval_verify_on_the_command_line(plain_server: Server, tmp_path: Path) -> None:
    settings = job_settings(tmp_path / "storage", **smtp_env(plain_server, PASSITO_SMTP_SECURITY="none"))
    send_parent_approval(Outpass.from_payload(sample_payload()), settings, job_id=9)
    links = approval_links(plain_server.recorder.received[0].message)
    env = {"PASSITO_SECRET_KEY": settings.outpass.secret_key or "", "PATH": "/usr/bin:/bin"}
    done = run_cli(["approval", "verify", links["deny"]], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("deny outpass 42 (valid until ")
    tampered = links["deny"][:-3] + ("abc" if not links["deny"].endswith("abc") else "xyz")
    done = run_cli(["approval", "verify", tampered], env)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "passito-jobs: error: invalid token: bad signature: the token was altered or signed with another key"
    )
    done = run_cli(["approval", "verify", links["approve"], "--decision", "deny"], env)
    assert (done.returncode, done.stderr.strip()) == (
        1,
        "passito-jobs: error: invalid token: wrong decision: this token is for approve, not deny",
    )
    done = run_cli(["approval", "verify", links["approve"]], {"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "PASSITO_SECRET_KEY is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_an_smtp_host_emails_become_files_in_the_outbox(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = job_settings(tmp_path / "storage", PASSITO_SMTP_FROM=SENDER)
    with_pdf(settings)
    with caplog.at_level(logging.INFO, logger="passito_jobs.outpass"):
        result = send_outpass_email(Outpass.from_payload(sample_payload()), settings, job_id=7)
    assert result["backend"] == "file"
    path = settings.storage_dir / result["file"]
    assert path.parent == settings.storage_dir / "outbox"
    assert path.suffix == ".eml"
    assert str(path) in caplog.text
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert_student_message(message)
    again = send_outpass_email(Outpass.from_payload(sample_payload()), settings, job_id=7)
    assert again["already_sent"]
    assert len(list((settings.storage_dir / "outbox").iterdir())) == 1
