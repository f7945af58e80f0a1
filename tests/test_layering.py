"""Import directions between the project's packages, read from every source file (imports inside
functions included), and the absence of package cycles.

    models/       imports nothing of ours (and no Lightning, W&B, WebDataset or OmegaConf)
    configs/      may import models/
    datamodules/  may import models/ and configs/
    metrics/      torchmetrics Metrics and their feature networks: may import only models/ (no Lightning,
                  no data loading)
    pl_modules/   the application: may import everything; pl_modules/commands/ (the `playmate` entry
                  point: argparse and error mapping) is imported by nothing else
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "configs", "datamodules", "metrics", "pl_modules")
ALLOWED = {
    "models": {"models"},
    "configs": {"configs", "models"},
    "datamodules": {"datamodules", "models", "configs"},
    "metrics": {"metrics", "models"},
    "pl_modules": set(PACKAGES),
}
FORBIDDEN_THIRD_PARTY = {
    "models": {"lightning", "pytorch_lightning", "wandb", "webdataset", "omegaconf"},
    "metrics": {"lightning", "pytorch_lightning", "wandb", "webdataset"},
}


def imports_of(path: Path) -> list[tuple[str, int]]:
    """Every absolute module name imported by a file (at any depth), with its line number."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; use the absolute name"
            out.append((node.module or "", node.lineno))
    return out


def source_files() -> dict[str, list[Path]]:
    return {pkg: sorted((ROOT / pkg).rglob("*.py")) for pkg in PACKAGES}


def test_imports_follow_the_layer_directions() -> None:
    bad = []
    for pkg, files in source_files().items():
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            for name, line in imports_of(f):
                top = name.split(".")[0]
                if top in PACKAGES and top not in ALLOWED[pkg]:
                    bad.append(f"{rel}:{line} imports {name} ({pkg}/ may import {sorted(ALLOWED[pkg])})")
                if top in FORBIDDEN_THIRD_PARTY.get(pkg, ()):
                    bad.append(f"{rel}:{line} imports {name} ({pkg}/ must not depend on {top})")
                commands = name == "pl_modules.commands" or name.startswith("pl_modules.commands.")
                if commands and not rel.startswith("pl_modules/commands/"):
                    bad.append(f"{rel}:{line} imports {name} (commands are argparse only, reached through the CLI)")
    assert not bad, "\n".join(bad)


def _node(module: str, depth: int) -> str:
    """Graph node of a module: its top-level package (depth 1), or its sub-package or module directly
    under a top-level package (depth 2: models.diffusion, pl_modules.inference, pl_modules.train, …)."""
    parts = module.split(".")
    return ".".join(parts[:depth])


def package_graph(depth: int) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for files in source_files().values():
        for f in files:
            parts = f.relative_to(ROOT).with_suffix("").parts
            src = _node(".".join(parts[:-1] if parts[-1] == "__init__" else parts), depth)
            for name, _ in imports_of(f):
                if name.split(".")[0] in PACKAGES:
                    dst = _node(name, depth)
                    if dst != src:
                        graph[src].add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_package_cycles() -> None:
    for depth in (1, 2):  # between top-level packages, and between their sub-packages and modules
        cycle = find_cycle(package_graph(depth))
        assert cycle is None, "package cycle: " + " → ".join(cycle)


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
