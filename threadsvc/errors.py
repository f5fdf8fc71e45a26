"""The one error tree of threadsvc; it knows nothing of HTTP (web/errors.py maps it).

    ThreadsvcError
    ├── AuthenticationFailed       no or bad credentials
    ├── RetryLater                 refused for now, with when to try again
    │   ├── AccountLocked          too many failed passwords
    │   ├── TooManyActiveThreads   a per-user or per-group limit
    │   ├── TooManyStreams         a user's open event streams
    │   ├── TooManyWebhooks        a group's or the server's webhooks
    │   └── ServerBusy             too many large bodies are being read
    ├── Forbidden                  role too low, not a member, not an administrator
    ├── BadParameter               a missing or bad parameter (names it)
    │   └── UnknownJob             no job of that name (here)
    ├── NotFound
    │   ├── GroupNotFound
    │   ├── ThreadNotFound
    │   └── ServiceNotFound        no route for that path
    ├── MethodNotAllowed
    ├── BodyTooLarge
    ├── RequestTooSlow             a body that does not arrive in time
    ├── ThreadStillRunning         DELETE of an active thread
    ├── StoreUnavailable           the database cannot be reached
    ├── StorageFull                no space left for a file (a result, an upload)
    ├── FileUnavailable            the file storage cannot be reached (503, never 410)
    │   └── FileMissing            it answered, but holds no such file
    ├── Conflict                   a unique name or id is already taken
    ├── LinkRefused                a pre-signed link expired or was tampered with
    ├── ResultDeleted              the result's deletion moment has passed
    └── NoResult                   a failed or cancelled thread has no result
"""

from __future__ import annotations

import errno

# The errno values of an OSError that is the disk being full (StorageFull), not a bug.
OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class ThreadsvcError(Exception):
    """Base of every error threadsvc raises on purpose; `str()` is safe to show a client."""


class AuthenticationFailed(ThreadsvcError):
    pass


class RetryLater(ThreadsvcError):
    """Refused for now: the answer says when to try again (`Retry-After`, in seconds)."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AccountLocked(RetryLater):
    pass


class Forbidden(ThreadsvcError):
    pass


class BadParameter(ThreadsvcError):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"Parameter '{name}' {problem}")
        self.name = name


class UnknownJob(BadParameter):
    def __init__(self, job: str) -> None:
        ThreadsvcError.__init__(self, f"Parameter 'job': no job named '{job}' here")
        self.name = "job"


class NotFound(ThreadsvcError):
    pass


class GroupNotFound(NotFound):
    pass


class ThreadNotFound(NotFound):
    pass


class ServiceNotFound(NotFound):
    pass


class MethodNotAllowed(ThreadsvcError):
    pass


class BodyTooLarge(ThreadsvcError):
    pass


class RequestTooSlow(ThreadsvcError):
    pass


class ThreadStillRunning(ThreadsvcError):
    pass


class TooManyActiveThreads(RetryLater):
    pass


class TooManyStreams(RetryLater):
    pass


class TooManyWebhooks(RetryLater):
    """A group, or the server, has as many webhooks as the settings allow."""


class StoreUnavailable(ThreadsvcError):
    pass


class ServerBusy(RetryLater):
    """Every slot for reading a large body stayed taken for as long as a request may wait."""


class StorageFull(ThreadsvcError):
    """The disk under data-dir is full (ENOSPC, EDQUOT, EFBIG): a file could not be stored."""


class FileUnavailable(ThreadsvcError):
    """The file storage (a directory, the database, a bucket) did not give or take a file."""


class FileMissing(FileUnavailable):
    """The file storage holds no file of that key (yet the store says it should)."""


class Conflict(ThreadsvcError):
    pass


class LinkRefused(ThreadsvcError):
    pass


class ResultDeleted(ThreadsvcError):
    pass


class NoResult(ThreadsvcError):
    pass


class WebhookNotFound(NotFound):
    """No such webhook, or none under that group (docs/api.md#webhooks)."""
