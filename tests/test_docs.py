"""The documentation keeps up with the code: a one-screen README, every stage option in docs/stages.md."""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

README_LINES = 120
CELL_CHARS = 300


def options_of(path: Path) -> set[str]:
    """Every `--option` a file passes to add_argument (its --help lists exactly these)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            found |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return found


def test_readme_fits_one_screen_and_names_both_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_LINES
    assert "make all" in text and "make test" in text
    assert "not a medical device" in text.lower()
    cells = [cell.strip() for line in text.splitlines() if line.lstrip().startswith("|") for cell in line.split("|")]
    assert max(map(len, cells), default=0) <= CELL_CHARS


def test_readme_links_point_at_files_that_exist() -> None:
    text = (ROOT / "README.md").read_text()
    for target in ("docs/stages.md", "docs/results.md", "CONTRIBUTING.md", "LICENSE"):
        assert f"({target})" in text and (ROOT / target).is_file(), target


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "scripts").glob("*.py")))
def test_every_option_of_every_stage_is_in_the_stage_reference(script: str) -> None:
    reference = (ROOT / "docs" / "stages.md").read_text()
    options = options_of(ROOT / "scripts" / script)
    if script[:2].isdigit():  # numbered stages also get lib.common.stage.parser's options
        options |= options_of(ROOT / "lib" / "common" / "stage.py")
    assert options, f"{script}: no options found; the checker is broken"
    missing = sorted(o for o in options if f"`{o}" not in reference)
    assert missing == [], f"docs/stages.md lacks {missing} of {script}"
