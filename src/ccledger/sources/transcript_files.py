"""Where Claude Code's transcripts are, and which of them have new bytes since the last run.

Kept apart from the reader (``sources.transcripts``) so that a run with nothing new to read never
imports it: simdjson's extension alone is ~21M instructions to load, ~7 % of such a run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

from ccledger.core.records import FileCursor


def transcript_dirs(config_dirs: Iterable[Path], extra: Iterable[Path] = ()) -> list[Path]:
    """The folders to search: ``<dir>/projects`` of each Claude config dir, and each extra folder
    (``--path``) as its ``projects`` subfolder if it has one, else as given. A config dir's own files
    (e.g. ``history.jsonl``, the prompt history) are never read as transcripts."""
    out: list[Path] = []
    seen: set[str] = set()

    def add(cand: Path) -> None:
        if cand.is_dir():
            real = os.path.realpath(cand)
            if real not in seen:
                seen.add(real)
                out.append(cand)

    for root in config_dirs:
        add(root.expanduser() / "projects")
    for root in extra:
        root = root.expanduser()
        add(root / "projects" if (root / "projects").is_dir() else root)
    return out


def discover(dirs: Iterable[Path]) -> list[Path]:
    """Every ``.jsonl`` below the given folders (scandir walk: cheaper than Path.rglob on big trees)."""
    return [Path(p) for p in discover_paths(dirs)]


def discover_paths(dirs: Iterable[Path]) -> list[str]:
    """Transcript paths as sorted strings: comparing thousands of Path objects costs more than the walk."""
    found: list[str] = []
    stack = [os.fspath(d) for d in dirs]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.name.endswith(".jsonl") and entry.is_file():
                            found.append(entry.path)
                    except OSError:
                        continue
        except OSError:
            continue
    found.sort()
    return found


def pending(
    files: Iterable[Path | str], known: dict[str, FileCursor]
) -> Iterator[tuple[Path, FileCursor | None, int]]:
    """Files with new bytes, with how many bytes are probably new (for the progress bar). One ``stat``
    per file and no Path objects for unchanged files: a warm run over thousands of files is mostly this."""
    stat = os.stat
    for path in files:
        name = os.fspath(path)
        prev = known.get(name)
        try:
            st = stat(name)
        except OSError:
            yield Path(name), prev, 0
            continue
        if prev is not None and prev.size == st.st_size and prev.mtime_ns == st.st_mtime_ns and (
            prev.identity == f"{st.st_dev}:{st.st_ino}"
        ):
            continue
        new = st.st_size - prev.offset if prev is not None and st.st_size >= prev.offset else st.st_size
        yield Path(name), prev, new


# --- what a refresh did ----------------------------------------------------------------------------


class BadLine(msgspec.Struct):
    path: str
    line_no: int
    reason: str


class RefreshStats(msgspec.Struct):
    files_seen: int = 0
    files_read: int = 0
    bytes_read: int = 0
    records: int = 0
    bad_lines: int = 0
    bad: list[BadLine] = msgspec.field(default_factory=list)
    errors: list[tuple[str, str]] = msgspec.field(default_factory=list)
    dirs: list[Path] = msgspec.field(default_factory=list)
