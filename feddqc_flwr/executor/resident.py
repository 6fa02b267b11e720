"""The claim loop: take the SuperNode's ClientApp tasks one at a time and run each in this process.

One task is what one `flwr-clientapp` process does in stock Flower (`run_clientapp`): pull the
message, context, run and FAB, call the ClientApp, push the reply and the task's final status,
send task heartbeats meanwhile. The same Flower functions do the pulling and pushing here; only
the process lives on, so the app's module-level caches (the base model) survive every message.
An exception in the app becomes an error reply, as in stock Flower, and the loop goes on.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from logging import ERROR, INFO, WARNING
from types import FrameType

import httpx
from flwr.app import Message
from flwr.app.error import Error
from flwr.clientapp.client_app import LoadClientAppError
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.logger import log
from flwr.proto.runtime_pb2 import AcquireTaskRequest, SendTaskHeartbeatRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.protobuf.client import ProtobufClientInterceptor
from flwr.supercore.retry import RetryInvoker, exponential
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from feddqc_flwr.executor.apps import InstalledApps

# The SuperNode signs nothing else: `flower-superexec` protects exactly this call.
_AUTH_METHODS = frozenset({"/flwr.proto.Runtime/AcquireTask"})
_TRANSIENT = {httpx.codes.BAD_GATEWAY, httpx.codes.SERVICE_UNAVAILABLE, httpx.codes.GATEWAY_TIMEOUT}
_REFUSED = {httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN}  # wrong secret: restarting cannot help


class ExecutorStopped(Exception):
    """SIGTERM/SIGINT: a running task replies with an error, then the executor exits."""


class RuntimeApiRefused(RuntimeError):
    """The SuperNode refused the executor (wrong or missing SuperExec auth secret)."""


@dataclass(frozen=True)
class RuntimeApi:
    """How to reach the SuperNode's Runtime API."""

    address: str
    root_certificates: bytes | None = None  # None with insecure: plain HTTP (127.0.0.1 only)
    insecure: bool = True
    auth_secret: bytes | None = None

    def client(self, interceptors: list[ProtobufClientInterceptor], max_time: float | None) -> RuntimeHttpClient:
        # Flower's own invoker sends SIGINT to the process on HTTP 401, which would stop every
        # later task too: retry network errors and 502-504 only, and raise the rest.
        retry = RetryInvoker(lambda: exponential(max_delay=10), (httpx.TransportError, httpx.HTTPStatusError),
                             max_tries=None, max_time=max_time,
                             should_giveup=lambda e: isinstance(e, httpx.HTTPStatusError)
                             and e.response.status_code not in _TRANSIENT)
        return RuntimeHttpClient.from_server_address(server_address=self.address, insecure=self.insecure,
                                                     root_certificates=self.root_certificates,
                                                     interceptors=interceptors, retry_invoker=retry)


def _heartbeat(client: RuntimeHttpClient, task_id: int) -> Callable[[], bool]:
    """Keep the task's claim alive; unlike Flower's, never SIGINT the process when it is lost."""
    request = SendTaskHeartbeatRequest()

    def beat() -> bool:
        try:
            if not client.SendTaskHeartbeat(request).success:
                log(WARNING, "task %d: the SuperNode dropped its claim (run stopped?); its reply will be refused",
                    task_id)
        except httpx.HTTPError:
            return False
        return True

    return beat


def run_task(api: RuntimeApi, token: str, task_id: int, apps: InstalledApps) -> None:
    """Run one claimed ClientApp task to its end: a reply (or error reply) and a final status."""
    client = api.client([RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                         RuntimeTokenHttpInterceptor(token)], max_time=60)
    heartbeat = HeartbeatSender(_heartbeat(client, task_id))
    heartbeat.start()
    message = context = reply = None
    status, details, stopped = SubStatus.FAILED, "ClientApp task failed", None
    try:
        message, context, run, fab = pull_task_input(client)
        log(INFO, "task %d: run %d, %s message", task_id, run.run_id, message.metadata.message_type)
        reply = apps.client_app(run, fab)(message=message, context=context)
        status, details = SubStatus.COMPLETED, ""
    except Exception as ex:  # pylint: disable=broad-exception-caught  # as stock Flower: an error reply
        log(ERROR, "task %d: ClientApp raised an exception", task_id, exc_info=ex)
        stopped = ex if isinstance(ex, ExecutorStopped) else None
        code, details = ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(ex)}:<'{ex}'>"
        if isinstance(ex, LoadClientAppError):
            code, details = ErrorCode.LOAD_CLIENT_APP_EXCEPTION, "An exception was raised when loading `ClientApp`"
        if message is not None:
            reply = Message(Error(code=code, reason=details), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        except ExecutorStopped as ex:  # SIGTERM while pushing: finish this task, then stop
            stopped = ex
        except Exception as ex:  # pylint: disable=broad-exception-caught
            log(ERROR, "task %d: failed to push the reply", task_id, exc_info=ex)
        try:
            push_task_output(client=client, context=context, sub_status=status, details=details)
        finally:
            if heartbeat.is_running:
                heartbeat.stop()
            client.close()
    if stopped is not None:
        raise stopped


def _stop(signum: int, frame: FrameType | None) -> None:
    raise ExecutorStopped(f"executor stopped by signal {signum}")


def serve(api: RuntimeApi, poll_interval: float) -> None:
    """Claim and run ClientApp tasks until SIGTERM/SIGINT (returns) or the SuperNode refuses us."""
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    interceptors: list[ProtobufClientInterceptor] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if api.auth_secret:
        interceptors.append(SuperExecAuthHttpInterceptor(master_secret=api.auth_secret,
                                                         protected_methods=_AUTH_METHODS))
    client = api.client(interceptors, max_time=None)
    apps = InstalledApps()
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    log(INFO, "resident executor: claiming ClientApp tasks from %s", api.address)
    try:
        while True:
            try:
                claimed = client.AcquireTask(request)
            except httpx.HTTPStatusError as err:
                if err.response.status_code not in _REFUSED:
                    raise  # a server error: the restart loop tries again (exit code 1, not 3)
                raise RuntimeApiRefused(
                    f"the SuperNode at {api.address} refused AcquireTask (HTTP {err.response.status_code}): "
                    "give the executor the SuperNode's --superexec-auth-secret-file, and start the SuperNode "
                    "with --isolation process") from err
            if claimed.HasField("task") and claimed.token:
                run_task(api, claimed.token, claimed.task.task_id, apps)
            else:
                time.sleep(poll_interval)
    except ExecutorStopped:
        log(INFO, "resident executor stopped")
    finally:
        client.close()
