"""The alerting rules in deploy/prometheus pass promtool's check, and its unit tests show each alert firing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from autoglm_runtime.testing import fail_in_ci_else_skip

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        fail_in_ci_else_skip("promtool is not installed: 'apt-get install prometheus' (scripts/test does it as root)")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=RULES)


def test_the_rule_file_is_valid() -> None:
    result = promtool("check", "rules", "autoglm-alerts.yml")
    assert (result.returncode, result.stdout.strip().splitlines()) == (
        0,
        ["Checking autoglm-alerts.yml", "  SUCCESS: 10 rules found"],
    )


def test_each_alert_fires_on_the_series_meant_for_it() -> None:
    result = promtool("test", "rules", "autoglm-alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
