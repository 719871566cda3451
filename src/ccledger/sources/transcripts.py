"""Claude Code transcripts (JSON Lines) -> usage records, read incrementally.

Why it is shaped like this:
- Files only grow while Claude Code writes them, so each file's identity and the offset just past its
  last complete line are remembered, and a later run reads only the new bytes. A file that shrank, was
  replaced (new inode) or whose first bytes changed is read again from the start; upserts make that safe.
- Every line is validated, a chunk of lines at a time, and a clean chunk gets a fast yes: for short lines
  Python's UTF-8 decoder and one msgspec pass over the chunk as JSON Lines, for long lines one simdjson
  pass (structure and UTF-8, vectorised). In a chunk that fails, simdjson checks smaller groups and the
  lines it cannot vouch for are judged one by one by msgspec, which alone decides which lines are bad.
  Only lines holding a usage block or an edit patch become objects: the megabyte tool results are never
  materialised.
- The file is memory-mapped, so a single 100 MB line costs address space, not heap.
- One API request is one record: lines are keyed by ``message.id`` (falling back to ``requestId``), and
  the most complete usage wins, here within a run and in the store across runs and files.
"""

import _thread
import contextlib
import mmap
import os
import re
import sys
from bisect import bisect_right
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec

try:
    # The extension module itself: the ``simdjson`` package around it adds json-module-style helpers and
    # imports ``json`` for them (~6M instructions, a run that reads a few files pays it in full).
    from csimdjson import Object as _SimdObject
    from csimdjson import Parser as _SimdParser
except ImportError:  # pragma: no cover - a pysimdjson that packs it differently
    from simdjson import Object as _SimdObject
    from simdjson import Parser as _SimdParser

try:
    # CPython's own SHA-1 (what hashlib falls back to): hashlib would load OpenSSL's libcrypto for one
    # hash of a file's first kilobyte (~11M instructions, ~2 % of a warm run that reads anything).
    from _sha1 import sha1 as _sha1
except ImportError:  # pragma: no cover - an interpreter built without it
    from hashlib import sha1 as _sha1

from ccledger.core.records import (
    MAX_TOKENS,
    MAX_WEB_SEARCHES,
    SOURCE_TRANSCRIPT,
    SYNTHETIC_MODEL,
    FileCursor,
    UsageRecord,
)
from ccledger.sources.anthropic_usage import WireMessage, usage_from_wire
from ccledger.sources.transcript_files import (
    BadLine,
    RefreshStats,
    discover,
    discover_paths,
    pending,
    transcript_dirs,
)

T = TypeVar("T")
HEAD_BYTES = 1024
MAX_BAD_REPORTED = 1000
# Lines longer than this that carry no usage (file-history snapshots, huge tool results) are shape-checked
# in place instead of copied and validated: they can reach hundreds of MB.
SHAPE_ONLY_BYTES = 8 * 1024 * 1024
_RELEASE_EVERY = 64 * 1024 * 1024
_USAGE_KEY = b'"usage"'
_PATCH_MARK = b'"structuredPatch"'


# --- the parts of a line we read ------------------------------------------------------------------


class _AssistantLine(msgspec.Struct):
    type: str | None = None
    timestamp: str | None = None
    sessionId: str | None = None
    cwd: str | None = None
    gitBranch: str | None = None
    version: str | None = None
    isSidechain: bool | None = None
    isApiErrorMessage: bool | None = None
    requestId: str | None = None
    agentId: str | None = None
    message: WireMessage | None = None


class _PatchProbe(msgspec.Struct):
    """A tool result read only as far as whether it holds an edit patch (its other keys are skipped)."""

    structuredPatch: msgspec.Raw = msgspec.Raw()


class _ChunkLine(_AssistantLine):
    """A line of a clean chunk of short lines (``_decoded_lines``): what a request needs, and whether the
    line is an edit's result. ``toolUseResult`` takes any JSON value; only an object is looked into (a
    string or number is built, a list's items are not). Why: finding the edits by searching every byte of
    the chunk for their key cost ~0.5 ns a byte, 5 % of a dense refresh; skipping the same bytes while
    decoding costs almost nothing more."""

    toolUseResult: _PatchProbe | list[msgspec.Raw] | str | int | float | bool | None = None


class _Hunk(msgspec.Struct):
    lines: list[str] = []


class _PatchResult(msgspec.Struct):
    structuredPatch: list[_Hunk] | None = None


class _PatchLine(msgspec.Struct):
    uuid: str | None = None
    timestamp: str | None = None
    sessionId: str | None = None
    toolUseResult: msgspec.Raw = msgspec.Raw()


class _Any(msgspec.Struct):
    """Decoding into a field-less struct validates JSON without building anything."""


class _Kind(msgspec.Struct):
    type: Any = None


_validate = msgspec.json.Decoder(_Any).decode
_decode_kind = msgspec.json.Decoder(_Kind).decode
# msgspec recurses once per nesting level: a line nested ~1000 deep raises RecursionError, not DecodeError.
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError)  # ValidationError is a DecodeError
# msgspec stops at the interpreter's recursion limit (1000 by default), simdjson at ~1020 levels: with a
# higher limit, every line simdjson accepts msgspec accepts too; deeper ones are bad in both.
_NESTING_LIMIT = 3000
_decode_assistant = msgspec.json.Decoder(_AssistantLine).decode
_decode_chunk_lines = msgspec.json.Decoder(_ChunkLine).decode_lines
_decode_patch_line = msgspec.json.Decoder(_PatchLine).decode
_decode_patch = msgspec.json.Decoder(_PatchResult).decode


# --- results ---------------------------------------------------------------------------------------


class PatchCount(msgspec.Struct):
    line_key: str
    session_id: str
    ts: datetime
    added: int
    removed: int


class FileScan(msgspec.Struct):
    state: FileCursor
    records: list[UsageRecord] = msgspec.field(default_factory=list)
    patches: list[PatchCount] = msgspec.field(default_factory=list)
    bad: list[BadLine] = msgspec.field(default_factory=list)
    bad_count: int = 0
    bytes_read: int = 0
    error: str | None = None
    # The most complete line seen so far per request key, with its file offset: records are built once
    # per request at the end of the file, not once per streamed line.
    pending: dict[str, tuple[int, _AssistantLine, int]] = msgspec.field(default_factory=dict)


def _file_context(path: Path) -> tuple[str | None, str | None]:
    """(parent session id, agent id) for subagent files written at
    ``<project>/<sessionId>/subagents/agent-<agentId>.jsonl``, which fold into their parent session."""
    name = path.name
    if name.startswith("agent-"):
        agent = name[len("agent-") : -len(".jsonl")]
        if path.parent.name == "subagents":
            return path.parent.parent.name, agent
        return None, agent
    return None, None


# --- reading -----------------------------------------------------------------------------------------


def _head_hash(mm: mmap.mmap | bytes, n: int) -> str:
    return f"{n}:{_sha1(mm[:n]).hexdigest()}"


def plan_read(path: Path, prev: FileCursor | None) -> tuple[FileCursor, int] | None:
    """Decide where to start reading ``path``: None when nothing changed since ``prev``."""
    st = path.stat()
    identity = f"{st.st_dev}:{st.st_ino}"
    if prev is not None and prev.identity == identity and prev.size == st.st_size and (
        prev.mtime_ns == st.st_mtime_ns
    ):
        return None
    state = FileCursor(str(path), identity, "", st.st_size, st.st_mtime_ns, 0, 0, 0)
    if prev is not None and prev.identity == identity and st.st_size >= prev.offset:
        state.head_hash = prev.head_hash
        state.offset, state.line_no, state.bad_lines = prev.offset, prev.line_no, prev.bad_lines
        return state, prev.offset
    return state, 0


def scan_file(path: Path, prev: FileCursor | None, *, upto: int | None = None) -> FileScan | None:
    """Read what is new in one file (``upto``: only its first bytes). Never raises for file contents; an
    OS error is reported."""
    if sys.getrecursionlimit() < _NESTING_LIMIT:
        sys.setrecursionlimit(_NESTING_LIMIT)
    try:
        planned = plan_read(path, prev)
    except OSError as exc:
        return FileScan(FileCursor(str(path), "", "", 0, 0, 0, 0, 0), error=str(exc))
    if planned is None:
        return None
    state, start = planned
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            state.size = size
            if size == 0:
                state.head_hash, state.offset = "0:", 0
                return FileScan(state)
            try:
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # emptied since fstat: the next run sees it shrunk and reads it again
                return FileScan(state, error="the file was emptied while being read")
            with mapped as mm:
                if start:
                    n = int(state.head_hash.split(":", 1)[0] or 0)
                    if n == 0 or _head_hash(mm, n) != state.head_hash:
                        start = 0  # rewritten in place: read it all again
                        state.offset = state.line_no = state.bad_lines = 0
                if start == 0:
                    state.head_hash = _head_hash(mm, min(HEAD_BYTES, size))
                scan = FileScan(state)
                end = size if upto is None else max(start, min(size, upto))
                _scan_bytes(mm, start, end, path, scan)
                return scan
    except OSError as exc:
        return FileScan(state, error=str(exc))


CHUNK_BYTES = 256 * 1024
# After a chunk of long lines, the next ones are this long, read where they lie (``_long_lines``): they
# cost the same per byte, but each costs the searches for its ends and a look at its line lengths. Short
# lines stay in small chunks: a bad line sends its whole chunk to the slower line-by-line judgement, and
# they come a few per MB in the dense corpus.
LONG_CHUNK_BYTES = 1024 * 1024
# What makes a line blank (allowed, not counted): JSON's whitespace, not Python's (which adds \v and \f).
_JSON_SPACE = b" \t\r"


class _Where(msgspec.Struct):
    path: str
    parent_session: str | None
    file_agent: str | None


def _scan_bytes(mm: mmap.mmap, pos: int, end: int, path: Path, scan: FileScan) -> None:
    """Read complete lines from ``pos`` in chunks (``CHUNK_BYTES``; ``LONG_CHUNK_BYTES`` after a chunk of
    long lines), validating each chunk in one call, or each long line where it lies, and decoding only
    the lines that carry usage or an edit."""
    state = scan.state
    parent_session, file_agent = _file_context(path)
    where = _Where(str(path), parent_session, file_agent)
    line_no = state.line_no
    start_pos = origin = pos
    if pos and mm[pos - 1] != 0x0A:
        # The last run took a complete last line before its newline was written: that newline ends a
        # line already counted, and anything written before it makes that line bad after all. Until the
        # newline comes, the new bytes are that line's, not a line of their own.
        nl = mm.find(b"\n", pos, end)
        if nl == -1:
            end = pos
        else:
            if mm[pos:nl].strip(_JSON_SPACE):
                _bad(scan, where.path, line_no, "text appended to a line already read")
            pos = origin = nl + 1
    complete_end = max(pos, mm.rfind(b"\n", pos, end) + 1)
    released = pos - pos % mmap.PAGESIZE
    chunk = CHUNK_BYTES
    long_lines = False
    while pos < complete_end:
        if pos - released > _RELEASE_EVERY:
            # Pages already read are file-backed and clean: drop them so a huge file or line does not
            # accumulate in resident memory.
            upto = pos - pos % mmap.PAGESIZE
            mm.madvise(mmap.MADV_DONTNEED, released, upto - released)
            released = upto
        first_nl = mm.find(b"\n", pos, complete_end)
        if first_nl - pos > SHAPE_ONLY_BYTES:
            line_no += 1
            _handle_line(None, pos, first_nl, mm, where, line_no, scan)
            pos = first_nl + 1
            continue
        stop = mm.rfind(b"\n", pos, min(pos + chunk, complete_end)) + 1
        if stop <= first_nl:
            stop = first_nl + 1
        lines_before = line_no
        if long_lines and _lines_are_long(mm, pos, stop):
            # After a chunk of long lines, the next one of long lines too is read where it lies.
            line_no = _long_lines(mm, pos, stop, 0, line_no, where, scan)
        else:
            line_no = _scan_chunk(mm[pos:stop], pos, line_no, where, scan)
        long_lines = stop - pos >= _POINTER_LINE_BYTES * (line_no - lines_before)
        chunk = LONG_CHUNK_BYTES if long_lines else CHUNK_BYTES
        pos = stop
    if complete_end < end:
        # The last line has no newline yet: take it only if it is already complete JSON, otherwise
        # Claude Code is still writing it and the next run will see it whole.
        tail = mm[complete_end:end]
        if tail.strip(_JSON_SPACE) and not _line_is_bad(tail):
            line_no += 1
            _handle_line(tail, complete_end, end, mm, where, line_no, scan)
            pos = end
    _finish(where, scan, mm, origin, state.line_no)
    state.offset = pos
    state.line_no = line_no
    state.bad_lines += scan.bad_count
    scan.bytes_read = pos - start_pos


def _lines_are_long(mm: mmap.mmap, pos: int, stop: int) -> bool:
    """Whether the whole lines ``mm[pos:stop]`` average ``_POINTER_LINE_BYTES`` or more, as ``_scan_chunk``
    asks of a chunk it holds; the count stops as soon as there are too many lines. Why ask again after a
    chunk of long lines: the next one can be of short lines, which ``_scan_chunk`` decodes in one call
    (and reads as the other short chunks are: with duplicate keys, msgspec takes the last, simdjson the
    first)."""
    if not _POINTER_LINE_BYTES:
        return True
    most = (stop - pos) // _POINTER_LINE_BYTES
    find = mm.find
    n = 0
    i = find(b"\n", pos, stop)
    while i != -1:
        n += 1
        if n > most:
            return False
        i = find(b"\n", i + 1, stop)
    return True


def _line_is_bad(line: bytes) -> bool:
    """The judge of one line: bad unless it is UTF-8 and one JSON object (whitespace around it allowed)."""
    if not line.isascii():
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return True
    try:
        _validate(line)
    except _DECODE_ERRORS:
        return True
    return False


_SIMD_MAX_BYTES = 2 * LONG_CHUNK_BYTES
# Chunks whose lines average this long are read a line at a time, each line's parsed object asked for
# its usage block (~1 us a lookup) instead of searching every byte for the keys (~0.5 ms a MB).
_POINTER_LINE_BYTES = 4 * 1024
# Clean runs of shorter lines are decoded whole (``_decoded_lines``); tests switch this off to compare
# with the key search (``_marked_lines``), which also reads what ``_scan_judged`` judged.
_DECODE_CLEAN_CHUNKS = True
_simd = _thread._local()  # threading.local without importing threading (see store.ledger)


def _object_lines(buf: bytes) -> tuple[list[int], list[int], list[int]] | None:
    """Where each non-blank line of ``buf`` (whole lines, ending in a newline) starts and ends (its
    newline), and the newline before each blank line; None when a line does not start with ``{`` and
    end with ``}`` (before an optional ``\r``): not an object, or blanks around it (``_bad_line_spans``
    sorts those out). Lines of that shape can still be fragments that only parse together (``{"a":[{}``
    then ``{}]}``): the fast yes checks each line's value stands alone. The first line must not be
    blank."""
    if not buf.startswith(b"{") or not buf.endswith(b"\n"):
        return None
    # Bytes compared as integers (``{`` 123, ``}`` 125, CR 13, LF 10): indexing costs half of what a
    # ``startswith`` or ``endswith`` call does, and this runs for every line of every chunk.
    starts = [0]
    line_ends: list[int] = []
    blanks: list[int] = []
    add = starts.append
    add_end = line_ends.append
    find = buf.find
    end = len(buf) - 1
    i = find(b"\n")
    while True:
        c = buf[i - 1]  # i > 0: the chunk starts with "{"
        if c != 125 and not (c == 13 and i > 1 and buf[i - 2] == 125):
            return None
        add_end(i)
        if i >= end:
            return starts, line_ends, blanks
        j = i + 1
        c = buf[j]
        while c == 10:  # blank lines
            blanks.append(j - 1)
            j += 1
            if j > end:
                return starts, line_ends, blanks
            c = buf[j]
        if c != 123:
            return None
        add(j)
        i = find(b"\n", j)


_AT_BYTE = re.compile(r"\(byte (\d+)\)$")
_AT_VALUE = re.compile(r" - at `\$\[(\d+)\]")


def _decode_run(buf: bytes, lines: int) -> tuple[list[_ChunkLine] | None, int | None]:
    """(every line of ``buf`` decoded, None) when each line is one UTF-8 JSON object, else (None, the
    offset in ``buf`` where reading stopped, or None when the decoders do not say).

    Python's UTF-8 decoder vouches for the text (msgspec does not check the strings it skips; simdjson's
    parse of the chunk as one array did this before at ~0.5 ns a byte, ~2 % more of a dense refresh),
    msgspec for the structure: it reads the chunk as JSON Lines, where a newline is only whitespace, but
    a line that starts with ``{`` cannot continue a value the line before it left open (a value, not a
    comma or a key, would follow a value), and a line that ends with ``}`` cannot leave a string open (a
    raw newline is not allowed in one); so with as many values as lines, each line is one value.

    Where it stopped is only a hint for ``_scan_refused`` (the byte of a UTF-8 or JSON error, or the
    start of the line a value that does not fit the struct is counted at): whatever it points at is
    judged line by line, and the lines around it are decoded again, so a wrong hint costs time, never a
    wrong verdict.
    """
    try:
        buf.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, exc.start
    try:
        decoded = _decode_chunk_lines(buf)
    except msgspec.ValidationError as exc:  # a DecodeError: test it first
        value = _AT_VALUE.search(str(exc))
        return None, _nth_line_start(buf, int(value.group(1))) if value else None
    except msgspec.DecodeError as exc:
        at = _AT_BYTE.search(str(exc))
        return None, int(at.group(1)) if at else None
    except RecursionError:
        return None, None
    return (decoded, None) if len(decoded) == lines else (None, None)


def _nth_line_start(buf: bytes, n: int) -> int | None:
    """Where line ``n`` (from 0) of ``buf`` starts, None past its end."""
    pos = 0
    find = buf.find
    for _ in range(n):
        pos = find(b"\n", pos) + 1
        if pos == 0:
            return None
    return pos if pos < len(buf) else None


# Keys that tie each line to its value when lines are parsed together (``_keyed_values``): with a part
# no line can know, a line cannot close its value early and pass the rest off as further lines.
_NONCE = os.urandom(8).hex()
_key_strs: list[str] = []
_key_opens: list[bytes] = []


def _keyed_values(buf: bytes, spans: list[tuple[int, int]]) -> list[Any] | None:
    """simdjson's values of the lines ``buf[s:e]``, one per line, when each line is one UTF-8 JSON
    value, else None. The lines are parsed as ``[{"<nonce>0":line},{"<nonce>1":line},...]``. A line
    left open takes the next line's wrapper into its own value (or fails to parse); a line closed early
    leaves text that either fails to parse or makes an element of its own, without the nonce key. Either
    way some element is not the one-key object expected in its place. The caller must drop the values
    before the next parse in this thread."""
    n = len(spans)
    if sum(e - s for s, e in spans) + 32 * n + 2 > _SIMD_MAX_BYTES:
        return None  # too large for one parse
    while len(_key_strs) < n:
        key = f"{_NONCE}{len(_key_strs)}"
        _key_strs.append(key)
        _key_opens.append(f'{{"{key}":'.encode())
    view = memoryview(buf)
    parts: list[Any] = [b"["]
    opens = _key_opens
    for k, (s, e) in enumerate(spans):
        parts += (opens[k], view[s:e], b"},")
    parts[-1] = b"}]"
    try:
        doc = _simd_parser().parse(b"".join(parts))
    except (ValueError, RuntimeError):  # UnicodeDecodeError is a ValueError
        return None
    if len(doc) != n:
        return None
    out = []
    obj = _SimdObject
    for k, key in enumerate(_key_strs[:n]):
        el = doc[k]
        if el.__class__ is not obj or len(el) != 1 or key not in el:
            return None
        out.append(el[key])
    return out


def _simd_parser() -> Any:
    parser = getattr(_simd, "parser", None)
    if parser is None:  # one per thread: a parser holds its last document
        parser = _simd.parser = _SimdParser(max_capacity=_SIMD_MAX_BYTES + 2)
    return parser


def _line_shapes(buf: bytes) -> Iterator[tuple[int, int, bool]]:
    """(start, end before its newline, shaped like an object: ``{`` first, ``}`` last, a CR before the
    newline allowed) for each line of ``buf``; a last line without a newline ends at the end."""
    find = buf.find
    begins = buf.startswith
    ends = buf.endswith
    pos, n = 0, len(buf)
    while pos < n:
        le = find(b"\n", pos)
        if le == -1:
            le = n
        yield pos, le, begins(b"{", pos) and (ends(b"}", pos, le) or ends(b"}\r", pos, le))
        pos = le + 1


def _bad_line_spans(buf: bytes) -> list[tuple[int, int]]:
    """(start, end before the newline) of every line of ``buf`` (whole lines) that ``_line_is_bad``
    judges bad, in order: for a chunk the fast yes refused, without judging most lines one by one.

    A line that does not look like one object (``{`` first, ``}`` last: a truncated line, say) is judged
    alone. The others are checked by simdjson a group at a time (``_keyed_values``); a group it refuses
    is halved, down to single lines, which are judged alone. A chunk with a bad line or two costs one or
    two more passes of simdjson over its bytes, where msgspec's validation of the whole chunk and then of
    its pieces cost several times as much.
    """
    bad: list[tuple[int, int]] = []
    shaped: list[tuple[int, int]] = []
    for pos, le, is_shaped in _line_shapes(buf):
        if is_shaped:
            shaped.append((pos, le))
        else:
            line = buf[pos:le]
            if line.strip(_JSON_SPACE) and _line_is_bad(line):
                bad.append((pos, le))
    groups = [shaped] if shaped else []
    while groups:
        group = groups.pop()
        if _simd_accepts(buf, group):
            continue
        if len(group) == 1:
            s, e = group[0]
            if _line_is_bad(buf[s:e]):
                bad.append((s, e))
            continue
        half = len(group) // 2
        groups += (group[half:], group[:half])
    bad.sort()
    return bad


def _simd_accepts(buf: bytes, lines: list[tuple[int, int]]) -> bool:
    """Whether simdjson reads each of these lines of ``buf`` as one value (``_keyed_values``); too many
    bytes for one parse is a no, and the caller halves the group."""
    values = _keyed_values(buf, lines)
    ok = values is not None
    del values  # the parser's next parse must not find a document still in use
    return ok


def _scan_chunk(buf: bytes, base: int, line_no: int, where: _Where, scan: FileScan) -> int:
    """Scan whole lines ``buf`` that start at file offset ``base`` and line ``line_no`` + 1."""
    found = _object_lines(buf) if len(buf) <= _SIMD_MAX_BYTES else None
    if found is not None:
        starts, ends, blanks = found
        if len(buf) >= _POINTER_LINE_BYTES * len(starts):
            return _long_lines(buf, 0, len(buf), base, line_no, where, scan)
        lines, stopped_at = _decode_run(buf, len(starts))
        if lines is not None:
            if _DECODE_CLEAN_CHUNKS:
                _decoded_lines(lines, buf, starts, ends, base, line_no, where, scan)
            else:
                _marked_lines(buf, base, line_no, where, scan, set())
            return line_no + len(starts) + len(blanks)
        return _scan_refused(buf, base, line_no, where, scan, stopped_at)
    return _scan_refused(buf, base, line_no, where, scan, None)


def _scan_refused(
    buf: bytes, base: int, line_no: int, where: _Where, scan: FileScan, hint: int | None
) -> int:
    """``_scan_chunk`` for a chunk that is not clean throughout: a line not shaped like an object, or
    one the decoders stopped at (``hint``: the offset where, if known).

    Why not judge the whole chunk line by line: a bad line comes every few hundred kB in a large history,
    and judging a 256 kB chunk line by line (simdjson's parse of the lines in halving groups, then a
    search for the keys and a decoder call per usage line) cost ~6 times a clean chunk's one decoder
    call. Here each run of lines shaped like objects is decoded in one call as a clean chunk is; where the
    decoders stop, that one line is judged alone (``_refused_line``) and the lines on either side are
    decoded again. A run whose decoders do not say where they stopped is judged the old way.
    """
    spans = list(_line_shapes(buf))
    starts = [a for a, _, _ in spans]
    ends = [b for _, b, _ in spans]
    shaped = [ok for _, _, ok in spans]
    count = len(starts)
    i = 0
    while i < count:
        if not shaped[i]:
            _refused_line(buf[starts[i] : ends[i] + 1], base + starts[i], line_no + i + 1, where, scan)
            i += 1
            continue
        j = i + 1
        while j < count and shaped[j]:
            j += 1
        _scan_run(buf, starts, ends, i, j, base, line_no, where, scan, hint)
        hint = None
        i = j
    return line_no + count


def _scan_run(
    buf: bytes, starts: list[int], ends: list[int], i: int, j: int, base: int, line_no: int,
    where: _Where, scan: FileScan, hint: int | None,
) -> None:
    """Lines ``i``..``j - 1`` of ``buf`` (each shaped like an object; ``line_no`` is the number before
    line 0): decoded in one call where they are clean, else split at the line the decoders stopped at."""
    while i < j:
        s, e = starts[i], ends[j - 1] + 1
        sub = buf[s:e]
        if hint is not None and s <= hint < e:
            lines, stopped_at = None, hint - s  # the whole chunk's decoding stopped in this run
        else:
            lines, stopped_at = _decode_run(sub, j - i)
        hint = None
        if lines is not None:
            if _DECODE_CLEAN_CHUNKS:
                rel_starts = [a - s for a in starts[i:j]]
                rel_ends = [b - s for b in ends[i:j]]
                _decoded_lines(lines, sub, rel_starts, rel_ends, base + s, line_no + i, where, scan)
            else:
                _marked_lines(sub, base + s, line_no + i, where, scan, set())
            return
        if stopped_at is None:
            _scan_judged(sub, base + s, line_no + i, where, scan)
            return
        k = min(max(bisect_right(starts, s + stopped_at, i, j) - 1, i), j - 1)  # the line it stopped in
        if k > i:
            _scan_run(buf, starts, ends, i, k, base, line_no, where, scan, None)
        _refused_line(buf[starts[k] : ends[k] + 1], base + starts[k], line_no + k + 1, where, scan)
        i = k + 1


def _scan_judged(buf: bytes, base: int, line_no: int, where: _Where, scan: FileScan) -> None:
    """Whole lines ``buf`` judged line by line (``_bad_line_spans``), then searched for their keys."""
    bad_starts = set()
    counted, at_line = 0, line_no  # newlines counted once, from bad line to bad line (they come in order)
    for s, e in _bad_line_spans(buf):
        bad_starts.add(s)
        at_line += buf.count(b"\n", counted, s)
        counted = s
        _bad(scan, where.path, at_line + 1, _reason(buf[s:e].rstrip(b"\r")))
    _marked_lines(buf, base, line_no, where, scan, bad_starts)


def _marked_lines(
    buf: bytes, base: int, line_no: int, where: _Where, scan: FileScan, bad_starts: set[int]
) -> None:
    """Decode the lines that carry a usage block or an edit patch, found by searching for their keys."""
    find = buf.find
    rfind = buf.rfind
    usage_lines: set[int] = set()
    i = _usage_block_at(buf, 0, len(buf))  # one pass over the chunk for the key
    while i != -1:
        ls = rfind(b"\n", 0, i) + 1
        le = find(b"\n", i)
        if ls not in bad_starts and _usage_line(buf, ls, le, base, line_no, where, scan):
            usage_lines.add(ls)
        i = _usage_block_at(buf, le, len(buf))
    _patch_lines(buf, where, scan, bad_starts | usage_lines if bad_starts else usage_lines)


def _patch_lines(buf: bytes, where: _Where, scan: FileScan, skip: set[int]) -> None:
    """Decode the lines holding an edit patch, found by searching for its key, except those in ``skip``
    (bad lines, and requests: a request line is never also an edit)."""
    find = buf.find
    i = find(_PATCH_MARK)
    while i != -1:
        ls = buf.rfind(b"\n", 0, i) + 1
        le = find(b"\n", i)
        if ls not in skip:
            _patch_line(buf[ls:le], where, scan)
        i = find(_PATCH_MARK, le)


def _decoded_lines(
    lines: list[_ChunkLine], buf: bytes, starts: list[int], ends: list[int], base: int, line_no: int,
    where: _Where, scan: FileScan,
) -> None:
    """``_marked_lines`` for a clean chunk of short lines, from every line decoded in one msgspec call
    (``_decode_run``): with hundreds of lines per chunk, a decoder call, a key search and a few
    Python calls per usage line cost more than decoding the chunk's lines into structs at once (content
    is skipped, never built).

    The same lines come out as from ``_marked_lines`` (tested): a line is offered as a request when it
    could be one (a ``message.usage``, or type ``assistant`` or none) and holds a usage block where the
    key search would find one; every other line whose tool result has a ``structuredPatch`` is read as
    an edit, as there (where the key's bytes are searched for and the same decoder judges the line). A
    ``message.usage`` object decoded is taken as found without searching; only a key spelled with JSON
    escapes (``"\\u0075sage"``, which Claude Code does not write) would tell the two ways apart.
    """
    probe = _PatchProbe
    for obj, ls, le in zip(lines, starts, ends, strict=True):
        msg = obj.message
        if msg is not None and msg.usage is not None:
            # The decoder read ``message.usage`` as an object, so the line holds the key the search
            # looks for (~4 % of a dense refresh, searching each request line's bytes to find it again).
            found = True
        else:
            found = obj.type in (None, "assistant") and _usage_block_at(buf, ls, le) != -1
        if not found:
            result = obj.toolUseResult
            if result.__class__ is probe and result.structuredPatch:  # type: ignore[union-attr]
                _patch_line(buf[ls:le], where, scan)
            continue
        obj.toolUseResult = None  # a kept request must not hold on to the chunk (a probe's raw bytes do)
        why = _offer(obj, base + ls, scan)
        if why is not None:
            _bad(scan, where.path, line_no + buf.count(b"\n", 0, ls) + 1, why)


_AROUND_COLON = b" \t\r:"


def _skip_space(buf: bytes | mmap.mmap, i: int, end: int) -> int:
    while i < end and buf[i] in _JSON_SPACE:
        i += 1
    return i


def _usage_block_at(buf: bytes | mmap.mmap, start: int, end: int) -> int:
    """Offset of the first ``"usage"`` key in ``buf[start:end]`` whose value is an object (unlike e.g.
    ``"usage":null``), -1 if there is none. Claude Code writes ``"usage":{``; spaces, tabs and carriage
    returns around the colon are allowed too (``json.dumps`` writes ``"usage": {``; a line holds no
    newline), so that no request of a transcript rewritten by another tool is passed over without a word.
    The bytes can also match inside a key that ends in an escaped ``\"usage``: a search, not a parse, it
    only picks the lines to decode, and decoding judges them."""
    find = buf.find
    i = find(_USAGE_KEY, start, end)
    while i != -1:
        j = i + len(_USAGE_KEY)
        after = buf[j : j + 2]
        if after == b":{" and j + 2 <= end:
            return i
        if after and after[:1] in _AROUND_COLON:
            k = _skip_space(buf, j, end)
            if k < end and buf[k] == 0x3A and (k := _skip_space(buf, k + 1, end)) < end and buf[k] == 0x7B:
                return i
        i = find(_USAGE_KEY, j, end)
    return -1


def _usage_line(buf: bytes, ls: int, le: int, base: int, line_no: int, where: _Where, scan: FileScan) -> bool:
    """Offer the line ``buf[ls:le]`` that holds a usage block, counting it bad if it cannot be a request;
    False when it is not a request line at all (a tool result quoting a usage block). Line numbers are
    only needed for lines reported bad, so they are counted only then."""
    is_request, why = _request_verdict(buf[ls:le], base + ls, scan)
    if why is not None:
        _bad(scan, where.path, line_no + buf.count(b"\n", 0, ls) + 1, why)
    return is_request


def _request_verdict(line: bytes, at: int, scan: FileScan) -> tuple[bool, str | None]:
    """(is it a request line, why it is bad) for a line holding a usage block. A line of another type
    that merely quotes one (``type`` a string other than ``assistant``, and no ``message.usage``) is not
    a request, whatever else is odd about it; anything else is offered or reported."""
    try:
        obj = _decode_assistant(line)
    except _DECODE_ERRORS as exc:
        try:
            kind = _decode_kind(line).type
        except _DECODE_ERRORS:
            kind = None
        if isinstance(kind, str) and kind != "assistant":
            return False, None
        return True, f"unexpected shape ({exc})"
    msg = obj.message
    if (msg is None or msg.usage is None) and obj.type not in (None, "assistant"):
        return False, None
    return True, _offer(obj, at, scan)


def _patch_line(line: bytes, where: _Where, scan: FileScan) -> None:
    with contextlib.suppress(*_DECODE_ERRORS):  # not the shape of an edit result
        _patch(_decode_patch_line(line), where.parent_session, scan)


def _long_lines(
    src: bytes | mmap.mmap, pos: int, stop: int, base: int, line_no: int, where: _Where, scan: FileScan
) -> int:
    """Scan the whole lines ``src[pos:stop]`` (file offset ``base + pos``, line ``line_no`` + 1 on) one
    at a time, each parsed by simdjson where it lies; the line number after them.

    Why: for long lines (megabyte tool results) the parse is the judge and the map of a line at once.
    Asking the parsed object where the usage blocks and edit patches are costs a few microseconds a line,
    where searching for their keys costs a pass over every byte; and parsing each line in place (``src``
    is the file mapping itself after the first chunk) spares two copies of every byte that parsing a
    chunk at once needs (the chunk, then its lines joined into one array): ~15 % of a sparse refresh's
    reading. simdjson copies the line into its own padded buffer, so nothing it returns points into
    ``src``. A line it refuses (too long for its buffer, nested deeper than it goes, or bad), and one
    that does not start with ``{``, is judged by ``_line_is_bad``, as a refused chunk's lines are.
    """
    parse = _simd_parser().parse
    obj = _SimdObject
    find = src.find
    with memoryview(src) as view:
        while pos < stop:
            le = find(b"\n", pos, stop)
            line_no += 1
            el = None
            # Only a line that starts as an object goes to simdjson: it also skips a leading byte-order
            # mark, which the judge (msgspec) refuses, and lines with blanks before the brace are rare.
            if src[pos] == 0x7B and le - pos <= _SIMD_MAX_BYTES:
                try:
                    el = parse(view[pos:le])
                except ValueError:  # not JSON, not UTF-8 (UnicodeDecodeError is a ValueError), too big
                    pass
                except RuntimeError as exc:  # nested too deep, or an integer beyond 64 bits
                    if str(exc).startswith("Tried to re-use"):
                        raise  # a document left alive (below): a bug to see, not a line to judge
            if el.__class__ is obj:
                _object_line(el, src, pos, le, base, line_no, where, scan)
                el = None  # the parser's next parse must not find a document still in use
            elif le > pos:
                el = None
                _refused_line(src[pos : le + 1], base + pos, line_no, where, scan)
            pos = le + 1
    return line_no


def _refused_line(line: bytes, at: int, line_no: int, where: _Where, scan: FileScan) -> None:
    """A line simdjson did not read as an object (with its newline, at file offset ``at``): blank, bad,
    or (nested deeper than simdjson goes, longer than its buffer, or with blanks before its brace) judged
    good and searched for keys. The newline is JSON whitespace to the judge: no copy without it."""
    if not line.strip(b" \t\r\n"):
        return
    if _line_is_bad(line):
        _bad(scan, where.path, line_no, _reason(line.rstrip(b"\r\n")))
    else:
        _marked_lines(line, at, line_no - 1, where, scan, set())


def _object_line(
    el: Any, buf: bytes | mmap.mmap, ls: int, le: int, base: int, line_no: int, where: _Where, scan: FileScan
) -> None:
    """``_marked_lines`` for the line ``buf[ls:le]`` (line ``line_no``), given simdjson's object of it.

    The same lines come out (tested both ways). A line whose ``message`` holds a ``usage`` object is
    taken as holding the key; one whose ``message.usage`` is something else, and any line that could be a
    malformed request (no ``type``, type ``assistant``, or a type that is not a string), is searched for
    the usage key as ``_marked_lines`` searches the chunk; what it finds is judged by the same
    ``_request_verdict``. Only JSON with duplicate keys (simdjson reads the first, msgspec the last) or
    keys spelled with escapes (``"\\u0075sage"``, found by the parse, not by the search) can tell the two
    apart.
    """
    obj = _SimdObject
    # A key that is there costs ~0.03 us to find and ~0.03 us to read; a key that is not costs ~1.7 us
    # (simdjson raises a C++ exception inside, and ``get`` catches the same one). Keys that are usually
    # there are tested with ``in``; those usually missing (``usage`` in a user's message, a structured
    # patch in a command's result, a message or a tool result on a line of another type) with ``_lacks``.
    kind = el["type"] if "type" in el else None  # noqa: SIM401 (``get`` raises inside on a miss)
    if kind == "assistant" or kind == "user":
        msg = el["message"] if "message" in el else None  # noqa: SIM401
    else:  # snapshots, summaries, system lines: usually no message
        msg = None if _lacks(el, "message") else el["message"]
    if msg.__class__ is obj and (not _lacks(msg, "usage") if kind == "user" else "usage" in msg):
        # A usage object the parse already holds is the key the search would find (as in
        # ``_decoded_lines``); anything else there (``null``) leaves it to the search.
        found = msg["usage"].__class__ is obj or _usage_block_at(buf, ls, le) != -1
    else:
        suspect = kind is None or kind == "assistant" or kind.__class__ is not str
        found = suspect and _usage_block_at(buf, ls, le) != -1
    if found:
        is_request, why = _request_verdict(buf[ls:le], base + ls, scan)
        if why is not None:
            _bad(scan, where.path, line_no, why)
        if is_request:
            return
    if "toolUseResult" in el if kind == "user" else not _lacks(el, "toolUseResult"):
        result = el["toolUseResult"]
        if result.__class__ is obj and not _lacks(result, "structuredPatch"):
            _patch_line(buf[ls:le], where, scan)


_LIST_KEYS_UPTO = 32


def _lacks(o: Any, key: str) -> bool:
    """Whether the simdjson object ``o`` has no ``key``, for keys that are usually missing: listing an
    object's keys costs ~0.2 us for a few and ~0.6 us for a dozen, a failed lookup ~1.7 us. A large
    object is asked directly."""
    return key not in list(o) if len(o) <= _LIST_KEYS_UPTO else key not in o


def _handle_line(
    line: bytes | None, start: int, stop: int, mm: mmap.mmap, where: _Where, line_no: int, scan: FileScan
) -> None:
    """One line on its own: the unterminated last line, already judged good, or an oversized one
    (``line`` None: read in place)."""
    has_usage = _usage_block_at(mm, start, stop) != -1
    if line is None and not has_usage:
        # Oversized and without usage (file-history snapshots, huge tool results): check its shape in
        # place rather than copying hundreds of MB to validate them.
        head = mm[start : start + 64].lstrip()
        tail = mm[max(start, stop - 64) : stop].rstrip()
        if not head.startswith(b"{") or not tail.endswith(b"}"):
            _bad(scan, where.path, line_no, "not JSON (an oversized line that is not an object)")
        return
    if line is None:
        line = mm[start:stop]
        if _line_is_bad(line):
            _bad(scan, where.path, line_no, _reason(line))
            return
    if has_usage:
        is_request, why = _request_verdict(line, start, scan)
        if why is not None:
            _bad(scan, where.path, line_no, why)
        if is_request:
            return
    if mm.find(_PATCH_MARK, start, stop) != -1:
        _patch_line(line, where, scan)


def _reason(line: bytes) -> str:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    try:
        _validate(line)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: test it first
        return f"unexpected shape ({exc})"
    except msgspec.DecodeError as exc:
        return f"not JSON ({exc})"
    except RecursionError:
        return "nested too deeply"
    return "not JSON"


def _bad(scan: FileScan, path: str, line_no: int, reason: str) -> None:
    scan.bad_count += 1
    if len(scan.bad) < MAX_BAD_REPORTED:
        scan.bad.append(BadLine(path, line_no, reason))


def _offer(obj: _AssistantLine, at: int, scan: FileScan) -> str | None:
    """Keep the line (starting at file offset ``at``) if it is the most complete seen for its request;
    otherwise return why the line cannot be one. Line numbers are counted only for lines reported bad."""
    msg = obj.message
    if msg is None or msg.usage is None:
        if obj.type in (None, "assistant"):
            return "usage block outside a message"
        return None  # e.g. a tool result that quotes an API response: not a request of its own
    if msg.model == SYNTHETIC_MODEL or obj.isApiErrorMessage:
        return None  # made up by Claude Code: costs nothing by definition
    if not msg.model:
        return "assistant line without message.model"
    if not obj.timestamp:
        return "assistant line without timestamp"
    key = msg.id or obj.requestId
    if not key:
        return "assistant line without message.id or requestId"
    u = msg.usage
    # Counts in range (checked inline: this runs for every usage line), before the duplicates compete: a
    # corrupt copy must not displace a sound one. ``_count_problem`` says what is wrong.
    a, b = u.input_tokens or 0, u.output_tokens or 0
    c, d = u.cache_creation_input_tokens or 0, u.cache_read_input_tokens or 0
    stu, cc = u.server_tool_use, u.cache_creation
    w = (stu.web_search_requests or 0) if stu is not None else 0
    if not (
        0 <= a <= MAX_TOKENS and 0 <= b <= MAX_TOKENS and 0 <= c <= MAX_TOKENS and 0 <= d <= MAX_TOKENS
        and 0 <= w <= MAX_WEB_SEARCHES
        and (cc is None or (0 <= (cc.ephemeral_5m_input_tokens or 0) <= MAX_TOKENS
                            and 0 <= (cc.ephemeral_1h_input_tokens or 0) <= MAX_TOKENS))
    ):  # fmt: skip
        return _count_problem(u)
    size = a + b + c + d + w
    prev = scan.pending.get(key)
    if prev is None or size > prev[0]:
        scan.pending[key] = (size, obj, -at - 1)  # negative: an offset that _finish turns into a line
    return None


def _count_problem(u: Any) -> str:
    """Why a usage block's counts, one of which ``_offer`` found out of range, cannot be a request's:
    negative, or beyond any real one (beyond 2**63 they would not even fit the store's integers)."""
    cc, stu = u.cache_creation, u.server_tool_use
    for value, most in (
        (u.input_tokens, MAX_TOKENS), (u.output_tokens, MAX_TOKENS),
        (u.cache_creation_input_tokens, MAX_TOKENS), (u.cache_read_input_tokens, MAX_TOKENS),
        (cc.ephemeral_5m_input_tokens if cc is not None else None, MAX_TOKENS),
        (cc.ephemeral_1h_input_tokens if cc is not None else None, MAX_TOKENS),
        (stu.web_search_requests if stu is not None else None, MAX_WEB_SEARCHES),
    ):  # fmt: skip
        if value is not None and not 0 <= value <= most:
            return "negative count" if value < 0 else "count out of range"
    return "count out of range"  # not reached: _offer calls this only for a count out of range


def _finish(where: _Where, scan: FileScan, mm: mmap.mmap, start: int, start_line: int) -> None:
    bad_at: list[tuple[int, str]] = []
    for _size, obj, at in scan.pending.values():
        rec = _record(obj, where.parent_session, where.file_agent)
        if isinstance(rec, str):
            bad_at.append((-at - 1, rec))  # an offset (see _offer): its line is counted below
        elif rec is not None:
            scan.records.append(rec)
    scan.pending.clear()
    # Line numbers of bad requests, counting newlines once from the start of the read, in file order.
    line, pos = start_line, start
    for at, reason in sorted(bad_at):
        line += mm[pos:at].count(b"\n")
        pos = at
        _bad(scan, where.path, line + 1, reason)
    scan.bad.sort(key=lambda b: b.line_no)


def parse_timestamp(value: str) -> datetime:
    ts = datetime.fromisoformat(value)
    if ts.tzinfo is None:
        raise ValueError("timestamp without a zone")
    return ts


def _record(
    obj: _AssistantLine, parent_session: str | None, file_agent: str | None
) -> UsageRecord | str | None:
    """A record, None for a line that costs nothing by definition, or a reason string for a bad line."""
    msg = obj.message
    if msg is None or msg.usage is None:
        return None if obj.type not in (None, "assistant") else "usage block outside a message"
    model = msg.model or ""
    if model == SYNTHETIC_MODEL or obj.isApiErrorMessage:
        return None
    if not model:
        return "assistant line without message.model"
    if not obj.timestamp:
        return "assistant line without timestamp"
    try:
        ts = parse_timestamp(obj.timestamp)
    except ValueError:
        return f"bad timestamp {obj.timestamp[:40]!r}"
    key = msg.id or obj.requestId
    if not key:
        return "assistant line without message.id or requestId"
    usage = usage_from_wire(msg.usage)
    # Positional, in UsageRecord's field order (``_RECORD_FIELDS``, checked by a test): a struct built
    # from 16 keywords costs ~0.7 us, from its positions ~0.15 us, and this runs once per request.
    return UsageRecord(
        ts, SOURCE_TRANSCRIPT, "msg:" + key, model, usage.tokens, usage.web_search_requests,
        usage.service_tier, usage.inference_geo, usage.speed,
        parent_session or obj.sessionId or "",  # session_id
        obj.cwd or "",  # project
        obj.gitBranch or "",  # git_branch
        obj.version or "",  # client_version
        bool(obj.isSidechain) or file_agent is not None,  # is_sidechain
        obj.agentId or file_agent or "",  # agent_id
        "", "", "", "", "",  # parent_agent_id, user_id, group_id, key_id, workspace
        obj.requestId or "",  # request_id
    )


_RECORD_FIELDS = (
    "ts", "source", "dedupe_key", "model", "tokens", "web_search_requests", "service_tier", "inference_geo",
    "speed", "session_id", "project", "git_branch", "client_version", "is_sidechain", "agent_id",
    "parent_agent_id", "user_id", "group_id", "key_id", "workspace", "request_id",
)  # fmt: skip


def _patch(obj: _PatchLine, parent_session: str | None, scan: FileScan) -> None:
    raw = obj.toolUseResult
    if not raw or not obj.uuid or not obj.timestamp:
        return
    try:
        result = _decode_patch(raw)
        ts = parse_timestamp(obj.timestamp)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return  # a tool result of another shape: not an edit
    added = removed = 0
    for hunk in result.structuredPatch or ():
        for text in hunk.lines:
            if text.startswith("+"):
                added += 1
            elif text.startswith("-"):
                removed += 1
    if added or removed:
        session = parent_session or obj.sessionId or ""
        scan.patches.append(PatchCount("uuid:" + obj.uuid, session, ts, added, removed))


# --- whole runs ----------------------------------------------------------------------------------------


__all__ = [
    "BadLine",
    "FileScan",
    "RefreshStats",
    "discover",
    "discover_paths",
    "pending",
    "plan_read",
    "scan_file",
    "transcript_dirs",
]
