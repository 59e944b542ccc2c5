"""One error base for everything a user can see; messages are user-facing. The HTTP status
of each type is in peer/errors_http.py (STATUS)."""

from __future__ import annotations

import errno


class BanzaiError(Exception):
    """Base of every error Banzai reports to a user (API, CLI, logs)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field  # the request field or setting at fault, if one is


class SpecError(BanzaiError):
    """A pipeline is malformed or does not match the task catalog."""


class ArgError(BanzaiError):
    """A task argument is missing, unknown or has a bad value."""


class ConfigError(BanzaiError):
    """A setting (flag, environment variable, TOML file) is invalid."""


class Forbidden(BanzaiError):
    """The request is refused where it comes from (e.g. a cross-origin browser request)."""


class Unauthorized(BanzaiError):
    """The request lacks the peer's token (or a valid session), or carries a wrong one."""


class NotFound(BanzaiError):
    """A job, task, CID or path does not exist."""


class NotCached(NotFound):
    """Content asked for with `Cache-Control: only-if-cached` is not in this peer's store."""


class NotAcceptable(BanzaiError):
    """The content cannot be given in the representation asked for (e.g. a codec mismatch)."""


class IpnsError(BanzaiError):
    """An IPNS name has no valid record here (malformed, badly signed, expired or absent)."""


class BadCID(BanzaiError):
    """A string is not a valid CID."""


class StoreError(BanzaiError):
    """The content store cannot complete an operation."""


class IntegrityError(StoreError):
    """A block's bytes do not match its CID."""


class DataError(StoreError):
    """A file of the data dir holds what this release cannot read back (damaged, edited by
    hand): the message names the file and what is wrong."""


class StorageFull(StoreError):
    """The disk under the data dir is full (or over quota): retry once space is freed."""


class LogUnwritable(StoreError):
    """The peer cannot write or sync its event log (read-only, failing disk), the disk not
    full: the change waits in memory; retry once the log takes writes again."""


class StoreUnwritable(StoreError):
    """The peer's disk does not take writes (read-only, failing, a file size limit), not
    being full: nothing was kept; retry once it takes writes again."""


class BadDag(StoreError):
    """A block hashes to its CID but breaks its format's rules (e.g. a malformed HAMT shard)."""


class TooLarge(BanzaiError):
    """An input exceeds its size bound."""


class Unsupported(BanzaiError):
    """A valid request asks for something this peer does not support."""


class RequestTimeout(BanzaiError):
    """A request's body did not arrive in time (http_body_idle_s; /login's: its whole body)."""


class Unavailable(BanzaiError):
    """The peer is at one of its bounds of concurrent clients (e.g. event streams): retry later."""


class SignedTextTooLong(TooLarge, ValueError):
    """A text a signed message holds (an id, an address) is longer than its length prefix
    can say (peer.log.signing.MAX_SIGNED_TEXT_BYTES)."""

    # A ValueError too, as InvalidEvent: code that drops malformed input already catches it.


class InvalidEvent(BanzaiError, ValueError):
    """An event (from the wire, the log or a local emit) breaks its type's schema."""

    # A ValueError too: code that drops malformed input (gossip frames) already catches it.


class Conflict(BanzaiError):
    """The request conflicts with the current state (e.g. cancel a finished job)."""


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13  # sqlite3.SQLITE_FULL: "database or disk is full"
# A write the disk refused, not for room: a failing disk, a read-only one, a file size limit
_FAILING_ERRNOS = frozenset({errno.EIO, errno.EROFS, errno.EFBIG})


def disk_full(exc: BaseException) -> bool:
    """True if `exc`, or an exception it was raised from, says the disk is full (ENOSPC,
    EDQUOT, SQLite's SQLITE_FULL or a StorageFull)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, StorageFull) or (isinstance(e, OSError) and e.errno in _FULL_ERRNOS):
            return True
        if getattr(e, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        e = e.__cause__ or e.__context__
    return False


def disk_failing(exc: BaseException) -> bool:
    """True if `exc`, or an exception it was raised from, is an OSError the disk gave other
    than for room (EIO, EROFS, EFBIG): told as StoreUnwritable, not as a bug."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FAILING_ERRNOS:
            return True
        e = e.__cause__ or e.__context__
    return False
