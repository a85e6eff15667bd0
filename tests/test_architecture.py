"""The boundaries between modules, checked statically with `ast` over every file in core/ and dashboard/.

- `core` is a library: it never imports streamlit.
- `dashboard` is one client of it: it never imports torch, torchvision, timm, pytorch_grad_cam or scikit-learn.
- No module reads another module's private names (`from x import _y`, or `x._y` on an imported project module).
- No module in core/ or dashboard/ is over 500 lines.
- No import of `core` inside a function in core/ (a cycle dodged instead of a function in the wrong module).

A failure names every module that breaks the rule, and where.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "dashboard")
MAX_LINES = 500
DASHBOARD_FORBIDDEN = ("torch", "torchvision", "timm", "pytorch_grad_cam", "sklearn")



def _modules() -> dict[str, ast.Module]:
    return {str(path.relative_to(ROOT)): ast.parse(path.read_text(), filename=str(path))
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


MODULES = _modules()


def _module_name(relative: str) -> str:
    name = relative.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def _imported(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, module, statement) of every import in `tree`, wherever it is; `from a.b import c` gives module a.b."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, f"import {alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = ", ".join(alias.name for alias in node.names)
            found.append((node.lineno, node.module, f"from {node.module} import {names}"))
    return found


def _root(name: str) -> str:
    return name.split(".")[0]


def _check(rule: str, broken: dict[str, list[str]]) -> None:
    """Fail with every module that breaks `rule`, and where."""
    lines = [f"{module} breaks '{rule}': {'; '.join(where)}" for module, where in sorted(broken.items())]
    assert not lines, "\n".join(lines)


def test_core_never_imports_streamlit():
    broken = {}
    for module, tree in MODULES.items():
        if module.startswith("core/"):
            where = [f"line {line}: {text}" for line, name, text in _imported(tree) if _root(name) == "streamlit"]
            if where:
                broken[module] = where
    _check("core never imports streamlit", broken)


def test_dashboard_never_imports_the_heavy_libraries():
    broken = {}
    for module, tree in MODULES.items():
        if module.startswith("dashboard/"):
            where = [f"line {line}: {text}" for line, name, text in _imported(tree) if _root(name) in DASHBOARD_FORBIDDEN]
            if where:
                broken[module] = where
    _check(f"dashboard never imports {', '.join(DASHBOARD_FORBIDDEN)}", broken)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _project_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> project module, for every `import core.x as y`, `from core import x`, `from core.x import y`."""
    names = {_module_name(m) for m in MODULES}
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in names:
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else _root(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def test_no_module_reads_another_modules_private_names():
    broken = {}
    for module, tree in MODULES.items():
        own = _module_name(module)
        aliases = _project_aliases(tree)
        where = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and _root(node.module) in PACKAGES:
                where += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names
                          if _private(a.name) and node.module != own]
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                target = _dotted(node.value)
                resolved = _resolve(target, aliases)
                if resolved is not None and resolved != own:
                    where.append(f"line {node.lineno}: {target}.{node.attr}")
        if where:
            broken[module] = where
    _check("no module reads another module's _private names", broken)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head is not None else None
    return None


def _resolve(dotted: str | None, aliases: dict[str, str]) -> str | None:
    """The project module `dotted` names (`cams`, `core.cams`), or None when it is not a module of ours."""
    if dotted is None:
        return None
    head, _, rest = dotted.partition(".")
    if head not in aliases:
        return None
    name = f"{aliases[head]}.{rest}" if rest else aliases[head]
    return name if name in {_module_name(m) for m in MODULES} else None


def test_no_module_is_over_500_lines():
    broken = {}
    for module in MODULES:
        lines = len((ROOT / module).read_text().splitlines())
        if lines > MAX_LINES:
            broken[module] = [f"{lines} lines"]
    _check(f"at most {MAX_LINES} lines", broken)


def test_core_imports_core_at_the_top_only():
    broken = {}
    for module, tree in MODULES.items():
        if not module.startswith("core/"):
            continue
        where = []
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                where += [f"line {line} in {function.name}(): {text}" for line, name, text in _imported(function)
                          if _root(name) == "core"]
        if where:
            broken[module] = sorted(set(where), key=lambda w: int(w.split()[1]))
    _check("core imports core at the top only (no cycle dodged inside a function)", broken)


@pytest.mark.parametrize("source, rule", [
    ("import streamlit as st\n", "streamlit"),
    ("def f():\n    from core import cams\n", "function"),
    ("from core.cams import _bare\n", "private"),
    ("from core import cams\ncams._shared_pass()\n", "private"),
])
def test_the_checks_see_what_they_look_for(source, rule):
    tree = ast.parse(source)
    if rule == "streamlit":
        assert any(_root(name) == "streamlit" for _, name, _ in _imported(tree))
    elif rule == "function":
        function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
        assert any(_root(name) == "core" for _, name, _ in _imported(function))
    else:
        aliases = _project_aliases(tree)
        attributes = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _private(n.attr)]
        froms = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names if _private(a.name)]
        assert froms or any(_resolve(_dotted(a.value), aliases) == "core.cams" for a in attributes)


def _compared_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string constant an `==`, `!=`, `in` or `not in` compares with, in `tree`."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        for operator, right in zip(node.ops, node.comparators, strict=True):
            if not isinstance(operator, ast.Eq | ast.NotEq | ast.In | ast.NotIn):
                continue
            values = [node.left, right]
            if isinstance(right, ast.Tuple | ast.List | ast.Set):
                values += right.elts
            found += [(node.lineno, v.value) for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return found


def test_no_code_asks_a_backbone_its_name():
    """Knowledge about a model is data in its spec: no module compares anything with a backbone's name
    (`if name == "inception_v3"`), a torchvision builder's or a timm architecture's."""
    import timm
    from torchvision import models as tv

    from core import registry

    names = set(tv.list_models(module=tv)) | set(timm.list_models()) | set(registry.names())
    names |= {f"timm/{n}" for n in timm.list_models()}
    broken = {}
    for module, tree in MODULES.items():
        where = [f"line {line}: '{text}'" for line, text in _compared_strings(tree) if text in names]
        if where:
            broken[module] = where
    _check("no comparison with a backbone's name", broken)
    assert _compared_strings(ast.parse('if name == "inception_v3" or spec.name in ("vgg16",):\n    pass\n')) == [
        (1, "inception_v3"), (1, "vgg16")]
