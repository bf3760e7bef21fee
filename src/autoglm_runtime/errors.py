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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from autoglm_runtime import _exit_codes

Severity = Literal["error", "warning", "info"]

# The commands' exit codes, defined apart so that a report gives its exit code without this registry.
EXIT_OK = _exit_codes.EXIT_OK
EXIT_FINDINGS = _exit_codes.EXIT_FINDINGS
EXIT_USAGE = _exit_codes.EXIT_USAGE
EXIT_PARTIAL = _exit_codes.EXIT_PARTIAL
EXIT_OUTPUT = _exit_codes.EXIT_OUTPUT


@dataclass(frozen=True)
class ErrorCode:
    """One entry of the registry: what a code means and what an operator should do about it."""

    code: str
    title: str
    severity: Severity
    meaning: str
    action: str


_REGISTRY: dict[str, ErrorCode] = {}
REGISTRY: Mapping[str, ErrorCode] = MappingProxyType(_REGISTRY)


def _register(code: str, title: str, severity: Severity, meaning: str, action: str) -> ErrorCode:
    if code in _REGISTRY:
        raise RuntimeError(f"error code {code} is registered twice")
    entry = ErrorCode(code, title, severity, meaning, action)
    _REGISTRY[code] = entry
    return entry


def lookup(code: str) -> ErrorCode:
    """Return the registry entry for ``code``; raises ``KeyError`` for an unknown code."""
    return _REGISTRY[code]


_register(
    "E0001",
    "Invalid usage",
    "error",
    "A command, argument or option was given a value it cannot accept.",
    "Read the message and the command's --help, then call again with corrected arguments.",
)
_register(
    "E0002",
    "Test ZooKeeper unavailable",
    "error",
    "The test harness (autoglm_runtime.testing) could not start, stop or control a ZooKeeper server: no "
    "backend is available (Docker engine, local installation, AUTOGLM_ZK_HOSTS) or the server failed to start.",
    "Install ZooKeeper (apt-get install zookeeper, or an Apache tarball at ZOOKEEPER_HOME), start a Docker "
    "engine, or name a server with AUTOGLM_ZK_HOSTS; read the server log lines quoted in the message.",
)
_register(
    "E0003",
    "Output cannot be written",
    "error",
    "A command's output could not be written to standard output: the device is full, standard output is closed "
    "or was opened for reading only, or another write error. (A reader that went away, as `head -1` at the end of "
    "a pipeline does, ends the command with the same exit status 120 and no message.)",
    "Free space on the device, or redirect standard output to a file or program that can take it; the message names "
    "what was not written and why.",
)
_register(
    "E0004",
    "Metrics not exported",
    "warning",
    "In prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR), an exporter could not update the "
    "metrics files: the live gauges of a process that ended could not be removed (permission denied, an I/O "
    "error), so its last values stay in the exposition, or copying health() into the files failed. The exporter "
    "keeps running and tries again at its next interval.",
    "Make PROMETHEUS_MULTIPROC_DIR writable by the server's user on a healthy file system, or remove the files "
    "the message names; read the logged exception for a failed copy.",
)
_register(
    "E0101",
    "Dependency conflict or model load failure",
    "error",
    "A model's requirements cannot be met: two models need incompatible versions of one distribution, the "
    "environment breaks a requirement, an import name is shadowed, or building the model's environment failed.",
    "Run `autoglm-runtime check-deps` on the model directories; load conflicting models isolated, or fix the "
    "pinned versions the finding names.",
)
_register(
    "E0102",
    "Invalid model manifest",
    "error",
    "A model.toml or requirements file could not be parsed, or a field has a value of the wrong form.",
    "Fix the file and field named in the message.",
)
_register(
    "E0103",
    "Model worker failed",
    "error",
    "An isolated model's worker process exited or could not start (crash, signal, sys.exit), or kept "
    "crashing and was given up on.",
    "Read the worker's stderr in the logs (tagged with the model name); fix the model, then load it again.",
)
_register(
    "E0104",
    "Isolation backend unsupported",
    "error",
    "The requested backend cannot run this model here, e.g. an extension module refuses to load in a "
    "subinterpreter or the interpreter has no subinterpreter support.",
    "Use backend='process' (or 'auto', which falls back to it).",
)
_register(
    "E0105",
    "Model raised an exception",
    "error",
    "A called method of an isolated model raised; the worker is still healthy and serves further calls. The "
    "error carries the model's exception type and traceback as text.",
    "Read the remote traceback in the message or logs and fix the model or the arguments passed to it.",
)
_register(
    "E0106",
    "Model overloaded",
    "error",
    "A call to an isolated model was refused at once: every replica already runs max_inflight calls and the "
    "bounded queue in front of them is full. Nothing was sent to the model.",
    "Retry after the time the error gives (HTTP Retry-After); to serve more at once raise replicas, max_inflight "
    "or max_queue in the model's [serving] table.",
)
_register(
    "E0305",
    "Model call timed out",
    "error",
    "A call to an isolated model did not answer within its timeout. If the model itself hung, its worker was "
    "killed and will restart; if the call timed out waiting for an earlier call or a restart, the worker was left "
    "running.",
    "Raise the timeout if the model is merely slow, otherwise find why it hangs.",
)
_register(
    "E0409",
    "Config hot-update failure",
    "error",
    "The local configuration cache may not match ZooKeeper: the sync was lost or is stale, drift was found and "
    "corrected, an update was rejected, a snapshot was refused, or access was denied.",
    "Check connectivity and credentials for the hosts and root named; look at health() for staleness; "
    "fix or revert a rejected value in ZooKeeper.",
)
_register(
    "E0512",
    "Token or header too long",
    "error",
    "A header value (such as an Authorization token) exceeds its length limit and was rejected before parsing.",
    "Send a shorter value; raise the limit only if such tokens are legitimate.",
)
_register(
    "E0513",
    "Context window exceeded",
    "error",
    "Input tokens plus requested output tokens exceed the model's context window.",
    "Shorten the prompt or lower max_tokens; or enable truncation explicitly if cutting input is acceptable.",
)
_register(
    "E0514",
    "Input truncated to fit",
    "warning",
    "Input was longer than the context window allows and was truncated because truncation is enabled; the "
    "response says how many tokens were removed.",
    "Nothing if truncation is intended; otherwise disable truncate_on_overflow to get E0513 instead.",
)
_register(
    "E0515",
    "Request body too large",
    "error",
    "The request body exceeds the byte limit and was rejected before it was read in full.",
    "Send a smaller body, or raise the body limit of the validation middleware.",
)
_register(
    "E0516",
    "Guard overloaded",
    "error",
    "Every thread the validation middleware judges large request bodies on was busy, so the request was refused "
    "at once (HTTP 503 with Retry-After) instead of waiting in an unbounded queue.",
    "Retry after the number of seconds in Retry-After; if it happens often, raise max_concurrent_checks or add "
    "replicas.",
)
_register(
    "E0517",
    "Request body timeout",
    "error",
    "The client did not send the whole request body within body_timeout seconds (a slow or stalled upload, or a "
    "slow-loris attack), so the connection was answered with HTTP 408 and closed.",
    "Send the body promptly; raise body_timeout only if legitimate clients upload this slowly.",
)
_register(
    "E5009",
    "Input cannot be decoded",
    "error",
    "The input is not valid UTF-8, is malformed JSON, or contains lone surrogates that tokenizers mangle.",
    "Send well-formed UTF-8 JSON text without unpaired surrogate escapes.",
)


_register(
    "E5010",
    "Invalid request field",
    "error",
    "A request field the guards read has the wrong shape, type or value: the body is not a JSON object, a prompt "
    "or message is not text, max_tokens is not a whole number of at least 1, or truncate_prompt_tokens is 0.",
    "Fix the field named in the error's param; see the OpenAI request format.",
)


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

    ``retry_after`` (s) is what an HTTP adapter sends as ``Retry-After``.
    """

    code = "E0106"
    http_status = 503
    grpc_status = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
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


#: Codes that are logged but never raised (they describe something the SDK did on purpose).
INPUT_TRUNCATED = "E0514"


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
