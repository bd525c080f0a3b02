"""The package's import layers, and the names that notebooks, tests, benchmarks and scripts take from it.

Every check is static (``ast``; nothing is imported):

- every module of ``heartseg_utils/`` has a layer in :data:`LAYERS`, so a new module forces a decision;
- the import graph has no cycle: module-level and function-local imports, relative imports and ``importlib``
  string look-ups (``import_module``, ``find_spec``) all count;
- every import points to a strictly lower layer, a layer-0 module imports no package module at all, and no
  module imports one of :data:`NOT_IMPORTED`;
- every name taken from the package (``from heartseg_utils.x import y``, ``alias.y`` where ``alias`` is a package
  module, monkeypatch and mock targets) is a top-level definition of that module.

The self-tests at the end run the same functions on tiny packages written to ``tmp_path``, so the checker is shown
to fail where it should.
"""

from __future__ import annotations

import ast
import functools
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Each module's layer. An import points to a strictly lower layer; layer 0 imports no package module.
# A name listed here without a file is ignored (a module still to be written); a file not listed fails.
LAYERS: dict[str, int] = {
    "__init__": 0,  # imports nothing: `import heartseg_utils` has no side effects
    # layer 0: no package imports
    "synthetic": 0,
    "dicom": 0,
    "viz": 0,
    "surface": 0,
    "distributed": 0,
    "models": 0,
    "transforms": 0,
    "metrics": 0,
    "precision": 0,
    "recipe": 0,
    "runs": 0,
    "scans": 0,  # one check of a scan file: validate_dataset and predict
    "cli": 0,  # the command-line boundary: one line per failure
    "splits": 0,  # train/validation, folds, holdout
    "fingerprints": 0,  # the dataset fingerprint: numpy and nibabel only
    # layer 1
    "data": 1,
    "qc": 1,  # the quality-control signals: imports metrics and viz only
    "config": 1,
    "curves": 1,  # TensorBoard curves of a run (log_dir): imports viz
    "architecture": 1,  # the planned network and its activation memory: imports models
    # layer 2
    "plan": 2,
    "inference": 2,
    "qc_run": 2,  # a run's qc.json: fitted by training, applied by predict
    "shifts": 2,  # test shifts (MR artefacts, failures) of an MSD folder: imports data
    # layer 3
    "train": 3,
    "predict": 3,
    "bundle": 3,  # the MONAI bundle writer (export --format bundle)
    "convert": 3,
    "debug": 3,  # notebook 06's teaching module: it may import the package, nothing imports it
    # layer 4
    "export": 4,  # its --format bundle calls bundle (layer 3)
    "crossval": 4,
}
NOT_IMPORTED: dict[str, str] = {"debug": "notebook 06's teaching module: no package module imports it"}

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "heartseg_utils"
# where the names check looks for uses of the package (the package's own modules included)
SOURCE_GLOBS = ("notebooks/*.ipynb", "tests/*.py", "benchmarks/*.py", "scripts/*.py", "heartseg_utils/*.py")
# string look-ups of a module: these count as imports in the graph
DYNAMIC_IMPORTS = frozenset({"import_module", "find_spec", "__import__", "importorskip"})
# string look-ups that return the module itself, so `alias = import_module("heartseg_utils.x")` binds an alias
MODULE_RETURNING = frozenset({"import_module", "importorskip"})
MODULE_ATTRIBUTES = frozenset(
    {"__name__", "__file__", "__doc__", "__spec__", "__loader__", "__package__", "__path__", "__dict__", "__cached__"}
)

Where = Callable[[int], str]  # line number -> "file:line" (or "notebook, cell n, line m")


@dataclass(frozen=True)
class Edge:
    """One import site: module ``src`` imports module ``dst`` at ``path:line``."""

    src: str
    dst: str
    path: Path
    line: int


@dataclass
class Scan:
    """What one scan of the sources found: the problems (each with its place) and how many uses of each kind
    (``"notebooks:import"``, ``"tests:attribute"``, ...) it checked."""

    problems: list[str] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)


# --------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------
def shown(path: Path) -> str:
    """The path relative to the repository where it lies inside it (absolute otherwise, e.g. under tmp_path)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def module_files(package_dir: Path) -> dict[str, Path]:
    """The package's modules by name, ``__init__`` included: one ``*.py`` file each."""
    return {path.stem: path for path in sorted(package_dir.glob("*.py"))}


def parse(path: Path) -> ast.Module:
    """The syntax tree of one Python file."""
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def cell_code(source: str) -> str | None:
    """A notebook code cell as Python: each IPython line (``%magic``, ``!shell``) becomes ``pass`` at its
    indentation, so line numbers stay; None for a cell magic (``%%bash``) cell."""
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        return None
    return "\n".join(
        line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
        for line in lines
    )


def notebook_cells(path: Path) -> list[tuple[ast.Module, Where]]:
    """The syntax tree of each code cell that parses, with its place; cells count from 1, all cell types included."""
    cells = []
    for number, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"], start=1):
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        code = cell_code(source) if cell["cell_type"] == "code" else None
        try:
            tree = ast.parse(code) if code is not None else None
        except SyntaxError:
            tree = None  # not Python (e.g. `x = !ls`): nothing to check in it
        if tree is not None:
            cells.append((tree, lambda line, n=number: f"{shown(path)}, cell {n}, line {line}"))
    return cells


def sources(path: Path) -> list[tuple[ast.Module, Where]]:
    """The syntax trees of one file (one per code cell for a notebook), each with a function naming its places."""
    if path.suffix == ".ipynb":
        return notebook_cells(path)
    return [(parse(path), lambda line: f"{shown(path)}:{line}")]


# --------------------------------------------------------------------------------------------------
# Which package module an import names
# --------------------------------------------------------------------------------------------------
def package_module(dotted: str | None, package: str) -> str | None:
    """The package module a dotted path names: ``"train"`` for ``heartseg_utils.train``, ``""`` for the package
    itself, None for anything outside it."""
    if not dotted:
        return None
    head, _, rest = dotted.partition(".")
    return rest.partition(".")[0] if head == package else None


def from_base(node: ast.ImportFrom, package: str, in_package: bool) -> str | None:
    """The absolute module of ``from X import ...``; a relative one resolves inside the package only."""
    if node.level == 0:
        return node.module
    if not in_package or node.level > 1:
        return None
    return package + ("." + node.module if node.module else "")


def last_name(node: ast.AST) -> str | None:
    """The last name of a dotted expression: ``patch`` for ``mock.patch`` and for ``patch``."""
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def call_name(node: ast.Call) -> str | None:
    """The called function's own name: ``import_module`` for ``importlib.import_module(...)``."""
    return last_name(node.func)


def string_arg(node: ast.Call, index: int, keyword: str = "") -> str | None:
    """A call's argument (positional ``index`` or ``keyword``) when it is a string literal."""
    args = [*node.args[index : index + 1], *(k.value for k in node.keywords if keyword and k.arg == keyword)]
    if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
        return args[0].value
    return None


def dynamic_import(node: ast.Call, package: str) -> str | None:
    """The package module a string look-up names: ``importlib.import_module("heartseg_utils.plan")``,
    ``importlib.util.find_spec(...)``, ``pytest.importorskip(...)`` or ``import_module(".plan", "heartseg_utils")``."""
    if call_name(node) not in DYNAMIC_IMPORTS:
        return None
    dotted = string_arg(node, 0, "name")
    if dotted is not None and dotted.startswith(".") and not dotted.startswith(".."):
        anchor = string_arg(node, 1, "package")
        dotted = anchor + dotted if anchor else None
    return package_module(dotted, package)


def imports_of(node: ast.AST, package: str, known: set[str]) -> list[str]:
    """The package modules one node of a package module imports (``"__init__"`` for a name taken from the package
    itself); [] for any other node."""
    if isinstance(node, ast.Import):
        found = [package_module(alias.name, package) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = package_module(from_base(node, package, in_package=True), package)
        if base == "":  # from heartseg_utils import x, y: each a module, else a name from __init__
            found = [alias.name if alias.name in known else "" for alias in node.names]
        else:
            found = [base]
    elif isinstance(node, ast.Call):
        found = [dynamic_import(node, package)]
    else:
        found = []
    return [module or "__init__" for module in found if module is not None]


# --------------------------------------------------------------------------------------------------
# The import graph: cycles and layers
# --------------------------------------------------------------------------------------------------
def import_graph(package_dir: Path, declared: Iterable[str] = ()) -> list[Edge]:
    """Every import between the package's modules, one edge per import site, function-local ones included.

    Args:
        package_dir: the package folder; its name is the package's import name.
        declared: module names that count as package modules even without a file yet.
    """
    files = module_files(package_dir)
    known = set(files) | set(declared)
    return [
        Edge(name, dst, path, node.lineno)
        for name, path in files.items()
        for node in ast.walk(parse(path))
        for dst in imports_of(node, package_dir.name, known)
    ]


def import_sites(edges: Iterable[Edge]) -> dict[tuple[str, str], list[str]]:
    """``(src, dst) -> ["file:line", ...]``, each list in line order."""
    sites: dict[tuple[str, str], list[Edge]] = defaultdict(list)
    for edge in edges:
        sites[edge.src, edge.dst].append(edge)
    return {
        pair: [f"{shown(e.path)}:{e.line}" for e in sorted(set(found), key=lambda e: e.line)]
        for pair, found in sites.items()
    }


def find_cycles(edges: Iterable[Edge], limit: int = 100) -> list[list[str]]:
    """The graph's elementary cycles (at most ``limit``), each as ``[a, b, ..., a]`` starting at its smallest name.

    A simple DFS from each module ``start``, in sorted order, through modules after ``start`` only, records each
    path that leads back to ``start``: every cycle is found once, from its smallest member.
    """
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        graph[edge.src].add(edge.dst)
    cycles: list[list[str]] = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph[path[-1]]):
            if len(cycles) >= limit:
                return
            if nxt == path[0]:
                cycles.append([*path, nxt])
            elif nxt > path[0] and nxt not in path:
                walk([*path, nxt])

    for start in sorted(graph):
        walk([start])
    return cycles


def format_cycle(cycle: list[str], sites: dict[tuple[str, str], list[str]]) -> str:
    """``a -> b -> a`` and, below it, the file:line of each edge's imports."""
    lines = [" -> ".join(cycle)]
    lines += [f"    {a} -> {b}: {', '.join(sites[a, b])}" for a, b in zip(cycle, cycle[1:])]
    return "\n".join(lines)


def unlisted_modules(package_dir: Path, layers: dict[str, int]) -> list[str]:
    """The package's module files that ``layers`` gives no layer."""
    return [name for name in module_files(package_dir) if name not in layers]


def layer_violations(edges: Iterable[Edge], layers: dict[str, int], not_imported: dict[str, str]) -> list[str]:
    """One line per module pair whose imports break the layer order, with both layers and every file:line.

    Rules: a layer-0 module imports no package module; any other module imports strictly lower layers only; no
    module imports one of ``not_imported``. An importing module missing from ``layers`` is left to
    :func:`unlisted_modules`; an imported one missing there is reported.
    """
    problems = []
    for (src, dst), at in sorted(import_sites(edges).items()):
        if src not in layers:
            continue
        where = ", ".join(at)
        if dst not in layers:
            problems.append(f"{src} (layer {layers[src]}) imports {dst} (no layer in LAYERS) at {where}")
            continue
        reasons = []
        if layers[src] == 0:
            reasons.append("a layer-0 module imports no package module")
        elif layers[dst] >= layers[src]:
            reasons.append("an import must point to a strictly lower layer")
        if dst in not_imported:
            reasons.append(f"nothing may import {dst} ({not_imported[dst]})")
        if reasons:
            head = f"{src} (layer {layers[src]}) imports {dst} (layer {layers[dst]}) at {where}"
            problems.append(f"{head}: {'; '.join(reasons)}")
    return problems


# --------------------------------------------------------------------------------------------------
# The names each module defines, and the names the sources take from them
# --------------------------------------------------------------------------------------------------
def direct_bindings(node: ast.AST) -> set[str]:
    """The names one statement (or except clause) binds itself, not counting the blocks inside it."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {"*" if a.name == "*" else a.asname or a.name.partition(".")[0] for a in node.names}
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.ExceptHandler):
        return {node.name} if node.name else set()
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor):
        targets = [node.target]
    elif isinstance(node, ast.With | ast.AsyncWith):
        targets = [item.optional_vars for item in node.items if item.optional_vars]
    else:
        targets = []
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def top_level_names(tree: ast.Module) -> set[str]:
    """The names a module defines at its top level: defs, classes, assignments, imports, also inside top-level
    ``if``/``try``/``with``/``for`` blocks, and ``global`` names; ``"*"`` when any name may exist (a star import or
    a module ``__getattr__``)."""
    names = {name for node in ast.walk(tree) if isinstance(node, ast.Global) for name in node.names}
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        names |= direct_bindings(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for block in ("body", "orelse", "finalbody", "handlers", "cases"):
                pending.extend(getattr(node, block, []))
    return names | {"*"} if "__getattr__" in names else names


def module_definitions(package_dir: Path) -> dict[str, set[str]]:
    """``module -> the names it defines at top level`` for every module file of the package."""
    return {name: top_level_names(parse(path)) for name, path in module_files(package_dir).items()}


def package_rebindings(package_dir: Path) -> dict[str, set[str]]:
    """``module -> the names it only imports from another package module`` (a name has one home: its definer).

    Importing ``TrainConfig`` from ``train`` works because train imports it, but its home is ``config``; such
    names count for patch targets (patching the reference a module uses) and for nothing else.
    """
    files, out = module_files(package_dir), {}
    for name, path in files.items():
        found: set[str] = set()
        for node in parse(path).body:
            if isinstance(node, ast.ImportFrom):
                base = package_module(from_base(node, package_dir.name, True), package_dir.name)
                found |= {a.asname or a.name for a in node.names} if base in files else set()
        out[name] = found
    return out


def local_names(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """The names local to one function: its arguments and what its body binds (nested scopes not entered),
    less its ``global``/``nonlocal`` names."""
    args = node.args
    names = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg] if a}
    declared: set[str] = set()
    pending: list[ast.AST] = list(node.body) if isinstance(node.body, list) else [node.body]
    while pending:
        child = pending.pop()
        if isinstance(child, ast.Global | ast.Nonlocal):
            declared.update(child.names)
        elif isinstance(child, ast.Name) and not isinstance(child.ctx, ast.Load):
            names.add(child.id)
        names |= direct_bindings(child) - {"*"}
        scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.comprehension)
        if not isinstance(child, scopes):
            pending.extend(ast.iter_child_nodes(child))
    return names - declared


class NameChecker(ast.NodeVisitor):
    """Checks every name one source takes from the package, statement by statement and scope by scope.

    ``env`` maps each name in scope that is bound to the package (``""``) or to one of its modules (the module's
    name); a name rebound to anything else leaves it, and a function's own locals shadow the enclosing ones.
    """

    def __init__(self, package: str, defs: dict[str, set[str]], scan: Scan, group: str, in_package: bool) -> None:
        self.package, self.defs, self.scan, self.group, self.in_package = package, defs, scan, group, in_package
        self.env: dict[str, str] = {}
        self.where: Where = str
        self.rebound: dict[str, set[str]] = {}

    # ---- reporting -----------------------------------------------------------------------------
    def qualified(self, module: str) -> str:
        """``heartseg_utils.train`` for ``"train"``, ``heartseg_utils`` for ``""``."""
        return f"{self.package}.{module}" if module else self.package

    def defines(self, module: str, name: str) -> bool:
        """Whether ``module`` (``""``: the package) has ``name`` at top level (a submodule, for the package)."""
        if module == "" and name in self.defs and name != "__init__":
            return True
        names = self.defs.get(module or "__init__", set())
        return name in names or "*" in names or name in MODULE_ATTRIBUTES

    def check(self, node: ast.AST, module: str, name: str, kind: str, text: str) -> None:
        """Count one use of ``module.name`` and report it, as ``text``, when the module lacks the name or only
        imports it from another package module (except as a patch target)."""
        self.scan.checked[f"{self.group}:{kind}"] += 1
        if not self.defines(module, name):
            what = "module or top-level name" if module == "" else "top-level name"
            self.report(node, f"{text}: {self.qualified(module)} has no {what} {name!r}")
        elif kind != "patch" and name in self.rebound.get(module, set()):
            self.report(node, f"{text}: {self.qualified(module)} only imports {name!r}; import it from its home")

    def module_exists(self, node: ast.AST, module: str, text: str) -> bool:
        """Whether the package has ``module``; reports ``text`` when it does not."""
        if module == "" or (module in self.defs and module != "__init__"):
            return True
        self.report(node, f"{text}: there is no module {self.qualified(module)}")
        return False

    def report(self, node: ast.AST, message: str) -> None:
        """Record one problem at the node's place."""
        self.scan.problems.append(f"{self.where(getattr(node, 'lineno', 0))}: {message}")

    # ---- imports -------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            bound = alias.asname or alias.name.partition(".")[0]
            module = package_module(alias.name, self.package)
            self.env.pop(bound, None)
            if module is None:
                continue
            self.scan.checked[f"{self.group}:import"] += 1
            exists = self.module_exists(node, module, f"import {alias.name}")
            if not alias.asname:
                self.env[bound] = ""  # `import heartseg_utils.x` binds the package
            elif exists:
                self.env[bound] = module

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = from_base(node, self.package, self.in_package)
        module = package_module(base, self.package)
        for alias in node.names:
            self.env.pop(alias.asname or alias.name, None)
        if module is None or not self.module_exists(node, module, f"from {base} import ..."):
            return
        for alias in node.names:
            if alias.name == "*":
                continue
            self.check(node, module, alias.name, "import", f"from {base} import {alias.name}")
            if module == "" and alias.name in self.defs and alias.name != "__init__":
                self.env[alias.asname or alias.name] = alias.name

    # ---- uses ----------------------------------------------------------------------------------
    def resolve(self, node: ast.AST) -> str | None:
        """The package (``""``) or module an expression names: an alias in scope, or ``heartseg_utils.train``."""
        if isinstance(node, ast.Name):
            return self.env.get(node.id)
        if isinstance(node, ast.Attribute) and self.resolve(node.value) == "" and node.attr in self.defs:
            return node.attr if node.attr != "__init__" else None
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        module = self.resolve(node.value)
        if module is not None and isinstance(node.ctx, ast.Load):
            self.check(node, module, node.attr, "attribute", ast.unparse(node))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        self.check_patch(node)
        self.generic_visit(node)

    def check_patch(self, node: ast.Call) -> None:
        """``monkeypatch.setattr("heartseg_utils.x.y", v)``, ``monkeypatch.setattr(alias, "y", v)``, ``delattr``,
        ``mock.patch("heartseg_utils.x.y")`` and ``mock.patch.object(alias, "y")``: the target must exist (unless
        ``raising=False`` or ``create=True`` says it need not)."""
        name, func = call_name(node), node.func
        is_object = name == "object" and isinstance(func, ast.Attribute) and last_name(func.value) == "patch"
        if name not in {"setattr", "delattr", "patch"} and not is_object:
            return
        if name in {"setattr", "delattr"} and not isinstance(func, ast.Attribute):
            return  # the builtin setattr(obj, "name", value)
        optional = {("raising", False), ("create", True)}
        if any((k.arg, getattr(k.value, "value", None)) in optional for k in node.keywords):
            return
        target = string_arg(node, 0)
        if target is not None and not is_object:
            parts = target.split(".")
            module = package_module(target, self.package)
            if module and len(parts) > 2 and self.module_exists(node, module, f"{name}({target!r})"):
                self.check(node, module, parts[2], "patch", f"{name}({target!r})")
        elif node.args and (module := self.resolve(node.args[0])) is not None:
            attribute = string_arg(node, 1)
            if attribute is not None:
                self.check(node, module, attribute, "patch", f"{name}({ast.unparse(node.args[0])}, {attribute!r})")

    # ---- bindings and scopes -------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load):
            self.env.pop(node.id, None)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)
        module = dynamic_import(node.value, self.package) if isinstance(node.value, ast.Call) else None
        if module is not None and call_name(node.value) in MODULE_RETURNING and module in self.defs:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.env[target.id] = module

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        for child in (node.value, node.annotation, node.target):
            if child is not None:
                self.visit(child)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for statement in [*node.body, *node.orelse]:
            self.visit(statement)

    visit_AsyncFor = visit_For

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.env.pop(node.name, None)
        self.generic_visit(node)

    def in_scope(self, body: Iterable[ast.AST], shadowed: set[str]) -> None:
        """Visit ``body`` as a new scope: the enclosing aliases less ``shadowed``; the enclosing scope is restored."""
        outer = self.env
        self.env = {name: module for name, module in outer.items() if name not in shadowed}
        for child in body:
            self.visit(child)
        self.env = outer

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        args = node.args
        annotations = [
            a.annotation for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg] if a
        ]
        for outer in [*node.decorator_list, *args.defaults, *args.kw_defaults, *annotations, node.returns]:
            if outer is not None:
                self.visit(outer)
        self.in_scope(node.body, local_names(node))
        self.env.pop(node.name, None)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for outer in [*node.args.defaults, *node.args.kw_defaults]:
            if outer is not None:
                self.visit(outer)
        self.in_scope([node.body], local_names(node))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for outer in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(outer)
        self.in_scope(node.body, set())
        self.env.pop(node.name, None)

    def comprehension_scope(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        """A comprehension is its own scope: its loop variables shadow the enclosing aliases."""
        targets = {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        self.in_scope([child for child in ast.iter_child_nodes(node)], targets)

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = comprehension_scope


def check_names(root: Path, package_dir: Path, globs: Iterable[str] = SOURCE_GLOBS) -> Scan:
    """Check every name the sources under ``root`` matching ``globs`` take from the package in ``package_dir``.

    Args:
        root: the repository (or a test's tmp_path) the globs are relative to.
        package_dir: the package folder; its modules are read with ``ast``, never imported.
        globs: the source files: ``*.py`` and notebooks (``*.ipynb``, whose cells share one namespace).

    Returns:
        the problems found and the counts of checked uses, by folder (the glob's first part) and kind.
    """
    defs, rebound = module_definitions(package_dir), package_rebindings(package_dir)
    scan = Scan()
    for pattern in globs:
        for path in sorted(root.glob(pattern)):
            in_package = path.parent.resolve() == package_dir.resolve()
            checker = NameChecker(package_dir.name, defs, scan, pattern.split("/")[0], in_package)
            checker.rebound = rebound
            for tree, where in sources(path):
                checker.where = where
                checker.visit(tree)
    return scan


# --------------------------------------------------------------------------------------------------
# The checks on this repository
# --------------------------------------------------------------------------------------------------
@functools.cache
def repo_graph() -> tuple[Edge, ...]:
    """The package's import graph (read once per test session)."""
    return tuple(import_graph(PACKAGE_DIR, LAYERS))


@functools.cache
def repo_scan() -> Scan:
    """The names check over the repository's notebooks, tests, benchmarks, scripts and package."""
    return check_names(ROOT, PACKAGE_DIR)


def test_every_module_has_a_layer() -> None:
    """A new module forces a decision: LAYERS gives every module file a layer."""
    unlisted = unlisted_modules(PACKAGE_DIR, LAYERS)
    assert not unlisted, f"heartseg_utils modules with no layer in tests/test_layers.py's LAYERS: {unlisted}"


def test_the_package_has_no_import_cycle() -> None:
    """No import cycle, function-local imports and importlib look-ups included; each edge says where it is."""
    edges = repo_graph()
    cycles = find_cycles(edges)
    if cycles:
        sites = import_sites(edges)
        listing = "\n".join(format_cycle(cycle, sites) for cycle in cycles)
        pytest.fail(f"{len(cycles)} import cycle(s) (function-local and importlib imports count):\n{listing}", False)


def test_imports_point_to_a_lower_layer() -> None:
    """Imports point down the layers; layer 0 imports no package module; nothing imports NOT_IMPORTED."""
    problems = layer_violations(repo_graph(), LAYERS, NOT_IMPORTED)
    if problems:
        pytest.fail(f"{len(problems)} import(s) against the layer order:\n" + "\n".join(problems), False)


def test_names_taken_from_the_package_exist() -> None:
    """Every name notebooks, tests, benchmarks, scripts and the package take from a module is defined there."""
    problems = repo_scan().problems
    if problems:
        pytest.fail(f"{len(problems)} name(s) the package does not define:\n" + "\n".join(problems), False)


def test_the_scans_found_imports() -> None:
    """An empty scan (a wrong folder, a parser that skips everything) must not pass the checks above."""
    edges = repo_graph()
    assert len(edges) >= 10 and {e.src for e in edges} >= {"train", "crossval"}, edges
    checked = repo_scan().checked
    for kind in ("notebooks:import", "notebooks:attribute", "tests:import", "tests:attribute", "tests:patch"):
        assert checked[kind] > 0, f"no {kind} checked: {dict(checked)}"
    assert checked["benchmarks:import"] > 0 and checked["heartseg_utils:import"] > 0, dict(checked)


# --------------------------------------------------------------------------------------------------
# Self-tests: the checker fails where it should
# --------------------------------------------------------------------------------------------------
def write_package(root: Path, modules: dict[str, str]) -> Path:
    """A package ``heartseg_utils`` under ``root``: ``{module name: file text}``."""
    package = root / "heartseg_utils"
    package.mkdir(parents=True)
    for name, text in modules.items():
        (package / f"{name}.py").write_text(text)
    return package


def test_self_check_finds_a_cycle_and_upward_imports(tmp_path: Path) -> None:
    """On a tiny package: every kind of import is an edge; the cycle, the upward imports and a stray module fail."""
    package = write_package(
        tmp_path,
        {
            "__init__": "",
            "low": "def f():\n    from heartseg_utils import mid\n",  # layer 0 imports a module (upward, too)
            "mid": "from heartseg_utils.high import thing\n",  # upward
            "high": "import importlib\n\n\ndef g():\n    return importlib.util.find_spec('heartseg_utils.mid')\n",
            "top": "from . import mid\nimport heartseg_utils.teach as t\n",  # relative import; imports `teach`
            "teach": "import heartseg_utils\n",  # -> __init__, allowed from a higher layer
            "stray": "",
        },
    )
    layers = {"__init__": 0, "low": 0, "mid": 1, "high": 2, "teach": 2, "top": 3, "ghost": 1}
    edges = import_graph(package, layers)
    assert {(e.src, e.dst, e.line) for e in edges} == {
        ("low", "mid", 2),
        ("mid", "high", 1),
        ("high", "mid", 5),
        ("top", "mid", 1),
        ("top", "teach", 2),
        ("teach", "__init__", 1),
    }
    cycles = find_cycles(edges)
    assert cycles == [["high", "mid", "high"]]
    text = format_cycle(cycles[0], import_sites(edges))
    assert text.splitlines()[0] == "high -> mid -> high"
    assert f"high -> mid: {package / 'high.py'}:5" in text and f"mid -> high: {package / 'mid.py'}:1" in text
    problems = layer_violations(edges, layers, {"teach": "a teaching module"})
    assert problems == [
        f"low (layer 0) imports mid (layer 1) at {package / 'low.py'}:2: a layer-0 module imports no package module",
        f"mid (layer 1) imports high (layer 2) at {package / 'mid.py'}:1: an import must point to a strictly lower "
        "layer",
        f"top (layer 3) imports teach (layer 2) at {package / 'top.py'}:2: nothing may import teach (a teaching "
        "module)",
    ]
    assert unlisted_modules(package, layers) == ["stray"]  # and "ghost", listed with no file, is ignored


def test_self_check_finds_missing_names(tmp_path: Path) -> None:
    """On a tiny package: each missing name is reported with its place; shadowed aliases and magics are not."""
    write_package(
        tmp_path,
        {
            "__init__": "__version__ = '0'\n",
            "m": "from os import path as p\nX: int = 1\nif p:\n    Y = 2\n\n\ndef f():\n    global Z\n\n\nclass C:\n"
            "    pass\n",
        },
    )
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "from heartseg_utils.m import f, g, C, p, Y, Z\n"  # 1: g missing
        "from heartseg_utils import m as mm, nope, __version__\n"  # 2: nope missing
        "import heartseg_utils.m\n"
        "import heartseg_utils.gone\n"  # 4: no such module
        "mm.X, mm.missing, heartseg_utils.m.C, heartseg_utils.m.lost, heartseg_utils.absent\n"  # 5: three missing
        "[mm.nothing for mm in [1]]\n"  # a comprehension's own mm
        "def test(monkeypatch, mm=None):\n"  # mm is a local here: not the module
        "    mm.anything\n"
        "    monkeypatch.setattr('heartseg_utils.m.gone', 1)\n"  # 9: missing
        "    monkeypatch.setattr(heartseg_utils.m, 'X', 1)\n"
        "    monkeypatch.setattr(heartseg_utils.m, 'new', 1, raising=False)\n"
        "    monkeypatch.setattr(mm, 'lambda_arg', 1)\n"
        "\n"
        "mm = None\n"
        "mm.after_rebinding\n"
    )
    notebook = {
        "cells": [
            {"cell_type": "markdown", "source": "from heartseg_utils import not_code"},
            {"cell_type": "code", "source": ["%matplotlib inline\n", "from heartseg_utils import m\n"]},
            {"cell_type": "code", "source": "x = !ls\nm.skipped_cell"},
            {"cell_type": "code", "source": "m.f()\nm.nothing"},  # cell 4, line 2: missing
        ]
    }
    (tmp_path / "nb.ipynb").write_text(json.dumps(notebook))
    scan = check_names(tmp_path, tmp_path / "heartseg_utils", ["tests/*.py", "*.ipynb"])
    test_a, nb = tmp_path / "tests" / "test_a.py", tmp_path / "nb.ipynb"
    assert scan.problems == [
        f"{test_a}:1: from heartseg_utils.m import g: heartseg_utils.m has no top-level name 'g'",
        f"{test_a}:2: from heartseg_utils import nope: heartseg_utils has no module or top-level name 'nope'",
        f"{test_a}:4: import heartseg_utils.gone: there is no module heartseg_utils.gone",
        f"{test_a}:5: mm.missing: heartseg_utils.m has no top-level name 'missing'",
        f"{test_a}:5: heartseg_utils.m.lost: heartseg_utils.m has no top-level name 'lost'",
        f"{test_a}:5: heartseg_utils.absent: heartseg_utils has no module or top-level name 'absent'",
        f"{test_a}:9: setattr('heartseg_utils.m.gone'): heartseg_utils.m has no top-level name 'gone'",
        f"{nb}, cell 4, line 2: m.nothing: heartseg_utils.m has no top-level name 'nothing'",
    ]
    assert scan.checked["tests:patch"] == 2 and scan.checked["*.ipynb:attribute"] == 2


def test_self_check_wants_each_name_from_its_home(tmp_path: Path) -> None:
    """A name a module only imports from another package module has its home there; patching it stays allowed."""
    write_package(tmp_path, {"home": "def f():\n    pass\n", "user": "from heartseg_utils.home import f\n"})
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "from heartseg_utils import user\nfrom heartseg_utils.home import f\nfrom heartseg_utils.user import f as g\n"
        "user.f()\n\n\ndef test(monkeypatch):\n    monkeypatch.setattr(user, 'f', g)\n"
    )
    problems = check_names(tmp_path, tmp_path / "heartseg_utils", ("tests/*.py",)).problems
    assert [p.split(": ", 1)[1] for p in problems] == [
        "from heartseg_utils.user import f: heartseg_utils.user only imports 'f'; import it from its home",
        "user.f: heartseg_utils.user only imports 'f'; import it from its home",
    ], problems
