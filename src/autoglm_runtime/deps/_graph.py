"""The requirement graph of an environment: why a version is installed, and dependency cycles."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence

from packaging.requirements import Requirement

__all__ = ["Edges", "cycles", "req_text", "shortest_chain"]

#: requirer node -> [(target distribution key, the requirement)]; a node is a dist key or "model NAME".
Edges = Mapping[str, Sequence[tuple[str, Requirement]]]


def req_text(req: Requirement) -> str:
    """A requirement as messages show it: name, extras and specifier (or direct reference), without its marker."""
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras} @ {req.url}" if req.url else f"{req.name}{extras}{req.specifier}"


def shortest_chain(
    edges: Edges,
    roots: Iterable[str],
    target: str,
    labels: Mapping[str, str],
    accept: Callable[[str, Requirement], bool] = lambda node, req: True,
) -> list[str] | None:
    """The shortest path from any of ``roots`` to ``target``, as labels ending with the last requirement.

    ``["model a", "pandas 2.1.4", "numpy<2"]`` reads "model a requires pandas 2.1.4, which requires
    numpy<2". Only a last requirement that ``accept`` allows, given the node that requires it, ends a chain
    (one the installed version satisfies, so the chain explains it). Roots are tried in order; the first
    shortest chain wins.
    """
    best: list[str] | None = None
    for root in roots:
        parent: dict[str, tuple[str, Requirement]] = {}
        queue = deque([root])
        seen = {root}
        found: Requirement | None = None
        last = root
        while queue and found is None:
            node = queue.popleft()
            for dep, req in edges.get(node, ()):
                if dep == target and accept(node, req):
                    found, last = req, node
                    break
                if dep not in seen:
                    seen.add(dep)
                    parent[dep] = (node, req)
                    queue.append(dep)
        if found is None:
            continue
        nodes = [last]
        while nodes[-1] != root:
            nodes.append(parent[nodes[-1]][0])
        chain = [labels.get(n, n) for n in reversed(nodes)] + [req_text(found)]
        if best is None or len(chain) < len(best):
            best = chain
    return best


def cycles(edges: Edges) -> list[list[str]]:
    """Every dependency cycle (strongly connected component of two or more, or a self-loop), sorted.

    Each cycle is given as a closed walk starting at its smallest name: ``["a", "b", "a"]``.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    successors: dict[str, list[str]] = {}

    def targets(node: str) -> list[str]:
        found = successors.get(node)
        if found is None:  # asked again at every step through the node's successors: computed once
            found = successors[node] = sorted({dep for dep, _ in edges.get(node, ()) if dep in edges})
        return found

    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:  # iterative Tarjan: deep chains must not hit the recursion limit
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            succ = targets(node)
            if i < len(succ):
                work.append((node, i + 1))
                dep = succ[i]
                if dep not in index:
                    work.append((dep, 0))
                elif dep in on_stack:
                    low[node] = min(low[node], index[dep])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                members: list[str] = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    members.append(top)
                    if top == node:
                        break
                if len(members) > 1 or node in targets(node):
                    found.append(_walk(edges, set(members)))
    return sorted(found)


def _walk(edges: Edges, members: set[str]) -> list[str]:
    """The shortest cycle through the smallest member of a strongly connected component, closed."""
    start = min(members)
    inside = {n: sorted(d for d, _ in edges.get(n, ()) if d in members) for n in members}
    parent: dict[str, str] = {}
    queue = deque([start])
    seen = {start}
    while queue:
        node = queue.popleft()
        for dep in inside[node]:
            if dep == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if dep not in seen:
                seen.add(dep)
                parent[dep] = node
                queue.append(dep)
    raise AssertionError(f"{sorted(members)} is not a strongly connected component")
