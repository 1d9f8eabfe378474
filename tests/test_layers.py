"""The layering of kdx (docs/architecture.md, "Layers"), checked on the import graph with `ast`:
methods never import the driver, the store, the training layer or the LightningModule; the loss
layer, the models and the tasks import no method nor anything above. And no file of the
repository points at the retired top-level notes or at a sibling folder."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KDX = ROOT / "kdx"

# What a method must not import: the trial driver and everything it owns.
ABOVE_METHODS = ("kdx.run", "kdx.training", "kdx.store", "kdx.cache", "kdx.distill", "kdx.trial", "kdx.loggers",
                 "kdx.results", "kdx.summary", "kdx.__main__")
# What the loss layer, the models and the tasks must not import: the methods and the layers above.
ABOVE_LOSSES = ("kdx.methods", *ABOVE_METHODS)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, name: str, is_package: bool = False) -> set[str]:
    """Every module `source` (the module `name`) imports, at any depth (function-level imports
    too): `import a.b` gives a.b; `from a import b` gives a and a.b (b may be a module); relative
    imports are resolved against `name`."""
    found = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def forbidden(imports: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(i for i in imports if any(i == b or i.startswith(b + ".") for b in banned))


def violations(files, banned) -> dict[str, list[str]]:
    bad = {}
    for path in files:
        found = forbidden(imported_modules(path.read_text(), module_name(path), path.name == "__init__.py"), banned)
        if found:
            bad[str(path.relative_to(ROOT))] = found
    return bad


def test_the_import_checker_sees_every_import_form():
    source = "\n".join(["import kdx.run", "from kdx import store", "from kdx.training import fit_phases",
                        "def f():\n    from .. import distill", "from . import kd"])
    found = imported_modules(source, "kdx.methods.some_method")
    assert forbidden(found, ABOVE_METHODS) == ["kdx.distill", "kdx.run", "kdx.store", "kdx.training",
                                               "kdx.training.fit_phases"]
    assert "kdx.methods.kd" in found
    assert forbidden(imported_modules("import kdx.runner\nimport kdx.losses", "kdx.methods.x"), ABOVE_METHODS) == []


def test_methods_do_not_import_the_layers_above():
    files = sorted((KDX / "methods").glob("*.py"))
    assert len(files) > 10
    assert violations(files, ABOVE_METHODS) == {}


def test_losses_models_and_tasks_do_not_import_methods_or_anything_above():
    files = [KDX / "losses.py", *sorted((KDX / "models").glob("*.py")), *sorted((KDX / "tasks").glob("*.py")),
             *sorted((KDX / "coref").glob("*.py"))]
    assert violations(files, ABOVE_LOSSES) == {}


# ---- no pointers to retired notes or sibling folders ----------------------------------------------
RETIRED = ("METHODS.md", "DESIGN.md", "../shared")
SEARCHED = ("kdx", "conf", "docs", "README.md", "experiments", "sweeps", "tests")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".txt", ".toml", ".cfg", ".json", ".ini", ""}


def searched_files():
    for entry in SEARCHED:
        path = ROOT / entry
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in candidates:
            if "__pycache__" in file.parts or file.suffix not in TEXT_SUFFIXES:
                continue
            if file.resolve() == Path(__file__).resolve():
                continue
            yield file


def allowed(file: Path, line: str) -> bool:
    """Tests may read the real datasets next to the checkout (../shared/data), skipping without."""
    in_tests = file.relative_to(ROOT).parts[0] == "tests"
    return in_tests and "../shared/data" in line and "METHODS.md" not in line and "DESIGN.md" not in line


def test_no_file_mentions_retired_notes_or_the_shared_folder():
    offending = []
    for file in searched_files():
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(lines, 1):
            if any(word in line for word in RETIRED) and not allowed(file, line):
                offending.append(f"{file.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert offending == [], "\n".join(offending)


@pytest.mark.parametrize("line, ok", [("SST2 = Path('../shared/data/glue/SST-2')", True),
                                      ("see ../shared/METHODS.md", False), ("DESIGN.md says", False)])
def test_only_tests_reading_shared_data_are_allowed(line, ok):
    assert allowed(ROOT / "tests" / "test_x.py", line) is ok
    assert allowed(ROOT / "README.md", line) is False
