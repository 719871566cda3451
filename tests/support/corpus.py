"""Generator of realistic Claude Code transcript trees whose correct totals are known in advance.

Why: the readers, the ledger and the reports must be tested against *independently* computed numbers
on input that looks like the real thing, warts included (streamed duplicates, resumed copies, subagent
files, broken lines, a line still being written...). Every request written here is recorded as an
``ExpectedRequest`` priced by ``tests.support.refprices`` (hand-coded from prices.md), never by ccledger.

Layout: ``root`` plays ``CLAUDE_CONFIG_DIR``; sessions go to ``root/projects/<dir>/<session>.jsonl``
where ``<dir>`` is the cwd with every character outside ``[A-Za-z0-9]`` replaced by ``-`` (so
``/home/alice/web_app`` and ``/home/alice/web-app`` share one folder: the line's ``cwd`` is the project).
Subagents go to ``<dir>/<session>/subagents/agent-<id>.jsonl`` (one older-style ``<dir>/agent-<id>.jsonl``
too); their lines carry the parent ``sessionId`` and count for the parent session.

Conventions a reader must follow to match ``Expected`` (they follow transcripts.md):

* one request per ``message.id`` (+ ``requestId`` when present); a sidechain line repeating a known
  ``message.id`` with a new ``requestId`` (the ``/btw`` replay) is the same request, kept as the parent
  (not sidechain, parent's timestamp);
* usage = the line with the largest usage (always the last line of a streamed message). All lines of
  one message carry the same timestamp (real ones differ by milliseconds; equal here so the expected
  request time does not depend on how a reader breaks ties); ``ExpectedRequest.timestamp`` = that
  time (for the /btw case: the parent's);
* ``<synthetic>``-model lines and ``isApiErrorMessage`` lines are not requests;
* a bad line (counted in ``Expected.bad_lines``) is a non-blank line that is not valid UTF-8, not JSON,
  or an assistant line lacking a required field: here ``timestamp`` or ``message.id`` (the latter also
  without ``requestId``). Resumed copies never repeat bad lines or ``structuredPatch`` lines, so
  ``lines_added``/``lines_removed`` do not depend on de-duplicating user lines;
* the final line of a file without ``\\n``: counted if it is complete JSON, otherwise it is a line
  being written (neither a request nor a bad line).

What ``generate(features=True)`` writes (each placed at least once, more at random): streamed messages
(one line per thinking/text/tool_use block, earlier lines with a smaller mid-stream ``output_tokens``);
lines without ``requestId``; ``/btw`` sidechain replays; inline ``isSidechain`` threads; subagent files
(new and old style); a ``--resume`` file copying another session's lines; 5m/1h cache split and
old-style usage (``cache_creation_input_tokens`` only, plus a wrong ``costUSD``); Sonnet 4/4.5
long context in March 2026 (210k, exactly 200k, 200,001, with 1h writes, with batch); >200k requests on
1M-window models at standard price (never Opus 4.6); web searches (and free web fetches);
``usage.service_tier: "batch"``; ``usage.inference_geo: "us"``/``"global"`` on Claude 4.6+; an
unknown model (``claude-future-9``); Bedrock/Vertex ids; ``<synthetic>`` and ``isApiErrorMessage``
lines; user prompts, tool results, Edit results with ``structuredPatch``, a Write with an empty patch;
``summary``, ``system`` and ``file-history-snapshot`` lines; bad lines of every kind in ``_BAD_KINDS``;
blank lines; one file ending in a complete line without newline and one ending in a fragment; sessions
crossing midnight in UTC, America/Los_Angeles and Asia/Kolkata; cwds that collide as folder names, a
Windows cwd and a non-ASCII cwd.

Token fields of generated requests stay <= 200,000 each (peers apply a per-field >200k tier, see
bench/README.md) while the request totals still exercise the >200k rules.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
import uuid
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .refprices import lookup, request_cost

Json = dict[str, Any]

__all__ = ["Expected", "ExpectedRequest", "format_ts", "generate", "handcheck_cases", "project_dir_name"]


# --------------------------------------------------------------------------------------------------
# Public result types
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedRequest:
    """One de-duplicated API request as a correct reader must report it."""

    timestamp: datetime  # tz-aware UTC, millisecond precision
    session_id: str  # the parent session id (subagent files fold into their parent session)
    project: str  # the cwd
    model: str  # model id exactly as written in the transcript
    input_tokens: int
    output_tokens: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int
    web_search_requests: int
    is_sidechain: bool
    cost: Decimal  # exact, from refprices
    unknown_model: bool  # priced at the $5/$25 fallback
    # Extras for debugging a mismatch (defaults keep hand-built instances short).
    message_id: str = ""
    request_id: str | None = None
    service_tier: str | None = None
    inference_geo: str | None = None


TOKEN_KINDS = (
    "input_tokens",
    "output_tokens",
    "cache_write_5m",
    "cache_write_1h",
    "cache_read",
    "web_search_requests",
)


@dataclass
class Expected:
    """What a correct reader must find in the files written by one ``generate``/``handcheck_cases``."""

    requests: list[ExpectedRequest] = field(default_factory=list)
    bad_lines: int = 0
    lines_added: dict[str, int] = field(default_factory=dict)  # absent session = 0
    lines_removed: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    bad_by_kind: dict[str, int] = field(default_factory=dict)  # breakdown of bad_lines, for diagnosis
    bytes_written: int = 0

    def total_cost(self) -> Decimal:
        """Exact sum of request costs."""
        return sum((r.cost for r in self.requests), Decimal(0))

    def totals(self) -> dict[str, int]:
        """Token sums by kind (keys = ``TOKEN_KINDS``) plus ``requests``."""
        out = {k: 0 for k in TOKEN_KINDS}
        for r in self.requests:
            for k in TOKEN_KINDS:
                out[k] += getattr(r, k)
        out["requests"] = len(self.requests)
        return out

    def cost_by_session(self) -> dict[str, Decimal]:
        """Cost per parent session id."""
        out: dict[str, Decimal] = {}
        for r in self.requests:
            out[r.session_id] = out.get(r.session_id, Decimal(0)) + r.cost
        return out

    def cost_by_model(self) -> dict[str, Decimal]:
        """Cost per model id as written."""
        out: dict[str, Decimal] = {}
        for r in self.requests:
            out[r.model] = out.get(r.model, Decimal(0)) + r.cost
        return out

    def cost_by_day(self, tz: str | tzinfo = "UTC") -> dict[date, Decimal]:
        """Cost per calendar day in ``tz`` (what a daily report must show)."""
        zone = ZoneInfo(tz) if isinstance(tz, str) else tz
        out: dict[date, Decimal] = {}
        for r in self.requests:
            d = r.timestamp.astimezone(zone).date()
            out[d] = out.get(d, Decimal(0)) + r.cost
        return out

    def merged(self, other: Expected) -> Expected:
        """Expectation for a root holding both corpora (their ids never collide across seeds)."""
        added = dict(self.lines_added)
        removed = dict(self.lines_removed)
        kinds = dict(self.bad_by_kind)
        for src, dst in (
            (other.lines_added, added),
            (other.lines_removed, removed),
            (other.bad_by_kind, kinds),
        ):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v
        return Expected(
            requests=self.requests + other.requests,
            bad_lines=self.bad_lines + other.bad_lines,
            lines_added=added,
            lines_removed=removed,
            files=self.files + other.files,
            bad_by_kind=kinds,
            bytes_written=self.bytes_written + other.bytes_written,
        )


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------

_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_B62 = string.digits + string.ascii_letters
_HEX = "0123456789abcdef"
_SENTINEL = "@@PAYLOAD@@"  # never produced by the vocabularies below


def project_dir_name(cwd: str) -> str:
    """Claude Code's folder name for a cwd: every char outside ``[A-Za-z0-9]`` becomes ``-``."""
    return _NON_ALNUM.sub("-", cwd)


def format_ts(t: datetime) -> str:
    """``2026-11-23T14:02:15.350Z``: the only timestamp form Claude Code writes."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _line(obj: Json) -> bytes:
    return (_ENCODE(obj) + "\n").encode("utf-8")


# Vocabularies: plain words, code-ish tokens and a few characters that need JSON escaping or are
# multi-byte in UTF-8, so parsers do real work.
_WORDS = (
    "the",
    "a",
    "to",
    "of",
    "and",
    "in",
    "is",
    "it",
    "that",
    "for",
    "this",
    "we",
    "file",
    "test",
    "function",
    "update",
    "error",
    "value",
    "return",
    "config",
    "now",
    "then",
    "check",
    "change",
    "should",
    "fix",
    "read",
    "write",
    "path",
    "line",
    "module",
    "handler",
    "request",
    "response",
    "cache",
    "token",
    "session",
    "ledger",
    "report",
    "price",
    "model",
    "I'll",
    "let's",
    "looks",
    "good",
    "because",
    "instead",
    "missing",
    "import",
    "class",
    "field",
    "schema",
    "query",
    "index",
    "naïve",
    "café",
    "→",
    "✓",
    "—",
    "“quoted”",
    '"json"',
    "C:\\Users\\dev",
    "`x = 1`",
    "{}",
    "[]",
    "tab\there",
    "ü",
    "日本語",
    "🙂",
    ".\n",
    ",",
    ":",
    "(see above)",
    "e.g.",
    "done.\n\n",
)
_CODE = (
    "def",
    "return",
    "self",
    "if",
    "else:",
    "for",
    "in",
    "import",
    "from",
    "x",
    "y",
    "value",
    "None",
    "True",
    "False",
    "=",
    "==",
    "+=",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    "'s'",
    '"q"',
    "await",
    "async",
    "raise",
    "ValueError",
    "dict[str,",
    "int]",
    "len(rows)",
    "0",
    "1",
    "42",
    "# comment",
    "\\n",
    "\t",
    "lambda",
    "yield",
    "with",
    "open(path)",
    "as",
    "f:",
    "print(",
    "é",
)
_PROMPTS = (
    "Fix the failing test in the ledger module",
    "Add a --since flag to the daily report",
    "Why does the gateway return 502 on streaming requests?",
    "Refactor the price table loader, keep behaviour",
    "Write a migration for the new column",
    "Explain what this function does",
    "Run the test suite and fix whatever breaks",
    "Add type hints to utils.py",
)
_TITLES = ("Fix ledger totals", "Daily report flag", "Gateway streaming bug", "Price loader refactor")

_VERSIONS = ("2.1.236", "2.1.239", "2.1.241", "2.1.244")
_VERSION_OLD = "1.0.72"  # wrote only cache_creation_input_tokens and costUSD
_VERSION_LEGACY = "2.1.58"  # early 2026
_BRANCHES = ("main", "main", "main", "feature/report-since", "fix/gateway-502", "HEAD")

PROJECTS: tuple[str, ...] = (
    "/home/alice/web_app",
    "/home/alice/web-app",  # same folder name as the line above
    "/home/alice/src/ccledger",
    "/Users/bob/Code/api.server",
    "/srv/builds/data pipeline",
    "C:\\Users\\dana\\repos\\tool",
    "/home/chen/项目/demo",
)

_MAIN_MODELS: tuple[tuple[str, int], ...] = (
    ("claude-sonnet-4-5-20250929", 20),
    ("claude-sonnet-4-5", 6),
    ("claude-opus-4-6", 10),
    ("claude-opus-4-8", 12),
    ("claude-sonnet-5", 14),
    ("claude-opus-5", 10),
    ("claude-haiku-4-5-20251001", 4),
    ("claude-sonnet-4-6", 4),
    ("claude-opus-4-7", 3),
    ("claude-fable-5", 2),
)
_REQUIRED_PRIMARIES = (
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-6",
    "claude-sonnet-5",
    "claude-opus-4-8",
    "claude-sonnet-4-5",
    "claude-opus-5",
    "claude-haiku-4-5-20251001",
)
_SIDE_MODEL = "claude-haiku-4-5-20251001"
_BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
_VERTEX_MODEL = "claude-opus-4-5@20251101"
_UNKNOWN_MODELS = ("claude-future-9",)
# >200k at standard price (1M window): all Claude 4.6+ except Opus 4.6, whose historic tier is unsettled.
_ONE_M_MODELS = (
    "claude-opus-4-8",
    "claude-opus-5",
    "claude-sonnet-5",
    "claude-sonnet-4-6",
    "claude-opus-4-7",
)
_GEO_MODELS = ("claude-opus-4-6", "claude-opus-4-8", "claude-sonnet-5", "claude-opus-5")

_BAD_KINDS = (
    "garbage",
    "nul",
    "truncated",
    "invalid_utf8",
    "invalid_utf8_assistant",
    "missing_timestamp",
    "missing_id",
)
# Each is placed at least once when features=True (given enough sessions x requests).
_FORCED_REQUEST_FEATURES = (
    "snapshot",
    "no_request_id",
    "web_search",
    "web_fetch",
    "batch",
    "geo_us",
    "geo_global",
    "inline_sidechain",
    "btw",
    "synthetic",
    "api_error",
    "api_error_real_model",
    "subagent",
    "old_agent_file",
    "unknown_model",
    "big_context",
    "patch",
    "create_file",
    "blank",
    "side_model",
    *(f"bad:{k}" for k in _BAD_KINDS),
)
_FORCED_SESSION_FEATURES = (
    "old_usage",
    "midnight_utc",
    "midnight_la",
    "midnight_kolkata",
    "bedrock",
    "vertex",
    "fragment_end",
    "mixed_ttl",
    "summary",
)
_MIDNIGHT_ZONES = {
    "midnight_utc": "UTC",
    "midnight_la": "America/Los_Angeles",
    "midnight_kolkata": "Asia/Kolkata",
}


class _File:
    """One transcript file being assembled in memory (a session is small; the corpus is not)."""

    def __init__(self, path: Path, *, keep_copies: bool = False) -> None:
        self.path = path
        self.parts: list[bytes | memoryview] = []
        self.size = 0
        self.copies: list[bytes] | None = [] if keep_copies else None

    def add(self, data: bytes, *, copyable: bool = True) -> None:
        self.parts.append(data)
        self.size += len(data)
        if copyable and self.copies is not None:
            self.copies.append(data)

    def add_parts(self, parts: list[bytes | memoryview], *, copyable: bool = True) -> None:
        self.parts.extend(parts)
        self.size += sum(len(p) for p in parts)
        if copyable and self.copies is not None:
            self.copies.append(b"".join(parts))

    def strip_final_newline(self) -> None:
        last = self.parts[-1]
        assert isinstance(last, bytes) and last.endswith(b"\n")
        self.parts[-1] = last[:-1]
        self.size -= 1

    def write(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("wb", buffering=1 << 20) as f:
            f.writelines(self.parts)
        self.parts = []
        return self.size


class _Clock:
    """Session time, millisecond resolution (what the transcript can express)."""

    def __init__(self, t: datetime) -> None:
        self.t = t.replace(microsecond=t.microsecond // 1000 * 1000)

    def advance(self, ms: int) -> datetime:
        self.t += timedelta(milliseconds=ms)
        return self.t


@dataclass
class _Chain:
    """A conversation thread: the main one, an inline sidechain or a subagent."""

    sidechain: bool
    agent_id: str | None
    ttl: str  # "5m" | "1h" | "mixed": which cache-write bucket this thread's writes land in
    file: _File
    last_uuid: str | None = None
    context: int = 0  # tokens already cached
    pending: int = 0  # tokens to be written to cache on the next request


@dataclass
class _Session:
    session_id: str
    cwd: str
    branch: str
    version: str
    old_usage: bool
    primary: str
    side: str | None
    clock: _Clock
    main: _Chain
    files: list[_File]


@dataclass
class _Usage:
    """Final usage of one request; ``as_json`` renders it (optionally as a mid-stream snapshot)."""

    input: int
    output: int
    cw5: int = 0
    cw1h: int = 0
    cr: int = 0
    web: int = 0
    fetch: int = 0
    tier: str | None = "standard"
    geo: str | None = None
    old_style: bool = False

    def as_json(self, *, output: int | None = None, web: int | None = None) -> Json:
        d: Json = {
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cw5 + self.cw1h,
            "cache_read_input_tokens": self.cr,
        }
        if not self.old_style:
            d["cache_creation"] = {
                "ephemeral_5m_input_tokens": self.cw5,
                "ephemeral_1h_input_tokens": self.cw1h,
            }
        d["output_tokens"] = self.output if output is None else output
        searches = self.web if web is None else web
        if not self.old_style or searches or self.fetch:
            d["server_tool_use"] = {"web_search_requests": searches, "web_fetch_requests": self.fetch}
        d["service_tier"] = self.tier
        if self.geo is not None:
            d["inference_geo"] = self.geo
        return d


@dataclass
class _Sent:
    """What later lines need to know about a request just written."""

    msg_id: str
    request_id: str | None
    model: str
    last_line: Json
    tool_id: str | None
    tool_name: str | None
    tool_input: Json | None


_ZERO_USAGE: Json = {
    "input_tokens": 0,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 0,
    "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
    "service_tier": None,
}


# --------------------------------------------------------------------------------------------------
# The writer
# --------------------------------------------------------------------------------------------------


class _Writer:
    """Holds the seeded RNG, the text pools and the running ``Expected``."""

    def __init__(self, root: Path, *, seed: int, features: bool, big: bool) -> None:
        self.rng = random.Random(seed)
        self.projects = root / "projects"
        self.features = features
        self.big = big
        self.exp = Expected()
        self.msg_ids: set[str] = set()
        self.first_party_sessions = 0
        rng = self.rng
        n_words = 60_000 if big else 8_000
        self.prose = " ".join(rng.choices(_WORDS, k=n_words))
        self.code = " ".join(rng.choices(_CODE, k=n_words // 2))
        self.noise = "".join(rng.choices(_B62, k=8_192))  # for signatures: slices, no per-char draws
        self.blob = b""
        self.blob_offsets: list[int] = []
        if big:
            self._build_blob(1_300_000)

    # ---- ids and text --------------------------------------------------------------------------
    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def msg_id(self) -> str:
        while True:
            m = "msg_01" + "".join(self.rng.choices(_B62, k=22))
            if m not in self.msg_ids:
                self.msg_ids.add(m)
                return m

    def req_id(self) -> str:
        return "req_011C" + "".join(self.rng.choices(_B62, k=20))

    def tool_id(self) -> str:
        return "toolu_01" + "".join(self.rng.choices(_B62, k=22))

    def random_chars(self, n: int) -> str:
        a = self.rng.randrange(len(self.noise) - n)
        return self.noise[a : a + n]

    def hex_id(self, n: int) -> str:
        return "".join(self.rng.choices(_HEX, k=n))

    def text(self, lo: int, hi: int) -> str:
        n = self.rng.randint(lo, hi)
        a = self.rng.randrange(max(1, len(self.prose) - n))
        return self.prose[a : a + n].strip() or "ok"

    def code_text(self, lo: int, hi: int) -> str:
        n = self.rng.randint(lo, hi)
        a = self.rng.randrange(max(1, len(self.code) - n))
        return self.code[a : a + n]

    def code_line(self) -> str:
        return " ".join(self.rng.choices(_CODE, k=self.rng.randint(2, 9)))

    def _build_blob(self, size: int) -> None:
        """Pre-escaped tool output (``cat -n`` style), sliced at line boundaries for big results.

        Why: escaping megabytes per line would dominate a 1 GB run; slicing a blob escaped once keeps
        each big line a couple of memory copies, and line-boundary cuts never split an escape sequence
        or a multi-byte UTF-8 character.
        """
        rng = self.rng
        # A few thousand distinct escaped line bodies, then numbered lines drawn from them.
        raw_bodies = (" ".join(rng.choices(_CODE, k=rng.randint(1, 14))) + "\n" for _ in range(2_000))
        bodies = [json.dumps(raw, ensure_ascii=False)[1:-1].encode() for raw in raw_bodies]
        chunks: list[bytes] = []
        offsets = [0]
        total = 0
        n = 0
        while total < size:
            body = bodies[rng.randrange(len(bodies))]
            n += 1
            line = b"%6d\\t%s" % (n, body)  # \t escaped, as JSON has it
            chunks.append(line)
            total += len(line)
            offsets.append(total)
        self.blob = b"".join(chunks)
        self.blob_offsets = offsets

    def blob_slice(self, size: int) -> memoryview:
        offs = self.blob_offsets
        size = min(size, offs[-1])
        last_start = bisect_left(offs, offs[-1] - size)
        i = self.rng.randrange(0, max(1, last_start))
        j = min(bisect_left(offs, offs[i] + size), len(offs) - 1)
        return memoryview(self.blob)[offs[i] : offs[j]]

    # ---- expected bookkeeping -------------------------------------------------------------------
    def count_bad(self, kind: str) -> None:
        self.exp.bad_lines += 1
        self.exp.bad_by_kind[kind] = self.exp.bad_by_kind.get(kind, 0) + 1

    def count_patch(self, session_id: str, hunks: list[Json]) -> None:
        """Lines added/removed = hunk lines starting with ``+``/``-`` (what a reader must count)."""
        added = sum(1 for h in hunks for line in h["lines"] if line.startswith("+"))
        removed = sum(1 for h in hunks for line in h["lines"] if line.startswith("-"))
        if added:
            self.exp.lines_added[session_id] = self.exp.lines_added.get(session_id, 0) + added
        if removed:
            self.exp.lines_removed[session_id] = self.exp.lines_removed.get(session_id, 0) + removed

    def flush(self, s: _Session) -> None:
        for f in s.files:
            self.exp.bytes_written += f.write()
            self.exp.files.append(f.path)

    # ---- sessions --------------------------------------------------------------------------------
    def new_session(
        self,
        *,
        cwd: str,
        start: datetime,
        version: str,
        primary: str,
        side: str | None,
        ttl: str,
        old_usage: bool = False,
        session_id: str | None = None,
        keep_copies: bool = False,
        branch: str | None = None,
    ) -> _Session:
        sid = session_id or self.uuid()
        path = self.projects / project_dir_name(cwd) / f"{sid}.jsonl"
        f = _File(path, keep_copies=keep_copies)
        main = _Chain(sidechain=False, agent_id=None, ttl="5m" if old_usage else ttl, file=f)
        return _Session(
            session_id=sid,
            cwd=cwd,
            branch=branch if branch is not None else self.rng.choice(_BRANCHES),
            version=version,
            old_usage=old_usage,
            primary=primary,
            side=side,
            clock=_Clock(start),
            main=main,
            files=[f],
        )

    def envelope(self, s: _Session, ch: _Chain) -> Json:
        d: Json = {
            "parentUuid": ch.last_uuid,
            "isSidechain": ch.sidechain,
            "userType": "external",
            "cwd": s.cwd,
            "sessionId": s.session_id,
            "version": s.version,
            "gitBranch": s.branch,
        }
        if ch.agent_id is not None:
            d["agentId"] = ch.agent_id
        return d

    def finish(self, d: Json, ch: _Chain, typ: str, ts: datetime, line_uuid: str | None = None) -> Json:
        u = line_uuid or self.uuid()
        d["type"] = typ
        d["uuid"] = u
        d["timestamp"] = format_ts(ts)
        ch.last_uuid = u
        return d

    # ---- non-request lines ------------------------------------------------------------------------
    def summary(self, s: _Session) -> None:
        d = {"type": "summary", "summary": self.rng.choice(_TITLES), "leafUuid": self.uuid()}
        s.main.file.add(_line(d))

    def snapshot(self, s: _Session, message_uuid: str) -> None:
        ts = format_ts(s.clock.t)
        backups = {
            f"{s.cwd}/src/mod{k}.py": {
                "backupFileName": f"{self.hex_id(16)}@v2",
                "version": 2,
                "backupTime": ts,
            }
            for k in range(self.rng.randint(0, 3))
        }
        d = {
            "type": "file-history-snapshot",
            "messageId": message_uuid,
            "snapshot": {"messageId": message_uuid, "trackedFileBackups": backups, "timestamp": ts},
            "isSnapshotUpdate": False,
        }
        s.main.file.add(_line(d))

    def system(self, s: _Session, ch: _Chain, pre_tokens: int) -> None:
        d = self.envelope(s, ch)
        d.update(subtype="compact_boundary", content="Conversation compacted", isMeta=False, level="info")
        d["compactMetadata"] = {"trigger": "auto", "preTokens": pre_tokens}
        ch.file.add(_line(self.finish(d, ch, "system", s.clock.t)))

    def prompt(self, s: _Session, ch: _Chain, text: str | None = None) -> None:
        line_uuid = self.uuid()
        if self.features and ch is s.main and self.rng.random() < 0.5:
            self.snapshot(s, line_uuid)
        d = self.envelope(s, ch)
        d["message"] = {"role": "user", "content": text or self.rng.choice(_PROMPTS)}
        ch.file.add(_line(self.finish(d, ch, "user", s.clock.t, line_uuid)))
        s.clock.advance(self.rng.randint(300, 3000))

    # ---- requests ----------------------------------------------------------------------------------
    def draw_output(self) -> int:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.randint(2, 600)
        if r < 0.92:
            return self.rng.randint(600, 3000)
        return self.rng.randint(3000, 16000)

    def draw_usage(self, s: _Session, ch: _Chain, flags: set[str]) -> _Usage:
        """Token counts shaped like a Claude Code conversation: a growing cached prefix."""
        rng = self.rng
        if ch.context == 0:
            inp, cw, cr = rng.randint(3, 60), rng.randint(6_000, 28_000), 0
        else:
            inp, cw, cr = rng.randint(1, 12), ch.pending + rng.randint(20, 900), ch.context
        if cr + cw > 180_000:  # Claude Code would compact here; start a fresh prefix
            self.system(s, ch, cr + cw)
            inp, cw, cr = rng.randint(3, 60), rng.randint(2_000, 9_000), rng.randint(15_000, 30_000)
        out = self.draw_output()
        ch.context, ch.pending = cr + cw, out
        if "big_context" in flags:  # > 200k in total, every field <= 200k
            inp, cw, cr = rng.randint(1, 5_000), rng.randint(60_000, 200_000), rng.randint(150_000, 200_000)
        if ch.ttl == "5m" or s.old_usage:
            cw5, cw1h = cw, 0
        elif ch.ttl == "1h":
            cw5, cw1h = 0, cw
        else:
            cw1h = int(cw * rng.uniform(0.2, 0.8))
            cw5 = cw - cw1h
        u = _Usage(input=inp, output=out, cw5=cw5, cw1h=cw1h, cr=cr, old_style=s.old_usage)
        if "web_search" in flags:
            u.web = rng.randint(1, 6)
        if "web_fetch" in flags:
            u.fetch = rng.randint(1, 3)
        if "batch" in flags:
            u.tier = "batch"
        if "geo_us" in flags:
            u.geo = "us"
        elif "geo_global" in flags:
            u.geo = "global"
        return u

    def tool_block(self, name: str, s: _Session) -> tuple[Json, Json]:
        rng = self.rng
        big = self.big
        inp: Json
        if name == "Bash":
            inp = {
                "command": "pytest -q " + self.code_text(10, 300 if big else 60),
                "description": self.text(5, 60),
            }
        elif name == "Read":
            inp = {"file_path": f"{s.cwd}/src/mod{rng.randint(1, 40)}.py"}
        elif name == "Grep":
            inp = {"pattern": self.code_line(), "path": s.cwd, "output_mode": "content"}
        elif name == "Edit":
            n = (200, 1500) if big else (10, 200)
            inp = {
                "file_path": f"{s.cwd}/src/mod{rng.randint(1, 40)}.py",
                "old_string": self.code_text(*n),
                "new_string": self.code_text(*n),
            }
        elif name == "Write":
            inp = {"file_path": f"{s.cwd}/src/new{rng.randint(1, 99)}.py", "content": self.code_text(50, 800)}
        else:  # Task
            inp = {
                "description": self.text(10, 40),
                "prompt": self.text(100, 1500 if big else 400),
                "subagent_type": "general-purpose",
            }
        block = {"type": "tool_use", "id": self.tool_id(), "name": name, "input": inp}
        return block, inp

    def request(
        self,
        s: _Session,
        ch: _Chain,
        *,
        model: str,
        flags: set[str],
        tool: str | None,
        usage: _Usage | None = None,
        n_lines: int | None = None,
        snapshot_output: int | None = None,
    ) -> _Sent:
        """Write one API request (one or more lines) and record its expectation."""
        rng = self.rng
        u = usage if usage is not None else self.draw_usage(s, ch, flags)
        stream = "stream" in flags or "snapshot" in flags or "no_request_id" in flags or (n_lines or 1) > 1
        big = self.big
        n = n_lines if n_lines is not None else (rng.choice((2, 3, 3, 4)) if stream else 1)
        last_kind = "tool" if tool is not None else "text"
        if n == 1:
            kinds = [last_kind]
        elif n == 2:
            kinds = (
                [rng.choice(("thinking", "text")), last_kind] if tool is not None else ["thinking", "text"]
            )
        else:
            kinds = ["thinking"] + ["text"] * (n - 2) + [last_kind]
        blocks: list[Json] = []
        tool_block: Json | None = None
        tool_input: Json | None = None
        for kind in kinds:
            if kind == "thinking":
                blocks.append(
                    {
                        "type": "thinking",
                        "thinking": self.text(300, 2500) if big else self.text(40, 500),
                        "signature": "Eq" + self.random_chars(rng.randint(150, 400)),
                    }
                )
            elif kind == "text":
                blocks.append({"type": "text", "text": self.text(200, 2500) if big else self.text(20, 700)})
            else:
                assert tool is not None
                tool_block, tool_input = self.tool_block(tool, s)
                blocks.append(tool_block)

        msg_id = self.msg_id()
        request_id = None if "no_request_id" in flags else self.req_id()
        # The stream takes a moment; every line of the message carries the time it ended (see the
        # module docstring: it makes the request time independent of how a reader breaks ties).
        ts = s.clock.advance(sum(rng.randint(80, 2500) for _ in blocks[1:]))
        snapshot = "snapshot" in flags or snapshot_output is not None
        snap_out = 0
        last_line: Json = {}
        for k, block in enumerate(blocks):
            final = k == len(blocks) - 1
            if final:
                usage_json = u.as_json()
            elif snapshot:
                if snapshot_output is not None:
                    snap_out = snapshot_output
                else:
                    snap_out = rng.randint(max(1, snap_out), max(1, min(u.output - 1, 40)))
                usage_json = u.as_json(output=snap_out, web=0)
            else:
                usage_json = u.as_json()
            d = self.envelope(s, ch)
            d["message"] = {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [block],
                "stop_reason": ("tool_use" if tool else "end_turn") if final else None,
                "stop_sequence": None,
                "usage": usage_json,
            }
            if request_id is not None:
                d["requestId"] = request_id
            self.finish(d, ch, "assistant", ts)
            if s.old_usage:  # old versions wrote their own (here: wrong) cost; readers must ignore it
                d["costUSD"] = round(rng.uniform(0.0, 0.5), 6)
            ch.file.add(_line(d))
            last_line = d
        cost, unknown = request_cost(
            model,
            input_tokens=u.input,
            output_tokens=u.output,
            cache_write_5m=u.cw5,
            cache_write_1h=u.cw1h,
            cache_read=u.cr,
            web_search_requests=u.web,
            service_tier=u.tier,
            inference_geo=u.geo,
        )
        self.exp.requests.append(
            ExpectedRequest(
                timestamp=ts,
                session_id=s.session_id,
                project=s.cwd,
                model=model,
                input_tokens=u.input,
                output_tokens=u.output,
                cache_write_5m=u.cw5,
                cache_write_1h=u.cw1h,
                cache_read=u.cr,
                web_search_requests=u.web,
                is_sidechain=ch.sidechain,
                cost=cost,
                unknown_model=unknown,
                message_id=msg_id,
                request_id=request_id,
                service_tier=u.tier,
                inference_geo=u.geo,
            )
        )
        return _Sent(
            msg_id=msg_id,
            request_id=request_id,
            model=model,
            last_line=last_line,
            tool_id=None if tool_block is None else tool_block["id"],
            tool_name=tool,
            tool_input=tool_input,
        )

    # ---- tool results --------------------------------------------------------------------------------
    def patch(self) -> list[Json]:
        """Random ``structuredPatch`` hunks: context lines start with a space, changes with ``+``/``-``."""
        rng = self.rng
        hunks: list[Json] = []
        old_start = rng.randint(1, 300)
        shift = 0
        for _ in range(rng.randint(1, 3)):
            before = [" " + self.code_line() for _ in range(rng.randint(0, 3))]
            minus = ["-" + self.code_line() for _ in range(rng.randint(0, 4))]
            plus = ["+" + self.code_line() for _ in range(rng.randint(0 if minus else 1, 7))]
            after = [" " + self.code_line() for _ in range(rng.randint(0, 3))]
            ctx = len(before) + len(after)
            hunks.append(
                {
                    "oldStart": old_start,
                    "oldLines": ctx + len(minus),
                    "newStart": old_start + shift,
                    "newLines": ctx + len(plus),
                    "lines": before + minus + plus + after,
                }
            )
            shift += len(plus) - len(minus)
            old_start += ctx + len(minus) + rng.randint(5, 60)
        return hunks

    def tool_result(
        self,
        s: _Session,
        ch: _Chain,
        sent: _Sent,
        *,
        old_agent_file: bool = False,
        hunks: list[Json] | None = None,
        subagent_usage: _Usage | None = None,
    ) -> None:
        """The user line answering a tool_use (big payloads in the benchmark profile)."""
        rng = self.rng
        assert sent.tool_id is not None and sent.tool_input is not None
        name = sent.tool_name
        s.clock.advance(rng.randint(200, 20_000))
        copyable = True
        payload: memoryview | None = None
        result: Json
        content: str
        if name == "Edit":
            path = sent.tool_input["file_path"]
            content = f"The file {path} has been updated."
            result = {"filePath": path, "oldString": sent.tool_input["old_string"]}
            result["newString"] = sent.tool_input["new_string"]
            if hunks is None and self.features:
                hunks = self.patch()
            if hunks is not None:
                result["structuredPatch"] = hunks
                self.count_patch(s.session_id, hunks)
                copyable = False
            result.update(userModified=False, replaceAll=False)
        elif name == "Write":
            path = sent.tool_input["file_path"]
            content = f"File created successfully at: {path}"
            result = {"type": "create", "filePath": path, "content": sent.tool_input["content"]}
            result["structuredPatch"] = []  # a new file: no hunks, so nothing counts
            copyable = False
        elif name == "Task":
            content = self.subagent(s, sent, old_style=old_agent_file, usage=subagent_usage)
            result = {"status": "completed", "totalDurationMs": rng.randint(5_000, 90_000)}
        else:
            if self.big:
                size = 2_000_000 if rng.random() < 1 / 300 else int(math.exp(rng.uniform(8.52, 12.2)))
                payload = self.blob_slice(size // 2)
                content = _SENTINEL
                ch.pending += len(payload) // 4
            else:
                content = self.code_text(40, 1500)
                ch.pending += len(content) // 4
            if name == "Bash":
                result = {"stdout": content, "stderr": "", "interrupted": False, "isImage": False}
            elif name == "Read":
                result = {
                    "type": "text",
                    "file": {"filePath": sent.tool_input["file_path"], "content": content},
                }
            else:
                result = {"mode": "content", "numFiles": rng.randint(1, 9), "content": content}
        d = self.envelope(s, ch)
        d["message"] = {
            "role": "user",
            "content": [{"tool_use_id": sent.tool_id, "type": "tool_result", "content": content}],
        }
        self.finish(d, ch, "user", s.clock.t)
        d["toolUseResult"] = result
        if payload is None:
            ch.file.add(_line(d), copyable=copyable)
        else:
            # Splice the pre-escaped payload in place of each quoted sentinel (message and toolUseResult).
            pieces = [p.encode("utf-8") for p in _ENCODE(d).split(f'"{_SENTINEL}"')]
            parts: list[bytes | memoryview] = [pieces[0]]
            for piece in pieces[1:]:
                parts.extend((b'"', payload, b'"', piece))
            parts[-1] = bytes(parts[-1]) + b"\n"
            ch.file.add_parts(parts, copyable=copyable)
        s.clock.advance(rng.randint(300, 3000))

    def subagent(self, s: _Session, parent: _Sent, *, old_style: bool, usage: _Usage | None = None) -> str:
        """A Task subagent: its own file, parent sessionId, isSidechain, 5-minute cache writes.

        ``usage`` given: a single request with exactly that usage (hand-check cases).
        """
        rng = self.rng
        aid = self.hex_id(8)
        folder = self.projects / project_dir_name(s.cwd)
        path = (
            folder / f"agent-{aid}.jsonl"
            if old_style
            else folder / s.session_id / "subagents" / f"agent-{aid}.jsonl"
        )
        f = _File(path)
        s.files.append(f)
        ch = _Chain(sidechain=True, agent_id=aid, ttl="5m", file=f)
        model = s.side if s.side and (usage is not None or rng.random() < 0.5) else s.primary
        assert parent.tool_input is not None
        self.prompt(s, ch, parent.tool_input["prompt"])
        if usage is not None:
            self.request(s, ch, model=model, flags=set(), tool=None, usage=usage)
            return "Done."
        k = rng.randint(2, 5)
        for j in range(k):
            tool = rng.choice(("Read", "Grep", "Bash", "Edit")) if j < k - 1 else None
            flags = {"stream"} if rng.random() < 0.5 else set()
            sent = self.request(s, ch, model=model, flags=flags, tool=tool)
            if tool is not None:
                self.tool_result(s, ch, sent)
        return self.text(50, 600)

    # ---- extras around a request -------------------------------------------------------------------
    def btw(self, s: _Session, sent: _Sent, *, answer: bool = True) -> None:
        """/btw: replay the parent message as a sidechain line with a new requestId, then a side answer."""
        rng = self.rng
        s.clock.advance(rng.randint(1_000, 8_000))
        replay = dict(sent.last_line)
        replay.update(parentUuid=None, isSidechain=True, requestId=self.req_id(), uuid=self.uuid())
        replay["timestamp"] = format_ts(s.clock.t)
        replay.pop("costUSD", None)
        s.main.file.add(_line(replay))
        if answer:
            side = _Chain(sidechain=True, agent_id=None, ttl="5m", file=s.main.file, last_uuid=replay["uuid"])
            self.prompt(s, side, "/btw " + self.text(10, 80))
            self.request(s, side, model=sent.model, flags=set(), tool=None)

    def synthetic(self, s: _Session, *, api_error: bool = False, real_model: str | None = None) -> None:
        """Lines Claude Code makes up: zero usage, no requestId, never a request."""
        rng = self.rng
        s.clock.advance(rng.randint(100, 2_000))
        d = self.envelope(s, s.main)
        if api_error:
            text = rng.choice(
                (
                    f"Claude AI usage limit reached|{int(s.clock.t.timestamp()) + 3600}",
                    'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
                )
            )
        else:
            text = "No response requested."
        d["message"] = {
            "id": self.uuid(),
            "container": None,
            "model": real_model or "<synthetic>",
            "role": "assistant",
            "stop_reason": "stop_sequence",
            "stop_sequence": "",
            "type": "message",
            "usage": _ZERO_USAGE,
            "content": [{"type": "text", "text": text}],
        }
        self.finish(d, s.main, "assistant", s.clock.t)
        if api_error:
            d["isApiErrorMessage"] = True
        s.main.file.add(_line(d))

    def fresh_assistant(self, s: _Session) -> Json:
        """A complete assistant line for a message that must not be counted (for broken lines)."""
        d = self.envelope(s, s.main)
        usage = _Usage(
            input=self.rng.randint(1, 20), output=self.rng.randint(10, 900), cr=self.rng.randint(0, 50_000)
        )
        d["message"] = {
            "id": self.msg_id(),
            "type": "message",
            "role": "assistant",
            "model": s.primary,
            "content": [{"type": "text", "text": self.text(40, 400)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage.as_json(),
        }
        d["requestId"] = self.req_id()
        d["type"] = "assistant"
        d["uuid"] = self.uuid()
        d["timestamp"] = format_ts(s.clock.t)
        return d

    def bad_line(self, s: _Session, kind: str) -> None:
        """A line a reader must skip and count (see module docstring for the definition)."""
        rng = self.rng
        if kind == "garbage":
            data = (
                rng.choice((b"<<<<<<< HEAD", b"this is not json", b"}{", b'{"type":"assistant",,}')) + b"\n"
            )
        elif kind == "nul":  # what a crash leaves after a preallocated write
            data = b"\x00" * rng.randint(8, 64) + b"\n"
        elif kind == "truncated":
            full = _ENCODE(self.fresh_assistant(s)).encode("utf-8")
            data = full[: int(len(full) * rng.uniform(0.3, 0.9))] + b"\n"
        elif kind == "invalid_utf8":
            d = self.envelope(s, s.main)
            d["message"] = {"role": "user", "content": "caf" + _SENTINEL}
            d.update(type="user", uuid=self.uuid(), timestamp=format_ts(s.clock.t))
            data = _line(d).replace(_SENTINEL.encode(), b"\xe9 \xff\xfe")
        elif kind == "invalid_utf8_assistant":  # valid shape, but not UTF-8: must not become a request
            d = self.fresh_assistant(s)
            d["message"]["content"][0]["text"] = _SENTINEL
            data = _line(d).replace(_SENTINEL.encode(), b"na\xefve \xc3(")
        elif kind == "missing_timestamp":
            d = self.fresh_assistant(s)
            del d["timestamp"]
            data = _line(d)
        elif kind == "missing_id":
            d = self.fresh_assistant(s)
            del d["message"]["id"]
            del d["requestId"]
            data = _line(d)
        else:
            raise ValueError(kind)
        s.main.file.add(data, copyable=False)
        self.count_bad(kind)

    def fragment(self, s: _Session) -> None:
        """The start of a line still being written: no newline, incomplete JSON, not counted at all."""
        full = _ENCODE(self.fresh_assistant(s)).encode("utf-8")
        s.main.file.add(full[: int(len(full) * self.rng.uniform(0.4, 0.85))], copyable=False)

    def inline_sidechain(self, s: _Session) -> None:
        """Older subagent style: isSidechain lines inside the main file."""
        rng = self.rng
        ch = _Chain(sidechain=True, agent_id=None, ttl="5m", file=s.main.file)
        model = s.side or s.primary
        self.prompt(s, ch, self.text(30, 200))
        n = rng.randint(1, 3)
        for j in range(n):
            tool = "Read" if j < n - 1 else None
            sent = self.request(
                s, ch, model=model, flags={"stream"} if rng.random() < 0.5 else set(), tool=tool
            )
            if tool is not None:
                self.tool_result(s, ch, sent)

    # ---- per-request choices -----------------------------------------------------------------------
    def request_flags(self, forced: set[str]) -> set[str]:
        flags = set(forced)
        if not self.features:
            return flags
        r = self.rng.random
        if r() < 0.65:
            flags.add("stream")
        if "stream" in flags and r() < 0.6:
            flags.add("snapshot")
        for name, p in (
            ("no_request_id", 0.02),
            ("web_search", 0.03),
            ("web_fetch", 0.02),
            ("batch", 0.01),
            ("geo_us", 0.05),
            ("geo_global", 0.05),
            ("inline_sidechain", 0.015),
            ("btw", 0.015),
            ("synthetic", 0.015),
            ("api_error", 0.008),
            ("subagent", 0.02),
            ("unknown_model", 0.004),
            ("big_context", 0.01),
            ("blank", 0.01),
        ):
            if r() < p:
                flags.add(name)
        if r() < 0.006:
            flags.add("bad:" + self.rng.choice(_BAD_KINDS))
        return flags

    def pick_model(self, s: _Session, flags: set[str]) -> str:
        rng = self.rng
        if "unknown_model" in flags:
            flags -= {"batch", "geo_us", "geo_global", "big_context"}
            return rng.choice(_UNKNOWN_MODELS)
        if "web_search" in flags:
            flags.discard("batch")
        if "big_context" in flags:
            return s.primary if s.primary in _ONE_M_MODELS else rng.choice(_ONE_M_MODELS)
        if flags & {"geo_us", "geo_global"}:
            return s.primary if lookup(s.primary)[0].geo_premium else rng.choice(_GEO_MODELS)
        if s.side and ("side_model" in flags or rng.random() < 0.1):
            return s.side
        return s.primary

    def pick_tool(self, flags: set[str]) -> str | None:
        if "subagent" in flags or "old_agent_file" in flags:
            return "Task"
        if "patch" in flags:
            return "Edit"
        if "create_file" in flags:
            return "Write"
        r = self.rng.random()
        if r < 0.22:
            return None
        if r < 0.48:
            return "Bash"
        if r < 0.72:
            return "Read"
        if r < 0.8:
            return "Grep"
        return "Edit" if self.features else "Read"

    def turn(self, s: _Session, flags: set[str], *, last: bool) -> None:
        """One request of the main thread plus whatever follows it."""
        rng = self.rng
        model = self.pick_model(s, flags)
        tool = self.pick_tool(flags)
        sent = self.request(s, s.main, model=model, flags=flags, tool=tool)
        if tool is not None:
            self.tool_result(s, s.main, sent, old_agent_file="old_agent_file" in flags)
        if "btw" in flags:
            self.btw(s, sent)
        if "synthetic" in flags:
            self.synthetic(s)
        if "api_error" in flags:
            self.synthetic(s, api_error=True)
        if "api_error_real_model" in flags:
            self.synthetic(s, api_error=True, real_model=s.primary)
        if "inline_sidechain" in flags:
            self.inline_sidechain(s)
        for f in sorted(flags):
            if f.startswith("bad:"):
                self.bad_line(s, f[4:])
        if "blank" in flags:
            s.main.file.add(b"\n", copyable=False)
        if tool is None and not last:
            s.clock.advance(rng.randint(3_000, 120_000))
            self.prompt(s, s.main)


# --------------------------------------------------------------------------------------------------
# generate()
# --------------------------------------------------------------------------------------------------


def _weighted_model(rng: random.Random) -> str:
    models, weights = zip(*_MAIN_MODELS, strict=True)
    return rng.choices(models, weights=weights)[0]


def _main_session(
    w: _Writer,
    idx: int,
    n_req: int,
    *,
    start: datetime,
    days: int,
    session_flags: set[str],
    forced: dict[int, set[str]],
    keep_copies: bool,
) -> _Session:
    rng = w.rng
    if w.features:
        for name, p in (("bedrock", 0.04), ("vertex", 0.04), ("summary", 0.4), ("mixed_ttl", 0.15)):
            provider_taken = name in ("bedrock", "vertex") and bool(session_flags & {"bedrock", "vertex"})
            if rng.random() < p and not provider_taken:
                session_flags.add(name)
    cwd = PROJECTS[idx] if idx < len(PROJECTS) else rng.choice(PROJECTS)
    if "bedrock" in session_flags:
        primary, side = _BEDROCK_MODEL, None
    elif "vertex" in session_flags:
        primary, side = _VERTEX_MODEL, None
    else:
        # The first first-party sessions cycle through the ids every corpus must contain.
        n = w.first_party_sessions
        primary = _REQUIRED_PRIMARIES[n] if n < len(_REQUIRED_PRIMARIES) else _weighted_model(rng)
        w.first_party_sessions += 1
        side = _SIDE_MODEL if primary != _SIDE_MODEL else None
    t0 = start + timedelta(milliseconds=rng.randrange(max(1, days) * 86_400_000))
    midnight = None
    for name, zone in _MIDNIGHT_ZONES.items():
        if name in session_flags:
            local_day = (t0.astimezone(ZoneInfo(zone)) + timedelta(days=1)).date()
            midnight = datetime(
                local_day.year, local_day.month, local_day.day, tzinfo=ZoneInfo(zone)
            ).astimezone(UTC)
            t0 = midnight - timedelta(minutes=40, milliseconds=rng.randrange(60_000))
            break
    ttl = "mixed" if "mixed_ttl" in session_flags else rng.choice(("1h", "1h", "5m"))
    s = w.new_session(
        cwd=cwd,
        start=t0,
        version=_VERSION_OLD if "old_usage" in session_flags else rng.choice(_VERSIONS),
        primary=primary,
        side=side,
        ttl=ttl,
        old_usage="old_usage" in session_flags,
        keep_copies=keep_copies,
    )
    if "summary" in session_flags:
        for _ in range(rng.randint(1, 2)):
            w.summary(s)
    w.prompt(s, s.main)
    half = max(1, n_req // 2)
    for i in range(n_req):
        if midnight is not None and i == half and s.clock.t < midnight:
            s.clock.t = midnight + timedelta(milliseconds=rng.randint(500, 90_000))
        w.turn(s, w.request_flags(forced.get(i, set())), last=i == n_req - 1)
    if "fragment_end" in session_flags:
        w.fragment(s)
    return s


def _legacy_session(w: _Writer) -> None:
    """March 2026 (before the Sonnet 4/4.5 long-context tier left the price page): >200k boundary cases."""
    rng = w.rng
    start = datetime(2026, 3, 2, 9, tzinfo=UTC) + timedelta(
        days=rng.randint(0, 20), minutes=rng.randint(0, 600)
    )
    s = w.new_session(
        cwd=PROJECTS[2],
        start=start,
        version=_VERSION_LEGACY,
        primary="claude-sonnet-4-5-20250929",
        side=None,
        ttl="1h",
    )
    w.summary(s)
    w.prompt(s, s.main)
    cases: list[tuple[str, _Usage, set[str]]] = [
        # 210,000 on the input side: long context, every token at 6 / 22.50 / 7.50 / 12 / 0.60.
        (
            "claude-sonnet-4-5-20250929",
            _Usage(input=40_000, output=3_000, cr=170_000),
            {"stream", "snapshot"},
        ),
        # 1h writes under long context: 12 per MTok.
        ("claude-sonnet-4-20250514", _Usage(input=5, output=1_200, cw1h=60_000, cr=150_000), {"stream"}),
        # exactly 200,000: NOT long context.
        ("claude-sonnet-4-5-20250929", _Usage(input=10_000, output=800, cw5=40_000, cr=150_000), set()),
        # 200,001: long context.
        ("claude-sonnet-4-20250514", _Usage(input=1, output=900, cw5=50_000, cr=150_000), {"stream"}),
        # long context and batch stack (x0.5 on the premium rates).
        ("claude-sonnet-4-5-20250929", _Usage(input=20_000, output=2_000, cr=190_000, tier="batch"), set()),
        # a small one without requestId.
        ("claude-sonnet-4-5", _Usage(input=12, output=300, cw1h=2_000, cr=30_000), {"no_request_id"}),
    ]
    for model, usage, flags in cases:
        tool = "Read" if rng.random() < 0.5 else None
        sent = w.request(s, s.main, model=model, flags=flags, tool=tool, usage=usage)
        if tool is not None:
            w.tool_result(s, s.main, sent)
        s.clock.advance(rng.randint(2_000, 60_000))
    w.flush(s)


def _resumed_session(w: _Writer, src: _Session, copies: list[bytes], n_req: int) -> None:
    """``--resume``: a new file that starts with byte-identical copies of the source's lines.

    Its final line is a complete request without a trailing newline (it must be counted).
    """
    rng = w.rng
    start = src.clock.t + timedelta(hours=rng.randint(1, 6), milliseconds=rng.randrange(3_600_000))
    s = w.new_session(
        cwd=src.cwd,
        start=start,
        version=src.version,
        primary=src.primary,
        side=src.side,
        ttl=src.main.ttl,
        old_usage=src.old_usage,
        branch=src.branch,
    )
    w.summary(s)
    for line in copies:
        s.main.file.add(line)
    w.prompt(s, s.main)
    for _ in range(max(1, n_req // 3)):
        w.turn(s, w.request_flags(set()), last=False)
    s.clock.advance(rng.randint(3_000, 60_000))
    w.request(s, s.main, model=s.primary, flags={"stream"}, tool=None)
    s.main.file.strip_final_newline()
    w.flush(s)


def generate(
    root: Path,
    *,
    seed: int = 0,
    sessions: int = 20,
    requests_per_session: int = 30,
    start: datetime = datetime(2026, 10, 1, tzinfo=UTC),
    days: int = 30,
    features: bool = True,
    big_tool_results: bool = False,
    target_bytes: int | None = None,
) -> Expected:
    """Write a transcript tree under ``root/projects`` and return what a correct reader must find.

    ``sessions`` main sessions start at random times in ``[start, start + days)``. With ``features``
    two more sessions are added: a resumed copy of one main session (``--resume``) and a March-2026
    session with the Sonnet 4/4.5 >200k boundary cases (deliberately outside the window). Every
    feature listed in the module docstring is placed at least once when ``sessions >= 9`` and
    ``sessions * requests_per_session >= 30``; the rest are sprinkled at random.

    ``big_tool_results`` switches to the benchmark profile (tool results 5-200 KB, 1 in 300 of 2 MB,
    assistant lines 1-5 KB). ``target_bytes``: keep adding sessions (at least ``sessions``) until about
    that many bytes are written.
    """
    w = _Writer(root, seed=seed, features=features, big=big_tool_results)
    rng = w.rng
    session_plan: dict[int, set[str]] = {}
    request_plan: dict[int, dict[int, set[str]]] = {}
    resume_src = -1
    if features and sessions > 0:
        order = list(range(sessions))
        rng.shuffle(order)
        for k, name in enumerate(_FORCED_SESSION_FEATURES):
            session_plan.setdefault(order[k % sessions], set()).add(name)
        slots = sessions * requests_per_session
        if slots:
            picks = rng.sample(range(slots), k=min(slots, len(_FORCED_REQUEST_FEATURES)))
            for name, slot in zip(_FORCED_REQUEST_FEATURES, picks, strict=False):
                sidx, ridx = divmod(slot, requests_per_session)
                request_plan.setdefault(sidx, {}).setdefault(ridx, set()).add(name)
        resume_src = rng.randrange(sessions)
    if features:
        _legacy_session(w)
    resume: tuple[_Session, list[bytes]] | None = None
    idx = 0
    while idx < sessions or (target_bytes is not None and w.exp.bytes_written < target_bytes):
        s = _main_session(
            w,
            idx,
            requests_per_session,
            start=start,
            days=days,
            session_flags=set(session_plan.get(idx, set())),
            forced=request_plan.get(idx, {}),
            keep_copies=idx == resume_src,
        )
        if idx == resume_src and s.main.file.copies is not None:
            resume = (s, s.main.file.copies)
        w.flush(s)
        idx += 1
    if resume is not None:
        _resumed_session(w, resume[0], resume[1], requests_per_session)
    return w.exp


# --------------------------------------------------------------------------------------------------
# handcheck_cases()
# --------------------------------------------------------------------------------------------------

HANDCHECK_SESSION_A = "11111111-1111-4111-8111-111111111111"
HANDCHECK_SESSION_B = "22222222-2222-4222-8222-222222222222"

# Cost of each hand-check request, in the order written (see handcheck_cases); HANDCHECK_TOTAL = sum.
HANDCHECK_COSTS: dict[str, Decimal] = {
    "A1": Decimal("3"),
    "A2": Decimal("2.51"),
    "A3": Decimal("2.50"),
    "A4": Decimal("0.19503"),
    "A5": Decimal("0.06"),
    "A6": Decimal("4.375"),
    "A7": Decimal("8.82"),
    "A8": Decimal("9.00"),
    "A9": Decimal("0.495"),
    "A10": Decimal("1.00"),
    "A11": Decimal("0.20"),
    "A12": Decimal("0.006"),
    "B1": Decimal("0.915"),
    "B2": Decimal("0.3975"),
    "B3": Decimal("1.282506"),
}
HANDCHECK_TOTAL = Decimal("34.756036")


def handcheck_cases(root: Path) -> Expected:
    """A few fixed requests whose costs can be checked with pencil and paper.

    Session A (``/home/hand/check``, 2026-11-23 UTC) and session B (``/home/hand/legacy``, 2026-03-10,
    when the Sonnet 4/4.5 long-context tier still existed). Arithmetic, per request:

    A1  claude-sonnet-4-6, 1,000,000 input x $3/MTok (1M window at standard price: the Sonnet
        4/4.5 >200k tier does not apply to 4.6)                                          = $3
    A2  claude-opus-4-6, 3 streamed lines (output 12, 12, then final 100,000):
        2,000 in x $5 = 0.01; 100,000 out x $25 = 2.50                                = $2.51
    A3  claude-haiku-4-5-20251001: 1,000,000 5m write x 1.25 = 1.25; 500,000 1h write x 2 = 1.00;
        2,000,000 read x 0.10 = 0.20; 10,000 out x 5 = 0.05                            = $2.50
    A4  claude-sonnet-4-5-20250929, old-style usage (only cache_creation_input_tokens = all 5m):
        40,000 x 3.75 = 0.15; 100,000 read x 0.30 = 0.03; 10 in x 3 = 0.00003;
        1,000 out x 15 = 0.015 (input side 140,010 <= 200k: standard)                   = $0.19503
    A5  claude-sonnet-5: 10,000 in x 2 = 0.02; 1,000 out x 10 = 0.01; 3 web searches x 0.01 = 0.03;
        2 web fetches are free                                                          = $0.06
        followed by a /btw replay of A5 (same message.id, new requestId, sidechain): not a new request
    A6  claude-opus-4-8, service_tier batch (x0.5): 1,000,000 in x 2.50 = 2.50;
        100,000 out x 12.50 = 1.25; 200,000 5m write x 3.125 = 0.625                    = $4.375
    A7  claude-opus-4-6, inference_geo us (x1.1 on tokens): 1,000,000 in x 5.5 = 5.50;
        100,000 out x 27.5 = 2.75; 1,000,000 read x 0.55 = 0.55; 2 searches = 0.02 (not x1.1) = $8.82
    A8  claude-future-9 (unknown -> $5/$25): 1,000,000 in = 5; 100,000 out = 2.50;
        100,000 1h write x 10 = 1.00; 1,000,000 read x 0.50 = 0.50                      = $9.00
    A9  us.anthropic.claude-sonnet-4-5-20250929-v1:0 (Sonnet 4.5 through a Bedrock multi-region
        profile: x1.1 from Claude 4.5 on): 100,000 in x 3.3 = 0.33; 10,000 out x 16.5 = 0.165 = $0.495
    A10 claude-opus-4-5@20251101 (= Opus 4.5): 40,000 out x 25                          = $1.00
    A11 claude-haiku-4-5-20251001, 2 lines, no requestId: 100,000 in x 1 = 0.10;
        20,000 out x 5 = 0.10                                                           = $0.20
    A12 subagent file (haiku 4.5, sidechain, session A): 1,000 in x 1 = 0.001;
        1,000 out x 5 = 0.005                                                           = $0.006
    B1  claude-sonnet-4-5-20250929, 100,000 in + 150,000 read = 250,000 > 200k -> long context:
        100,000 x 6 = 0.60; 150,000 read x 0.60 = 0.09; 10,000 out x 22.50 = 0.225       = $0.915
    B2  claude-sonnet-4-20250514, exactly 200,000 (50,000 in + 50,000 5m + 100,000 read), standard:
        0.15 + 0.1875 + 0.03; 2,000 out x 15 = 0.03                                      = $0.3975
    B3  claude-sonnet-4-20250514, 200,001 (1 in + 100,000 1h + 100,000 read) -> long:
        1 x 6 = 0.000006; 100,000 x 12 = 1.20; 100,000 x 0.60 = 0.06; 1,000 out x 22.50 = 0.0225
                                                                                        = $1.282506
    Total: A = 32.16103, B = 2.595006, all = $34.756036 (HANDCHECK_TOTAL).
    (Sonnet 4/4.5 requests in A stay <= 200k: in November 2026 the long-context tier is gone and such
    requests fail, so a reader may legitimately treat them either way.)

    Also in A (none of them requests): a ``<synthetic>`` line, an ``isApiErrorMessage`` line, a summary,
    a blank line, an Edit result whose patch has 3 added and 1 removed line, 2 bad lines (garbage,
    truncated JSON) and, at the very end, a line still being written (no newline, incomplete JSON).
    B's last line (B3) is complete but has no trailing newline: it counts.
    """
    w = _Writer(root, seed=20261123, features=True, big=False)
    a = w.new_session(
        cwd="/home/hand/check",
        start=datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
        version="2.1.241",
        primary="claude-opus-4-6",
        side="claude-haiku-4-5-20251001",
        ttl="5m",
        session_id=HANDCHECK_SESSION_A,
        branch="main",
    )
    w.summary(a)
    w.prompt(a, a.main, "Hand-check prompt")

    def req(
        s: _Session,
        model: str,
        usage: _Usage,
        flags: set[str] | None = None,
        *,
        tool: str | None = None,
        n_lines: int | None = None,
        snapshot_output: int | None = None,
    ) -> _Sent:
        sent = w.request(
            s,
            s.main,
            model=model,
            flags=flags or set(),
            tool=tool,
            usage=usage,
            n_lines=n_lines,
            snapshot_output=snapshot_output,
        )
        s.clock.advance(60_000)
        return sent

    m = 1_000_000
    req(a, "claude-sonnet-4-6", _Usage(input=m, output=0))  # A1
    req(a, "claude-opus-4-6", _Usage(input=2_000, output=100_000), n_lines=3, snapshot_output=12)  # A2
    req(a, "claude-haiku-4-5-20251001", _Usage(input=0, output=10_000, cw5=m, cw1h=500_000, cr=2 * m))  # A3
    req(
        a,
        "claude-sonnet-4-5-20250929",
        _Usage(input=10, output=1_000, cw5=40_000, cr=100_000, old_style=True),
    )  # A4
    a5 = req(a, "claude-sonnet-5", _Usage(input=10_000, output=1_000, web=3, fetch=2))  # A5
    w.btw(a, a5, answer=False)
    req(a, "claude-opus-4-8", _Usage(input=m, output=100_000, cw5=200_000, tier="batch"))  # A6
    req(a, "claude-opus-4-6", _Usage(input=m, output=100_000, cr=m, web=2, geo="us"))  # A7
    req(a, "claude-future-9", _Usage(input=m, output=100_000, cw1h=100_000, cr=m))  # A8
    req(a, "us.anthropic.claude-sonnet-4-5-20250929-v1:0", _Usage(input=100_000, output=10_000))  # A9
    edit = req(a, "claude-opus-4-5@20251101", _Usage(input=0, output=40_000), tool="Edit")  # A10
    hunks = [
        {
            "oldStart": 10,
            "oldLines": 3,
            "newStart": 10,
            "newLines": 5,
            "lines": [" a", "-b", "+c", "+d", "+e", " f"],
        },
    ]
    w.tool_result(a, a.main, edit, hunks=hunks)  # 3 added, 1 removed
    a11 = req(
        a,
        "claude-haiku-4-5-20251001",
        _Usage(input=100_000, output=20_000),
        {"no_request_id"},
        tool="Task",
        n_lines=2,
    )  # A11
    w.tool_result(a, a.main, a11, subagent_usage=_Usage(input=1_000, output=1_000))  # A12 (subagent file)
    w.synthetic(a)
    w.synthetic(a, api_error=True)
    a.main.file.add(b"\n", copyable=False)  # blank: not a bad line
    w.bad_line(a, "garbage")
    w.bad_line(a, "truncated")
    w.fragment(a)
    w.flush(a)

    b = w.new_session(
        cwd="/home/hand/legacy",
        start=datetime(2026, 3, 10, 8, 0, tzinfo=UTC),
        version=_VERSION_LEGACY,
        primary="claude-sonnet-4-5-20250929",
        side=None,
        ttl="5m",
        session_id=HANDCHECK_SESSION_B,
        branch="main",
    )
    w.prompt(b, b.main, "Hand-check legacy prompt")
    req(b, "claude-sonnet-4-5-20250929", _Usage(input=100_000, output=10_000, cr=150_000))  # B1
    req(b, "claude-sonnet-4-20250514", _Usage(input=50_000, output=2_000, cw5=50_000, cr=100_000))  # B2
    req(b, "claude-sonnet-4-20250514", _Usage(input=1, output=1_000, cw1h=100_000, cr=100_000))  # B3
    b.main.file.strip_final_newline()
    w.flush(b)
    return w.exp
