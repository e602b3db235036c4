"""The layers README draws are the layers the imports make.

The contracts live in pyproject.toml (`[tool.importlinter]`) and `make lint` runs them
too; here they run with the suite, next to what import-linter cannot say: no import
cycles at all among cloudsh's modules, programs that run elsewhere depend on nothing
but the standard library, no Python program kept in a string, and modules that stay a
readable size. Every import counts, function-local and TYPE_CHECKING ones included.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cloudsh"

#: Programs that run on a box or in a box's tree, shipped by reading their source:
#: nothing from cloudsh and nothing outside the standard library may be imported there.
#: (Each package's `__init__` is the laptop side that reads and ships them.)
ELSEWHERE = ("cloudsh.agents", "cloudsh.sandbox.tools")

#: Modules allowed past the size limit, each with the reason.
MAX_LINES = 600
OVER_SIZE: dict[str, str] = {}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("cloudsh", include_external_packages=True, cache_dir=None)


def test_import_contracts_hold() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run(
        [str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, check=False,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout or " broken" not in out.stdout.split("Contracts:")[-1]


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    mods = sorted(m for m in graph.modules if m == "cloudsh" or m.startswith("cloudsh."))
    edges = {m: sorted(n for n in graph.find_modules_directly_imported_by(m) if n in mods) for m in mods}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in mods:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(edges[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    # The check above must be able to fail: a two-module cycle is found.
    g = grimp.ImportGraph()
    for m in ("cloudsh", "cloudsh.a", "cloudsh.b", "cloudsh.c"):
        g.add_module(m)
    g.add_import(importer="cloudsh.a", imported="cloudsh.b")
    g.add_import(importer="cloudsh.b", imported="cloudsh.a")
    g.add_import(importer="cloudsh.c", imported="cloudsh.a")
    assert _cycles(g) == [["cloudsh.a", "cloudsh.b"]]


def _modules_under(prefix: str) -> list[Path]:
    base = PACKAGE.joinpath(*prefix.split(".")[1:])
    if base.is_dir():
        return sorted(p for p in base.rglob("*.py") if p.name != "__init__.py")
    single = base.with_suffix(".py")
    return [single] if single.exists() else []


@pytest.mark.parametrize("prefix", ELSEWHERE)
def test_programs_that_run_elsewhere_use_only_the_standard_library(prefix: str) -> None:
    files = _modules_under(prefix)
    assert files, f"{prefix} has no modules"
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # a relative import reaches into the package
                    names = ["." * node.level + (node.module or "")]
                else:
                    names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert top == "__future__" or top in sys.stdlib_module_names, (
                    f"{path.relative_to(ROOT)} imports {name}: programs that run elsewhere "
                    "use only the standard library"
                )


_PY_LINE = re.compile(r"^(?:import \w|from [\w.]+ import |def \w+\(|class \w+[(:])", re.M)


def _text_of(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's literal parts, its holes left blank."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "" for v in node.values)
    return None


def _python_in_strings(path: Path) -> list[int]:
    """Lines of string literals that hold a Python program: a python shebang, or several
    lines that import, define a function or a class (templated programs do not parse)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        text = _text_of(node)
        if text is None or text.count("\n") < 5:
            continue
        if re.match(r"#![^\n]*python", text) or len(_PY_LINE.findall(text)) >= 2:
            found.append(getattr(node, "lineno", 0))
    return found


def test_no_python_program_lives_in_a_string() -> None:
    offenders = {
        str(p.relative_to(ROOT)): lines for p in sorted(PACKAGE.rglob("*.py")) if (lines := _python_in_strings(p))
    }
    assert offenders == {}


def test_the_program_detector_detects(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        'AGENT = """\nimport os\n\n\ndef main():\n    return os.getpid()\n"""\n'
        'DOC = """\nnot\na\nprogram,\nthough it says\nimport this\n"""\n'
        'TOOL = f"""#!/usr/bin/env python3\nX = {1}\n\n\n\nprint(X)\n"""\n'
    )
    assert _python_in_strings(probe) == [1, 15]


def test_modules_stay_readable() -> None:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in sorted(PACKAGE.rglob("*.py"))
    }
    over = {f: n for f, n in sizes.items() if n > MAX_LINES and f not in OVER_SIZE}
    assert over == {}, f"modules over {MAX_LINES} lines: {over}"
