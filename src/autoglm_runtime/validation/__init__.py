"""The validation part: guards that reject bad input with coded errors before it reaches a model.

The core (guards, tokenizer adapters, live limits, the ASGI middleware and the decorator) imports without
Starlette, grpcio, tokenizers or tiktoken installed; adapters import their library only when built. The gRPC
interceptor lives in :mod:`autoglm_runtime.validation.grpc`, the one module that imports grpc::

    from autoglm_runtime.validation import ContextWindowGuard, HFTokenizer, ValidationMiddleware
    guard = ContextWindowGuard(HFTokenizer.from_file("tokenizer.json"), 8192)
    app = ValidationMiddleware(app, context_guard=guard)
"""

from __future__ import annotations

from autoglm_runtime._exports import publish as _publish
from autoglm_runtime.validation._normalized_words import NormalizedWordCounter
from autoglm_runtime.validation._openai import ExtractedInput, OpenAIExtractor, TextField
from autoglm_runtime.validation._word_bounds import WordBound, WordCounter
from autoglm_runtime.validation.asgi import ValidationMiddleware
from autoglm_runtime.validation.chat_template import ChatTemplate
from autoglm_runtime.validation.configured import EnvValidationMiddleware, GuardSettings
from autoglm_runtime.validation.context_window import BOUNDARY_SLACK, ContextWindowGuard
from autoglm_runtime.validation.decode import DecodeGuard
from autoglm_runtime.validation.decorator import guarded
from autoglm_runtime.validation.headers import HeaderTokenGuard
from autoglm_runtime.validation.http_errors import ErrorStyle, HTTPError, error_body, http_error
from autoglm_runtime.validation.limits import ConfigLimits, ConfigReader, Limits, LimitsSource, StaticLimits
from autoglm_runtime.validation.request import Chat, GuardInput, GuardResult, IncompleteInput
from autoglm_runtime.validation.tokenizers import (
    BatchTokenizer,
    CallableTokenizer,
    HFTokenizer,
    TiktokenTokenizer,
    Tokenizer,
)

__all__ = [
    "BOUNDARY_SLACK",
    "BatchTokenizer",
    "CallableTokenizer",
    "Chat",
    "ChatTemplate",
    "ConfigLimits",
    "ConfigReader",
    "ContextWindowGuard",
    "DecodeGuard",
    "EnvValidationMiddleware",
    "ErrorStyle",
    "ExtractedInput",
    "GuardInput",
    "GuardResult",
    "GuardSettings",
    "HFTokenizer",
    "HTTPError",
    "HeaderTokenGuard",
    "IncompleteInput",
    "Limits",
    "LimitsSource",
    "NormalizedWordCounter",
    "OpenAIExtractor",
    "StaticLimits",
    "TextField",
    "TiktokenTokenizer",
    "Tokenizer",
    "ValidationMiddleware",
    "WordBound",
    "WordCounter",
    "error_body",
    "guarded",
    "http_error",
]

_publish(__name__, globals(), __all__)
