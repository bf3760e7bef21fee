"""Error codes and the exception hierarchy shared by every part of autoglm-runtime.

Every failure the SDK reports carries a stable code (``E0409``, ``E0512`` ...). The code, its meaning,
severity and recommended action live in one registry (:data:`REGISTRY`); ``docs/error-codes.md`` is
checked against it by a test. Each exception class names its code and how adapters should map it:
HTTP status, gRPC status (by name, so the core never imports grpc) and CLI exit code. Adapters read
those attributes instead of branching on types::

    try:
        client.start()
    except AutoGLMRuntimeError as exc:
        print(exc.code, exc.http_status, exc.grpc_status, exc.exit_code)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from autoglm_runtime import _exit_codes
from autoglm_runtime._error_registry import _REGISTRY, INPUT_TRUNCATED, REGISTRY, ErrorCode, Severity, lookup

# Public here, defined with the registry.
ErrorCode.__module__ = __name__
lookup.__module__ = __name__

__all__ = [
    "EXIT_FINDINGS",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "INPUT_TRUNCATED",
    "REGISTRY",
    "AutoGLMRuntimeError",
    "BackendUnsupportedError",
    "BodyTimeoutError",
    "ConfigAccessError",
    "ConfigError",
    "ConfigTimeoutError",
    "ConfigTypeError",
    "ConfigUnavailableError",
    "ConfigValueError",
    "ContextWindowExceededError",
    "DependencyConflictError",
    "EnvironmentBuildError",
    "ErrorCode",
    "GuardOverloadedError",
    "HeaderTooLongError",
    "InputDecodeError",
    "InvalidRequestError",
    "IsolationError",
    "ManifestError",
    "ModelCallError",
    "ModelLoadError",
    "ModelOverloadedError",
    "ModelTimeoutError",
    "OutputError",
    "ReadOnlyValueError",
    "RequestTooLargeError",
    "Severity",
    "SnapshotError",
    "UsageError",
    "ValidationError",
    "WorkerError",
    "error_classes",
    "lookup",
]

# The commands' exit codes, defined apart so that a report gives its exit code without this registry.
EXIT_OK = _exit_codes.EXIT_OK
EXIT_FINDINGS = _exit_codes.EXIT_FINDINGS
EXIT_USAGE = _exit_codes.EXIT_USAGE
EXIT_PARTIAL = _exit_codes.EXIT_PARTIAL
EXIT_OUTPUT = _exit_codes.EXIT_OUTPUT


class AutoGLMRuntimeError(Exception):
    """Base of every error the SDK raises. ``code`` is registered; the message is a full sentence."""

    code: ClassVar[str] = "E0001"
    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[str] = "INTERNAL"
    exit_code: ClassVar[int] = EXIT_FINDINGS
    #: The ``type`` and ``code`` an OpenAI-compatible server would answer with (``code`` ``None``: none fits).
    openai_type: ClassVar[str] = "server_error"
    openai_code: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.code not in _REGISTRY:
            raise TypeError(f"{cls.__name__}.code {cls.code!r} is not in the error registry")

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def info(self) -> ErrorCode:
        """The registry entry for this error's code."""
        return _REGISTRY[self.code]

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class UsageError(AutoGLMRuntimeError, ValueError):
    """A caller passed arguments the SDK or the CLI cannot accept."""

    code = "E0001"
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"
    exit_code = EXIT_USAGE


class OutputError(AutoGLMRuntimeError, OSError):
    """A command's output could not be written to standard output (the CLI exits with status 120)."""

    code = "E0003"
    exit_code = EXIT_OUTPUT


# --- config -------------------------------------------------------------------------------------------


class ConfigError(AutoGLMRuntimeError):
    """Sub-base for the config part: the local cache may not match ZooKeeper (E0409)."""

    code = "E0409"
    http_status = 503
    grpc_status = "UNAVAILABLE"
    exit_code = EXIT_FINDINGS


class ConfigUnavailableError(ConfigError):
    """ZooKeeper could not be reached and no usable snapshot exists."""


class ConfigAccessError(ConfigError, PermissionError):
    """ZooKeeper refused access to a path (missing or wrong credentials, ACL).

    ``paths`` are the znodes ZooKeeper refused to read, when ``ConfigClient.start()`` raises it: the keys it
    could read stay readable (``snapshot()``, ``get()``), so a caller may use them and report these.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, paths: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.paths = tuple(paths)


class SnapshotError(ConfigError):
    """A snapshot file is truncated, altered, or belongs to other hosts or another root."""


class ConfigValueError(ConfigError, ValueError):
    """A value could not be decoded by the codec or was rejected by the validator."""


class ConfigTypeError(ConfigError, TypeError):
    """A typed read (``get_int`` ...) found a value of another type, or no value."""

    exit_code = EXIT_USAGE


class ConfigTimeoutError(ConfigError, TimeoutError):
    """``wait_for`` gave up: the key did not reach the awaited value in time."""


class ReadOnlyValueError(UsageError, TypeError):
    """A config value was changed in place: every reader and listener shares it; copy it first."""


# --- isolation ----------------------------------------------------------------------------------------


class IsolationError(AutoGLMRuntimeError):
    """Sub-base for the isolation part: a model cannot be loaded or run (E0101 family)."""

    code = "E0101"
    http_status = 503
    grpc_status = "FAILED_PRECONDITION"
    exit_code = EXIT_FINDINGS


class DependencyConflictError(IsolationError):
    """Requirements that cannot hold together, or an environment that breaks them."""


class EnvironmentBuildError(IsolationError):
    """Building a model's virtual environment failed; nothing of it was left behind."""


class ManifestError(IsolationError, ValueError):
    """A model.toml or requirements file is malformed."""

    code = "E0102"
    exit_code = EXIT_USAGE


class WorkerError(IsolationError):
    """A model worker died, failed its handshake, or crash-looped."""

    code = "E0103"
    grpc_status = "UNAVAILABLE"


class BackendUnsupportedError(IsolationError):
    """The chosen isolation backend cannot run this model (e.g. extension refuses subinterpreters)."""

    code = "E0104"


class ModelLoadError(IsolationError):
    """A model's entrypoint failed to import or to build the model object inside its worker."""


class ModelCallError(IsolationError):
    """A model raised an exception from a called method; the worker itself is still healthy.

    ``remote_type`` and ``remote_traceback`` carry what the model raised, as text (the host never
    unpickles objects from a model's environment).
    """

    code = "E0105"
    http_status = 500
    grpc_status = "INTERNAL"

    def __init__(self, message: str, *, remote_type: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


class ModelOverloadedError(IsolationError):
    """Every replica of a model is busy and its queue is full; the call was refused without waiting.

    ``retry_after`` (whole seconds) is when to come back, what an HTTP adapter sends as ``Retry-After``: a pool
    reckons it from the calls queued ahead, its replicas, how long recent calls took and how long the calls running
    still have to run, within the loader's ``retry_after`` and ``max_retry_after`` and never below 1 (a
    ``Retry-After: 0`` would tell clients to retry at once).

    >>> try:                                                                           # doctest: +SKIP
    ...     model.call("predict", text)
    ... except ModelOverloadedError as exc:
    ...     response = Response(status_code=503, headers={"Retry-After": str(exc.retry_after)})
    """

    code = "E0106"
    http_status = 503
    grpc_status = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelTimeoutError(IsolationError, TimeoutError):
    """A model call did not finish within its timeout; its worker was restarted."""

    code = "E0305"
    http_status = 504
    grpc_status = "DEADLINE_EXCEEDED"


# --- validation ---------------------------------------------------------------------------------------


class ValidationError(AutoGLMRuntimeError, ValueError):
    """Sub-base for the validation part: a request was rejected before it reached the model."""

    code = "E5009"
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"
    exit_code = EXIT_FINDINGS
    openai_type = "invalid_request_error"
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class HeaderTooLongError(ValidationError):
    """A header value exceeds its length limit (E0512)."""

    code = "E0512"
    http_status = 431


class ContextWindowExceededError(ValidationError):
    """Input tokens plus requested output tokens exceed the context window (E0513)."""

    code = "E0513"
    openai_code = "context_length_exceeded"


class RequestTooLargeError(ValidationError):
    """The request body exceeds the byte limit (E0515)."""

    code = "E0515"
    http_status = 413


class InputDecodeError(ValidationError):
    """Input is not valid UTF-8 / JSON or carries lone surrogates (E5009)."""

    code = "E5009"


class InvalidRequestError(ValidationError):
    """A request field has the wrong shape or type, e.g. ``max_tokens: "9"`` or ``messages: "hi"`` (E5010)."""

    code = "E5010"


class GuardOverloadedError(ValidationError):
    """Every guard thread was busy; the request is refused at once with 503 and Retry-After (E0516)."""

    code = "E0516"
    http_status = 503
    grpc_status = "UNAVAILABLE"
    openai_type = "server_error"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BodyTimeoutError(ValidationError, TimeoutError):
    """The request body did not arrive within the body timeout (E0517, HTTP 408)."""

    code = "E0517"
    http_status = 408
    grpc_status = "DEADLINE_EXCEEDED"


def error_classes() -> list[type[AutoGLMRuntimeError]]:
    """Every exception class of the hierarchy, base first (used by tests and docs)."""
    seen: list[type[AutoGLMRuntimeError]] = [AutoGLMRuntimeError]
    stack = list(AutoGLMRuntimeError.__subclasses__())
    while stack:
        cls = stack.pop(0)
        if cls not in seen:
            seen.append(cls)
            stack.extend(cls.__subclasses__())
    return seen
