"""Text extraction from OpenAI-style JSON bodies.

Everything the model reads is counted: ``prompt`` (a string, token ids, or a batch: a list of strings or of token id
lists, each prompt judged on its own; read in ``_prompt``), ``suffix``, every message's text (read in
``_message_text``) and the ``tools``/``functions`` definitions. Tools and the suffix are pinned: counted, never
truncated. An embeddings body (``extract(..., embedding=True)``) is read as vLLM's ``/v1/embeddings`` reads it: its
``input`` is the same union as ``prompt`` (each input of a batch judged on its own), or it holds ``messages``, and
nothing is generated. Field names are configurable (dotted for nesting, e.g. ``parameters.max_new_tokens``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from autoglm_runtime.errors import InvalidRequestError, UsageError
from autoglm_runtime.validation._asgi_options import takes_keyword
from autoglm_runtime.validation._conversation import with_options
from autoglm_runtime.validation._extracted import ExtractedInput, dotted, present, read_budget, special_tokens
from autoglm_runtime.validation._kept import kept_fields
from autoglm_runtime.validation._lax import lax_bool
from autoglm_runtime.validation._message_text import (
    OPENAI_ROLES,
    TextField,
    read_messages,
    shape_error,
)
from autoglm_runtime.validation._partial import json_prefix
from autoglm_runtime.validation._prompt import read_prompt
from autoglm_runtime.validation.context_window import Chat, GuardResult

__all__ = ["ExtractedInput", "OpenAIExtractor", "TextField", "read_budget"]


class OpenAIExtractor:
    """Finds the text a model will read in an OpenAI-style request body.

    ``max_prompts``, ``max_messages`` and ``max_parts`` (content parts over all messages) bound the work one body
    can cause; past them the request is rejected with E5010. ``prompt_max_tokens`` is the output budget of a
    completions body sending no budget field (16, as OpenAI and vLLM default ``max_tokens``; ``None`` for none).
    ``roles`` are the message roles taken: by default (``None``) any string, as vLLM takes it ("custom roles", left
    to the chat template, such as GLM's ``observation`` for tool results); a list restricts them, such as OpenAI's
    six (:attr:`OPENAI_ROLES`). A message whose role is missing, not a string, or not in the list is E5010.
    ``input_fields`` hold an embeddings request's input (read with ``extract(body, embedding=True)``).

    >>> OpenAIExtractor().extract({"prompt": "hi", "max_tokens": 5}).segments
    ['hi']
    >>> OpenAIExtractor().extract({"input": ["a", "b"]}, embedding=True).max_output_tokens
    0
    >>> chat = {"messages": [{"role": "observation", "content": "42"}]}
    >>> OpenAIExtractor().extract(chat).segments
    ['42']
    >>> OpenAIExtractor(roles=OpenAIExtractor.OPENAI_ROLES).extract(chat)
    Traceback (most recent call last):
    ...
    autoglm_runtime.errors.InvalidRequestError: E5010: messages[0].role is 'observation', not a role the server ...
    """

    #: The roles OpenAI's chat API takes: ``system``, ``assistant``, ``user``, ``function``, ``tool``, ``developer``.
    OPENAI_ROLES: tuple[str, ...] = OPENAI_ROLES

    def __init__(
        self,
        *,
        prompt_fields: Sequence[str] = ("prompt",),
        messages_fields: Sequence[str] = ("messages",),
        max_tokens_fields: Sequence[str] = ("max_completion_tokens", "max_tokens", "max_new_tokens"),
        suffix_fields: Sequence[str] = ("suffix",),
        tools_fields: Sequence[str] = ("tools", "functions"),
        max_prompts: int = 2048,
        max_messages: int = 4096,
        max_parts: int = 8192,
        prompt_max_tokens: int | None = 16,
        roles: Iterable[str] | None = None,
        input_fields: Sequence[str] = ("input",),
    ) -> None:
        for option, value in (("max_prompts", max_prompts), ("max_messages", max_messages), ("max_parts", max_parts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{option} must be a positive integer, got {value!r}")
        if prompt_max_tokens is not None and (
            isinstance(prompt_max_tokens, bool) or not isinstance(prompt_max_tokens, int) or prompt_max_tokens < 0
        ):
            raise UsageError(f"prompt_max_tokens must be a whole number >= 0 or None, got {prompt_max_tokens!r}")
        taken = None if roles is None or isinstance(roles, str) else tuple(dict.fromkeys(roles))
        if roles is not None and (not taken or not all(isinstance(role, str) for role in taken)):
            raise UsageError(f"roles must be a list of role names (strings), or None for any, got {roles!r:.80}")
        #: The message roles taken (``None``: any string).
        self.roles = taken
        #: The output budget of a prompt (completions) body that sends no budget field at all: OpenAI's and vLLM's
        #: ``max_tokens`` default of 16 (a chat has none: it may run to the window).
        self.prompt_max_tokens = prompt_max_tokens
        self.prompt_fields = tuple(prompt_fields)
        self.input_fields = tuple(input_fields)
        self.messages_fields = tuple(messages_fields)
        self.max_tokens_fields = tuple(max_tokens_fields)
        self.suffix_fields = tuple(suffix_fields)
        self.tools_fields = tuple(tools_fields)
        self.max_prompts = max_prompts
        self.max_messages = max_messages
        self.max_parts = max_parts

    def extract(  # noqa: PLR0912  (one flat branch per request field reads as the API does)
        self, body: Any, *, max_text_chars: int | None = None, embedding: bool = False
    ) -> ExtractedInput:
        """The input of ``body``; raises :class:`InvalidRequestError` (E5010) for fields of the wrong shape.

        With ``embedding``, ``body`` is an embeddings request, read as vLLM's ``/v1/embeddings`` reads it: its
        ``input_fields`` take what a completion's ``prompt`` takes (a list of strings or of token id lists is a
        batch: each input is judged on its own), or it holds ``messages`` (rendered without the generation prompt
        unless the body asks for it); suffix, tools and output budget fields are not read, and nothing is generated
        (the input may fill the window: ``max_output_tokens`` and ``min_output_tokens`` are 0).

        With ``max_text_chars`` (a guard's :meth:`~ContextWindowGuard.text_limit`: no longer text can fit), tool
        definitions whose JSON text is longer are held as only its first ``max_text_chars + 1`` characters and
        listed in ``partial``: enough to reject them, at a fraction of the cost of serializing them whole.
        """
        if not isinstance(body, dict):
            raise InvalidRequestError(
                f"the request body must be a JSON object, got {type(body).__name__}: send a JSON object"
            )
        fields: list[TextField] = []
        pinned: set[int] = set()
        partial: set[int] = set()
        param: str | None = None
        batch = False
        chat: Chat | None = None
        for name in self.input_fields if embedding else self.prompt_fields:
            value = dotted(body, name)
            if value is not None:
                param = param or name
                prompts, is_batch = read_prompt(name, value, self.max_prompts)
                fields.extend(prompts)
                batch = batch or is_batch
        for name in self.messages_fields:
            value = dotted(body, name)
            if value is not None:
                param = param or name
                chat = read_messages(
                    name,
                    value,
                    fields,
                    pinned,
                    max_messages=self.max_messages,
                    max_parts=self.max_parts,
                    roles=self.roles,
                )
        for name in () if embedding else self.suffix_fields:
            value = dotted(body, name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise shape_error(name, "a string", value)
            pinned.add(len(fields))
            fields.append(TextField(tuple(name.split(".")), value))
        for name in () if embedding else self.tools_fields:
            value = dotted(body, name)
            if value is None:
                continue
            if not isinstance(value, list):
                raise shape_error(name, "a list of definitions", value)
            pinned.add(len(fields))
            text = None if max_text_chars is None else json_prefix(value, max_text_chars)
            if text is None:
                text = json.dumps(value, ensure_ascii=False)
            else:
                partial.add(len(fields))
            fields.append(TextField(tuple(name.split(".")), text))
            if chat is not None:
                # The template gets the first tools field alone, as vLLM renders request.tools and has no
                # functions field (OpenAI's deprecated one is counted without a template, never rendered).
                tools = tuple(value) if name == self.tools_fields[0] else chat.tools
                chat = Chat(chat.messages, (*chat.turns, -1), (*chat.places, ()), tools)
        if chat is not None and len(chat.turns) < len(fields):
            # Pieces outside the messages (a suffix) belong to no turn.
            missing = len(fields) - len(chat.turns)
            chat = Chat(chat.messages, (*chat.turns, *[-1] * missing), (*chat.places, *[()] * missing), chat.tools)
        if chat is not None:
            chat = with_options(chat, body, generation_prompt=not embedding)
        output: int | None = 0  # (an embedding: nothing is generated, whatever budget fields the body sends)
        output_param, defaulted = "max_tokens", False
        if not embedding:
            output, output_param, defaulted = self._max_tokens(body, completion=chat is None and bool(fields))
        return ExtractedInput(
            tuple(fields),
            output,
            param,
            output_param,
            frozenset(pinned),
            batch,
            chat,
            frozenset(partial),
            *kept_fields(body),
            output_defaulted=defaulted,
            # A chat's add_special_tokens is read into its Chat (with_options), with vLLM's chat default of false.
            add_special_tokens=chat is not None or special_tokens(body),
            min_output_tokens=0 if embedding else 1,
            embedding=embedding,
        )

    def missing_input(self, *, embedding: bool = False, chat: bool = False) -> InvalidRequestError:
        """E5010 for a body holding none of the fields the model reads (the middleware's ``require_input``).

        ``param`` names the field the route takes, as OpenAI names a missing one: an embedding's ``input``, a
        ``chat`` route's ``messages``, else a completion's ``prompt`` (the first of each list of fields).
        """
        names = [*(self.input_fields if embedding else self.prompt_fields), *self.messages_fields]
        taken = self.input_fields if embedding else self.messages_fields if chat else self.prompt_fields
        return InvalidRequestError(
            f"the request gives the model no input: it sends none of {', '.join(names)} (or sends them null): send "
            "the model's input; this server refuses requests without it (require_input)",
            param=taken[0] if taken else None,
        )

    def require_input(self, extracted: ExtractedInput, *, embedding: bool = False, chat: bool = False) -> None:
        """E5010 (:meth:`missing_input`) unless ``extracted`` gives the model some input: a prompt (an embedding's
        ``input``) or at least one message. An empty ``messages`` list alone is no input either, though vLLM
        passes it (to a template that then renders no conversation at all)."""
        if not extracted.has_input:
            # An override written before ``chat`` existed (``missing_input(self, *, embedding=False)``) keeps working.
            takes_chat = takes_keyword(self.missing_input, "chat")
            raise (
                self.missing_input(embedding=embedding, chat=chat)
                if takes_chat
                else self.missing_input(embedding=embedding)
            )
        if extracted.chat is not None and not extracted.chat.messages and extracted.param in self.messages_fields:
            raise InvalidRequestError(
                f"the request gives the model no input: {extracted.param} is an empty list: send at least one "
                "message; this server refuses requests without input (require_input)",
                param=extracted.param,
            )

    def _max_tokens(self, body: dict[str, Any], *, completion: bool) -> tuple[int | None, str, bool]:
        """The output budget the backend uses, its field, and whether it is a default.

        The first field of ``max_tokens_fields`` the body sends wins, as vLLM's chat server reads
        ``max_completion_tokens`` before ``max_tokens``; a ``completion`` body (a prompt) skips
        ``max_completion_tokens``, which only the chat API has (vLLM ignores it there). Values are read as vLLM's
        pydantic models read them (``"16"`` and ``16.0`` are 16). A budget of 0 is E5010, as vLLM refuses it, except
        for a completion with ``echo`` (vLLM then returns the prompt and generates one token). A ``completion``
        sending no budget asks for ``prompt_max_tokens``, as vLLM reads it.
        """
        fields = [name for name in self.max_tokens_fields if not (completion and name == "max_completion_tokens")]
        for name in fields:
            value = dotted(body, name)
            if value is None:
                continue
            return read_budget(name, value, echo=completion and lax_bool(body.get("echo")) is True), name, False
        name = fields[0] if fields else "max_tokens"
        if (
            completion
            and self.prompt_max_tokens is not None
            and not any(present(body, name) for name in fields)  # (a null counts as sent)
        ):
            return self.prompt_max_tokens, name, True
        return None, name, False

    def apply(self, body: Any, extracted: ExtractedInput, result: GuardResult) -> Any:
        """``body`` (changed in place) with each input piece replaced by the guard's possibly truncated one."""
        for index, (field, segment) in enumerate(zip(extracted.fields, result.segments, strict=True)):
            if segment == field.value or index in extracted.pinned:
                continue
            target: Any = body
            for key in field.path[:-1]:
                target = target[key]
            target[field.path[-1]] = list(segment) if isinstance(segment, tuple) else segment
        if result.dropped_messages and extracted.chat is not None:
            for name in self.messages_fields:
                messages = dotted(body, name)
                if isinstance(messages, list):
                    for number in sorted(result.dropped_messages, reverse=True):
                        del messages[number]
                    break
        return body
