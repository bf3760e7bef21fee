"""The isolation part: model manifests, dependency checks, per-model environments and workers."""

from __future__ import annotations

from autoglm_runtime.isolation.check import check_environment, check_models
from autoglm_runtime.isolation.envbuild import BuildEvent, Environment, EnvironmentBuilder
from autoglm_runtime.isolation.envgc import GarbageReport, collect_garbage
from autoglm_runtime.isolation.findings import Finding, Report
from autoglm_runtime.isolation.loader import LoadedModel, ModelHealth, ModelLoader
from autoglm_runtime.isolation.manifest import ModelManifest, load_manifest, parse_requirements_file

__all__ = [
    "BuildEvent",
    "Environment",
    "EnvironmentBuilder",
    "Finding",
    "GarbageReport",
    "LoadedModel",
    "ModelHealth",
    "ModelLoader",
    "ModelManifest",
    "Report",
    "check_environment",
    "check_models",
    "collect_garbage",
    "load_manifest",
    "parse_requirements_file",
]
