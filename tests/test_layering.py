"""The layers of docs/architecture.md, checked on every import of every module (function-level imports too).

A module may import from its own layer or below, never above, and no two modules may import each other
through any chain: a cycle is what made ``agent``, ``training``, ``checkpoint`` and ``zoo`` hide about a
hundred imports inside functions.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dqltoolkit"

#: layer of each module or package (a package's layer holds for everything in it unless listed itself)
LAYERS = {
    0: ["_version", "registry", "settings", "capabilities", "nn", "_native", "_cache", "precision", "cuda_graphs", "threads", "limits"],
    1: ["heads", "critics", "objectives", "envs"],
    2: ["config", "data", "tasks"],
    3: ["learner", "backends", "acting"],
    4: ["loop", "online", "faults", "agent", "checkpoint", "checkpoint_checks", "zoo", "hub", "hub_card", "sources"],
    5: ["training", "runs", "wandb_logger", "evaluation", "ablation", "bench", "plots", "export", "stats", "selection", "fqe", "select_job", "record", "report", "report_plots", "report_records", "report_sweep",
        "sweep", "sweep_spec", "sweep_trial"],
    6: ["cli", "__init__", "__main__"],
}
LAYER_OF = {name: layer for layer, names in LAYERS.items() for name in names}

#: imports forbidden within a layer: the zoo reads index entries that point at the Hub, but fetching them is
#: dqltoolkit.sources' job (above both), so that the zoo never depends on the Hub client or its resolver
FORBIDDEN = {"zoo": {"hub", "hub_card", "sources"}, "hub": {"sources"}}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYER_OF:
            return LAYER_OF[".".join(parts[:n])]
    raise AssertionError(f"dqltoolkit.{module} has no layer: add it to LAYERS (and to docs/architecture.md)")


def _imports(path: Path, module: str):
    """dqltoolkit modules that ``module`` imports, anywhere in the file."""
    is_pkg = path.name == "__init__.py"
    package = module.split(".") if is_pkg else module.split(".")[:-1]
    if module == "__init__":
        package = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("dqltoolkit"):
                target = node.module[len("dqltoolkit"):].lstrip(".")
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                yield sub if (PACKAGE / (sub.replace(".", "/") + ".py")).exists() or (PACKAGE / sub.replace(".", "/")).is_dir() else target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("dqltoolkit."):
                    yield alias.name[len("dqltoolkit."):]


def _graph():
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        graph[module] = {m for m in _imports(path, module) if m and m != module}
    return graph


def test_every_import_goes_to_the_same_layer_or_below():
    upward = []
    for module, targets in _graph().items():
        for target in targets:
            if _layer(target) > _layer(module):
                upward.append(f"dqltoolkit.{module} (layer {_layer(module)}) imports dqltoolkit.{target} (layer {_layer(target)})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(sorted(upward))


def test_forbidden_imports_within_a_layer():
    graph = _graph()
    found = [f"dqltoolkit.{m} imports dqltoolkit.{t}" for m, banned in FORBIDDEN.items() for t in sorted(graph[m] & banned)]
    assert not found, "\n".join(found)
    assert "zoo" in graph["sources"] and "hub" in graph["sources"]  # (the resolver above both: the rule has something to hold)


def test_no_import_cycles():
    graph = _graph()
    # a module imports its package's __init__ implicitly; a cycle through a package's own __init__ is not one
    def strip(m):
        return m

    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in graph and not node.startswith(nxt + "."):  # (a submodule reading its own package is not a cycle)
                visit(nxt)
        stack.pop()

    for module in sorted(graph):
        visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
