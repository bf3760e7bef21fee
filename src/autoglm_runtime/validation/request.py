"""What a guard judges and what it hands back: one request's input (:class:`GuardInput`), a chat's messages
(:class:`Chat`) and the verdict (:class:`GuardResult`), which the ASGI middleware passes on to the app as
``scope["state"]["guard_result"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoglm_runtime.errors import InvalidRequestError

__all__ = ["Chat", "GuardInput", "GuardResult", "IncompleteInput", "Segment"]

#: Input pieces a guard counts: text, or token ids the client sent already tokenized.
Segment = str | tuple[int, ...]


@dataclass(frozen=True)
class Chat:
    """The messages (and tools) of a chat request, for counting with a chat template and for dropping turns.

    ``turns[i]`` is the index of the message segment ``i`` belongs to (``-1`` for pieces outside any message, such
    as tool definitions); ``places[i]`` is where segment ``i`` sits inside its message (``("content",)``).
    ``options`` are the template variables the request sets (``add_generation_prompt``, ``documents``, its
    ``chat_template_kwargs``); ``add_special_tokens`` asks for the tokenizer's own special tokens (a BOS) on top
    of the rendered prompt, as vLLM's request field of that name does.
    """

    messages: tuple[Mapping[str, Any], ...]
    turns: tuple[int, ...]
    places: tuple[tuple[str | int, ...], ...] = ()
    tools: tuple[Any, ...] | None = None
    options: Mapping[str, Any] | None = None
    add_special_tokens: bool = False


@dataclass(frozen=True)
class GuardInput:
    """What an adapter's extractor hands a guard.

    ``segments`` is the input (a prompt, or the request's pieces), ``max_output_tokens`` the output budget asked
    for, ``param`` the input field to blame and ``output_param`` the field the budget came from. Segments whose
    index is in ``pinned`` are counted but never truncated. With ``batch`` every segment not pinned is a prompt of
    its own, judged alone together with the pinned ones. ``fixed_tokens`` are counted on top (formatting the
    model adds around the pieces). Segments whose index is in ``partial`` hold only the start of a longer text; a
    guard rejects such a request by length alone or raises :class:`IncompleteInput` (judge the whole text then).
    ``keep_tokens`` says the backend itself keeps only that many prompt tokens (vLLM's ``truncate_prompt_tokens``;
    ``-1`` for all the window leaves), from the ``keep_side`` end's opposite: ``"left"`` drops the start.
    ``output_defaulted`` says the request sent no budget and ``max_output_tokens`` is the backend's default for it
    (vLLM's 16 for a completion): an overflow then does not blame a field the client never sent.
    ``min_output_tokens`` is the least room the input must leave, whatever the budget: 1 by default, as a generating
    backend writes at least one token (vLLM refuses a prompt that fills the window even when the request sends no
    budget, or a budget of 0); 0 only for a backend that generates nothing. A value that is not a whole number of at
    least 0 is E5010 when the request is judged. ``add_special_tokens`` says whether the backend adds the
    tokenizer's special tokens (a BOS) to each text prompt, as vLLM's completions field of that name (true by
    default); a chat's comes from ``chat`` instead. ``embedding`` marks a request that generates nothing (vLLM's
    ``/v1/embeddings``, or any pooling request): its input may fill the window, whatever ``max_output_tokens`` and
    ``min_output_tokens`` say (both are read as 0), and an overflow speaks of the input alone, naming ``param``.

    >>> GuardInput("Tell me a story", max_output_tokens=200, param="prompt").max_output_tokens
    200
    """

    segments: str | Sequence[int] | Sequence[str | Sequence[int]]
    max_output_tokens: int | None = None
    param: str | None = None
    output_param: str = "max_tokens"
    pinned: frozenset[int] = frozenset()
    batch: bool = False
    fixed_tokens: int = 0
    chat: Chat | None = None
    partial: frozenset[int] = frozenset()
    keep_tokens: int | None = None
    keep_side: str = "left"
    output_defaulted: bool = False
    min_output_tokens: int = 1
    add_special_tokens: bool = True
    embedding: bool = False


class IncompleteInput(Exception):
    """A guard cannot judge a request from the start of its ``partial`` segments: judge it with the whole text."""


@dataclass(frozen=True)
class GuardResult:
    """What the guard let through.

    ``segments`` are the input pieces as they should reach the model (truncated if ``removed_tokens`` is not
    zero; a dropped message's pieces are empty and its index is in ``dropped_messages``). ``token_ids`` holds one
    tuple per segment, or, for a chat counted with a chat template, one tuple: the rendered prompt's ids, whose text
    is ``prompt``. ``input_tokens`` is what the model will read. For a batch, ``batch`` holds one result per prompt,
    the totals are their sums, and ``token_ids`` holds each prompt's ids.
    """

    input_tokens: int
    output_tokens: int
    context_window: int
    removed_tokens: int
    segments: tuple[Segment, ...]
    token_ids: tuple[tuple[int, ...], ...]
    dropped_messages: tuple[int, ...] = ()
    prompt: str | None = None
    batch: tuple[GuardResult, ...] = field(default=())

    @property
    def truncated(self) -> bool:
        """Whether input was removed to make the request fit."""
        return self.removed_tokens > 0

    @property
    def text(self) -> str:
        """The text segments joined (for a single prompt: the prompt as it should reach the model)."""
        return "".join(segment for segment in self.segments if isinstance(segment, str))


def _is_ids(item: object) -> bool:
    return isinstance(item, Sequence) and not isinstance(item, str | bytes)


def _all_ints(items: Sequence[object]) -> bool:
    # One pass in C over the element types; bool is a distinct type, so True/False are not token ids.
    return set(map(type, items)) == {int}


def segments_of(text: object) -> list[Segment]:
    """``GuardInput.segments`` as a list of segments (token ids as tuples); E5010 for any other shape."""
    if isinstance(text, str):
        return [text]
    if not isinstance(text, Sequence) or isinstance(text, bytes):
        raise InvalidRequestError(
            f"the input to judge must be a string, token ids or a list of those, got {type(text).__name__}: "
            "fix the extractor or the request"
        )
    if isinstance(text, tuple) and _all_ints(text):
        return [text]
    items = list(text)
    if items and _all_ints(items):
        return [tuple(items)]
    segments: list[Segment] = []
    for item in items:
        if isinstance(item, str):
            segments.append(item)
        elif _is_ids(item) and (not item or _all_ints(item)):
            segments.append(item if isinstance(item, tuple) else tuple(item))
        else:
            raise InvalidRequestError(
                f"input pieces must be strings or lists of token ids, got {type(item).__name__}: "
                "fix the extractor or the request"
            )
    return segments
