"""How a :class:`ContextWindowGuard` makes an overflowing request fit, and how it counts a rendered chat.

Pinned pieces (system and developer messages, tool definitions, a ``suffix``) are never cut: when they alone leave
no room, the request is rejected with E0513. A chat loses whole turns, oldest first, before the last remaining turn's
text is cut; other input is cut token by token from the truncation side.

Truncating a piece far longer than the room left tokenizes only a bounded part of it next to the kept side (the tail
for ``left``): a part holding more tokens than the room is proof that everything beyond it goes. The tokens of the
part never tokenized are estimated from the tokenized part's characters per token, so ``removed_tokens`` is exact
for input up to that bound and an estimate past it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from autoglm_runtime.errors import INPUT_TRUNCATED, ContextWindowExceededError, InvalidRequestError, UsageError
from autoglm_runtime.logging import get_logger
from autoglm_runtime.validation._overflow import overflow_error
from autoglm_runtime.validation.context_window import BOUNDARY_SLACK, GuardInput, GuardResult, Segment
from autoglm_runtime.validation.limits import Limits, TruncationSide

if TYPE_CHECKING:
    from autoglm_runtime.validation.context_window import ContextWindowGuard
    from autoglm_runtime.validation.tokenizers import Tokenizer

log = get_logger("autoglm_runtime.validation.context_window")

_FIT_ROUNDS = 8
_MIN_PART_CHARS = 65_536
_PINNED_ROLES = frozenset({"system", "developer"})
_RESULT_ROLES = frozenset({"tool", "function"})
_CALL_KEYS = ("tool_calls", "function_call")


def pinned_error(exc: ContextWindowExceededError, request: GuardInput, window: int) -> ContextWindowExceededError:
    """``exc`` (the overflow of the pieces never truncated, counted alone) said as what it is: truncating the rest
    cannot help, so the fix is to shorten those pieces (or to lower the budget, where ``exc`` says so)."""
    lead = "However, you requested "
    if lead not in exc.message:
        return exc
    # "T tokens (I in the input, O ...), more than the context window of W tokens" and its fix, split at the last
    # ": " (the numbers' words hold none).
    claim, _, fix = exc.message.split(lead, 1)[1].rpartition(": ")
    return ContextWindowExceededError(
        f"This model's maximum context length is {window} tokens. However, the system and developer messages, tool "
        f"definitions and other pieces that are never truncated leave no room for the rest of the input. With them "
        f"alone, you requested {claim}: {fix.replace('shorten the input', 'shorten them', 1)}",
        param=request.param,
    )


def _log_truncation(removed: int, total: int, kept: int, *, output: int, window: int, side: str) -> None:
    log.warning(
        "input truncated to fit the context window: %d of %d tokens removed from the %s",
        removed,
        total,
        side,
        extra={
            "error_code": INPUT_TRUNCATED,
            "removed_tokens": removed,
            "input_tokens": kept,
            "output_tokens": output,
            "context_window": window,
        },
    )


def _bounded(guard: ContextWindowGuard, text: str, room: int, side: TruncationSide) -> tuple[str, list[int], int, int]:
    """``(part, ids, hidden_chars, hidden_tokens)``: the kept side of ``text`` holding more than ``room`` tokens.

    When the whole text is needed, ``part`` is ``text`` and nothing is hidden.
    """
    per_token = guard.max_chars_per_token
    size = (room + 2 * BOUNDARY_SLACK) * per_token if per_token else max(_MIN_PART_CHARS, 16 * (room + 1))
    while size < len(text):
        # A token split at the part's far edge is harmless: the part holds more than the room, so it goes.
        part = text[len(text) - size :] if side == "left" else text[:size]
        ids = guard.encode(part)
        if len(ids) - BOUNDARY_SLACK > room:
            hidden_chars = len(text) - len(part)
            hidden_tokens = max(1, round(hidden_chars * len(ids) / max(len(part), 1)))
            return part, ids, hidden_chars, hidden_tokens
        size *= 4
    return text, guard.encode(text), 0, 0


def judge_truncating(  # noqa: PLR0912  (the cut order: batch, chat turns, plain text, in one readable pass)
    guard: ContextWindowGuard, request: GuardInput, segments: list[Segment], *, fixed: int, output: int, limits: Limits
) -> GuardResult:
    window, side = limits.context_window, limits.truncation_side
    budget = window - output - fixed
    pinned = sorted(i for i in request.pinned if i < len(segments))
    try:
        pinned_ids = guard.count(
            [segments[i] for i in pinned], budget - 1, request, fixed=fixed, output=output, window=window
        )
    except ContextWindowExceededError as exc:
        raise pinned_error(exc, request, window) if pinned or fixed else exc from None
    room = budget - sum(len(i) for i in pinned_ids)
    ids: list[list[int]] = [[] for _ in segments]
    for i, found in zip(pinned, pinned_ids, strict=True):
        ids[i] = found
    work = list(segments)
    hidden = [0] * len(segments)
    free = [i for i in range(len(segments)) if i not in request.pinned]
    short = [i for i in free if isinstance(segments[i], str) and len(segments[i]) <= _MIN_PART_CHARS]
    for i, found in zip(short, guard.encode_many([str(segments[i]) for i in short]), strict=True):
        ids[i] = found
    for i in free:
        segment = segments[i]
        if isinstance(segment, tuple):
            ids[i] = list(segment)
        elif i not in short:
            work[i], ids[i], _, hidden[i] = _bounded(guard, segment, room, side)
    total = fixed + sum(hidden) + sum(len(i) for i in ids)
    if total <= window - output:
        return GuardResult(total, output, window, 0, tuple(segments), tuple(tuple(i) for i in ids))
    over = total - (window - output)
    dropped: list[int] = []
    order = free if side == "left" else free[::-1]
    if request.chat is not None:
        over, dropped, order = _drop_turns(guard, request, ids, hidden=hidden, order=order, over=over)
        for index in free:
            if request.chat.turns[index] in dropped:
                work[index] = "" if isinstance(segments[index], str) else ()
    for index in order:
        # The part never tokenized lies beyond the kept side, so it goes first.
        over -= hidden[index]
        hidden[index] = 0
        if over <= 0:
            break
        current = ids[index]
        cut = min(over, len(current))
        keep = current[cut:] if side == "left" else current[: len(current) - cut]
        over -= cut
        if isinstance(segments[index], tuple) or not keep:
            ids[index] = keep
            work[index] = tuple(keep) if isinstance(segments[index], tuple) else ""
            continue
        work[index], ids[index] = _fit_text(guard, keep, side=side, output=output, window=window)
    kept = fixed - guard.message_tokens * len(dropped) + sum(len(i) for i in ids) + sum(hidden)
    removed = total - kept
    _log_truncation(removed, total, kept, output=output, window=window, side=side)
    return GuardResult(
        kept, output, window, removed, tuple(work), tuple(tuple(i) for i in ids), dropped_messages=tuple(dropped)
    )


def _drop_turns(
    guard: ContextWindowGuard,
    request: GuardInput,
    ids: list[list[int]],
    *,
    hidden: list[int],
    order: list[int],
    over: int,
) -> tuple[int, list[int], list[int]]:
    """Drop whole turns, oldest first whatever the truncation side, while over, keeping the last one; returns what
    is still over and ``order`` less the dropped turns' pieces."""
    assert request.chat is not None
    turns = request.chat.turns
    by_turn: dict[int, list[int]] = {}
    for index in sorted(order):
        by_turn.setdefault(turns[index], []).append(index)
    dropped: list[int] = []
    for turn in list(by_turn)[:-1]:
        if over <= 0:
            break
        for index in by_turn[turn]:
            over -= len(ids[index]) + hidden[index]
            ids[index], hidden[index] = [], 0
        over -= guard.message_tokens
        dropped.append(turn)
    rest = [index for index in order if turns[index] not in dropped]
    for index in order:
        if turns[index] in dropped:
            ids[index] = []
    return over, sorted(dropped), rest


def _fit_text(
    guard: ContextWindowGuard, keep: list[int], *, side: TruncationSide, output: int, window: int
) -> tuple[str, list[int]]:
    """Text for ``keep`` whose own re-tokenization still fits ``len(keep)`` tokens.

    Decoding a cut sequence and tokenizing it again may yield a token or two more (a split merge, a special
    token added back); the model sees the re-tokenized text, so that is what must fit.
    """
    target = len(keep)
    ids: list[int] = []
    for _ in range(_FIT_ROUNDS):
        text = _decode(guard, keep, output, window)
        ids = guard.encode(text)
        excess = len(ids) - target
        if excess <= 0:
            return text, ids
        keep = keep[excess:] if side == "left" else keep[: len(keep) - excess]
        if not keep:
            return "", []
    raise ContextWindowExceededError(
        f"the input could not be truncated to {target} tokens: after {_FIT_ROUNDS} attempts its re-tokenized "
        f"text was still {len(ids)} tokens with {output} output tokens requested from a context window of "
        f"{window} tokens: shorten the input",
    )


def _decode(guard: ContextWindowGuard, keep: Sequence[int], output: int, window: int) -> str:
    try:
        return str(guard.tokenizer.decode(keep))
    except UsageError:
        raise
    except Exception as exc:
        raise ContextWindowExceededError(
            f"the input does not fit the context window of {window} tokens with {output} output tokens "
            f"requested, and truncating it failed: the tokenizer could not decode the kept tokens "
            f"({type(exc).__name__}): shorten the input",
        ) from exc


def judge_rendered(
    guard: ContextWindowGuard,
    request: GuardInput,
    segments: list[Segment],
    output: int,
    limits: Limits,
    *,
    truncating: bool,
) -> GuardResult:
    """Count a chat as its template renders it; truncation drops the oldest turns that are not pinned."""
    chat, template = request.chat, guard.chat_template
    assert chat is not None
    assert template is not None
    window = limits.context_window
    budget = window - output
    tok = _chat_tokenizer(guard, request)

    def render(dropped: Sequence[int] = (), overrides: dict[int, Segment] | None = None) -> str:
        messages: list[Any] = list(chat.messages)
        for index, value in (overrides or {}).items():
            turn = chat.turns[index]
            message = messages[turn] = copy.deepcopy(messages[turn])
            target = message
            for key in chat.places[index][:-1]:
                target = target[key]
            target[chat.places[index][-1]] = value
        gone = set(dropped)
        kept = [message for number, message in enumerate(messages) if number not in gone]
        return template.render(kept, tools=chat.tools, options=chat.options)

    def measure(text: str, room: int) -> list[int]:
        per_token = guard.max_chars_per_token
        least = -(-len(text) // per_token) if per_token is not None else guard.least_words([text], room, whole=True)
        if least > room:
            raise overflow_error(least, output, window, request, at_least=True)
        return guard.count([text], room, request, fixed=0, output=output, window=window, tokenizer=tok)[0]

    text = render()
    if not truncating:
        ids = measure(text, budget)
        return GuardResult(len(ids), output, window, 0, tuple(segments), (tuple(ids),), prompt=text)
    full = guard.encode(text, tokenizer=tok)
    if len(full) <= budget:
        return GuardResult(len(full), output, window, 0, tuple(segments), (tuple(full),), prompt=text)
    units = _drop_units(chat.messages)
    try:
        measure(render(_first(units, len(units))), budget - 1)
    except ContextWindowExceededError as exc:
        raise pinned_error(exc, request, window) from None

    def fits(k: int) -> tuple[str, list[int]] | None:
        return _fits(render(_first(units, k)), budget, guard, tok)

    low, high = 0, max(len(units) - 1, 0)
    found = fits(high)
    if found is not None:
        while low < high:
            middle = (low + high) // 2
            attempt = fits(middle)
            if attempt is None:
                low = middle + 1
            else:
                high, found = middle, attempt
        dropped = _first(units, high)
        text, ids = found
    else:
        dropped = _first(units, high)
        text, ids, segments = _cut_last_turn(
            guard, request, segments, render, dropped=dropped, output=output, limits=limits
        )
    work = [("" if isinstance(s, str) else ()) if chat.turns[i] in dropped else s for i, s in enumerate(segments)]
    removed = len(full) - len(ids)
    _log_truncation(removed, len(full), len(ids), output=output, window=window, side=limits.truncation_side)
    return GuardResult(
        len(ids), output, window, removed, tuple(work), (tuple(ids),), dropped_messages=tuple(dropped), prompt=text
    )


def _chat_tokenizer(guard: ContextWindowGuard, request: GuardInput) -> Tokenizer:
    """vLLM tokenizes a rendered chat without adding special tokens, unless the request asks for them."""
    return guard.tokenizer if request.chat is not None and request.chat.add_special_tokens else guard.prompt_tokenizer


def _fits(text: str, budget: int, guard: ContextWindowGuard, tok: Tokenizer) -> tuple[str, list[int]] | None:
    ids = guard.encode(text, tokenizer=tok)
    return (text, ids) if len(ids) <= budget else None


def _cut_last_turn(
    guard: ContextWindowGuard,
    request: GuardInput,
    segments: list[Segment],
    render: Callable[..., str],
    *,
    dropped: list[int],
    output: int,
    limits: Limits,
) -> tuple[str, list[int], list[Segment]]:
    """Cut the text of the one turn left, from its start (``side`` ``"left"``) or its end, until the rendered chat
    fits."""
    assert request.chat is not None
    turns = request.chat.turns
    last = [
        i for i, s in enumerate(segments) if isinstance(s, str) and turns[i] not in dropped and i not in request.pinned
    ]
    window, side = limits.context_window, limits.truncation_side
    budget = window - output
    if side == "right":
        last.reverse()
    work = list(segments)
    text = render(dropped)
    ids = guard.encode(text, tokenizer=_chat_tokenizer(guard, request))
    for _ in range(_FIT_ROUNDS):
        excess = len(ids) - budget
        if excess <= 0:
            return text, ids, work
        if all(work[index] == "" for index in last):
            break  # nothing left that may be cut
        for index in last:
            if excess <= 0:
                break
            # The text as the rendered prompt holds it: without the special tokens the tokenizer adds on its own.
            piece = guard.encode(str(work[index]), tokenizer=guard.prompt_tokenizer)
            cut = min(excess, len(piece))
            keep = piece[cut:] if side == "left" else piece[: len(piece) - cut]
            work[index] = _decode(guard, keep, output, window) if keep else ""
            excess -= cut
        text = render(dropped, {i: work[i] for i in last})
        ids = guard.encode(text, tokenizer=_chat_tokenizer(guard, request))
    error = overflow_error(len(ids), output, window, request, at_least=False)
    if all(work[index] == "" for index in last):
        # Say why truncation, though on, did not make it fit: what is left may not be cut.
        raise ContextWindowExceededError(
            f"This model's maximum context length is {window} tokens. However, truncation dropped every earlier turn "
            "and emptied the text it may cut, and the rest still does not fit: system and developer messages, tool "
            "definitions, and a tool call with the results answering it are never shortened "
            f"({error.message.split('However, ', 1)[-1]})",
            param=request.param,
        )
    raise error


def _drop_units(messages: Sequence[Any]) -> list[list[int]]:
    """The messages truncation may drop, oldest first, in units dropped whole.

    System and developer messages are never dropped. An assistant message that calls tools goes with the tool
    results that answer it: dropping one without the other would leave a chat the backend refuses.
    """
    units: list[list[int]] = []
    calls = False
    for number, message in enumerate(messages):
        role = _role(message)
        if role in _PINNED_ROLES:
            calls = False
            continue
        if role in _RESULT_ROLES and calls and units:
            units[-1].append(number)
            continue
        units.append([number])
        calls = role == "assistant" and any(message.get(key) for key in _CALL_KEYS)
    return units


def _first(units: list[list[int]], count: int) -> list[int]:
    """The message numbers of the oldest ``count`` drop units."""
    return [number for unit in units[:count] for number in unit]


def _role(message: Any) -> str | None:
    role = message.get("role") if isinstance(message, dict) else None
    if role is not None and not isinstance(role, str):
        raise InvalidRequestError(f"a message role must be a string, got {type(role).__name__}: fix the request")
    return role
