"""The console script's short path for machine-readable reports must print exactly what the Typer
commands print, take only command lines it fully understands, and stay free of Typer, Rich and pydantic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccledger.cli.fast import parse
from tests.support.corpus import generate


def _env(tmp_path: Path, config_dir: Path, db: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "CLAUDE_CONFIG_DIR": str(config_dir),
           "CCLEDGER_DB": f"sqlite:///{db}", "COLUMNS": "200"}  # fmt: skip
    env.pop("CCLEDGER_PRICE_FILES", None)
    return env


def _fast(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ccledger.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def _typer(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import sys; from ccledger.cli.main import run; sys.argv = ['ccledger', *sys.argv[1:]]; run()"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fast") / "claude"
    generate(root, seed=5, sessions=6, requests_per_session=15)
    return root


ARGVS = [
    ["daily", "--json"],
    ["daily", "--json", "--tz", "Asia/Kolkata", "--breakdown"],
    ["weekly", "--csv", "--tz=America/Los_Angeles"],
    ["monthly", "--json", "-b", "--since", "20260101"],
    ["session", "--json", "--project", "web"],
    ["session", "--csv", "--until", "2030-01-01"],
    ["daily", "--json", "--since", "2031-01-01"],  # empty: the message goes to stderr
    ["daily"],  # tables: Rich, but not Typer
    ["weekly", "--breakdown", "--tz", "Asia/Kolkata"],
    ["session", "--project", "web", "--since", "2026-01-01"],
    ["monthly", "--since", "2031-01-01"],  # empty: the message goes to stdout
]


@pytest.mark.parametrize("argv", ARGVS, ids=lambda a: " ".join(a))
def test_same_output_as_typer(tmp_path: Path, corpus: Path, argv: list[str]) -> None:
    assert parse(argv) is not None  # the short path really is taken
    fast = _fast(argv, _env(tmp_path, corpus, tmp_path / "a.db"))
    slow = _typer(argv, _env(tmp_path, corpus, tmp_path / "b.db"))
    assert fast.returncode == slow.returncode == 0, fast.stderr + slow.stderr
    assert fast.stdout == slow.stdout and fast.stdout.strip()
    if "--json" in argv:
        json.loads(fast.stdout)
    # the same notes (skipped lines, unknown models, empty result); Rich may wrap them differently
    assert " ".join(fast.stderr.split()) == " ".join(slow.stderr.split())


def test_global_options_and_no_refresh(tmp_path: Path, corpus: Path) -> None:
    db = tmp_path / "g.db"
    env = _env(tmp_path, tmp_path / "empty", tmp_path / "unused.db")
    first = _fast(["--db", f"sqlite:///{db}", "--path", str(corpus), "daily", "--json"], env)
    assert first.returncode == 0, first.stderr
    total = json.loads(first.stdout)["totals"]["requests"]
    assert total > 0
    # --no-refresh reads nothing new: an empty ledger stays empty
    other = tmp_path / "other.db"
    second = _fast(
        ["--db", f"sqlite:///{other}", "--no-refresh", "--path", str(corpus), "daily", "--json"], env
    )
    assert second.returncode == 0
    assert json.loads(second.stdout)["totals"]["requests"] == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["daily", "--json", "--csv"],
        ["daily", "--json", "--bogus"],
        ["daily", "--json", "--tz"],
        ["--help"],
        ["daily", "--help"],
        ["blocks", "--json"],
        ["cost"],
        ["prices", "--json"],
    ],
)
def test_other_command_lines_go_to_typer(argv: list[str]) -> None:
    assert parse(argv) is None


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["daily", "--json", "--since", "yesterday"], "is not a date"),
     (["daily", "--json", "--tz", "Mars/Olympus"], "unknown time zone"),
     (["daily", "--json", "--tz", "Europe"], "unknown time zone"),  # a folder of the tz database
     (["weekly", "--csv", "--since", "2026-10-20", "--until", "20261019"], "--since 2026-10-20 is after --until")],
)  # fmt: skip
def test_bad_values_get_typers_errors(tmp_path: Path, corpus: Path, argv: list[str], needle: str) -> None:
    proc = _fast(argv, _env(tmp_path, corpus, tmp_path / "e.db"))
    assert proc.returncode == 2
    assert needle in proc.stderr


def test_short_path_imports_no_typer_rich_or_pydantic(tmp_path: Path, corpus: Path) -> None:
    """Not even for notes (skipped lines, an unknown model: plain lines when stderr is not a terminal);
    a warm run with nothing new to read does not load the transcript reader (simdjson) either, and a table
    loads Rich but still not Typer. (msgspec is always loaded: the records and reports are its structs.)
    Nor does anything load typing_extensions (and with it inspect, ast, dis, tokenize)."""
    heavy = {"typer", "rich", "pydantic", "click", "simdjson", "csimdjson", "dataclasses", "typing_extensions",
             "inspect", "hashlib", "json", "threading"}
    env = _env(tmp_path, corpus, tmp_path / "i.db")
    loaded = []
    for args in (["daily", "--json"], ["daily", "--json"], ["daily"]):
        code = (
            f"import sys; sys.argv = ['ccledger', *{args!r}]\n"
            "from ccledger.cli.fast import main; main()\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(heavy)!r})), file=sys.stderr)"
        )
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        loaded.append(proc.stderr.strip().splitlines()[-1])
    # the first run read the corpus, the second nothing, the third printed a table
    # The first run reads with simdjson's extension module (not the package around it, which imports json),
    # and saves which unknown models it warned about (json); Rich brings its own dataclasses, inspect and
    # threading. Never typing_extensions, which msgspec would read type hints with (see
    # ccledger/__init__.py), nor hashlib (OpenSSL) for the head-of-file hash, nor threading for the store's
    # lock.
    assert loaded == ["['csimdjson', 'json']", "[]", "['dataclasses', 'inspect', 'rich', 'threading']"]


def test_a_tz_variable_naming_a_folder_falls_back_to_the_machine_zone(tmp_path: Path, corpus: Path) -> None:
    """``TZ=Europe`` names a folder of the tz database, not a zone: the report still runs, in the zone
    ``/etc/localtime`` gives, as for any other unusable ``TZ``."""
    env = _env(tmp_path, corpus, tmp_path / "tz.db")
    runs = []
    for tz in ("Europe", "Mars/Olympus"):
        proc = _fast(["daily", "--json"], {**env, "TZ": tz})
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    assert runs[0] == runs[1]


def test_typing_extensions_stays_importable_and_msgspec_reads_hints_without_it(tmp_path: Path) -> None:
    """ccledger hides typing_extensions only while msgspec loads: afterwards it imports as usual, and
    msgspec (reading hints with typing) decodes and rejects the same as with it."""
    code = (
        "import sys, ccledger, msgspec\n"
        "assert 'typing_extensions' not in sys.modules\n"
        "from typing import Annotated, Literal\n"
        "class S(msgspec.Struct):\n"
        "    a: 'int | None' = None\n"
        "    b: Annotated[int, msgspec.Meta(ge=0)] = 0\n"
        "    c: Literal['x', 'y'] = 'x'\n"
        "    d: 'list[S]' = []\n"
        "s = msgspec.json.decode(b'{\"a\":1,\"b\":2,\"c\":\"y\",\"d\":[{\"a\":null}]}', type=S)\n"
        "assert (s.a, s.b, s.c, s.d[0].a) == (1, 2, 'y', None), s\n"
        "for bad in (b'{\"b\":-1}', b'{\"c\":\"z\"}', b'{\"a\":\"1\"}'):\n"
        "    try:\n"
        "        msgspec.json.decode(bad, type=S)\n"
        "    except msgspec.ValidationError:\n"
        "        pass\n"
        "    else:\n"
        "        raise AssertionError(bad)\n"
        "import typing_extensions\n"
        "print(typing_extensions.__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "typing_extensions"


def test_a_report_ends_without_closing_the_store_and_the_next_run_replays_its_log(tmp_path: Path,
                                                                                 corpus: Path) -> None:
    """The console script leaves as soon as a report's output is flushed (``console``): a refresh's small
    write-ahead log stays beside the store instead of being checkpointed at close, and the next run
    (reading nothing) replays it and reports the same; a long report arrives whole through a pipe."""
    db = tmp_path / "x.db"
    env = _env(tmp_path, corpus, db)
    first = _fast(["session", "--json"], env)
    assert first.returncode == 0, first.stderr
    wal = Path(f"{db}-wal")
    assert wal.exists() and 0 < wal.stat().st_size <= 1 << 20  # left for later, not folded in at close
    again = _fast(["--no-refresh", "session", "--json"], env)
    assert again.returncode == 0, again.stderr
    doc = json.loads(first.stdout)
    assert json.loads(again.stdout) == doc and len(doc["rows"]) > 5
    slow = _typer(["session", "--json"], env)
    assert json.loads(slow.stdout) == doc


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see when the run opened the store")
@pytest.mark.parametrize("path", ["short", "typer"])
def test_ctrl_c_ends_a_report_with_status_130_and_no_traceback(tmp_path: Path, path: str) -> None:
    """Ctrl-C during a report's refresh (here held waiting for the store's write lock, which this test
    holds) ends the short path as Typer ends its commands: exit status 130, nothing on stdout, no
    traceback. The store stays usable: the next run prices the whole corpus exactly once."""
    import signal
    import sqlite3
    import time
    from decimal import Decimal

    db = tmp_path / "c.db"
    empty = tmp_path / "empty"
    empty.mkdir()
    created = _fast(["daily", "--json"], _env(tmp_path, empty, db))  # the store and its schema
    assert created.returncode == 0, created.stderr
    expected = generate(tmp_path / "claude", seed=23, sessions=6, requests_per_session=12)
    env = _env(tmp_path, tmp_path / "claude", db)
    if path == "short":
        argv = [sys.executable, "-m", "ccledger.cli", "daily", "--json"]
        assert parse(argv[3:]) is not None
    else:
        code = "import sys; from ccledger.cli.main import run; sys.argv = ['ccledger', *sys.argv[1:]]; run()"
        argv = [sys.executable, "-c", code, "daily", "--json"]

    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        fds = Path(f"/proc/{proc.pid}/fd")
        deadline = time.monotonic() + 60
        while not any(str(p.resolve()).startswith(str(db)) for p in _links(fds)):
            assert proc.poll() is None and time.monotonic() < deadline, "the run never opened the store"
            time.sleep(0.01)
        time.sleep(0.3)  # reading a corpus this small takes milliseconds; then it waits for the lock
        assert proc.poll() is None, "the run ended although the store was locked"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and out == "", err

    again = _fast(["daily", "--json"], env)
    assert again.returncode == 0, again.stderr
    totals = json.loads(again.stdout)["totals"]
    assert totals["requests"] == len(expected.requests)
    assert abs(Decimal(totals["cost"]) - expected.total_cost()) <= Decimal("1e-8")


def _links(fds: Path) -> list[Path]:
    """The open files of a process; none once it has ended."""
    try:
        return list(fds.iterdir())
    except OSError:
        return []
