"""nest(): the keys under a prefix as the nested mapping a typed view validates."""

from __future__ import annotations

from autoglm_runtime.config.typed import nest


def test_keys_become_nested_mappings_and_parents_give_way_to_their_children() -> None:
    values = {
        "limits": None,
        "limits/m": None,
        "limits/m/window": 8192,
        "limits/m/sampling": {"ignored": True},  # has keys below it: the mapping of those wins
        "limits/m/sampling/top_p": 0.9,
        "limits/mx/window": 1,  # a sibling whose name starts the same is not under "limits/m"
        "other": 1,
    }
    assert nest("limits/m", values) == {"window": 8192, "sampling": {"top_p": 0.9}}
    assert nest("/limits/m/", values) == nest("limits/m", values)
    assert nest("", {"a": 1, "b/c": 2}) == {"a": 1, "b": {"c": 2}}
    assert nest("missing", values) == {}
