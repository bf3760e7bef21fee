"""ChatTemplate: a model's own Jinja chat template, rendered as transformers and vLLM render it, in a sandbox.

A chat request reaches the model as one prompt written by the model's chat template (from ``tokenizer_config.json``
or ``chat_template.jinja``), with the template's own role markers and special tokens. Counting message text alone
misses those tokens; counting the rendered prompt does not::

    template = ChatTemplate.from_file("/models/llm/tokenizer_config.json")
    guard = ContextWindowGuard(HFTokenizer.from_file("/models/llm/tokenizer.json"), 8192, chat_template=template)

Templates are untrusted code: they run in jinja2's ``ImmutableSandboxedEnvironment`` with the environment that
``transformers``' ``apply_chat_template`` sets up (``trim_blocks``, ``lstrip_blocks``, loop controls, a ``tojson``
that does not escape HTML, ``raise_exception``, ``strftime_now``) and the tokenizer's special tokens
(``bos_token``, ``eos_token`` ...) as variables. The messages reach it as vLLM's OpenAI server hands them over
(``_conversation``), and the generation prompt is added, as vLLM does for chat completions unless the request says
otherwise. jinja2 is an optional dependency (the ``chat`` extra), imported when a template is built.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from autoglm_runtime.errors import InvalidRequestError, UsageError
from autoglm_runtime.validation._conversation import ContentFormat, conversation, tool_dicts
from autoglm_runtime.validation._conversation import content_format as _detect

__all__ = ["ChatTemplate"]

#: The special-token names transformers passes to a chat template.
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken object with ``content``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


class ChatTemplate:
    """A compiled chat template and the variables it is rendered with.

    >>> template = ChatTemplate("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    ...                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    >>> template.render([{"role": "user", "content": "hi"}])
    '<user>hi<assistant>'
    """

    def __init__(
        self,
        source: str,
        *,
        special_tokens: Mapping[str, str] | None = None,
        add_generation_prompt: bool = True,
        now: Callable[[], datetime] = datetime.now,
        content_format: Literal["auto", "string", "openai"] = "auto",
    ) -> None:
        try:  # optional dependency: imported only when used
            import jinja2
            import jinja2.ext
            import jinja2.sandbox
        except ImportError as exc:
            raise UsageError("chat templates need jinja2: pip install 'autoglm-runtime[chat]' (jinja2>=3.1)") from exc

        def raise_exception(message: str) -> None:
            raise jinja2.exceptions.TemplateError(message)

        def tojson(
            value: Any,
            ensure_ascii: bool = False,
            indent: int | None = None,
            separators: tuple[str, str] | None = None,
            sort_keys: bool = False,
        ) -> str:
            return json.dumps(
                value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
            )

        def strftime_now(format: str) -> str:
            return now().strftime(format)

        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = strftime_now
        try:
            self._template = env.from_string(source)
            parsed = env.parse(source)
        except jinja2.TemplateError as exc:
            raise UsageError(f"the chat template cannot be compiled: {exc}") from exc
        if content_format not in ("auto", "string", "openai"):
            raise UsageError(f"content_format must be 'auto', 'string' or 'openai', got {content_format!r}")
        #: How message content reaches the template, read off it as vLLM does ("openai": a list of parts).
        self.content_format: ContentFormat = _detect(parsed) if content_format == "auto" else content_format
        self._errors: tuple[type[Exception], ...] = (jinja2.TemplateError,)
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        self.add_generation_prompt = add_generation_prompt

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> ChatTemplate:
        """Load the template from ``tokenizer_config.json``, a ``chat_template.jinja`` file, or a model directory.

        A config holding several named templates uses the one named ``default``. Special tokens come from the
        config (a directory's ``tokenizer_config.json`` when the template is a separate ``.jinja`` file).
        """
        path = Path(path)
        config_path = path / "tokenizer_config.json" if path.is_dir() else path
        jinja_path = path / "chat_template.jinja" if path.is_dir() else None
        config: dict[str, Any] = {}
        if not path.exists():
            raise UsageError(f"no chat template at {str(path)!r}: the file or directory does not exist")
        if config_path.suffix == ".json" and config_path.exists():
            try:
                loaded = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UsageError(f"cannot read the tokenizer config {str(config_path)!r}: {exc}") from exc
            if not isinstance(loaded, dict):
                raise UsageError(
                    f"the tokenizer config {str(config_path)!r} holds a JSON {type(loaded).__name__}, not an object"
                )
            config = loaded
        source: Any = config.get("chat_template")
        if path.suffix == ".jinja" or (jinja_path is not None and jinja_path.exists()):
            template_path = path if path.suffix == ".jinja" else jinja_path
            assert template_path is not None
            try:
                source = template_path.read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot read the chat template {str(template_path)!r}: {exc}") from exc
        if isinstance(source, list):
            named = {item.get("name"): item.get("template") for item in source if isinstance(item, dict)}
            source = named.get("default")
        if not isinstance(source, str):
            raise UsageError(
                f"{str(path)!r} holds no chat template (no 'chat_template' string or 'default' entry): "
                "point to the model's tokenizer_config.json or chat_template.jinja"
            )
        tokens = {name: text for name in SPECIAL_TOKENS if (text := _token_text(config.get(name))) is not None}
        return cls(source, special_tokens={**tokens, **kwargs.pop("special_tokens", {})}, **kwargs)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> str:
        """The prompt the model reads for ``messages`` (and ``tools``), generation prompt included.

        The messages reach the template as vLLM hands them over (see :attr:`content_format`): content parts become
        one string or a list of typed parts, a null content an empty one, tool call arguments objects. ``options``
        are the request's own template variables (``add_generation_prompt``, ``continue_final_message``,
        ``documents``, its ``chat_template_kwargs``, as :class:`OpenAIExtractor` reads them into ``Chat.options``);
        they override the defaults and the special tokens.
        A template that rejects the conversation (``raise_exception``) or fails on it is a bad request: E5010.
        """
        variables: dict[str, Any] = {
            **self.special_tokens,
            "documents": None,
            "add_generation_prompt": self.add_generation_prompt,
            **(options or {}),
        }
        chat = conversation(messages, self.content_format)
        # continue_final_message leaves the last message open: the prompt ends where its text ends (transformers
        # marks that place, renders, and cuts there).
        marked = bool(variables.get("continue_final_message")) and _mark_end(chat)
        try:
            text = str(
                self._template.render(
                    messages=chat, tools=tool_dicts(tools) if tools is not None else None, **variables
                )
            )
        except self._errors as exc:
            raise InvalidRequestError(
                f"the model's chat template rejected the messages: {exc}: fix the conversation", param="messages"
            ) from exc
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            raise InvalidRequestError(
                f"the model's chat template failed on the messages ({type(exc).__name__}: {exc}): fix the conversation",
                param="messages",
            ) from exc
        # Only the mark itself goes: the same character sent by the client stays, and counts. A template that trimmed
        # the mark's trailing space trimmed the message too: the text before the mark loses its trailing whitespace.
        end = text.rfind(_END) if marked else -1
        if end < 0:
            return text
        return text[:end] if text.startswith(_MARK, end) else text[:end].rstrip()


#: Marks where the final message's text ends (a private-use character no template writes); the space after it, as
#: transformers' own mark has, tells whether the template trims the content.
_END = "\U000f0000"
_MARK = _END + " "


def _mark_end(chat: list[dict[str, Any]]) -> bool:
    """Append :data:`_MARK` to the final message's last text; ``False`` when it has none."""
    if not chat:
        return False
    content = chat[-1].get("content")
    if isinstance(content, str):
        chat[-1]["content"] = content + _MARK
        return True
    for part in reversed(content if isinstance(content, list) else []):
        if "text" in part:
            part["text"] += _MARK
            return True
    return False
