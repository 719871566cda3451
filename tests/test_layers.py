"""Imports point downward only: the folder layout is the architecture, and this keeps it true."""

from __future__ import annotations

import ast
from pathlib import Path

import ccledger

LEVEL = {
    "core": 0, "settings": 0,
    "sources": 1, "store": 1, "control": 1,
    "services": 2, "reports": 2, "bootstrap": 2,
    "gateway": 3, "cli": 4,  # the CLI starts the gateway
}  # fmt: skip
ROOT = Path(ccledger.__file__).parent


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_imports_point_downward():
    wrong = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if len(rel.parts) == 1 and rel.stem == "__init__":
            continue
        here = rel.parts[0].removesuffix(".py")
        if here not in LEVEL:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if not name.startswith("ccledger."):
                    continue
                there = _layer(name)
                if there in LEVEL and there != here and LEVEL[there] >= LEVEL[here]:
                    wrong.append(f"{rel}: imports {name}")
    assert not wrong, "\n".join(wrong)


def test_core_does_no_io_framework_imports():
    banned = {"sqlalchemy", "httpx", "aiohttp", "starlette", "typer", "rich", "redis", "psycopg"}
    for path in (ROOT / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for m in mods:
                    assert (m or "").split(".")[0] not in banned, f"{path.name} imports {m}"
