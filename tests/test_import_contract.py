"""The house's import contract (docs/ARCHITECTURE.md): no study imports another study, and no module imports a private
(``_name``) of another module. Read from the source with ``ast``, so it fails on the offending line."""

from __future__ import annotations

import ast
from pathlib import Path

import transferlab

ROOT = Path(transferlab.__file__).parent


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    mod = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    pkg = mod.rsplit(".", 1)[0] if path.name != "__init__.py" else mod.removesuffix(".__init__")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            yield node.lineno, base, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, []


def _study(module: str) -> str | None:
    """The study folder a module belongs to. The layer's own modules (``studies/base.py``, the protocol, and
    ``studies/registry.py``) belong to no study: every study may import them."""
    parts = module.split(".")
    if len(parts) > 2 and parts[:2] == ["transferlab", "studies"] and (ROOT / "studies" / parts[2]).is_dir():
        return parts[2]
    return None


def test_the_protocol_imports_no_study():
    for name in ("base.py", "registry.py"):
        for line, module, _ in _imports(ROOT / "studies" / name):
            assert _study(module) is None, f"studies/{name}:{line} imports {module} (the protocol is below studies)"


def test_no_study_imports_another_study():
    bad = []
    for path in sorted((ROOT / "studies").rglob("*.py")):
        own = _study(".".join(path.relative_to(ROOT.parent).with_suffix("").parts))
        for line, module, _ in _imports(path):
            other = _study(module)
            if own and other and other != own:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {module}")
    assert not bad, "a study imports another study (move what they share down a layer):\n" + "\n".join(bad)


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        me = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        for line, module, names in _imports(path):
            if not module.startswith("transferlab"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if module != me and (private or any(p.startswith("_") and not p.startswith("__")
                                                for p in module.split("."))):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} from {module} import {', '.join(private) or '*'}")
    assert not bad, "private names imported across modules (make them public or move them):\n" + "\n".join(bad)
