"""The layout rules of lib/, checked on the source: phase order, no cycle, no runner imported by library code.

Read with `ast`, so lazy imports inside functions count as much as those at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib"
PHASES = ("common", "acquire", "preprocess", "regions", "synth", "classify", "segment", "deploy")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lib_imports(path: Path) -> set[str]:
    """Every lib module `path` imports (`from lib.x import y` counts lib.x.y when y is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lib":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if _exists(candidate) else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "lib"}
    return found


def _exists(module: str) -> bool:
    base = ROOT.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): lib_imports(p) for p in sorted(LIB.rglob("*.py"))}


def phase(module: str) -> int:
    parts = module.split(".")
    return PHASES.index(parts[1]) if len(parts) > 1 and parts[1] in PHASES else -1


def test_every_module_sits_in_a_phase_package() -> None:
    loose = [p.name for p in LIB.glob("*.py") if p.name != "__init__.py"]
    packages = sorted(p.name for p in LIB.iterdir() if (p / "__init__.py").is_file())
    assert len(loose) <= 2, f"modules left directly in lib/: {loose}"
    assert packages == sorted(PHASES)


def test_imports_only_go_down_the_phase_order() -> None:
    upward = [f"{m} -> {d}" for m, deps in graph().items() for d in deps if phase(d) > phase(m) >= 0]
    assert upward == []


def test_no_library_module_imports_a_stage_runner() -> None:
    """Runners (lib/<phase>/run_<stage>.py) are called by scripts only; deploy never loads training code."""
    runners = [f"{m} -> {d}" for m, deps in graph().items() for d in deps if d.split(".")[-1].startswith("run_")]
    assert runners == []


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for dep in sorted(edges.get(module, ())):
            if dep == module or dep == "lib":
                continue
            if state.get(dep) == 1:
                return path + [module, dep]
            if dep not in state and (cycle := visit(dep, path + [module])):
                return cycle
        state[module] = 2
        return None

    cycles = [c for m in sorted(edges) if m not in state and (c := visit(m, []))]
    assert cycles == []


def test_every_numbered_script_has_one_runner_named_after_it() -> None:
    for script in sorted((ROOT / "scripts").glob("[0-9][0-9]_*.py")):
        runner = f"run_{script.stem[3:]}.py"
        found = [p.relative_to(ROOT).as_posix() for p in LIB.rglob(runner)]
        assert len(found) == 1, f"{script.name}: expected one lib/<phase>/{runner}, found {found}"
        assert found[0][:-3].replace("/", ".") in lib_imports(script), f"{script.name} does not call {found[0]}"


def test_the_checker_sees_an_upward_and_a_lazy_import(tmp_path: Path) -> None:
    """The rules above would pass vacuously if lib_imports missed imports; a made-up module shows it does not."""
    probe = tmp_path / "probe.py"
    probe.write_text("from lib.common import io\n\ndef f():\n    from lib.deploy import predictor\n"
                     "    from lib.segment.models import TUNED\n")
    assert lib_imports(probe) == {"lib.common.io", "lib.deploy.predictor", "lib.segment.models"}
    assert phase("lib.deploy.predictor") > phase("lib.common.io")
