"""Findings and reports: severity, exit code, the stable JSON form, terminal rendering grouped by model."""

from __future__ import annotations

import json
import typing

from autoglm_runtime.deps.findings import INFORMATIONAL_KINDS, KINDS, Finding, Kind, Report

CROSS = Finding(
    kind="cross-model",
    packages=("numpy",),
    models=("a", "b"),
    message="model 'b' needs numpy>=2 but model 'a' needs numpy<2: they cannot share one environment; load them "
    "isolated",
    hint="load 'a' and 'b' isolated (one environment each), or align their numpy requirements",
    details={"requirements": {"a": "numpy<2", "b": "numpy>=2"}},
)
CYCLE = Finding(kind="cycle", packages=("x", "y"), message="dependency cycle: x 1 -> y 1 -> x 1", hint="nothing")


def test_every_kind_is_listed_once() -> None:
    assert sorted(KINDS) == sorted(typing.get_args(Kind))
    assert len(set(KINDS)) == len(KINDS)
    assert set(INFORMATIONAL_KINDS) == {"cycle", "overrides-base"}


def test_only_informational_findings_keep_the_report_ok() -> None:
    assert Report([]).exit_code == 0
    assert Report([CYCLE]).ok
    assert Report([CYCLE]).exit_code == 0
    assert not Report([CYCLE, CROSS]).ok
    assert Report([CYCLE, CROSS]).exit_code == 1


def test_a_finding_of_an_informational_kind_says_so_itself() -> None:
    # severity and the informational field give one answer: a cycle built without the flag is informational
    assert CYCLE.informational is True
    assert CYCLE.severity == "info"
    assert CROSS.informational is False
    assert CROSS.severity == "error"
    flagged = Finding(kind="invalid-metadata", packages=("x",), message="m", hint="h", informational=True)
    assert (flagged.informational, flagged.severity) == (True, "info")


def test_json_form_is_stable() -> None:
    report = Report([CROSS, CYCLE], python="/e/bin/python", python_version="3.12.1", distributions=7, models=("a", "b"))
    out = report.to_json()
    assert out == {
        "format": 1,
        "code": "E0101",
        "ok": False,
        "exit_code": 1,
        "environment": {"python": "/e/bin/python", "python_version": "3.12.1", "distributions": 7},
        "models": ["a", "b"],
        "summary": {"findings": 2, "errors": 1, "informational": 1, "by_kind": {"cross-model": 1, "cycle": 1}},
        "findings": [
            {
                "kind": "cross-model",
                "code": "E0101",
                "severity": "error",
                "packages": ["numpy"],
                "models": ["a", "b"],
                "message": CROSS.message,
                "hint": CROSS.hint,
                "details": {"requirements": {"a": "numpy<2", "b": "numpy>=2"}},
            },
            {
                "kind": "cycle",
                "code": "E0101",
                "severity": "info",
                "packages": ["x", "y"],
                "models": [],
                "message": "dependency cycle: x 1 -> y 1 -> x 1",
                "hint": "nothing",
                "details": {},
            },
        ],
    }
    assert json.loads(json.dumps(out)) == out
    assert Report([CROSS], models=("a", "b")).to_json()["environment"] is None


def test_render_groups_by_model_and_wraps() -> None:
    report = Report(
        [CROSS, CYCLE], python="/e/bin/python", python_version="3.12.1", distributions=7, models=("a", "b", "c")
    )
    assert report.render(width=80) == (
        "model 'a' (and 1 between models, below): ok\n"
        "\n"
        "model 'b' (and 1 between models, below): ok\n"
        "\n"
        "model 'c': ok\n"
        "\n"
        "between models: 1 finding\n"
        "  [cross-model] model 'b' needs numpy>=2 but model 'a' needs numpy<2: they\n"
        "    cannot share one environment; load them isolated\n"
        "    hint: load 'a' and 'b' isolated (one environment each), or align their numpy\n"
        "      requirements\n"
        "\n"
        "environment (/e/bin/python, Python 3.12.1): 1 finding\n"
        "  [cycle] dependency cycle: x 1 -> y 1 -> x 1\n"
        "    hint: nothing\n"
        "\n"
        "E0101 check-deps: 1 problem, 1 informational (7 distributions, 3 models); exit 1\n"
    )


def test_render_without_environment_or_findings() -> None:
    assert (
        Report([], models=("a",)).render() == "model 'a': ok\n\ncheck-deps: no problems (no environment, 1 "
        "model); exit 0\n"
    )


def test_a_run_with_informational_findings_only_carries_no_conflict_code() -> None:
    # E0101 names a conflict: a run without one must not start its summary with it.
    last = Report([CYCLE], models=("a",)).render().splitlines()[-1]
    assert last == "check-deps: no problems, 1 informational (no environment, 1 model); exit 0"


def test_the_summary_counts_one_distribution_in_the_singular() -> None:
    # Before: "(1 distributions, 1 model)" (an environment holding one distribution, as a fresh venv may).
    last = Report([CROSS], python="/e/bin/python", distributions=1, models=("a", "b")).render().splitlines()[-1]
    assert last == "E0101 check-deps: 1 problem (1 distribution, 2 models); exit 1"
    assert Report([], python="/e/bin/python", distributions=0).render().splitlines()[-1] == (
        "check-deps: no problems (0 distributions, 0 models); exit 0"
    )
