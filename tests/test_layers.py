"""Layers never point up: a module imports only from its own layer or the layers below it.

Every `import` and `from ... import` in the package counts, lazy ones inside functions too (a lazy
import into a higher layer is still a dependency, only hidden)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "naics_pipeline"

# Lowest first. A top-level module or subpackage of naics_pipeline sits in exactly one layer.
LAYERS = (
    {"settings"},
    {"layout", "storage"},
    {"data"},
    {"curricula"},
    {"encoders"},
    {"training"},
    {"text"},
    {"report"},
    {"defs", "definitions"},   # the Dagster code location: defs/upstream.py builds it at run time
    {"cli", "__init__", "__main__"},
)
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _part(module: str) -> str:
    """naics_pipeline.training.loop -> training; naics_pipeline -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def internal_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every naics_pipeline module that `path` imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "naics_pipeline"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "naics_pipeline":   # from naics_pipeline import settings
                found += [(node.lineno, f"naics_pipeline.{a.name}") for a in node.names]
            elif node.module.startswith("naics_pipeline."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, "relative import"))
    return found


def upward_imports(package: Path) -> list[str]:
    bad = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent)
        own = rel.parts[1].removesuffix(".py") if len(rel.parts) > 1 else "__init__"
        if own not in RANK:
            bad.append(f"{rel}: {own!r} is in no layer (add it to LAYERS in tests/test_layers.py)")
            continue
        for line, module in internal_imports(path):
            if module == "relative import":
                bad.append(f"{rel}:{line}: a relative import (write the absolute naics_pipeline.… name)")
                continue
            target = _part(module)
            if target not in RANK:
                bad.append(f"{rel}:{line}: imports {module}, whose {target!r} is in no layer")
            elif RANK[target] > RANK[own]:
                bad.append(f"{rel}:{line}: {own} imports {module}, a higher layer ({target})")
    return bad


def test_layers_never_point_up():
    assert upward_imports(PACKAGE) == []


@pytest.mark.parametrize("line", ["from naics_pipeline.text.classify import TextClassifier",
                                  "    from naics_pipeline.training import loop",
                                  "import naics_pipeline.defs.resources"])
def test_an_upward_import_is_caught(tmp_path, line):
    """A copy of the package with one deliberate upward import, lazy or not, in the data layer."""
    for path in PACKAGE.rglob("*.py"):
        copy = tmp_path / "naics_pipeline" / path.relative_to(PACKAGE)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(path.read_text())
    bad = tmp_path / "naics_pipeline" / "data" / "graph.py"
    body = f"def _late():\n{line}\n" if line.startswith(" ") else f"{line}\n"
    bad.write_text(bad.read_text() + "\n\n" + body)
    found = upward_imports(tmp_path / "naics_pipeline")
    assert len(found) == 1 and found[0].startswith("naics_pipeline/data/graph.py:") and "a higher layer" in found[0]


def test_loading_a_stage_needs_no_training_loop():
    """Classification loads and embeds a stage through training.checkpoint: torch, not Lightning."""
    code = ("import sys, naics_pipeline.training.checkpoint, naics_pipeline.text.classify; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'lightning' or m.endswith('.loop')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout
    assert out.strip() == "[]"
