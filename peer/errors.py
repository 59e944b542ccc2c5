"""One error base for everything a user can see; messages are user-facing."""

from __future__ import annotations


class BanzaiError(Exception):
    """Base of every error Banzai reports to a user (API, CLI, logs)."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"error": type(self).__name__, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class SpecError(BanzaiError):
    """A pipeline is malformed or does not match the task catalog."""


class ArgError(BanzaiError):
    """A task argument is missing, unknown or has a bad value."""


class ConfigError(BanzaiError):
    """A setting (flag, environment variable, TOML file) is invalid."""


class NotFound(BanzaiError):
    """A job, task, CID or path does not exist."""

    status = 404


class BadCID(BanzaiError):
    """A string is not a valid CID."""


class StoreError(BanzaiError):
    """The content store cannot complete an operation."""

    status = 500


class IntegrityError(StoreError):
    """A block's bytes do not match its CID."""

    status = 502


class TooLarge(BanzaiError):
    """An input exceeds its size bound."""

    status = 413


class Unsupported(BanzaiError):
    """A valid request asks for something this peer does not support."""

    status = 501


class Conflict(BanzaiError):
    """The request conflicts with the current state (e.g. cancel a finished job)."""

    status = 409
