"""Between models: contradictions, summarised cross-model conflicts, the greedy grouping plan, --why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from tests.deps._check_data import WIN39, dist, environment, model, model_dir

from autoglm_runtime.cli import main
from autoglm_runtime.deps.check import check_models
from autoglm_runtime.deps.planning import ModelRequirements, Plan, plan_groups
from autoglm_runtime.deps.why import Why, explain


def _plain(*models: object) -> list[ModelRequirements]:
    return [ModelRequirements(m.name, m.requirements, m.python) for m in models]  # type: ignore[attr-defined]


def test_a_model_contradicting_itself_is_a_finding_of_its_own() -> None:
    report = check_models([model("m", "beta<2", "Beta>=2", "ok>=1", "ok<3")], markers=WIN39)
    assert [(f.kind, f.packages, f.models, f.message) for f in report.findings] == [
        (
            "model-contradiction",
            ("beta",),
            ("m",),
            "model 'm' needs beta<2 and Beta>=2: no version of beta satisfies all of them, so the model cannot be "
            "installed in any environment",
        )
    ]
    assert report.exit_code == 1
    assert report.findings[0].details == {"requirements": ["beta<2", "Beta>=2"]}
    assert report.findings[0].hint == "fix the requirements of model 'm' on beta (they contradict each other)"


def test_forty_models_give_one_finding_per_clashing_camp_not_per_pair() -> None:
    models = [model(f"m{i:02d}", "numpy<2" if i % 2 else "numpy>=2", f"torch=={'2.1.0' if i < 10 else '2.3.1'}")
              for i in range(40)]  # fmt: skip
    report = check_models(models, markers=WIN39)
    assert [(f.packages, len(f.models)) for f in report.findings] == [(("numpy",), 40), (("torch",), 40)]
    numpy = report.findings[0]
    assert numpy.message == (
        "models 'm01', 'm03', 'm05', 'm07', 'm09' and 15 more need numpy<2 but models 'm00', 'm02', 'm04', 'm06', "
        "'m08' and 15 more need numpy>=2: they cannot share one environment; load them isolated"
    )
    assert numpy.hint == "load these models in separate environments (see --plan), or align their numpy requirements"
    assert len(report.render().splitlines()) < 120  # each conflict shown once, not under each of 40 models


def test_models_whose_python_ranges_do_not_meet_cannot_share_an_environment() -> None:
    models = [model("a", "six", python=">=3.12"), model("b", python="<3.10"), model("c", python=">=3.8")]
    report = check_models(models, markers=WIN39)
    assert [(f.kind, f.packages, f.models, f.message, f.hint, f.details) for f in report.findings] == [
        (
            "cross-model",
            (),
            ("a", "b"),
            "model 'b' needs Python <3.10 but model 'a' needs Python >=3.12: they cannot share one environment; "
            "load them isolated",
            "load 'a' and 'b' isolated (one environment each), or align their Python requirements",
            {"requirements": {"a": "Python >=3.12", "b": "Python <3.10"}},
        )
    ]
    assert plan_groups(_plain(*models), markers=WIN39).groups == (("a", "c"), ("b",))


def test_the_plan_groups_models_that_can_share_and_checks_each_group_whole() -> None:
    models = _plain(
        model("a", "numpy<2"), model("b", "numpy>=2"), model("c", "numpy<2", "torch>=2"), model("d", "torch<2")
    )
    assert plan_groups(models, WIN39) == Plan(groups=(("a", "c"), ("b", "d")))
    # Every pair overlaps, the three together do not: the plan must not put them in one group.
    trio = _plain(model("a", "x>=1,<3"), model("b", "x>=2,<4"), model("c", "x!=2.*"))
    assert plan_groups(trio, WIN39).groups == (("a", "b"), ("c",))
    broken = _plain(model("a", "y"), model("self", "y<1", "y>1"))
    plan = plan_groups(broken, WIN39)
    assert plan.to_json() == {"method": "greedy", "groups": [["a"]], "unplaceable": ["self"]}
    assert plan.render() == (
        "plan: 1 environment for 1 models, grouped by their direct requirements (greedy grouping: may not be the "
        "fewest possible)\n"
        "  group 1: a\n"
        "  no environment (contradictory requirements): self\n"
    )


def test_forty_realistic_models_are_planned_into_few_groups() -> None:
    lines = ["numpy<2", "numpy>=2", "torch==2.1.0", "torch>=2.3", "transformers<4.40", "transformers>=4.40"]
    models = _plain(*(model(f"m{i:02d}", lines[i % 2], lines[2 + (i // 2) % 2], lines[4 + (i // 4) % 2])
                      for i in range(40)))  # fmt: skip
    plan = plan_groups(models, WIN39)
    assert len(plan.groups) == 8
    assert sorted(n for g in plan.groups for n in g) == [f"m{i:02d}" for i in range(40)]


def test_why_names_installed_requirers_and_models_with_their_ranges() -> None:
    env = environment(
        dist("numpy", "1.26.4"),
        dist("pandas", "2.1.4", ["numpy<2,>=1.23", "extra-only; extra == 'x'"], extras=["x"]),
        dist("scipy", "1.11.4", ["NumPy>=1.21; sys_platform == 'win32'", "numpy<0; sys_platform == 'linux'"]),
    )
    answer = explain("NUMPY", env, _plain(model("m", "numpy>=2")))
    assert answer.render() == (
        "why numpy (1.26.4 installed):\n"
        "  pandas 2.1.4 requires numpy<2,>=1.23\n"
        "  scipy 1.11.4 requires NumPy>=1.21\n"
        "  model 'm' requires numpy>=2\n"
    )
    assert explain("absent", env).to_json() == {
        "package": "absent",
        "installed": None,
        "required_by": [],
        "models": [],
        "through_extras": [],
        "unrequested_extras": [],
    }


def test_why_follows_requested_extras_and_says_who_requests_them() -> None:
    env = environment(
        dist("socksio", "1.0"),
        dist(
            "httpx",
            "0.27.0",
            ['socksio==1.*; extra == "socks"', 'h2[tls]; extra == "http2"'],
            extras=["socks", "http2"],
        ),
        dist("client", "1.0", ["httpx[socks]>=0.27"]),
        dist("h2", "4.1", ['socksio>=0.5; extra == "tls"'], extras=["tls"]),
    )
    answer = explain("socksio", env, _plain(model("m", "httpx[http2,socks]")))
    assert answer.render() == (
        "why socksio (1.0 installed):\n"
        "  h2 4.1 requires socksio>=0.5 for its extra 'tls', which httpx 0.27.0's extra 'http2' (h2[tls]) requests\n"
        "  httpx 0.27.0 requires socksio==1.* for its extra 'socks', which client 1.0 (httpx[socks]>=0.27) and model "
        "'m' (httpx[http2,socks]) request\n"
    )
    assert answer.to_json()["through_extras"][0] == {
        "requirer": "h2 4.1",
        "extra": "tls",
        "requirement": "socksio>=0.5",
        "requested_by": ["httpx 0.27.0's extra 'http2' (h2[tls])"],
    }


def test_why_a_distribution_only_an_unrequested_extra_would_bring_says_it_is_not_required() -> None:
    env = environment(
        dist("socksio", "1.0"),
        dist("httpx", "0.27.0", ['socksio==1.*; extra == "socks"', 'h2>=4; extra == "http2"'],
             extras=["socks", "http2"]),
        dist("hub", "2.4", ['socksio; extra == "all"', 'socksio; extra == "all"', 'socksio; extra == "dev"'],
             extras=["all", "dev"]),
        dist("h2", "4.1"),
        dist("client", "1.0", ['httpx[socks]; extra == "proxy"'], extras=["proxy"]),  # its extra: not requested
    )  # fmt: skip
    answer = explain("socksio", env, _plain(model("m", "httpx[http2]")))
    assert answer.render() == (
        "why socksio (1.0 installed):\n"
        "  nothing installed and no model requires it\n"
        "  not required: httpx 0.27.0 requires socksio==1.* only for its extra 'socks', which nothing installed and "
        "no model requests\n"
        "  not required: hub 2.4 requires socksio only for its extras 'all', 'dev', which nothing installed and no "
        "model requests\n"
    )
    assert answer.to_json()["through_extras"] == []
    assert answer.to_json()["unrequested_extras"] == [
        {"requirer": "httpx 0.27.0", "extras": ["socks"], "requirement": "socksio==1.*"},
        {"requirer": "hub 2.4", "extras": ["all", "dev"], "requirement": "socksio"},
    ]
    requested = explain("socksio", env, _plain(model("m", "hub[all]")))
    assert requested.render() == (
        "why socksio (1.0 installed):\n"
        "  hub 2.4 requires socksio for its extra 'all', which model 'm' (hub[all]) requests\n"
    )
    assert requested.to_json()["unrequested_extras"] == []  # something requires it: the answer is that


def _keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


def test_why_to_json_names_in_its_docstring_every_field_it_emits() -> None:
    # Before: the docstring stopped at through_extras; unrequested_extras (and its "extras") were emitted unsaid.
    env = environment(
        dist("socksio", "1.0"),
        dist("httpx", "0.27.0", ['socksio==1.*; extra == "socks"'], extras=["socks"]),
        dist("pandas", "2.1.4", ["numpy<2"]),
        dist("numpy", "1.26.4"),
    )
    unrequested = explain("socksio", env, _plain(model("m", "httpx"))).to_json()
    requested = explain("socksio", env, _plain(model("m", "httpx[socks]"))).to_json()
    required = explain("numpy", env, _plain(model("m", "numpy>=1"))).to_json()
    emitted = _keys(unrequested) | _keys(requested) | _keys(required)
    assert emitted == {
        "package", "installed", "required_by", "models", "through_extras", "unrequested_extras", "requirer",
        "requirement", "model", "extra", "requested_by", "extras",
    }  # fmt: skip
    doc = Why.to_json.__doc__ or ""
    assert sorted(key for key in emitted if f'"{key}"' not in doc) == []


def test_cli_plan_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = model_dir(tmp_path, "a", "packaging<1")
    b = model_dir(tmp_path, "b", "packaging>=1")
    assert main(["check-deps", str(a), str(b), "--plan", "--why", "packaging", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["plan"] == {"method": "greedy", "groups": [["a"], ["b"]], "unplaceable": []}
    assert [m["model"] for m in out["why"][0]["models"]] == ["a", "b"]
    assert main(["check-deps", str(a), str(b), "--plan"]) == 1
    text = capsys.readouterr().out
    assert text.endswith(
        "plan: 2 environments for 2 models, grouped by their direct requirements (greedy grouping: may not be the "
        "fewest possible)\n"
        "  group 1: a\n"
        "  group 2: b\n"
    )
    c = model_dir(tmp_path, "c", "packaging>=1,<99")
    assert main(["check-deps", str(a), str(b), str(c), "--plan"]) == 1
    assert capsys.readouterr().out.endswith(
        "plan: 2 environments for 3 models, grouped by their direct requirements (greedy grouping: may not be the "
        "fewest possible)\n"
        "  group 1: a\n"
        "  group 2: b, c\n"
        "  not judged: what the requirements pull in, which may still clash within a group\n"
    )


def test_the_plan_applies_each_members_constraints_to_the_whole_group() -> None:
    constrains = ModelRequirements("a", (Requirement("pandas"),), constraints=(Requirement("numpy<2"),))
    needs_new = ModelRequirements("b", (Requirement("numpy>=2"),))
    needs_any = ModelRequirements("c", (Requirement("numpy"),))
    only_constrains = ModelRequirements("d", (), constraints=(Requirement("numpy>=2"), Requirement("x>=2")))
    other_x = ModelRequirements("e", (), constraints=(Requirement("x<2"),))
    plan = plan_groups([constrains, needs_new, needs_any, only_constrains, other_x], markers=WIN39)
    # a's numpy<2 limits b's numpy>=2, and with d's numpy>=2 c's numpy; constraints of what no member requires
    # (a's and d's numpy, d's and e's x) install nothing, so they never keep models apart.
    assert plan.groups == (("a", "d", "e"), ("b", "c"))


def test_a_constraint_joins_no_group_whose_constraints_it_contradicts_on_what_a_member_requires() -> None:
    # b (placed before c: its torch clash with d counts) requires numpy; a's numpy<2 and c's numpy>=2 would
    # both limit it in one environment, which cross_model reports as a clash between a and c.
    models = [
        ModelRequirements("a", (), constraints=(Requirement("numpy<2"),)),
        ModelRequirements("b", (Requirement("numpy>=1"), Requirement("torch>=2"))),
        ModelRequirements("c", (), constraints=(Requirement("numpy>=2"),)),
        ModelRequirements("d", (Requirement("torch<2"),)),
    ]
    assert plan_groups(models, markers=WIN39).groups == (("a", "b"), ("c", "d"))
