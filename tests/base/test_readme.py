"""README.md's Python snippets import what the installed package has (issue 16: commands work as written)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
IMPORT = re.compile(r"^\s*(from [\w.]+ import [\w, ]+|import [\w.]+(?: as \w+)?)\s*$")


def readme_imports(text: str) -> list[str]:
    """Every import line of the README, in code blocks and in ``python -c "..."`` one-liners."""
    lines = []
    for line in text.splitlines():
        if (one_liner := re.search(r'python -c "([^"]*)"', line)) is not None:
            lines += [part.strip() for part in one_liner.group(1).split(";") if IMPORT.match(part)]
        elif IMPORT.match(line):
            lines.append(line.strip())
    return list(dict.fromkeys(lines))


def test_readme_imports_are_found_by_the_installed_package(tmp_path: Path) -> None:
    imports = readme_imports(README.read_text())
    assert any("tlrec" in line for line in imports), "the README shows no tlrec import: the parser broke"
    # outside the repository, so that its top-level folders (serving/, training/...) are not importable
    done = subprocess.run([sys.executable, "-c", "\n".join(imports)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"a README import fails: {done.stderr.strip().splitlines()[-1]}"


def test_the_parser_sees_heredocs_and_one_liners() -> None:
    text = 'python - <<\'PY\'\nfrom serving.experiments import ExposureLog\nPY\n' \
           'python -c "import polars as pl; from tlrec.x import y; pl.read_csv(1)"\n'
    assert readme_imports(text) == ["from serving.experiments import ExposureLog", "import polars as pl",
                                    "from tlrec.x import y"]
