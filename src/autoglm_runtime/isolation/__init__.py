"""The isolation part: model manifests, dependency checks, per-model environments and workers."""

from __future__ import annotations

from autoglm_runtime.isolation.manifest import ModelManifest, load_manifest, parse_requirements_file

__all__ = ["ModelManifest", "load_manifest", "parse_requirements_file"]
