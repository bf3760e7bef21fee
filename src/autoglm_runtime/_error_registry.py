"""The registry of error codes: what each code means and what an operator should do about it.

Public through :mod:`autoglm_runtime.errors` (``REGISTRY``, ``lookup``, ``ErrorCode``); kept apart from the
exception hierarchy, which checks each class's code against it. ``docs/error-codes.md`` is checked against it by
``tests/test_errors.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = ["INPUT_TRUNCATED", "REGISTRY", "ErrorCode", "Severity", "lookup"]

Severity = Literal["error", "warning", "info"]


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
    "Clients send a shorter value. Operators raise the limit (HeaderTokenGuard max_length, the settings file's "
    "max_header_length) only if such values are legitimate.",
)
_register(
    "E0513",
    "Context window exceeded",
    "error",
    "Input tokens plus requested output tokens exceed the model's context window.",
    "Clients shorten the input or lower max_tokens (the message says which). Operators may enable truncation "
    "(truncate_on_overflow) if cutting input is acceptable.",
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
    "Clients send a smaller body. Operators raise the middleware's max_body_bytes if such bodies are legitimate.",
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
    "or message is not text, max_tokens is not a whole number of at least 1, or truncate_prompt_tokens is 0; or, "
    "where the server requires input (require_input), the request holds none (no prompt, messages or input).",
    "Fix the field named in the error's param, or send the missing input; see the OpenAI request format.",
)


#: Codes that are logged but never raised (they describe something the SDK did on purpose).
INPUT_TRUNCATED = "E0514"
