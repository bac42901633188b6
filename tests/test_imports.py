"""The import contract of ``shared/DESIGN.md``, checked on the source (lazy imports too).

- One namespace: every stage is ``servewise.<stage>``; the built wheel installs only
  ``servewise``.
- The spine (``servewise`` minus its face) imports no stage. The face — ``servewise``'s
  ``__init__`` (lazy exports), ``servewise.cli`` and ``servewise.demo`` — may import any
  stage; no stage imports the face.
- Stages import each other only along the design's arrows: ``advisor → simulator``;
  ``loadtest → simulator, serving``; ``serving → profiler`` (its public model API).
- A private module (a ``_name`` in the path) is imported only from inside the package
  that holds it; the spine's private modules only from the spine.

Every ``import`` statement counts, wherever it is: module level, inside a function, under
``TYPE_CHECKING``; so do ``importlib.import_module("...")`` calls with a literal name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "servewise"

STAGES = ("profiler", "simulator", "advisor", "serving", "loadtest", "reports")
ALLOWED: dict[str, set[str]] = {
    "profiler": set(),
    "simulator": set(),
    "advisor": {"simulator"},
    "loadtest": {"simulator", "serving"},
    "serving": {"profiler"},
    "reports": set(),
}
FACE = ("servewise", "servewise.__main__", "servewise.cli", "servewise.demo")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path) -> dict[str, Path]:
    return {_module_name(p, root): p for p in (root / "servewise").rglob("*.py") if "__pycache__" not in p.parts}


def _lazy_exports(root: Path) -> dict[str, tuple[str, str]]:
    """``servewise/__init__.py``'s ``_LAZY`` table: exported name -> (module, attribute)."""
    tree = ast.parse((root / "servewise" / "__init__.py").read_text())
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and target.id == "_LAZY" and isinstance(node, ast.AnnAssign) and node.value:
            return dict(ast.literal_eval(node.value))
    return {}


def _resolve(importer: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_pkg:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path, root: Path, modules: dict[str, Path], lazy: dict[str, tuple[str, str]]) -> list[tuple[int, str]]:
    """(line, absolute module) of every first-party import in the file."""
    importer = _module_name(path, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(importer, path.name == "__init__.py", node)
            for a in node.names:
                if f"{mod}.{a.name}" in modules:
                    found.append((node.lineno, f"{mod}.{a.name}"))  # `from package import submodule`
                elif mod == "servewise" and a.name in lazy:
                    found.append((node.lineno, lazy[a.name][0]))  # a lazy export stands for its stage
                else:
                    found.append((node.lineno, mod))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return sorted({(line, m) for line, m in found if m == "servewise" or m.startswith("servewise.")})


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def _is_face(module: str) -> bool:
    return module in FACE or any(module.startswith(f + ".") for f in FACE if f != "servewise")


def _private_scope(module: str) -> str | None:
    """The package a private module belongs to (``servewise.simulator._engine`` -> ``servewise.simulator``)."""
    parts = module.split(".")
    for k, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:k])
    return None


def _violations(root: Path) -> list[str]:
    modules = _modules(root)
    lazy = _lazy_exports(root)
    bad: list[str] = []
    for name, path in sorted(modules.items()):
        where = path.relative_to(root).as_posix()
        own = _stage(name)
        for line, target in _imports(path, root, modules, lazy):
            if target not in modules:
                bad.append(f"{where}:{line}: imports {target}, which does not exist")
                continue
            theirs = _stage(target)
            if _is_face(target) and target != "servewise" and not _is_face(name):
                bad.append(f"{where}:{line}: imports the CLI layer {target}")
            if theirs is not None and theirs != own:
                if own is None and not _is_face(name):
                    bad.append(f"{where}:{line}: the spine imports the stage {target}")
                elif own is not None and theirs not in ALLOWED[own]:
                    bad.append(f"{where}:{line}: stage {own} imports stage {theirs} ({target}); not an allowed arrow")
            scope = _private_scope(target)
            if scope == "servewise":
                if own is not None:
                    bad.append(f"{where}:{line}: imports the spine's private module {target}")
            elif scope is not None and not (name == scope or name.startswith(scope + ".")):
                bad.append(f"{where}:{line}: imports {target}, private to {scope}")
    return bad


LAZY = _lazy_exports(ROOT)


def test_import_contract() -> None:
    bad = _violations(ROOT)
    assert not bad, "import contract broken:\n" + "\n".join(bad)


def test_the_checker_catches_each_rule(tmp_path: Path) -> None:
    """Each rule flags a planted violation in a copy of the tree (the checker is not vacuous)."""
    planted = {
        "servewise/config.py": "def f():\n    from servewise.simulator import simulate\n",  # spine -> stage, lazily
        "servewise/simulator/__init__.py": "import servewise.advisor\n",  # not an arrow
        "servewise/serving/__init__.py": "from servewise.profiler._models import load_model\n",  # another's private
        "servewise/reports/__init__.py": "from servewise._trace_model import Trace\n",  # the spine's private
        "servewise/advisor/__init__.py": "from servewise.service_times import x\n",  # a module that moved away
        "servewise/profiler/__init__.py": "from servewise import cli\n",  # the face
    }
    for path in _modules(ROOT).values():
        dest = tmp_path / path.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text("")
    (tmp_path / "servewise" / "__init__.py").write_text((PKG / "__init__.py").read_text())
    for rel, text in planted.items():
        (tmp_path / rel).write_text(text)
    bad = _violations(tmp_path)
    text = "\n".join(bad)
    assert "servewise/config.py:2: the spine imports the stage servewise.simulator" in text
    assert "stage simulator imports stage advisor" in text
    assert "imports servewise.profiler._models, private to servewise.profiler" in text
    assert "imports the spine's private module servewise._trace_model" in text
    assert "imports servewise.service_times, which does not exist" in text
    assert "imports the CLI layer servewise.cli" in text
    assert len(bad) == len(planted), text


def test_no_top_level_stage_packages() -> None:
    """The stages live under servewise/ only: no importable copy at the repo's top level."""
    leftovers = [s for s in (*STAGES, "pipeline") if (ROOT / s / "__init__.py").exists()]
    assert not leftovers


def test_wheel_installs_servewise_alone(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("servewise-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (top,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert zf.read(top).decode().split() == ["servewise"]
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"servewise"}
    for needed in ("servewise/py.typed", "servewise/reports/templates/page.html.j2", "servewise/data/demo_space.yaml"):
        assert needed in names


@pytest.mark.parametrize("name", sorted(LAZY))
def test_public_api_names_resolve(name: str) -> None:
    """Each lazy export of ``servewise`` is importable and is what its module defines."""
    import importlib

    import servewise

    module, attr = servewise._LAZY[name]
    assert getattr(servewise, name) is getattr(importlib.import_module(module), attr)
    assert name in servewise.__all__


def test_public_api_lists_every_export() -> None:
    import servewise

    assert sorted(servewise.__all__) == sorted(["__version__", *servewise._LAZY])
