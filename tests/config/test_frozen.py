"""Frozen config values: shared by every reader, so read-only; copies are mutable."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from autoglm_runtime.config import FrozenDict, FrozenList
from autoglm_runtime.config._frozen import freeze
from autoglm_runtime.errors import ReadOnlyValueError

VALUE = {"a": [1, {"b": 2}], "s": {3}, "t": (4, [5])}


def test_a_frozen_value_equals_the_decoded_one_and_serializes_the_same() -> None:
    frozen = freeze(VALUE)
    assert frozen == VALUE
    assert isinstance(frozen, dict)
    assert isinstance(frozen["a"], list)
    assert json.dumps(freeze({"a": [1, {"b": None}]})) == '{"a": [1, {"b": null}]}'
    assert freeze(7) == 7
    assert freeze("x") == "x"


@pytest.mark.parametrize(
    "change",
    [
        lambda v: v.__setitem__("x", 1),
        lambda v: v.pop("a"),
        lambda v: v.update(x=1),
        lambda v: v.setdefault("x", 1),
        lambda v: v.clear(),
        lambda v: v["a"].append(3),
        lambda v: v["a"].__setitem__(0, 9),
        lambda v: v["a"].sort(),
        lambda v: v["a"][1].__delitem__("b"),
        lambda v: v["t"][1].extend([6]),
    ],
)
def test_every_change_in_place_is_refused_with_a_coded_error(change) -> None:  # type: ignore[no-untyped-def]
    frozen = freeze(VALUE)
    with pytest.raises(ReadOnlyValueError) as info:
        change(frozen)
    assert isinstance(info.value, TypeError)
    assert info.value.code == "E0001"
    assert frozen == VALUE


def test_copies_are_mutable_and_pickling_keeps_it_frozen() -> None:
    frozen = freeze(VALUE)
    deep = copy.deepcopy(frozen)
    deep["a"][1]["b"] = 3
    assert type(deep) is dict
    assert type(deep["a"]) is list
    assert type(frozen.copy()) is dict
    assert type(frozen["a"].copy()) is list
    again = pickle.loads(pickle.dumps(frozen))
    assert (type(again), type(again["a"]), again) == (FrozenDict, FrozenList, VALUE)


def test_a_shallow_copy_is_mutable_as_with_copy_method() -> None:
    import copy

    from autoglm_runtime.config._frozen import freeze

    value = freeze({"a": [1], "b": 2})
    shallow = copy.copy(value)
    shallow["c"] = 3
    assert type(shallow) is dict
    items = copy.copy(value["a"])
    items.append(2)
    assert (type(items), items) == (list, [1, 2])
