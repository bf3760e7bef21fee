"""A chat's ``tools`` reach the chat template as vLLM's request models dump them.

References (vllm-project/vllm): ``ChatCompletionToolsParam`` (vllm/entrypoints/openai/chat_completion/protocol.py:
``defer_loading`` handed down to a function that sets none, only its own fields dumped) over ``FunctionDefinition``
(vllm/entrypoints/generate/base/protocol.py: ``defer_loading`` dumped unless None), both ``OpenAIBaseModel``
(``extra="allow"``), and ``tool_dicts = [tool.model_dump() for tool in request.tools]``. The models below copy them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer, model_validator

from autoglm_runtime.validation import ChatTemplate, OpenAIExtractor


class _VllmBase(BaseModel):
    model_config = ConfigDict(extra="allow")


class _VllmFunction(_VllmBase):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    defer_loading: bool | None = None

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> Any:
        data = handler(self)
        if self.defer_loading is None:
            data.pop("defer_loading", None)
        return data


class _VllmTool(_VllmBase):
    type: Literal["function"] = "function"
    function: _VllmFunction
    defer_loading: bool | None = None

    @model_validator(mode="after")
    def _propagate_defer_loading(self) -> _VllmTool:
        if self.defer_loading is not None and self.function.defer_loading is None:
            self.function.defer_loading = self.defer_loading
        return self

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> Any:
        data = handler(self)
        data = {key: value for key, value in data.items() if key in type(self).model_fields}
        if self.defer_loading is None:
            data.pop("defer_loading", None)
        return data


SMALL = st.one_of(st.none(), st.booleans(), st.sampled_from([0, 1, 2, "yes", "no", "x", 1.0]), st.text(max_size=2))
FUNCTIONS = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=3), SMALL)},
    optional={
        "description": SMALL,
        "parameters": st.one_of(st.none(), st.just({"type": "object"}), SMALL),
        "defer_loading": SMALL,
        "strict": SMALL,
        "x_extra": SMALL,
    },
)
TOOLS = st.fixed_dictionaries(
    {"function": FUNCTIONS},
    optional={"type": st.sampled_from(["function", "custom", None]), "defer_loading": SMALL, "x_note": SMALL},
)
TEMPLATE = ChatTemplate("{{ tools | tojson }}")
NO_PROMPT = {"add_generation_prompt": False}


@settings(max_examples=400, deadline=None)
@given(tools=st.lists(TOOLS, min_size=1, max_size=3))
def test_tools_are_rendered_as_vllm_dumps_them(tools: list[dict[str, Any]]) -> None:
    # Before, a tool's defer_loading did not reach its function, and the function's own defer_loading was dumped
    # where the client put it (and as null when sent null), not as FunctionDefinition's fourth field.
    try:
        dumped = [_VllmTool.model_validate(tool).model_dump() for tool in tools]
    except ValidationError:
        return  # vLLM refuses the request itself
    rendered = TEMPLATE.render([{"role": "user", "content": "hi"}], tools=tools, options=NO_PROMPT)
    assert json.dumps(json.loads(rendered)) == json.dumps(dumped)  # key order included


def test_a_tools_defer_loading_reaches_its_function() -> None:
    tools = [{"type": "function", "function": {"name": "wait", "strict": True}, "defer_loading": "yes"}]
    rendered = TEMPLATE.render([{"role": "user", "content": "hi"}], tools=tools, options=NO_PROMPT)
    assert rendered == (
        '[{"type": "function", "function": {"name": "wait", "description": null, "parameters": null, '
        '"defer_loading": true, "strict": true}, "defer_loading": true}]'
    )


STRING_FORMAT = ChatTemplate("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
OPENAI_FORMAT = ChatTemplate(
    "{% for m in messages %}{% for p in m['content'] %}{{ p | tojson }}{% endfor %}|{% endfor %}"
)


def test_a_tool_reference_part_reaches_the_template_as_vllm_hands_it_over() -> None:
    # vLLM (chat_utils._parse_chat_message_content_part) takes {"type": "tool_reference", "name": ...}, a deferred
    # tool for the template to expand: a string template reads the name as text, an openai one the reference, and a
    # tool result holding one keeps its parts. The guard refused it (E5010, a part "carrying text in 'name'").
    reference = {"type": "tool_reference", "name": "grep"}
    body = {
        "messages": [
            {"role": "user", "content": [reference, "hi"]},
            {"role": "tool", "tool_call_id": "1", "content": [reference]},
        ]
    }
    extracted = OpenAIExtractor().extract(body)
    assert extracted.segments == ["grep", "hi", "grep"]
    assert extracted.pinned == frozenset({0, 2})  # a name is never cut
    assert extracted.chat is not None
    assert STRING_FORMAT.render(extracted.chat.messages, options=NO_PROMPT) == "[grep\nhi][grep]"
    assert OPENAI_FORMAT.render(extracted.chat.messages, options=NO_PROMPT) == (
        '{"type": "tool_reference", "name": "grep"}{"type": "text", "text": "hi"}|'
        '{"type": "tool_reference", "name": "grep"}|'
    )
