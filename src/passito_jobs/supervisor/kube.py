"""The two Kubernetes API calls the operator makes itself: read and scale a Deployment, and
write a WorkerAutoscaler's status.

kopf does the watching and posts the Events; it offers no public client for other objects, so
this is a small aiohttp client over the same credentials kopf logs in with (`operator.login`).
Patches are JSON merge patches, like `kubectl patch --type merge`. `check_cluster` asks the
API server for `GET /api` before kopf starts, so a missing or wrong cluster is one line.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import kopf

from passito_jobs.settings import format_duration

log = logging.getLogger("passito_jobs.operator")

JSON_MERGE_PATCH = "application/merge-patch+json"
TIMEOUT = aiohttp.ClientTimeout(total=30)


class KubeApiError(Exception):
    """A request failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class KubeApi:
    """An aiohttp session built from a `kopf.ConnectionInfo`, re-logging in once on a 401."""

    def __init__(self, login: Callable[[], kopf.ConnectionInfo | None]) -> None:
        self._login = login
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stale = False  # the session was built from older credentials

    def use(self, info: kopf.ConnectionInfo) -> None:
        """Credentials from kopf's login handler; the next request uses them."""
        self._info = info
        self._stale = True

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None when it does not exist."""
        try:
            return await self._request("GET", path)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self._request("PATCH", path, patch)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        for attempt in (1, 2):
            session, server = await self._connect(fresh=attempt == 2)
            headers = {"Content-Type": JSON_MERGE_PATCH} if body is not None else {}
            try:
                async with session.request(
                    method,
                    server.rstrip("/") + path,
                    data=None if body is None else json.dumps(body),
                    headers=headers,
                ) as response:
                    text = await response.text()
                    if response.status == 401 and attempt == 1:
                        continue  # the token may have been rotated: log in again
                    if response.status >= 400:
                        raise KubeApiError(
                            f"{method} {path}: HTTP {response.status} {_status_message(text)}",
                            response.status,
                        )
                    data = json.loads(text) if text else {}
                    return data if isinstance(data, dict) else {}
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KubeApiError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        raise KubeApiError(f"{method} {path}: unauthorised", 401)

    async def _connect(self, *, fresh: bool) -> tuple[aiohttp.ClientSession, str]:
        if fresh or self._info is None:
            info = self._login()
            if info is None:
                raise KubeApiError("no Kubernetes credentials (no service account, kubeconfig or server)")
            self.use(info)
        info = self._info
        assert info is not None
        if self._stale:
            await self.close()
            self._stale = False
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                headers=info.as_http_headers(),
                timeout=TIMEOUT,
                trust_env=info.trust_env,
            )
        return self._session, info.server


def _status_message(text: str) -> str:
    """The `message` of a Kubernetes Status object, or the start of the body, on one line."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        text = data["message"]
    return " ".join(text.split())[:200]


def connection_info(kube_server: str | None, settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """PASSITO_KUBE_SERVER (tests), else the pod's service account, else the kubeconfig."""
    if kube_server:
        return kopf.ConnectionInfo(server=kube_server, insecure=True)
    return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)


class ClusterUnavailableError(Exception):
    """There is no Kubernetes API to operate on; the message says why, in one line."""


def check_cluster(kube_server: str | None, timeout: float) -> None:
    """Outside a pod, stop before kopf starts (and retries with tracebacks) when there is no
    Kubernetes API: no credentials at all, a server that does not answer within the connect
    timeout, one that fails the TLS check or refuses the credentials, or a server that answers
    but is not Kubernetes (its `GET /api` is not an APIVersions object). In a pod (a service
    account) the operator waits for its API server."""
    kopf_settings = kopf.OperatorSettings()
    info = connection_info(kube_server, kopf_settings)
    if info is None:
        raise ClusterUnavailableError(
            "no Kubernetes cluster to operate on: not in a pod (no service account), no kubeconfig "
            "(KUBECONFIG or ~/.kube/config), and PASSITO_KUBE_SERVER is not set"
        )
    in_pod = not kube_server and kopf.login_with_service_account(settings=kopf_settings)
    url = urllib.parse.urlsplit(info.server)
    if in_pod or not url.hostname:
        return
    server = f"{url.scheme}://{url.netloc}"
    status, body = _get_api(info, timeout, server)
    answer = f"HTTP {status}" + (f" ({message})" if (message := _status_message(body)) else "")
    if status in (401, 403):
        raise ClusterUnavailableError(
            f"the Kubernetes API at {server} refused the operator's credentials: GET /api answered {answer}"
        )
    if status != 200 or _kind(body) != "APIVersions":
        raise ClusterUnavailableError(
            f"the server at {server} is not a Kubernetes API: GET /api answered {answer}"
        )


def _get_api(info: kopf.ConnectionInfo, timeout: float, server: str) -> tuple[int, str]:
    """`GET /api` with the operator's credentials: the HTTP status and the start of the body."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=info.as_ssl_context())]
    if not info.trust_env:  # as kopf's own session: no proxy from the environment
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(  # noqa: S310 - the scheme is the kubeconfig's http(s)
        info.server.rstrip("/") + "/api",
        headers={**info.as_http_headers(), "Accept": "application/json"},
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read(_BODY_LIMIT).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(_BODY_LIMIT).decode("utf-8", "replace")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, ssl.SSLError):
            detail = getattr(reason, "verify_message", None) or reason.reason or str(reason)
            raise ClusterUnavailableError(
                f"the Kubernetes API at {server} failed the TLS check: {detail}"
            ) from None
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        raise ClusterUnavailableError(
            f"cannot reach the Kubernetes API at {server} "
            f"within {format_duration(timeout)} (PASSITO_CONNECT_TIMEOUT): {text}"
        ) from None


_BODY_LIMIT = 64 * 1024


def _kind(body: str) -> object:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("kind") if isinstance(data, dict) else None


def is_api_failure(exc: BaseException | None) -> bool:
    """An error kopf or aiohttp raised about the API (kopf's own error classes are private)."""
    return exc is not None and type(exc).__module__.split(".")[0] in {"kopf", "aiohttp"}


def quiet_api_failures(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """kopf's discovery runs requests side by side and, when one fails, leaves the others'
    errors unretrieved: asyncio would print each at exit ("Task exception was never
    retrieved"). The failure that stopped the operator is reported once, by `operator.run_operator`."""
    if is_api_failure(context.get("exception")):
        log.debug("%s: %s", context.get("message"), context.get("exception"))
        return
    loop.default_exception_handler(context)
