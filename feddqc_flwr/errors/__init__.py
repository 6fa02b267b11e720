"""Errors the project raises on purpose: bad input a person can fix from the message alone.

Every entry point shows them as one line, never as a traceback: the `feddqc` CLI exits with
status 2 (`cli.main`), the ServerApp's log shows the message where Flower would print the
traceback, and the ClientApp replies an error that names it (`app.user_errors`). A traceback
stays for everything else: that is a bug to report, not an input to fix.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors whose message names the key, file or artifact to fix (and how)."""


class MissingArtifactError(UserError, FileNotFoundError):
    """Something the run reads is not there: a model not installed or converted, a run folder,
    an adapter, a package that ships weights. A FileNotFoundError, so callers that catch that
    keep working."""


def one_line(err: BaseException) -> str:
    """The error's message on one line: a library's message quoted inside can span several."""
    return " ".join(str(err).split()) or type(err).__name__
