"""Which modules the project's packages import, read from their source with ``ast``.

Every import counts, including those inside functions (lazy imports run too, just later). Used by
test_install.py to hold the wall between the vehicle runtime and the desk / training side, and to
compare package.xml and the requirements files with what the code really imports.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Where each first-party top-level package lives.
PACKAGES = {"spartan_ros": REPO / "spartan_ros",
            "spartan_train": REPO / "training" / "spartan_train"}


def module_file(name: str) -> Path | None:
    """The source file of a first-party module or package, else None."""
    top, *rest = name.split(".")
    if top not in PACKAGES:
        return None
    path = PACKAGES[top].joinpath(*rest)
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def imports_of_file(path: Path, package: str = "") -> set[str]:
    """Dotted names ``path`` imports (with their parent packages), relative imports resolved
    against ``package``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            # `from pkg import module` imports pkg.module when that is a module
            names |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")}
    return {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 2)}


def imports_of_module(name: str) -> set[str]:
    path = module_file(name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imports_of_file(path, package)


def closure(start: Iterable[str]) -> dict[str, str | None]:
    """Every module reachable from ``start``: {module: the first-party module that imports it}."""
    parent: dict[str, str | None] = dict.fromkeys(start)
    todo = list(parent)
    while todo:
        name = todo.pop()
        if module_file(name) is None:
            continue
        for dep in sorted(imports_of_module(name)):
            if dep not in parent:
                parent[dep] = name
                todo.append(dep)
    return parent


def chain(parent: dict[str, str | None], name: str) -> str:
    """`a <- b <- c`: who pulled ``name`` in."""
    links = [name]
    while (up := parent.get(links[-1])) is not None:
        links.append(up)
    return " <- ".join(links)


def package_modules(package: str) -> list[str]:
    root = PACKAGES[package]
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out.append(".".join(parts))
    return out


def external(modules: Iterable[str]) -> set[str]:
    """Top-level names of the non-first-party, non-stdlib modules among ``modules``."""
    tops = {m.split(".")[0] for m in modules}
    return {t for t in tops if t not in PACKAGES and t not in sys.stdlib_module_names
            and t != "__future__"}
