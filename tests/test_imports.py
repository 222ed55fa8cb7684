"""Imports run downward: the layers of docs/design.md, Data flow, checked on every module's source (not at runtime).

Function-level imports count too: a lazy import is still a dependency.
"""

import ast
import re
from pathlib import Path

import circuitbench

ROOT = Path(circuitbench.__file__).parent
DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"


def _rules(text: str) -> dict[str, set[str]]:
    """room -> the rooms it may import, from the table under docs/design.md's "Architecture" heading."""
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    rules: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        allowed = set(re.findall(r"`([\w.]+)`", cells[2]))
        for room in re.findall(r"`([\w.]+)`", cells[0]):
            rules[room] = {"*"} if cells[2] == "every room" else allowed
    return rules


RULES = _rules(DESIGN.read_text())


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m == "circuitbench" or m.startswith("circuitbench.")}


def _layer(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _room(module: str) -> str:
    parts = module.split(".")
    return "circuitbench" if len(parts) == 1 or parts[1] in {"load_model", "__version__"} else parts[1]


def test_the_design_table_names_every_room():
    rooms = {_layer(p) for p in ROOT.rglob("*.py")} - {"__init__", "__main__"}
    assert rooms <= set(RULES), f"rooms without a row in docs/design.md: {sorted(rooms - set(RULES))}"
    assert RULES["results"] == {"errors", "files", "validation", "protocols"}  # storage knows no algorithm
    assert "models" not in RULES["circuits"] and "runs" not in RULES["circuits"]


def test_imports_run_downward():
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        layer = _layer(path)
        if layer in {"__init__", "__main__"}:
            continue
        allowed = RULES[layer]
        for module in _imports(path):
            room = _room(module)
            if room != layer and "*" not in allowed and room not in allowed:
                problems.append(f"{path.relative_to(ROOT)} imports {module} ({layer} may import "
                                f"{', '.join(sorted(allowed)) or 'nothing'})")
    assert not problems, "\n".join(problems)


def test_nothing_in_the_library_imports_the_cli_or_the_optional_integrations():
    for path in sorted(ROOT.rglob("*.py")):
        if _layer(path) in {"cli", "integrations", "__main__"}:  # `python -m circuitbench` is the CLI
            continue
        bad = {m for m in _imports(path) if _room(m) in {"cli", "integrations"}}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_checker_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from circuitbench.circuits.metrics import score\n")
    assert "circuitbench.circuits.metrics" in _imports(bad)
    assert _room("circuitbench.circuits.metrics") not in RULES["results"]  # results may not import it


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
"""A function's lines from its `def` to its end, its docstring not counted (documentation is not size)."""


def _function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        n -= first.end_lineno - first.lineno + 1  # type: ignore[operator]
    return n


def test_no_module_is_over_400_lines_and_no_function_over_60():
    big, long = [], []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            big.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _function_lines(node) > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {_function_lines(node)} lines")
    assert not big and not long, "\n".join(["modules over 400 lines:", *big, "functions over 60 lines:", *long])


def test_the_optional_model_libraries_are_imported_only_for_their_models(tmp_path):
    """TransformerLens, nnsight and sae-lens are optional extras: loading the bundled model, splicing an SAE
    directory and resolving a non-release --sae value import none of them (nor transformers)."""
    import subprocess
    import sys

    code = """
import sys
import circuitbench
from circuitbench.models.sae import release_and_id
adapter = circuitbench.load_model("tiny-sparse", device="cpu")
assert release_and_id("someone/repo/folder") is None
assert release_and_id("gpt2-small-res-jb/blocks.8.hook_resid_pre") == ("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
print(sorted(m for m in ("transformer_lens", "nnsight", "sae_lens", "transformers") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
