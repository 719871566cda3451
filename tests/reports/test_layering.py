"""Reports sit above core and store only; Rich stays out of the import path of machine output."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ccledger.reports

ALLOWED = ("ccledger.core", "ccledger.store", "ccledger.reports")


def test_reports_import_only_core_store_and_reports():
    root = Path(ccledger.reports.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ccledger"):
                assert node.module.startswith(ALLOWED), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("ccledger"):
                        assert alias.name.startswith(ALLOWED), f"{path.name} imports {alias.name}"


def test_report_functions_do_not_import_rich_or_typer():
    code = "import sys, ccledger.cli.reports; print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'typer'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
