"""voicegate's exceptions. Third-party errors are mapped to these at the boundary.

VoicegateError
├── ConfigError             bad configuration; start-up stops with one line
├── StorageError
│   ├── StorageUnavailable  Redis is unreachable, timed out or refused a command (kept inside
│   │                       storage: the resilient backend answers from memory instead)
│   └── StorageRecovering   serving from memory while Redis holds state not merged yet
├── AuthError               token missing, malformed, expired or badly signed
├── PlanUnavailable         the plan lookup service did not answer
├── AdmissionError          a session was refused (carries the close code and reason)
├── EngineError
│   ├── UpstreamUnavailable the engine could not be reached after the retries
│   ├── UpstreamRejected    the engine refused the credential or the quota is exhausted
│   └── UpstreamClosed      the engine closed the connection
└── ClientEventError        a client message was refused; the session goes on
"""

from __future__ import annotations


class VoicegateError(Exception):
    """Root of every error raised by voicegate."""


class ConfigError(VoicegateError):
    """A setting is missing or invalid; the message names the variable, never its secret value."""


class StorageError(VoicegateError):
    """A storage backend failed."""


class StorageUnavailable(StorageError):
    """Redis could not be reached, timed out, or refused a command."""


class StorageRecovering(StorageError):
    """This instance serves from memory and Redis holds state not merged yet; retry shortly."""


class AuthError(VoicegateError):
    """The client token is missing, malformed, expired or badly signed."""


class PlanUnavailable(VoicegateError):
    """PLAN_LOOKUP_URL could not tell a user's plan (no answer, an error, a bad answer)."""


class AdmissionError(VoicegateError):
    """A voice session was refused; `code` and `reason` are the WebSocket close frame."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class EngineError(VoicegateError):
    """The speech engine failed."""


class UpstreamUnavailable(EngineError):
    """The engine could not be reached after every retry."""


class UpstreamRejected(EngineError):
    """The engine refused the credential, or the account's quota is exhausted: not retried."""


class UpstreamClosed(EngineError):
    """The engine closed the connection."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ClientEventError(VoicegateError):
    """A client message was refused; the session goes on.

    `code` names the problem, `param` the field at fault, `event_id` the client event's id.
    """

    def __init__(
        self, code: str, message: str, *, param: str | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id
