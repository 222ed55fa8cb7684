"""Imports run downward: the layers of docs/design.md, Data flow, checked on every module's source (not at runtime).

Function-level imports count too: a lazy import is still a dependency.
"""

import ast
from pathlib import Path

import circuitbench

ROOT = Path(circuitbench.__file__).parent

# package (under circuitbench/) -> packages it must never import
FORBIDDEN = {
    "protocols": {"models", "tasks", "circuits", "train", "runs", "results", "cli", "integrations"},
    "corpus": {"models", "tasks", "circuits", "train", "runs", "results", "cli", "integrations"},
    "models": {"circuits", "train", "runs", "results", "cli", "integrations", "tasks"},
    "tasks": {"models", "circuits", "train", "runs", "results", "cli", "integrations"},
    "circuits": {"train", "runs", "cli", "integrations"},
    "results": {"train", "runs", "cli", "integrations"},
    "runs": {"train", "cli", "integrations"},
    "train": {"runs", "cli", "integrations"},
}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("circuitbench.")}


def _layer(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_imports_run_downward():
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        layer = _layer(path)
        for module in _imports(path):
            target = module.split(".")[1]
            if target in FORBIDDEN.get(layer, set()):
                problems.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not problems, "\n".join(problems)


def test_nothing_in_the_library_imports_the_cli_or_the_optional_integrations():
    for path in sorted(ROOT.rglob("*.py")):
        if _layer(path) in {"cli", "integrations", "__main__"}:  # `python -m circuitbench` is the CLI
            continue
        bad = {m for m in _imports(path) if m.split(".")[1] in {"cli", "integrations"}}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_checker_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from circuitbench.circuits.metrics import score\n")
    assert "circuitbench.circuits.metrics" in _imports(bad)


def test_no_run_path_module_is_over_about_400_lines():
    for pkg in ("circuits", "runs", "results"):
        for path in (ROOT / pkg).rglob("*.py"):
            n = len(path.read_text().splitlines())
            assert n <= 420, f"{path.relative_to(ROOT)} has {n} lines"


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
