"""The apps' errors raised on purpose (`feddqc_flwr.errors.UserError`), shown as one line.

ServerApp: the error still leaves `main`, so that Flower records the run as failed. Flower's
process catches it (`flwr.simulation.app.run_simulation_process` in simulation,
`flwr.superlink.runtime.run_serverapp.run_serverapp` in deployment), logs it with
`log(ERROR, "%s raised an exception", ..., exc_info=ex)`, pushes `sub_status=FAILED` with
`details="... failed with exception: <message>"` to the SuperLink and ends its own process
through `flwr.supercore.exit.flwr_exit` (status 1, after Flower's "Exit Code: 700" (simulation)
or "201" (deployment) lines). `OneLineUserErrors` turns that log record into one line.

`flwr run` cannot report it in its exit status (flwr 1.41): `flwr.cli.run.run._run_with_control_api`
starts the run and, with `--stream`, calls `flwr.cli.log.start_stream`, which prints the log until
the SuperLink closes the stream and returns; nothing reads the run's status, so `flwr run` exits 0
for a failed run too. The status is in `flwr ls --run-id <id>`: `finished:failed`, with the message
as its details (`--format json`: "status", "status-details").

ClientApp: `user_error_mod` turns the error into an error reply that names it, which the strategy
counts as a failed node and logs with the reason.
"""

from __future__ import annotations

import functools
import logging

from flwr.app import Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from feddqc_flwr.errors import UserError, one_line

log = logging.getLogger("flwr").getChild(__name__)  # shown in `flwr run --stream`


class OneLineUserErrors(logging.Filter):
    """A Flower record carrying a UserError keeps its text plus the error's message; the traceback goes."""

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        if isinstance(err, UserError):
            record.msg, record.args = f"{record.getMessage()}: {one_line(err)}", ()
            record.exc_info, record.exc_text = None, None
        return True


@functools.cache
def show_user_errors_in_one_line() -> None:
    """Install the filter on Flower's logger, once per process (Flower logs through "flwr" itself)."""
    logging.getLogger("flwr").addFilter(OneLineUserErrors())


def user_error_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """ClientApp mod: a UserError in a handler becomes an error reply with its one-line message."""
    try:
        return call_next(msg, context)
    except UserError as err:
        reason = one_line(err)
        log.error("%s on node %s: %s", msg.metadata.message_type, context.node_id, reason)
        return Message(error=Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)
