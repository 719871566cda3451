"""``--verbose`` lists where every skipped line is, those counted by earlier runs too: reads are
incremental, so the run that first meets a bad line is the only one that reads it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path


def _good(n: int) -> bytes:
    return json.dumps({"type": "assistant", "timestamp": "2026-11-20T10:00:00.000Z", "sessionId": "s1",
                       "cwd": "/home/a/proj", "requestId": f"req_{n}",
                       "message": {"id": f"msg_{n}", "model": "claude-sonnet-4-5",
                                   "usage": {"input_tokens": 10, "output_tokens": n}}},
                      separators=(",", ":")).encode() + b"\n"  # fmt: skip


def _run(args: list[str], env: dict[str, str], *, typer: bool = False) -> subprocess.CompletedProcess[str]:
    if typer:
        code = "import sys; from ccledger.cli.main import run; sys.argv = ['ccledger', *sys.argv[1:]]; run()"
        argv = [sys.executable, "-c", code, *args]
    else:
        argv = [sys.executable, "-m", "ccledger.cli", *args]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def _listed(stderr: str) -> list[tuple[str, int, str]]:
    """(file name, line, reason) of each ``  path:line: reason`` line."""
    out = []
    for m in re.finditer(r"^  (\S+\.jsonl):(\d+): (.*)$", stderr, re.M):
        out.append((Path(m.group(1)).name, int(m.group(2)), m.group(3)))
    return out


def test_verbose_lists_every_skipped_line_on_any_later_run(tmp_path: Path) -> None:
    proj = tmp_path / "claude" / "projects" / "-home-a-proj"
    proj.mkdir(parents=True)
    a, b = proj / "a.jsonl", proj / "b.jsonl"
    a.write_bytes(_good(1) + b"{not json\n" + _good(2) + b"\xff\xfe\n")  # bad: a:2, a:4
    b.write_bytes(_good(3) + b'{"type":"assistant"\n')  # bad: b:2 (cut short)
    env = {**os.environ, "HOME": str(tmp_path / "home"), "CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
           "CCLEDGER_DB": f"sqlite:///{tmp_path / 'l.db'}"}  # fmt: skip
    env.pop("CCLEDGER_PRICE_FILES", None)

    first = _run(["daily", "--json"], env)
    assert "skipped 3 malformed transcript line(s) (--verbose lists them)" in first.stderr
    assert _listed(first.stderr) == []

    with b.open("ab") as fh:
        fh.write(_good(4) + b"not json at all\n")  # bad: b:4
    expected = [("a.jsonl", 2, "not JSON"), ("a.jsonl", 4, "not UTF-8"), ("b.jsonl", 2, "not JSON"),
                ("b.jsonl", 4, "not JSON")]  # fmt: skip

    def check(listed: list[tuple[str, int, str]]) -> None:
        assert [(f, n) for f, n, _ in listed] == [(f, n) for f, n, _ in expected]
        assert all(reason.startswith(want) for (_, _, reason), (_, _, want) in zip(listed, expected, strict=True))

    second = _run(["--verbose", "daily", "--json"], env)
    assert "skipped 1 malformed transcript line(s)\n" in second.stderr  # this run's, and no hint
    assert "4 malformed transcript line(s) skipped so far:" in second.stderr
    check(_listed(second.stderr))
    assert json.loads(second.stdout)["totals"]["requests"] == 4

    for args, typer in ((["-v", "daily", "--json"], False), (["--verbose", "refresh"], True),
                        (["--verbose", "--no-refresh", "daily", "--json"], False),
                        (["--verbose", "--no-refresh", "session"], True)):
        again = _run(args, env, typer=typer)  # nothing new to read: the earlier runs' lines all the same
        assert "skipped 1" not in again.stderr and "4 malformed transcript line(s) skipped so far:" in again.stderr
        check(_listed(again.stderr))

    a.unlink()  # Claude Code deletes old transcripts; the ledger keeps what it read, and its count
    gone = _run(["--verbose", "daily", "--json"], env)
    assert [(f, n) for f, n, _ in _listed(gone.stderr)] == [("b.jsonl", 2), ("b.jsonl", 4)]
    assert f"  {a}: 2 line(s) counted; the file cannot be read again (" in gone.stderr
    assert "4 malformed transcript line(s) skipped so far:" in gone.stderr
    assert json.loads(gone.stdout)["totals"]["requests"] == 4
