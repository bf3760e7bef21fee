"""The multi-worker ``/metrics`` snippet of docs/operations.md ("Prefork servers"), run as written under a real
``uvicorn --workers 2`` with ``PROMETHEUS_MULTIPROC_DIR`` set: whichever worker answers a scrape, the guard counters
it shows are the sum over both workers. The docs snippet test only defines that route (it never serves it, and
prometheus_client is imported there long before the variable could be set)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from integration._helpers import prefork_uvicorn
from integration.test_docs_snippets import python_blocks
from prometheus_client.parser import text_string_to_metric_families

from autoglm_runtime.testing import wait_until

pytestmark = pytest.mark.slow

PAGE = Path(__file__).resolve().parents[2] / "docs" / "operations.md"

# The test's own, after the snippet: a guarded route, and every answer naming the worker that gave it.
TAIL = """
from starlette.responses import PlainTextResponse
from autoglm_runtime.errors import AutoGLMRuntimeError
from autoglm_runtime.validation import CallableTokenizer, ContextWindowGuard, guarded


@guarded(ContextWindowGuard(CallableTokenizer(lambda t: list(t.encode())), 10, message_tokens=0))
def generate(prompt, max_tokens=1):
    return prompt


@app.get("/generate")
def generate_route(prompt: str) -> PlainTextResponse:
    try:
        generate(prompt)
    except AutoGLMRuntimeError as exc:
        return PlainTextResponse(exc.code, status_code=400)
    return PlainTextResponse("ok")


@app.middleware("http")
async def name_the_worker(request, call_next):
    response = await call_next(request)
    response.headers["x-pid"] = str(os.getpid())
    return response
"""


def server_module() -> str:
    """The prefork snippet, after the imports of the page's first metrics block (whose names it uses), and TAIL."""
    blocks = [code for _, code in python_blocks(PAGE.read_text(encoding="utf-8"))]
    first = next(code for code in blocks if "ConfigMetrics(config)" in code and "generate_latest" in code)
    prefork = next(code for code in blocks if "MultiProcessCollector" in code)
    imports = [line for line in first.splitlines() if line.startswith(("import ", "from "))]
    return "\n".join(imports) + "\n" + prefork + TAIL


def get(port: int, path: str) -> httpx.Response:
    # A new connection each time, so that either worker may take it.
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers={"connection": "close"}, timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "config" / "autoglm" / "prod").mkdir(parents=True)
    (tmp_path / "config" / "autoglm" / "prod" / "a").write_text("1")
    (tmp_path / "server.py").write_text(server_module())
    metrics = tmp_path / "metrics"
    metrics.mkdir()  # empty at the start, as the page says
    config = f"file://{tmp_path / 'config'}"  # the config source the snippet reads; no ZooKeeper
    with prefork_uvicorn("server:app", tmp_path, metrics, AUTOGLM_ZK_HOSTS=config) as (port, _):
        wait_until(lambda: get(port, "/metrics").status_code == 200, 60, "a scrape")
        yield port


def rejections(text: str) -> float:
    series = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return series[("autoglm_guard_rejections_total", frozenset({("code", "E0513"), ("surface", "decorator")}))]


def test_the_docs_prefork_metrics_route_sums_both_workers_whichever_answers(server: int) -> None:
    served_by: set[str] = set()
    sent = 0
    while len(served_by) < 2 or sent < 4:  # until both workers counted some rejections
        answer = get(server, "/generate?prompt=" + "x" * 50)
        assert (answer.status_code, answer.text) == (400, "E0513")
        served_by.add(answer.headers["x-pid"])
        sent += 1
    scrapes: list[tuple[str, float]] = []  # (the worker that answered, the rejections it showed)

    def scrape() -> bool:
        # prometheus_client fails (a 500) on a file another process is just creating; the next scrape reads it.
        answer = get(server, "/metrics")
        if answer.status_code == 200:
            scrapes.append((answer.headers["x-pid"], rejections(answer.text)))
        return len({pid for pid, _ in scrapes}) == 2 and len(scrapes) >= 4

    wait_until(scrape, 30, "scrapes answered by each worker")
    assert {pid for pid, _ in scrapes} == served_by
    assert {total for _, total in scrapes} == {float(sent)}  # each scrape, whoever answers: both workers' sum
