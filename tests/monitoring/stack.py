"""Real monitoring servers for the end-to-end tests, on free loopback ports with temp storage.

- `Mailbox`: an aiosmtpd SMTP server (the admin's mailbox) that keeps every message and checks
  the SMTP login.
- `Prometheus` / `Alertmanager`: Debian's binaries, started with a config written here.
- `AutoscalerSource`: the operator's `passito_jobs_autoscaler_*` metrics. The operator itself is a
  kopf process that needs a Kubernetes API, which cannot run beside these servers here; this
  serves the same metric names (real prometheus_client objects on a real ProbeServer), with
  values from the scaling policy the operator calls (`passito_jobs.supervisor.policy.decide`)
  on the queue's real load.
"""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from prometheus_client import CollectorRegistry, Counter, Gauge

from passito_jobs.httpserver import ProbeServer
from passito_jobs.queue.store import Store
from passito_jobs.supervisor.policy import Direction, ScalingPolicy, decide
from tests.helpers import free_port, http_get, wait_for

# ---------------------------------------------------------------- SMTP


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: list[str]
    authenticated_as: str | None
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def body(self, subtype: str) -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        assert part is not None, f"no text/{subtype} part in {self.subject!r}"
        return str(part.get_content())


class Mailbox:
    """An SMTP server on loopback that accepts `username`/`password` and keeps the mail."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.mails: list[Mail] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self._authenticate,
            auth_require_tls=False,  # loopback only; Alertmanager sends PLAIN auth to 127.0.0.1
            # aiosmtpd's LOGIN prompts ("User Name") are not the "Username:" Alertmanager expects.
            auth_exclude_mechanism=["LOGIN"],
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.username
            and auth_data.password.decode() == self.password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self._lock:
            self.mails.append(Mail(str(envelope.mail_from), list(envelope.rcpt_tos), login, message))
        return "250 OK"

    def find(self, predicate: Callable[[Mail], bool]) -> list[Mail]:
        with self._lock:
            return [mail for mail in self.mails if predicate(mail)]

    def __enter__(self) -> Mailbox:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


# ---------------------------------------------------------------- servers


class Server:
    """A server subprocess with its output in a log file, started once `url + ready_path`
    answers 200."""

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        url: str,
        *,
        ready_path: str = "/-/ready",
        env: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        wait_for(
            lambda: self.proc.poll() is not None or http_get(f"{url}{ready_path}")[0] == 200,
            timeout=30,
            message=f"{' '.join(argv[:5])} to be ready",
        )
        assert self.proc.poll() is None, f"{argv[0]} exited:\n{self.log()}"

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


class Alertmanager(Server):
    def __init__(self, binary: str, config: Path, folder: Path) -> None:
        port = free_port()
        super().__init__(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={folder / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # no HA gossip port
            ],
            folder / "alertmanager.log",
            f"http://127.0.0.1:{port}",
        )
        self.address = f"127.0.0.1:{port}"


class Prometheus(Server):
    """Prometheus scraping `targets` ({job: [host:port]}) every second, evaluating `rules`
    every second and sending alerts to `alertmanager`."""

    def __init__(
        self, binary: str, folder: Path, *, rules: Path, targets: dict[str, list[str]], alertmanager: str
    ) -> None:
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": hosts}]} for job, hosts in targets.items()
            ],
        }
        path = folder / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        super().__init__(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={folder / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--rules.alert.resend-delay=1s",
            ],
            folder / "prometheus.log",
            f"http://127.0.0.1:{port}",
        )

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector; a query Prometheus rejects fails the test."""
        status, body = http_get(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
        data = json.loads(body or b"{}")
        assert status == 200, f"{promql}: {status} {data.get('error')}"
        assert data["status"] == "success", data
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def alerts(self) -> dict[str, str]:
        """{alertname: state} of the alerts Prometheus holds now (pending or firing)."""
        _, body = http_get(f"{self.url}/api/v1/alerts")
        return {a["labels"]["alertname"]: a["state"] for a in json.loads(body)["data"]["alerts"]}


# ---------------------------------------------------------------- the operator's metrics


class AutoscalerSource:
    """Serves `passito_jobs_autoscaler_*` for one autoscaler, following the queue's load."""

    NAMESPACE = "passito"
    NAME = "workers"

    def __init__(self, database_url: str, workers: Callable[[], int], policy: ScalingPolicy) -> None:
        self.database_url = database_url
        self.workers = workers
        self.policy = policy
        registry = CollectorRegistry()
        labels = ["namespace", "autoscaler"]
        key = (self.NAMESPACE, self.NAME)
        self.desired = Gauge(
            "passito_jobs_autoscaler_desired_replicas", "Desired.", labels, registry=registry
        )
        self.current = Gauge(
            "passito_jobs_autoscaler_current_replicas", "Current.", labels, registry=registry
        )
        self.load = Gauge("passito_jobs_autoscaler_load", "Load.", labels, registry=registry)
        self.paused = Gauge("passito_jobs_autoscaler_paused", "Paused.", labels, registry=registry)
        self.scale_events = Counter(
            "passito_jobs_autoscaler_scale_events", "Scale events.", [*labels, "direction"], registry=registry
        )
        self.database_errors = Counter(
            "passito_jobs_autoscaler_database_errors", "Database errors.", labels, registry=registry
        )
        self.paused.labels(*key).set(0)
        self.database_errors.labels(*key)
        for direction in (Direction.UP, Direction.DOWN):
            self.scale_events.labels(*key, direction.value)
        self._key = key
        self._desired: int | None = None
        self._last_scale: float | None = None
        self._stop = threading.Event()
        self.server = ProbeServer(0, registry=registry, host="127.0.0.1")
        self.address = f"127.0.0.1:{self.server.port}"
        self._thread = threading.Thread(target=self._run, name="autoscaler-source", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            store = Store(conn)
            while not self._stop.wait(0.5):
                load = store.load().total
                current = self.workers()
                decision = decide(
                    self.policy,
                    load=load,
                    current=current,
                    now=time.monotonic(),
                    last_scale_time=self._last_scale,
                )
                self.load.labels(*self._key).set(load)
                self.current.labels(*self._key).set(current)
                self.desired.labels(*self._key).set(decision.desired)
                # A scale event is a change of the desired count, as the operator patches it.
                if self._desired is not None and decision.desired != self._desired:
                    direction = Direction.UP if decision.desired > self._desired else Direction.DOWN
                    self.scale_events.labels(*self._key, direction.value).inc()
                    self._last_scale = time.monotonic()
                self._desired = decision.desired

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()
