"""The code passes the project's linter (ruff, configured in pyproject.toml), so that CI keeps it so."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "sleeptime", "tests", "benchmarks"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_jobs_never_import_the_app():
    """The App imports jobs/; jobs/ reaches the App only through the Host protocol, so the two form no circle."""
    import ast

    for path in sorted((ROOT / "sleeptime" / "jobs").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
            assert "sleeptime.app" not in names, f"{path.name} imports sleeptime.app"
