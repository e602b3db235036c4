"""Every error a user can see: what went wrong, and what to do next.

Front ends print `str(err)` as one line and exit with `err.exit_status`; a traceback
reaching a user is a bug.
"""

from __future__ import annotations


class CloudshError(Exception):
    """Base class. `hint` says what to do about it."""

    exit_status = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return one_line(f"{self.message}. {self.hint}" if self.hint else self.message)


def one_line(text: str) -> str:
    """`text` as one line of plain characters: line breaks, terminal control codes and
    invisible format characters (a name may hold any of them) are shown as escapes."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


class UsageError(CloudshError):
    """Bad arguments; exit status 2."""

    exit_status = 2


class ConfirmationRefused(CloudshError):
    """A destructive command was not confirmed; exit status 2."""

    exit_status = 2


class Declined(ConfirmationRefused):
    """The user answered no: not a failure, nothing was changed."""


class NotFound(CloudshError):
    pass


class Ambiguous(CloudshError):
    pass


class InvalidState(CloudshError):
    """The resource is in the wrong state for this (e.g. `run` on a stopped box)."""


class CredentialsError(CloudshError):
    pass


class AWSError(CloudshError):
    """An EC2 API error that has no more specific class."""

    def __init__(self, message: str, hint: str = "", code: str = "") -> None:
        super().__init__(message, hint)
        self.code = code


class CapacityError(AWSError):
    pass


class SSHError(CloudshError):
    pass


class SSHTimeout(SSHError):
    """No answer before the connect timeout: a firewall dropping packets, or a box still booting."""


class HostKeyChanged(SSHError):
    """The server's host key differs from the pinned one: refuse, never re-pin silently."""


class SandboxError(CloudshError):
    pass
