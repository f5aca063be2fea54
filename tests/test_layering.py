"""The layers and their arrows (DESIGN §2): slt/ is engine-free, runrecord/ is light, sweep/ and
dashboards/ never import each other, and the sweep driver stays readable."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import slt

REPO = Path(__file__).resolve().parents[1]


def imported_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has loaded after running `code`."""
    check = f"{code}\nimport sys\nprint(','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [m for m in out.strip().split(",") if m]


def test_every_slt_module_imports_without_ray_optuna_or_mlflow():
    names = [m.name for m in pkgutil.walk_packages(slt.__path__, "slt.")]
    assert len(names) > 20 and "slt.train" in names and "slt.data.dvs" in names
    code = "\n".join(f"import {name}" for name in names)
    assert imported_after(code, ("ray", "optuna", "mlflow")) == []


def test_the_run_record_loads_neither_ray_nor_torch():
    assert imported_after("import runrecord", ("ray", "torch", "mlflow", "optuna", "pandas")) == []


def test_the_export_and_report_path_loads_no_ray():
    code = "import dashboards.pareto, dashboards.tables, dashboards.report, dashboards.runs, app.results"
    assert imported_after(code, ("ray",)) == []


def _imports(folder: str) -> list[tuple[Path, str]]:
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(path, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.append((path, node.module))
    return found


@pytest.mark.parametrize("folder,forbidden", [("sweep", "dashboards"), ("dashboards", "sweep"),
                                              ("slt", "runrecord"), ("runrecord", "sweep"),
                                              ("runrecord", "dashboards"), ("trainables", "sweep")])
def test_arrows_point_one_way(folder, forbidden):
    wrong = [f"{path.relative_to(REPO)} imports {module}" for path, module in _imports(folder)
             if module == forbidden or module.startswith(forbidden + ".")]
    assert wrong == []


@pytest.mark.parametrize("folder,limit", [("sweep", 40), ("trainables", 60), ("dashboards", 60), ("app", 60)])
def test_no_long_functions(folder, limit):
    long = [f"{path.relative_to(REPO)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted((REPO / folder).rglob("*.py")) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= limit]
    assert long == []
