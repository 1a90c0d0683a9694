"""The house rules of the package layout, read from the code's own imports.

    spec, sharding, errors, console   import nothing of rec_jax
    models                             Flax modules: import only models (and errors)
    distill                            pure loss/transfer maths: no data, train, recipes
    data                               knows no model: no models, distill, train, recipes
    eval                               no train, recipes
    train                              no recipes
    recipes                            the one place that wires a model
    bench, sweep, deploy               tools beside the library: nothing in it imports them
    deploy/service.py                  the serving side: no JAX, no model code (TF bundles)
    main, export, serve                entry points, imported by nobody

Every import counts, also one inside a function (those hide a dependency), and
the library imports its own modules inside functions only where LATE_IMPORTS
says why.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "rec_jax"

# top-level unit of the importer -> units of rec_jax it must not import.
FORBIDDEN = {
    "spec": "*", "sharding": "*", "errors": "*", "console": "*",
    "models": {"data", "distill", "eval", "train", "recipes", "run", "main", "bench", "sweep",
               "sharding"},
    "distill": {"data", "eval", "train", "recipes", "run", "main", "bench", "sweep"},
    "data": {"models", "distill", "eval", "train", "recipes", "run", "main", "bench", "sweep"},
    "eval": {"models", "distill", "train", "recipes", "run", "main", "bench", "sweep"},
    "train": {"recipes", "run", "main", "bench", "sweep"},
    "recipes": {"train", "run", "main", "bench", "sweep"},
    "run": {"main", "bench", "sweep"},
    "refresh": {"main", "bench", "sweep"},
    "bench": {"main", "sweep"},
    "sweep": {"main", "bench"},
    "deploy": {"main", "bench", "sweep", "export", "serve"},
    "export": {"main", "bench", "sweep"},
    "serve": {"main", "bench", "sweep"},
}
TOOLS = ("bench", "sweep", "deploy")
ENTRY_POINTS = ("main", "export", "serve")
# The library (not the tools, not the entry points) imports no tool and no entry point.
for _unit_name, _forbidden in FORBIDDEN.items():
    if _forbidden != "*" and _unit_name not in TOOLS + ENTRY_POINTS:
        _forbidden.update(TOOLS + ENTRY_POINTS)
# The two deliberate late imports, each for a reason a top-level import cannot serve.
LATE_IMPORTS = {
    # The entry point sets up logging, silences third-party noise and starts
    # jax.distributed before the job's modules (and JAX's backends) load.
    "main.py": {"rec_jax.run", "rec_jax.refresh"},
    # The same for the deployment entry points (TF's and transformers' noise first).
    "export.py": {"rec_jax.deploy"},
    "serve.py": {"rec_jax.deploy"},
    # The TFDS builder pulls in TensorFlow; a prepared dataset loads without it
    # (the GPU machine has no TensorFlow).
    "data/dataset.py": {"rec_jax.data"},  # from rec_jax.data import movielens
}


def _unit(module: str) -> str:
    """rec_jax.models.bert -> models; rec_jax.run -> run."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: pathlib.Path):
    """(imported rec_jax module, inside a function?) for every import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, nested) for a in child.names if a.name.startswith("rec_jax"))
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0 \
                    and child.module.startswith("rec_jax"):
                if child.module == "rec_jax":  # from rec_jax import recipes
                    found.extend((f"rec_jax.{a.name}", nested) for a in child.names)
                else:
                    found.append((child.module, nested))
            visit(child, nested)

    visit(tree, False)
    return found


def _files():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _owner(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    owner = _owner(path)
    forbidden = FORBIDDEN.get(owner, set())
    for module, _ in _imports(path):
        unit = _unit(module)
        if unit == owner or module == "rec_jax":
            continue
        assert forbidden != "*", f"{path.name}: {owner} must import nothing of rec_jax ({module})"
        assert unit not in forbidden, f"{path.relative_to(PACKAGE)}: {owner} imports {module}"


@pytest.mark.parametrize("path", [p for p in _files() if _owner(p) not in TOOLS],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_imports_no_rec_jax_module_inside_functions(path):
    allowed = LATE_IMPORTS.get(str(path.relative_to(PACKAGE)), set())
    hidden = [m for m, nested in _imports(path) if nested and m not in allowed]
    assert not hidden, f"{path.relative_to(PACKAGE)} imports {hidden} inside a function"


def test_the_service_runs_without_jax():
    """A bundle serves with TensorFlow alone: the service imports no JAX, Flax or model code."""
    path = PACKAGE / "deploy" / "service.py"
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
            names.update(a.name for a in node.names if a.name.startswith("rec_jax"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
            if node.module.startswith("rec_jax"):
                names.add(node.module)
    assert not names & {"jax", "flax", "optax", "orbax"}, names
    assert {n for n in names if n.startswith("rec_jax.")} == {"rec_jax.data"}, names


def test_the_rules_see_a_violation(tmp_path):
    """The reader finds imports at every depth (a rule that sees nothing proves nothing)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import rec_jax.train.step\n"
                   "def f():\n    from rec_jax import recipes\n"
                   "class C:\n    def g(self):\n        from rec_jax.data.raw import GENRES\n")
    assert _imports(bad) == [("rec_jax.train.step", False), ("rec_jax.recipes", True),
                             ("rec_jax.data.raw", True)]
