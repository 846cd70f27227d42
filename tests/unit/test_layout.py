"""The package's shape: data flows one way, no import cycles, reports never run anything."""

import ast
import re
from collections import Counter
from pathlib import Path

import servesweep

PACKAGE = Path(servesweep.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Every servesweep module -> the servesweep modules it imports (at any depth in the file)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("servesweep"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("servesweep")]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def test_reports_never_import_orchestration_or_backends():
    graph = _imports()
    forbidden = ("servesweep.sweep", "servesweep.loadtest", "servesweep.backends", "servesweep.cli")
    for name, targets in graph.items():
        if name.startswith("servesweep.reports"):
            bad = [t for t in targets if t.startswith(forbidden)]
            assert not bad, f"{name} imports {bad}"


def _importers_of(importer: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Each module under `importer` -> what it imports under the `forbidden` prefixes."""
    bad = {}
    for name, targets in _imports().items():
        if name == importer or name.startswith(importer + "."):
            hits = sorted(t for t in targets if t.startswith(forbidden))
            if hits:
                bad[name] = hits
    return bad


def test_the_sweep_never_imports_the_reports():
    # The sweep decides through analysis/ and prints through servesweep.console; drawing is the
    # report's, after the sweep.
    assert _importers_of("servesweep.sweep", ("servesweep.reports",)) == {}


def test_the_decision_imports_neither_drawing_nor_running():
    # reports/ may import analysis/, never the other way; the decision reads results only.
    forbidden = ("servesweep.reports", "servesweep.sweep", "servesweep.cli", "servesweep.loadtest",
                 "servesweep.backends")
    assert _importers_of("servesweep.analysis", forbidden) == {}


def test_nothing_below_the_cli_imports_it():
    for name, targets in _imports().items():
        if not name.startswith("servesweep.cli") and name != "servesweep.__main__":
            assert not [t for t in targets if t.startswith("servesweep.cli")], name


def _assert_acyclic(graph: dict[str, set[str]] | dict[str, list[str]], what: str) -> None:
    """Depth-first search; the first cycle found fails with its path."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError(f"{what}: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_import_cycles():
    # A package's __init__ that only re-exports its submodules is not a cycle of behaviour; count
    # edges into a package as edges into each module it imports.
    _assert_acyclic(_imports(), "import cycle")


def test_backends_list_their_registered_kinds():
    from servesweep.backends import BACKENDS, config_from_dict

    assert "vllm" in BACKENDS
    for kind, backend in BACKENDS.items():
        assert backend.kind == kind and backend.config_class.model_fields["kind"].default == kind
        assert config_from_dict({"kind": kind, "model": "/m"}).kind == kind


def test_one_precision_table():
    from servesweep.precision import PRECISION_NAMES, PRECISIONS

    assert PRECISION_NAMES == ("fp32", "fp16", "bf16", "fp8")
    # No other module spells the list of precisions out again.
    for path in PACKAGE.rglob("*.py"):
        if path.name != "precision.py":
            text = path.read_text()
            assert '["fp32", "fp16", "bf16", "fp8"]' not in text and "'fp32', 'fp16', 'bf16', 'fp8'" not in text, path
    assert PRECISIONS["fp8"].quantized_fp8 and not PRECISIONS["bf16"].quantized_fp8


def test_the_package_exports_its_error_hierarchy():
    import servesweep.errors as errors

    for name in servesweep.__all__:
        assert hasattr(servesweep, name), name
    assert issubclass(errors.ConfigError, errors.UserError) and issubclass(errors.UserError, errors.ServesweepError)
    assert errors.UserError.exit_code == 2 and errors.ServerError.exit_code == 3


def test_a_bug_keeps_its_traceback(monkeypatch):
    # The CLI maps servesweep's own errors to one line and an exit code; anything else is a bug
    # and must surface with its traceback, not as "error: ..." and exit 2.
    import pytest

    import servesweep.cli.run as run
    from servesweep.cli import main

    def broken(args):
        raise ValueError("a bug")

    monkeypatch.setattr(run, "cmd_run", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["run", "--url", "http://127.0.0.1:9"])


def _unit(module: str) -> str:
    """The folder (servesweep.sweep) or top-level module (servesweep.loadtest) a module is in."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_between_folders():
    # Finer than file by file: scenarios, sweep, reports, quality (and every other folder or
    # top-level module) import each other one way only, so each can be read without the ones above.
    graph: dict[str, set[str]] = {}
    for name, targets in _imports().items():
        graph.setdefault(_unit(name), set()).update(_unit(t) for t in targets if _unit(t) != _unit(name))
    graph.pop("servesweep", None)  # the package's __init__ re-exports; it is not a floor
    for targets in graph.values():
        targets.discard("servesweep")
    _assert_acyclic(graph, "folder import cycle")


def test_the_gate_under_load_drives_its_load_through_the_load_test():
    # One load driver: the measurement under load hooks into run_load_test (its `during`), it does
    # not set up a runner, a target probe or a tokenizer of its own.
    under_load = _imports()["servesweep.quality.gate.under_load"]
    assert "servesweep.loadtest" in under_load
    assert not under_load & {"servesweep.loadgen.load_runner", "servesweep.loadgen.target", "servesweep.loadgen.tokenizer"}


def test_one_launch_skeleton_and_one_failure_map():
    graph = _imports()
    for backend in ("servesweep.backends.vllm", "servesweep.backends.trtllm"):
        assert "servesweep.backends.launch" in graph[backend], backend
        assert "servesweep.backends.gpu" not in graph[backend], backend  # the skeleton probes devices
    for driver in ("servesweep.loadgen.client", "servesweep.locust.user"):
        assert "servesweep.loadgen.failures" in graph[driver], driver


LAYOUT_DOC = PACKAGE.parent / "docs" / "layout.md"


def _documented_modules() -> set[str]:
    """The modules docs/layout.md's tree lists, as paths below servesweep/: a line indented by two
    spaces starts an entry (`name.py` or `folder/`); a folder's entry names its modules (`x.py`,
    `sub/x.py`) relative to the folder, on its own lines and the lines indented below it."""
    block = LAYOUT_DOC.read_text().split("```\nservesweep/\n", 1)[1].split("```", 1)[0]
    found: set[str] = set()
    folder = None
    for line in block.splitlines():
        entry = re.match(r"^  ([a-z_0-9]+(?:\.py|/))(\s|$)", line)
        if not line.startswith(" "):
            break  # bench/ and the rest: not the package
        if entry:
            name = entry.group(1)
            folder = name if name.endswith("/") else None
            if folder is None:
                found.add(name)
            line = line[len(entry.group(0)):]
        if folder is not None:
            found.update(folder + m for m in re.findall(r"\b((?:[a-z_0-9]+/)*[a-z_0-9]+\.py)\b", line)
                         if not m.endswith("__init__.py"))
    return found


def test_the_layout_doc_lists_every_module_and_no_other():
    # The README's layout (docs/layout.md) is this tree: a module added, moved or renamed without
    # the doc following fails here.
    tree = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")}
    documented = _documented_modules()
    assert sorted(tree - documented) == [], "modules missing from docs/layout.md"
    assert sorted(documented - tree) == [], "docs/layout.md lists modules that do not exist"


def test_a_module_name_says_which_module_it_is():
    # cli/ is one module per command and results/ one per result file, each named for it; any other
    # name is the package's only module of that name.
    names = Counter(p.name for p in PACKAGE.rglob("*.py")
                    if p.name != "__init__.py" and p.relative_to(PACKAGE).parts[0] not in ("cli", "results"))
    assert [n for n, c in names.items() if c > 1] == []
