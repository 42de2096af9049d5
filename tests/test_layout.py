"""The layout's import contract: flywheel/core is pure (no database, training, watching, metrics
or scheduling library gets loaded by importing it, and its functions touch no file, socket or
process and load no such library when they run) and depends on nothing outside itself;
flywheel/flow does not reach up into the service, the CLI or the composition root."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core_purity_probe import SCENARIOS

PACKAGE = Path(__file__).parents[1] / "flywheel"
HEAVY = ("sqlalchemy", "sqlmodel", "torch", "ultralytics", "watchdog", "prometheus_client", "apscheduler")
HEAVY += ("requests", "httpx")

# Known breaches, each a single case marked strict xfail so that it flips when it is fixed.
PENDING: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> list[str]:
    return sorted(module_name(p) for p in (PACKAGE / package).rglob("*.py"))


def cases(package: str) -> list[object]:
    return [
        pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=PENDING[m])) if m in PENDING else m
        for m in modules(package)
    ]


LOADED = f"""
import json, sys
heavy = {HEAVY!r}
import {{module}}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


@pytest.mark.parametrize("module", cases("core"))
def test_importing_a_core_module_loads_no_heavy_library(module: str):
    # a fresh interpreter: what this test process has imported already must not hide a load
    proc = subprocess.run(
        [sys.executable, "-c", LOADED.format(module=module)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=PACKAGE.parent,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = sorted({name.split(".")[0] for name in json.loads(proc.stdout)})
    assert not loaded, f"importing {module} loads {', '.join(loaded)}"


PROBE = Path(__file__).with_name("core_purity_probe.py")


@pytest.fixture(scope="module")
def io_when_core_runs() -> dict[str, list[str]]:
    """What each of the probe's scenarios did under its I/O guard, from one fresh interpreter (the
    import test above cannot see a library imported, or a file opened, inside a function)."""
    proc = subprocess.run(
        [sys.executable, str(PROBE)], capture_output=True, text=True, timeout=120, check=False, cwd=PACKAGE.parent
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, list[str]] = json.loads(proc.stdout)["scenarios"]
    return report


# Known breaches at run time, strict xfail so each flips when fixed.
RUNNING_PENDING: dict[str, str] = {}


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=RUNNING_PENDING[s])) if s in RUNNING_PENDING else s
        for s in SCENARIOS
    ],
)
def test_core_functions_do_no_io_when_they_run(scenario: str, io_when_core_runs: dict[str, list[str]]):
    assert io_when_core_runs[scenario] == [], f"{scenario}: {'; '.join(io_when_core_runs[scenario])}"


def test_the_io_guard_catches_each_kind_of_io():
    # the test above passes vacuously if the probe's guards miss a kind of I/O
    kinds = {
        "a file opened": "open(PROBE_FILE).close()",
        "a file's existence checked": "Path(PROBE_FILE).is_file()",
        "a folder listed": "os.listdir('.')",
        "a process started": "os.system('true')",
        "a socket opened": "import socket as s; s.create_connection(('127.0.0.1', 9))",
        "an I/O library imported": "import apscheduler.triggers.cron",
    }
    run = "import os, json; from pathlib import Path; import tests.core_purity_probe as p; PROBE_FILE = p.__file__\n"
    run += f"KINDS = {kinds!r}\n"
    run += "p.SCENARIOS = {k: (lambda c=c: exec(c, globals())) for k, c in KINDS.items()}; p.main()"
    proc = subprocess.run(
        [sys.executable, "-c", run], capture_output=True, text=True, timeout=120, check=False, cwd=PACKAGE.parent
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)["scenarios"]
    missed = [kind for kind in kinds if not report[kind] or any("scenario failed" in s for s in report[kind])]
    assert not missed, f"the guard missed: {missed} ({report})"


def imported(path: Path) -> set[str]:
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(source: str, module: str, is_package: bool) -> set[str]:
    """Every module an import statement in `source` names (relative imports resolved)."""
    here = module.split(".")
    package = here if is_package else here[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)  # `from flywheel import app`
    return names


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


CORE_MAY_NOT = tuple(f"flywheel.{p}" for p in ("flow", "service", "cli", "store", "ingest", "training", "app"))
FLOW_MAY_NOT = ("flywheel.service", "flywheel.cli", "flywheel.app")


@pytest.mark.parametrize("module", cases("core"))
def test_core_imports_nothing_outside_core(module: str):
    path = next(p for p in (PACKAGE / "core").rglob("*.py") if module_name(p) == module)
    wrong = sorted(n for n in imported(path) if within(n, CORE_MAY_NOT))
    assert not wrong, f"{module} imports {', '.join(wrong)}"


@pytest.mark.parametrize("module", cases("flow"))
def test_flow_imports_no_service_cli_or_app(module: str):
    path = next(p for p in (PACKAGE / "flow").rglob("*.py") if module_name(p) == module)
    wrong = sorted(n for n in imported(path) if within(n, FLOW_MAY_NOT))
    assert not wrong, f"{module} imports {', '.join(wrong)}"


def test_the_import_parser_sees_what_it_must():
    # the contract tests above pass vacuously if `imports_in` misses an import form
    source = "import flywheel.store\nfrom flywheel.app import App\nfrom ..service import daemon\nfrom . import gate\n"
    names = imports_in(source, "flywheel.flow.probe", is_package=False)
    assert {"flywheel.store", "flywheel.app", "flywheel.service.daemon", "flywheel.flow.gate"} <= names
    names = imports_in(source, "flywheel.flow", is_package=True)  # in an __init__.py
    assert {"flywheel.service.daemon", "flywheel.flow.gate"} <= names


ENTRY_POINTS = ("flywheel.cli",)  # the `flywheel` command; the daemon is started by `flywheel run`


@pytest.mark.parametrize("module", [m for m in modules("") if m != "flywheel.app" and not within(m, ENTRY_POINTS)])
def test_only_the_entry_points_import_the_composition_root(module: str):
    # the service used to import App back from the root that built it: a circle
    path = next(p for p in PACKAGE.rglob("*.py") if module_name(p) == module)
    wrong = sorted(n for n in imported(path) if within(n, ("flywheel.app",)))
    assert not wrong, f"{module} imports {', '.join(wrong)}"
