"""What an extractor finds in a request body (:class:`ExtractedInput`), and the field readers it shares with the
decorator: the output budget (:func:`read_budget`), ``add_special_tokens`` and dotted field names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autoglm_runtime.errors import InvalidRequestError
from autoglm_runtime.validation._conversation import not_boolean
from autoglm_runtime.validation._lax import lax_bool, lax_int
from autoglm_runtime.validation._message_text import TextField
from autoglm_runtime.validation.request import Chat, GuardInput, Segment

__all__ = ["ExtractedInput", "dotted", "present", "read_budget", "special_tokens"]


@dataclass(frozen=True)
class ExtractedInput:
    """The input pieces of one request, the output budget it asks for, and the fields to blame on errors.

    ``output_param`` is the field the budget came from (the one the backend uses when several are sent; see
    :meth:`OpenAIExtractor._max_tokens`); ``pinned`` holds the
    indexes of fields never truncated; ``batch`` marks a list of prompts; ``chat`` describes the messages;
    ``partial`` holds the indexes of fields holding only the start of their text (see ``max_text_chars``);
    ``output_defaulted`` says the budget is the extractor's ``prompt_max_tokens`` (the request sent none).
    ``min_output_tokens`` is the room the input must leave whatever the budget: vLLM refuses a prompt that fills
    the window, as the model writes at least one token. ``add_special_tokens`` is a completion's field of that name
    (vLLM adds the tokenizer's BOS to a text prompt unless it is false). ``embedding`` marks an embeddings request:
    nothing is generated (``max_output_tokens`` and ``min_output_tokens`` are 0).
    """

    fields: tuple[TextField, ...]
    max_output_tokens: int | None
    param: str | None
    output_param: str = "max_tokens"
    pinned: frozenset[int] = frozenset()
    batch: bool = False
    chat: Chat | None = None
    partial: frozenset[int] = frozenset()
    keep_tokens: int | None = None
    keep_side: str = "left"
    output_defaulted: bool = False
    min_output_tokens: int = 1
    add_special_tokens: bool = True
    embedding: bool = False

    @property
    def has_input(self) -> bool:
        """Whether the body holds input for the model at all (a prompt, an embedding's input, or messages)."""
        return bool(self.fields) or self.chat is not None

    @property
    def segments(self) -> list[Segment]:
        """The pieces in body order, as a guard counts them."""
        return [field.value for field in self.fields]

    def guard_input(self) -> GuardInput:
        """What a :class:`ContextWindowGuard` judges for this request."""
        return GuardInput(
            self.segments,
            self.max_output_tokens,
            self.param,
            output_param=self.output_param,
            pinned=self.pinned,
            batch=self.batch,
            chat=self.chat,
            partial=self.partial,
            keep_tokens=self.keep_tokens,
            keep_side=self.keep_side,
            output_defaulted=self.output_defaulted,
            min_output_tokens=self.min_output_tokens,
            add_special_tokens=self.add_special_tokens,
            embedding=self.embedding,
        )


def special_tokens(body: dict[str, Any]) -> bool:
    """A completion's ``add_special_tokens``: vLLM adds the tokenizer's BOS to a text prompt unless it is false."""
    if "add_special_tokens" not in body:
        return True
    flag = lax_bool(body["add_special_tokens"])
    if flag is None:
        raise not_boolean("add_special_tokens", body["add_special_tokens"])
    return flag


def dotted(body: dict[str, Any], name: str) -> Any:
    value: Any = body
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def present(body: dict[str, Any], name: str) -> bool:
    """Whether the dotted field ``name`` is in ``body`` at all (a null counts as sent)."""
    parent, _, last = name.rpartition(".")
    holder = dotted(body, parent) if parent else body
    return isinstance(holder, dict) and last in holder


def read_budget(name: str, value: Any, *, echo: bool = False) -> int:
    """The output budget ``value`` sent as ``name``, read as vLLM's pydantic models read it (``"16"`` and ``16.0``
    are 16); E5010 for one that is not a whole number of at least 1, or for 0 unless ``echo`` (a completion that
    echoes its prompt: vLLM returns the prompt and generates one token)."""
    budget = lax_int(value)
    if budget is None or budget < 0:
        raise InvalidRequestError(
            f'{name} must be a whole number of at least 1 (vLLM also reads "16" and 16.0 as 16), got '
            f"{value!r:.40}: fix the request body",
            param=name,
        )
    if budget == 0 and not echo:
        raise InvalidRequestError(
            f"{name} must be at least 1, got 0: the model writes at least one token (vLLM refuses 0 but for a "
            "completion with echo); send 1 or more, or leave it out",
            param=name,
        )
    return budget
