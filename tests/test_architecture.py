"""The layout of ../shared/ARCHITECTURE.md, checked: stage packages, contracts, thin pages, no private names across modules."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from carlos.config import REPO_ROOT

CARLOS = REPO_ROOT / "carlos"
STAGES = (
    "core",
    "store",
    "data",
    "files",
    "weights",
    "models",
    "search",
    "characterize",
    "review",
    "evaluate",
    "viz",
    "bench",
    "report",
    "pagemodels",
    "serving",
    "cli",
)
FLAT_ALLOWED = {"__init__.py", "__main__.py", "config.py", "errors.py"}
MAX_LINES = 450


def _python_files(*roots: Path) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        out += [root] if root.is_file() else sorted(root.rglob("*.py"))
    return [p for p in out if ".venv" not in p.parts]


def _library_files() -> list[Path]:
    return _python_files(CARLOS, REPO_ROOT / "app", REPO_ROOT / "pages", REPO_ROOT / "streamlit_app.py")


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def test_stage_packages_exist_and_say_what_they_own() -> None:
    for stage in STAGES:
        init = CARLOS / stage / "__init__.py"
        assert init.is_file(), f"carlos/{stage}/ is not a package"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"carlos/{stage}/__init__.py needs a docstring saying what the package owns"
    init = REPO_ROOT / "app" / "__init__.py"
    assert init.is_file() and ast.get_docstring(ast.parse(init.read_text()))
    assert not (REPO_ROOT / "app_support.py").exists(), "app_support.py is replaced by the app/ package"


def test_only_settings_and_entry_points_stay_flat() -> None:
    flat = {p.name for p in CARLOS.glob("*.py")}
    assert flat <= FLAT_ALLOWED, f"modules flat in carlos/: {sorted(flat - FLAT_ALLOWED)}; put them in a stage package"


def test_modules_are_small_and_documented() -> None:
    too_long, undocumented = [], []
    for path in _library_files():
        text = path.read_text()
        n = len(text.splitlines())
        if n > MAX_LINES:
            too_long.append(f"{path.relative_to(REPO_ROOT)} ({n})")
        if path.name != "__main__.py" and text.strip() and not ast.get_docstring(ast.parse(text)):
            undocumented.append(str(path.relative_to(REPO_ROOT)))
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"
    assert not undocumented, f"modules without a docstring saying what they own: {undocumented}"


def _private_definitions() -> dict[str, set[str]]:
    """Module name -> private names it defines (top-level, class members, ``self._x`` attributes)."""
    out: dict[str, set[str]] = {}
    for path in _python_files(CARLOS, REPO_ROOT / "app"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
        out[_module_name(path)] = {n for n in names if n.startswith("_") and not n.startswith("__")}
    return out


def test_no_private_name_crosses_a_module_boundary() -> None:
    defined = _private_definitions()
    defined_anywhere: dict[str, set[str]] = {}
    for mod, names in defined.items():
        for n in names:
            defined_anywhere.setdefault(n, set()).add(mod)
    problems = []
    for path in _python_files(CARLOS, REPO_ROOT / "app", REPO_ROOT / "pages", REPO_ROOT / "tests", REPO_ROOT / "scripts"):
        here = _module_name(path)
        own = defined.get(here, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("carlos", "app"):
                problems += [
                    f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if path.is_relative_to(REPO_ROOT / "tests"):
                    continue  # white-box tests may look inside the object they test
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                owners = defined_anywhere.get(node.attr, set()) - {here}
                if owners and node.attr not in own:
                    problems.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} reaches {node.attr} of {sorted(owners)}")
    assert not problems, "private names used across modules (make them public):\n" + "\n".join(problems)


def _imports(path: Path) -> set[str]:
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
            mods.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    return mods


@pytest.mark.parametrize("page", sorted((REPO_ROOT / "pages").glob("*.py")), ids=lambda p: p.name)
def test_pages_are_thin(page: Path) -> None:
    """Pages call app/ and service packages: never the store, never SQL, never a database driver."""
    imported = _imports(page)
    bad = sorted(
        m for m in imported if m == "carlos.store" or m.startswith("carlos.store.") or m.split(".")[0] in ("duckdb", "app_support")
    )
    assert not bad, f"{page.name} imports {bad}"
    text = page.read_text()
    assert not re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\s+.*\b(FROM|INTO|SET)\b", text), f"{page.name} contains SQL"
    assert "store." not in text, f"{page.name} calls the store; go through an app/ or carlos service"


def test_sql_lives_in_the_store_package() -> None:
    sql = re.compile(r"""["'](SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE TABLE)\b""")
    outside = [
        str(p.relative_to(REPO_ROOT)) for p in _library_files() if not p.is_relative_to(CARLOS / "store") and sql.search(p.read_text())
    ]
    assert not outside, f"SQL outside carlos/store: {outside}"


def test_import_contracts_hold() -> None:
    """``lint-imports`` (import-linter) over .importlinter: layers, the pure core, no UI in the library, no cycles."""
    exe = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(exe), "--no-logo"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "broken" not in res.stdout.split("Contracts:")[-1].lower().replace("0 broken", "")


def test_readme_module_map_matches_the_tree() -> None:
    """Every package and module of carlos/ appears in the README's module map, and nothing else does."""
    readme = (REPO_ROOT / "README.md").read_text()
    m = re.search(r"<!-- module-map -->\n```text\n(.*?)```", readme, re.S)
    assert m, "README.md needs the module map between <!-- module-map --> and a ```text block"
    listed: dict[str, set[str]] = {}
    for line in m.group(1).splitlines():
        hit = re.match(r"\s*(\w+)/\s+(.*)$", line)
        if hit:
            listed[hit.group(1)] = set(re.findall(r"\b(\w+)\.py\b", hit.group(2)))
    for stage in STAGES:
        assert stage in listed, f"README module map lacks carlos/{stage}/"
        actual = {p.stem for p in (CARLOS / stage).glob("*.py") if p.name != "__init__.py"}
        assert listed[stage] == actual, f"carlos/{stage}/: README lists {sorted(listed[stage])}, the tree has {sorted(actual)}"
    if "app" in listed:
        actual = {p.stem for p in (REPO_ROOT / "app").glob("*.py") if p.name != "__init__.py"}
        assert listed["app"] == actual, f"app/: README lists {sorted(listed['app'])}, the tree has {sorted(actual)}"


def test_the_store_type_checks_without_ignores() -> None:
    """Composition, not mixins: mypy accepts carlos/store with no ``type: ignore`` anywhere in it."""
    ignores = [str(p.relative_to(REPO_ROOT)) for p in (CARLOS / "store").glob("*.py") if "type: ignore" in p.read_text()]
    assert not ignores, f"type: ignore in {ignores}"
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent", "--no-incremental", "carlos/store"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-4000:]
