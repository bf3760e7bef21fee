"""Model checks on described environments: cross-model, model-vs-host chains, extras, requires-python."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement
from tests.deps._check_data import WIN39, dist, environment, model

from autoglm_runtime.deps.check import EXTRA_REQUIREMENTS_MODEL, check_models, check_probed


def _found(report: object) -> list[tuple[str, tuple[str, ...], str]]:
    return [(f.kind, f.models, f.message) for f in report.findings]  # type: ignore[attr-defined]


def test_cross_model_message_and_hint() -> None:
    report = check_models([model("a", "numpy<2"), model("b", "NumPy>=2")])
    assert _found(report) == [
        (
            "cross-model",
            ("a", "b"),
            "model 'b' needs NumPy>=2 but model 'a' needs numpy<2: they cannot share one environment; load them "
            "isolated",
        )
    ]
    finding = report.findings[0]
    assert finding.packages == ("numpy",)
    assert finding.hint == "load 'a' and 'b' isolated (one environment each), or align their numpy requirements"
    assert finding.details == {"requirements": {"a": "numpy<2", "b": "NumPy>=2"}}
    assert report.python is None
    assert report.exit_code == 1


def test_cross_model_needs_every_model_when_pairs_overlap() -> None:
    report = check_models([model("a", "x>=1,<3"), model("b", "x>=2,<4"), model("c", "x!=2.*")])
    assert _found(report) == [
        (
            "cross-model",
            ("a", "b", "c"),
            "model 'a' needs x<3,>=1; model 'b' needs x<4,>=2; model 'c' needs x!=2.*: no version of x satisfies all "
            "of them, so they cannot share one environment; load them isolated",
        )
    ]


def test_cross_model_respects_markers_and_prereleases() -> None:
    models = [model("a", "x<2; sys_platform == 'linux'", "y==2.0b1"), model("b", "x>=2", "y>=1")]
    assert _found(check_models(models, markers=WIN39)) == []  # x<2 only applies on Linux; 2.0b1 satisfies >=1
    linux = {**WIN39, "sys_platform": "linux"}
    assert [f.kind for f in check_models(models, markers=linux).findings] == ["cross-model"]


def test_model_vs_host_chain_prefers_other_models() -> None:
    env = environment(dist("pandas", "2.1.4", ["numpy<2"]), dist("numpy", "1.26.4"), dist("tool", "1.0", ["numpy"]))
    report = check_probed(env, [model("a", "pandas==2.1.4"), model("b", "numpy>=2")])
    assert _found(report) == [
        (
            "model-vs-host",
            ("b",),
            "model 'b' needs numpy>=2 but the environment has numpy 1.26.4, pulled in by model a -> pandas 2.1.4 -> "
            "numpy<2",
        )
    ]
    assert report.findings[0].details == {
        "requirement": "numpy>=2",
        "installed": "1.26.4",
        "chain": ["model a", "pandas 2.1.4", "numpy<2"],
        "excluded_by": ["pandas 2.1.4 (numpy<2)"],
        "models_excluding": {},
    }


def test_model_vs_host_never_says_another_model_s_own_requirement_pulled_the_version_in() -> None:
    # examples/model_server: words-numpy1 pins numpy 1.26, chars-numpy2 needs numpy 2; the environment has
    # numpy 2 for transformers' sake (numpy>=1.17), not for chars-numpy2, which is only checked, not installed.
    env = environment(dist("numpy", "2.4.6"), dist("transformers", "5.24.0", ["numpy>=1.17"]), dist("lone", "1.0"))
    models = [model("chars-numpy2", "numpy>=2,<3", "lone>=1"), model("words-numpy1", "numpy>=1.26,<1.27", "lone<1")]
    report = check_probed(env, models)
    assert _found(report) == [
        (
            "cross-model",
            ("chars-numpy2", "words-numpy1"),
            "model 'words-numpy1' needs lone<1 but model 'chars-numpy2' needs lone>=1: they cannot share one "
            "environment; load them isolated",
        ),
        (
            "cross-model",
            ("chars-numpy2", "words-numpy1"),
            "model 'words-numpy1' needs numpy<1.27,>=1.26 but model 'chars-numpy2' needs numpy<3,>=2: they cannot "
            "share one environment; load them isolated",
        ),
        (
            "model-vs-host",
            ("words-numpy1",),
            "model 'words-numpy1' needs lone<1 but the environment has lone 1.0, which no installed distribution "
            "requires; model 'chars-numpy2' needs lone>=1, so model 'words-numpy1' cannot share an environment with "
            "it",
        ),
        (
            "model-vs-host",
            ("words-numpy1",),
            "model 'words-numpy1' needs numpy<1.27,>=1.26 but the environment has numpy 2.4.6; no installed "
            "distribution excludes numpy<1.27,>=1.26 (transformers 5.24.0 (numpy>=1.17) accepts it), so numpy can be "
            "changed to match; model 'chars-numpy2' needs numpy<3,>=2, so model 'words-numpy1' cannot share an "
            "environment with it",
        ),
    ]
    assert report.findings[3].details == {
        "requirement": "numpy<1.27,>=1.26",
        "installed": "2.4.6",
        "chain": [],
        "excluded_by": [],
        "models_excluding": {"chars-numpy2": "numpy<3,>=2"},
    }


def test_a_model_s_extra_against_another_model_s_own_requirement_is_a_clash_not_a_chain() -> None:
    env = environment(dist("httpx", "0.27", ["rich<13; extra == 'cli'"], extras=["cli"]), dist("rich", "13.1"))
    report = check_probed(env, [model("m", "httpx[cli]"), model("o", "rich>=13")])
    assert _found(report) == [
        (
            "model-vs-host",
            ("m",),
            "model 'm' requires httpx[cli], whose extra 'cli' needs rich<13, but rich 13.1 is installed; model 'o' "
            "needs rich>=13, so model 'm' cannot share an environment with it",
        )
    ]
    assert report.findings[0].details["chain"] == []
    assert report.findings[0].details["models_excluding"] == {"o": "rich>=13"}


def test_model_vs_host_chain_from_a_root_distribution_or_none() -> None:
    env = environment(dist("pandas", "2.1.4", ["numpy<2"]), dist("numpy", "1.26.4"), dist("lone", "1.0"))
    report = check_probed(env, [model("b", "numpy>=2", "lone>1")])
    assert _found(report) == [
        (
            "model-vs-host",
            ("b",),
            "model 'b' needs lone>1 but the environment has lone 1.0, which nothing else requires",
        ),
        (
            "model-vs-host",
            ("b",),
            "model 'b' needs numpy>=2 but the environment has numpy 1.26.4, pulled in by pandas 2.1.4 -> numpy<2",
        ),
    ]


def test_model_vs_host_names_what_excludes_the_range_never_a_chain_that_accepts_it() -> None:
    env = environment(
        dist("numpy", "1.26.4"),
        dist("scipy", "1.11.4", ["numpy>=1.21"]),  # a root whose range accepts numpy>=2: not the cause
        dist("cyc-a", "1.0", ["cyc-b", "torch<2"]),  # in a cycle: no root leads to it, yet it holds torch
        dist("cyc-b", "1.0", ["cyc-a"]),
        dist("torch", "1.13.1"),
    )
    report = check_probed(env, [model("m", "numpy>=2", "torch>=2")])
    assert _found(report) == [
        (
            "model-vs-host",
            ("m",),
            "model 'm' needs numpy>=2 but the environment has numpy 1.26.4; no installed distribution excludes "
            "numpy>=2 (scipy 1.11.4 (numpy>=1.21) accepts it), so numpy can be changed to match",
        ),
        (
            "model-vs-host",
            ("m",),
            "model 'm' needs torch>=2 but the environment has torch 1.13.1, which cyc-a 1.0 (torch<2) requires",
        ),
        ("cycle", (), "dependency cycle: cyc-a 1.0 -> cyc-b 1.0 -> cyc-a 1.0"),
    ]
    assert [f.details.get("excluded_by") for f in report.findings] == [[], ["cyc-a 1.0 (torch<2)"], None]


def test_missing_and_requires_python_for_models() -> None:
    report = check_probed(environment(), [model("a", "absent>=1", "winonly; os_name == 'nt'", python=">=3.10")])
    assert _found(report) == [
        ("missing", ("a",), "model 'a' requires absent>=1, but absent is not installed"),
        ("missing", ("a",), "model 'a' requires winonly, but winonly is not installed"),
        ("requires-python", ("a",), "model 'a' requires Python >=3.10, but /t/bin/python is Python 3.9.1"),
    ]


def test_extras_missing_unknown_mismatched_and_transitive() -> None:
    env = environment(
        dist("httpx", "0.27", ["anyio", "h2>=4; extra == 'http2'", "rich<13; extra == 'cli'"], extras=["http2", "cli"]),
        dist("anyio", "4.0"),
        dist("rich", "13.1"),
        dist("outer", "1.0", ["inner[Deep_Extra]; extra == 'x'"], extras=["x"]),
        dist("inner", "1.0", ["deeplib; extra == 'deep-extra'"], extras=["deep-extra"]),
        dist("app", "1.0", ["outer[x]"]),
    )
    report = check_probed(env, [model("m", "httpx[http2,cli,socks]")])
    assert [(f.kind, f.packages, f.models, f.message) for f in report.findings] == [
        (
            "model-vs-host",
            ("httpx", "rich"),
            ("m",),
            "model 'm' requires httpx[cli,http2,socks], whose extra 'cli' needs rich<13, but rich 13.1 is installed",
        ),
        (
            "missing-extra",
            ("outer", "inner", "deeplib"),
            (),
            "outer 1.0 requires inner[Deep_Extra], whose extra 'deep-extra' needs deeplib, but deeplib is not "
            "installed",
        ),
        (
            "missing-extra",
            ("httpx",),
            ("m",),
            "model 'm' requires httpx[cli,http2,socks], but httpx 0.27 has no extra 'socks'",
        ),
        (
            "missing-extra",
            ("httpx", "h2"),
            ("m",),
            "model 'm' requires httpx[cli,http2,socks], whose extra 'http2' needs h2>=4, but h2 is not installed",
        ),
    ]


def test_extra_requirements_are_a_pseudo_model() -> None:
    report = check_probed(environment(dist("a", "1.0")), [model("m", "a<1")], [Requirement("a>=1")])
    assert report.models == ("m", EXTRA_REQUIREMENTS_MODEL)
    assert _found(report) == [
        (
            "cross-model",
            ("extra-requirements", "m"),
            "model 'm' needs a<1 but model 'extra-requirements' needs a>=1: they cannot share one environment; load "
            "them isolated",
        ),
        (
            "model-vs-host",
            ("m",),
            "model 'm' needs a<1 but the environment has a 1.0, which no installed distribution requires; model "
            "'extra-requirements' needs a>=1, so model 'm' cannot share an environment with it",
        ),
    ]


TORCH_CPU = "torch @ https://download.pytorch.org/whl/cpu/torch-2.1.0%2Bcpu-cp311-cp311-linux_x86_64.whl"


def test_a_direct_reference_to_a_wheel_admits_that_wheel_s_version_only() -> None:
    # pip installs exactly the wheel a direct reference names: the model needs torch 2.1.0+cpu.
    report = check_models([model("a", TORCH_CPU), model("b", "torch>=2.2")])
    assert _found(report) == [
        (
            "cross-model",
            ("a", "b"),
            f"model 'b' needs torch>=2.2 but model 'a' needs {TORCH_CPU}: they cannot share one environment; load "
            "them isolated",
        )
    ]
    assert _found(check_models([model("a", TORCH_CPU), model("c", "torch==2.1.0")])) == []  # 2.1.0+cpu is ==2.1.0
    assert _found(check_models([model("a", TORCH_CPU, "torch>=2.2")]))[0][0] == "model-contradiction"
    env = environment(dist("torch", "2.3.0"))
    report = check_probed(env, [model("a", TORCH_CPU)])
    assert _found(report) == [
        (
            "model-vs-host",
            ("a",),
            f"model 'a' needs {TORCH_CPU} but the environment has torch 2.3.0, which nothing else requires",
        )
    ]
    assert report.findings[0].hint == (
        "load model 'a' isolated in its own environment, or change the environment so that torch matches '==2.1.0+cpu'"
    )
    assert _found(check_probed(environment(dist("torch", "2.1.0+cpu")), [model("a", TORCH_CPU)])) == []
    missing = check_probed(environment(), [model("a", TORCH_CPU)]).findings[0]
    assert (missing.message, missing.hint) == (
        f"model 'a' requires {TORCH_CPU}, but torch is not installed",
        f"install it: pip install '{TORCH_CPU}'",
    )
    # A reference to an sdist or a repository names no version: any installed one is accepted.
    sdist = "torch @ https://example.invalid/torch-2.1.0.tar.gz"
    assert _found(check_probed(env, [model("a", sdist), model("b", "torch>=2.2")])) == []


def test_constraints_limit_what_the_models_sharing_an_environment_require() -> None:
    # pip applies every -c constraint of an install to what it installs: model a's numpy<2 to b's numpy>=2 too.
    a = model("a", "pandas", constraints=["numpy<2"])
    b = model("b", "numpy>=2")
    report = check_models([a, b, model("c", "numpy")])
    assert _found(report) == [
        (
            "cross-model",
            ("a", "b"),
            "model 'b' needs numpy>=2 but model 'a' needs numpy<2 (constraint): they cannot share one environment; "
            "load them isolated",
        )
    ]
    assert report.findings[0].details == {"requirements": {"a": "numpy<2 (constraint)", "b": "numpy>=2"}}
    # A constraint alone installs nothing: constraints of a distribution no model requires never clash.
    assert check_models([model("a", constraints=["x<2"]), model("b", constraints=["x>=2"])]).findings == []


def test_a_models_constraint_contradicting_its_requirement() -> None:
    assert _found(check_models([model("a", "numpy>=2", constraints=["numpy<2", "other<1"])])) == [
        (
            "model-contradiction",
            ("a",),
            "model 'a' needs numpy>=2 and numpy<2 (constraint): no version of numpy satisfies all of them, so the "
            "model cannot be installed in any environment",
        )
    ]


def test_a_constraint_on_a_requirement_is_checked_against_the_environment() -> None:
    env = environment(dist("numpy", "2.1.0"), dist("six", "1.16.0"))
    report = check_probed(env, [model("a", "numpy", constraints=["numpy<2", "six<1.10", "absent<1"])])
    assert _found(report) == [
        (
            "model-vs-host",
            ("a",),
            "model 'a' (by a constraint) needs numpy<2 but the environment has numpy 2.1.0, which nothing else "
            "requires",
        )
    ]


def test_the_environment_and_the_models_are_checked_on_one_requirement_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoglm_runtime.deps import installed

    built: list[object] = []
    original = installed.RequirementGraph.__init__

    def counting(self: installed.RequirementGraph, *args: object, **kwargs: object) -> None:
        built.append(self)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(installed.RequirementGraph, "__init__", counting)
    env = environment(dist("pandas", "2.1.4", ["numpy<2"]), dist("numpy", "1.26.4"))
    report = check_probed(env, [model("a", "pandas==2.1.4"), model("b", "numpy>=2")])
    assert [f.kind for f in report.findings] == ["model-vs-host"]
    assert len(built) == 1  # its edges (every installed requirement, markers evaluated) are built once


def test_a_conflict_between_models_through_installed_distributions_names_both_chains() -> None:
    env = environment(
        dist("pandas", "2.1.4", ["numpy<2"]),
        dist("numpy", "1.26.4"),
        dist("newlib", "1.0", ["numpy>=2"]),
        dist("wrapper", "1.0", ["newlib"]),
    )
    report = check_probed(env, [model("a", "pandas"), model("b", "wrapper"), model("c", "newlib")])
    assert _found(report) == [
        (
            "incompatible",
            ("a", "b", "c"),
            "newlib 1.0 requires numpy>=2, but numpy 1.26.4 is installed; model b -> wrapper 1.0 -> newlib 1.0 -> "
            "numpy>=2 and model c -> newlib 1.0 -> numpy>=2 conflict with model a -> pandas 2.1.4 -> numpy<2",
        )
    ]
    finding = report.findings[0]
    assert finding.details == {
        "requirement": "numpy>=2",
        "installed": "1.26.4",
        "needed_by": {
            "b": ["model b", "wrapper 1.0", "newlib 1.0", "numpy>=2"],
            "c": ["model c", "newlib 1.0", "numpy>=2"],
        },
        "chain": ["model a", "pandas 2.1.4", "numpy<2"],
    }
    assert finding.hint == (
        "install a version of numpy matching '>=2', or a version of newlib that accepts numpy 1.26.4, or load models "
        "'a', 'b' and 'c' in separate environments (see --plan)"
    )


def test_a_conflict_within_one_model_or_with_the_host_names_its_chains() -> None:
    env = environment(
        dist("pandas", "2.1.4", ["numpy<2"]), dist("numpy", "1.26.4"), dist("newlib", "1.0", ["numpy>=2"])
    )
    both = check_probed(env, [model("a", "pandas", "newlib")])
    assert _found(both) == [
        (
            "incompatible",
            ("a",),
            "newlib 1.0 requires numpy>=2, but numpy 1.26.4 is installed; model a -> newlib 1.0 -> numpy>=2 conflicts "
            "with model a -> pandas 2.1.4 -> numpy<2",
        )
    ]
    host = check_probed(env, [model("b", "newlib")])
    assert _found(host) == [
        (
            "incompatible",
            ("b",),
            "newlib 1.0 requires numpy>=2, but numpy 1.26.4 is installed; model b -> newlib 1.0 -> numpy>=2 conflicts "
            "with pandas 2.1.4 -> numpy<2",
        )
    ]
    alone = check_probed(env, [model("c", "pandas")])  # no model needs newlib: the environment's own finding
    assert _found(alone) == [("incompatible", (), "newlib 1.0 requires numpy>=2, but numpy 1.26.4 is installed")]


def test_a_conflict_between_models_through_an_extra_names_the_extra_in_the_chain() -> None:
    env = environment(
        dist("client", "1.0", ["httpx[socks]"]),
        dist("httpx", "0.27.0", ['socksio>=2; extra == "socks"'], extras=["socks"]),
        dist("socksio", "1.0"),
        dist("old", "1.0", ["socksio<2"]),
    )
    report = check_probed(env, [model("a", "old"), model("b", "client")])
    assert _found(report) == [
        (
            "incompatible",
            ("a", "b"),
            "client 1.0 requires httpx[socks], whose extra 'socks' needs socksio>=2, but socksio 1.0 is installed; "
            "model b -> client 1.0 -> httpx[socks] 0.27.0 -> socksio>=2 conflicts with model a -> old 1.0 -> socksio<2",
        )
    ]
    assert report.findings[0].details == {
        "requirement": "httpx[socks]",
        "extra": "socks",
        "needs": "socksio>=2",
        "installed": "1.0",
        "chain": ["model a", "old 1.0", "socksio<2"],
        "needed_by": {"b": ["model b", "client 1.0", "httpx[socks] 0.27.0", "socksio>=2"]},
    }
    alone = check_probed(env)  # no model: the environment's finding, as before
    assert [(f.kind, f.models, f.details["chain"]) for f in alone.findings] == [("incompatible", (), [])]
