"""ccledger vs ccusage 18 and 20 on a generated Claude Code history: speed, memory and totals, in one run.

Why one script does everything: the targets in issue 2 §7 are *ratios* between tools, so every tool must
be measured on the same corpus, on the same machine, in the same state (page cache warm, nothing else
running). Running them in one process makes that the default rather than something to remember.

What it does (``python bench/history.py --help``):

1. Builds a realistic transcript corpus of ``--size`` bytes with ``tests.support.corpus.generate``
   (big tool results, several lines per streamed message) or reuses the one cached in
   ``bench/.corpus-<size>/`` when it was built with the same parameters and generator source.
2. Measures (wall time, peak RSS via ``peers.measure``) in rounds: ccusage 18 ``daily`` (the first
   ``--c18-repeat`` rounds), ccusage 20 ``claude daily`` (both ``--json --offline --mode calculate``) and
   ``ccledger daily --json --tz UTC`` on an empty ledger (cold), ``--cold-repeat`` rounds, medians; then
   appends ~1 % new lines and alternates ccledger warm (median of ``--repeat`` runs, each from the same
   post-cold ledger) with ccusage 20 (it re-reads everything; median of ``--cold-repeat``); then ccledger
   warm with no new bytes and, with ``--full``, ccusage 18 again.
3. Prints the table, the ratios against the targets, and the totals: ccledger against the generator's
   independently priced ``Expected`` (must match to 1e-8 USD), and each ccusage against it with the
   difference broken down by the peer's known pricing rules (bench/README.md "Verified peer facts").
   What the rules cannot explain is printed as the remainder: the line-level effects (which duplicate
   line is kept, lines without ``requestId`` counted per line, malformed lines counted) that the list of
   expected *requests* alone cannot reconstruct.

The corpus is restored after the run (appended bytes truncated, the new file removed), also after a
crash on the next start, so a cached corpus always matches its cached ``Expected``. Nothing here uses the
network: ccusage runs ``--offline`` and everything lives under ``bench/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import pickle
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO))

from peers import CCUSAGE_VERSIONS, Result, ccusage_cmd, install_ccusage, measure  # noqa: E402

CORPUS_FORMAT = 1  # bump when what is cached next to a corpus changes shape
DEFAULT_SEED = 20261126
APPEND_SEED = 977
APPEND_FRACTION = 0.01
APPEND_EXISTING_FILES = 4
PEER_ARGS = ["--json", "--offline", "--mode", "calculate"]
COST_TOLERANCE = Decimal("1e-8")
# ccusage prints binary floats: over ~1e5 summed requests their rounding error is ~1e-10 USD, so a
# peer's total is "equal" to a modelled one at this looser tolerance.
PEER_TOLERANCE = Decimal("1e-6")
TIMEOUT_S = {"ccusage18": 3600.0, "ccusage20": 1200.0, "ccledger": 3600.0}

# Targets of issue 2 §7.
TARGET_CC18_OVER_COLD = 10.0
TARGET_COLD_OVER_CC20 = 1.5
TARGET_CC20_OVER_WARM = 10.0

# The appended requests are priced here, by hand, so the warm check does not depend on the generator
# or on ccledger: Sonnet 4.5 list prices, USD per MTok (shared/reference/prices.md §1).
APPEND_MODEL = "claude-sonnet-4-5-20250929"
APPEND_RATES = {
    "input": Decimal(3),
    "output": Decimal(15),
    "cache_write_5m": Decimal("3.75"),
    "cache_write_1h": Decimal(6),
    "cache_read": Decimal("0.30"),
}
MTOK = Decimal(1_000_000)
WEB_SEARCH_EACH = Decimal("0.01")

_SCRUB_PREFIXES = ("CLAUDE_", "CCUSAGE_", "CCLEDGER_", "XDG_", "DATABASE_URL", "NODE_OPTIONS", "PYTHONPROFILE")
_USAGE_MARK = b'"usage":{'
_LOOSE_USAGE_MARK = b'"usage": {'


def log(msg: str) -> None:
    """Progress to stderr, so stdout stays the report that can be pasted as is."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ sizes

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> tuple[int, str]:
    """``"1GB"`` -> ``(1_000_000_000, "1GB")``: bytes, and the label used in the cache dir's name.

    Decimal units (1 GB = 10^9 B) because "a 1 GB corpus" in the issue is a round figure, not GiB.
    """
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GB, 300MB)")
    number, unit = m.group(1), (m.group(2) or "B").upper()
    nbytes = int(float(number) * _UNITS[unit])
    if nbytes < 1_000_000:
        raise argparse.ArgumentTypeError("the corpus must be at least 1MB")
    label = f"{number}{unit.replace('IB', 'iB')}".replace(".", "_")
    return nbytes, label


def mb(nbytes: float) -> float:
    return nbytes / 1e6


_PROBE = "import time\nt = time.perf_counter()\ns = 0\nfor i in range(2_000_000):\n    s += i\nprint(time.perf_counter() - t)"


def host_speed() -> float:
    """Seconds a fixed pure-Python loop (2 million additions) takes here, best of three fresh
    interpreters. Printed with every result so that runs from different hours can be told apart: the VM's
    speed changes between sessions, and not evenly for everyone (on 2026-12-08 ccusage 20's runs took
    1.6-1.8x their time of the evening before, ccledger's 2.6x)."""
    best = float("inf")
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
        best = min(best, float(out.stdout))
    return best


# ----------------------------------------------------------------------------------------------- corpus


@dataclass
class CorpusStats:
    """What the corpus looks like on disk (counted while pre-reading it into the page cache)."""

    files: int = 0
    bytes: int = 0
    lines: int = 0
    usage_lines: int = 0  # lines holding a compact ``"usage":{`` block (assistant lines)
    loose_usage_lines: int = 0  # ``"usage": {``: ccusage 20 would silently skip these
    read_s: float = 0.0


@dataclass
class Corpus:
    dir: Path  # bench/.corpus-<label>
    root: Path  # the Claude config dir handed to every tool (transcripts in root/projects)
    label: str
    target_bytes: int
    seed: int
    expected: Any  # tests.support.corpus.Expected
    built_s: float | None  # None when reused
    stats: CorpusStats = field(default_factory=CorpusStats)


def generator_digest() -> str:
    """Hash of the generator's source: a cached corpus is only reused if it was built by the same code."""
    h = hashlib.sha256()
    for rel in ("tests/support/corpus.py", "tests/support/refprices.py"):
        h.update((REPO / rel).read_bytes())
    return h.hexdigest()[:16]


# ~1.5 MB of transcript per session at 300 requests/session in the generator's default (small-line) mode:
# about 1.4 KB per line, close to the 1 GB / 900k lines of the peer measurements in transcripts.md.
DENSE_BYTES_PER_SESSION = 1_490_000


def ensure_corpus(label: str, target_bytes: int, seed: int, profile: str = "sparse") -> Corpus:
    """Return the cached corpus for these parameters, building it first if needed.

    ``params.json`` is written last, so a build that was interrupted is detected and redone.
    """
    from tests.support.corpus import generate

    cdir = BENCH_DIR / f".corpus-{label}"
    root = cdir / "claude"
    restore_corpus(cdir)
    params = {"format": CORPUS_FORMAT, "target_bytes": target_bytes, "seed": seed, "generator": generator_digest()}
    if profile != "sparse":
        params["profile"] = profile
    params_file = cdir / "params.json"
    expected_file = cdir / "expected.pickle"
    try:
        cached = json.loads(params_file.read_text())
    except (OSError, ValueError):
        cached = None
    if cached == params and expected_file.is_file() and (root / "projects").is_dir():
        with expected_file.open("rb") as fh:
            expected = pickle.load(fh)
        log(f"reusing corpus {cdir} ({len(expected.requests):,} requests)")
        return Corpus(cdir, root, label, target_bytes, seed, expected, None)
    if cdir.exists():
        log(f"corpus {cdir} was built with other parameters or is incomplete: rebuilding")
        shutil.rmtree(cdir)
    root.mkdir(parents=True)
    log(f"generating a {mb(target_bytes):,.0f} MB corpus in {root} (seed {seed})")
    start = time.perf_counter()
    if profile == "dense":
        # Small lines, many requests (the density of real transcripts in the peer measurements).
        sessions = max(9, round(target_bytes / DENSE_BYTES_PER_SESSION))
        expected = generate(root, seed=seed, sessions=sessions, requests_per_session=300)
    else:
        expected = generate(root, seed=seed, big_tool_results=True, target_bytes=target_bytes)
    built = time.perf_counter() - start
    with expected_file.open("wb") as fh:
        pickle.dump(expected, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.sync()
    params_file.write_text(json.dumps(params, indent=2) + "\n")
    log(f"generated {mb(expected.bytes_written):,.0f} MB, {len(expected.requests):,} requests in {built:.1f} s")
    return Corpus(cdir, root, label, target_bytes, seed, expected, built)


def transcript_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "projects").rglob("*.jsonl") if p.is_file())


def preread(root: Path) -> CorpusStats:
    """Read every transcript once: puts the corpus in the page cache and counts lines.

    Why: the first tool to run would otherwise pay for the disk and the others not; with the corpus
    cached every tool is measured on the same footing (all fit in RAM here: 23 GB).
    """
    stats = CorpusStats()
    start = time.perf_counter()
    tail = len(_LOOSE_USAGE_MARK) - 1
    for path in transcript_files(root):
        stats.files += 1
        carry = b""
        with path.open("rb", buffering=0) as fh:
            while chunk := fh.read(8 << 20):
                stats.bytes += len(chunk)
                stats.lines += chunk.count(b"\n")
                window = carry + chunk
                stats.usage_lines += window.count(_USAGE_MARK)
                stats.loose_usage_lines += window.count(_LOOSE_USAGE_MARK)
                carry = window[-tail:]
                # a mark wholly inside ``carry`` was already counted: drop it from the next window
                if _USAGE_MARK in carry:
                    stats.usage_lines -= carry.count(_USAGE_MARK)
                if _LOOSE_USAGE_MARK in carry:
                    stats.loose_usage_lines -= carry.count(_LOOSE_USAGE_MARK)
    stats.read_s = time.perf_counter() - start
    return stats


# ----------------------------------------------------------------------------------------- the +1 % append


@dataclass
class AppendPlan:
    """New lines for the warm runs: assistant requests (+ their tool results) in a few files."""

    payloads: list[tuple[Path, bytes]]  # (file, bytes to append); new files are created
    new_files: list[Path]
    requests: int
    lines: int
    bytes: int
    cost: Decimal
    tokens: dict[str, int]
    cost_1h_at_125: Decimal  # the same requests with 1h writes at 1.25x (ccusage 18's rule)


def _session_of(path: Path) -> tuple[str, str]:
    """``(sessionId, cwd)`` from the first line of ``path`` that has both."""
    with path.open("rb") as fh:
        for _, raw in zip(range(200), fh, strict=False):
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("sessionId") and obj.get("cwd"):
                return str(obj["sessionId"]), str(obj["cwd"])
    return path.stem, "/tmp/bench"


def _ends_with_newline(path: Path) -> bool:
    """Only such files get lines appended: after a partial or unterminated line, ours would merge with it."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            return False
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _compact(obj: dict[str, Any]) -> bytes:
    """Compact JSON as Claude Code writes it (ccusage 20 skips lines with ``": "``)."""
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def append_cost(tokens: dict[str, int], cw1h_rate: Decimal | None = None) -> Decimal:
    """Hand price of one appended Sonnet 4.5 request (no tier: every request stays far below 200k)."""
    rates = dict(APPEND_RATES)
    if cw1h_rate is not None:
        rates["cache_write_1h"] = cw1h_rate
    return sum((tokens[k] * rates[k] for k in rates), Decimal(0)) / MTOK


def plan_append(corpus: Corpus) -> AppendPlan:
    """Deterministic ~1 % of new lines (and of bytes), spread over a few existing files and one new one.

    One request = an assistant line (text + a Bash tool_use) and the user line with its tool result,
    the result padded so the appended bytes are ~1 % too: a warm run then reads a realistic amount.
    """
    rng = random.Random(APPEND_SEED)
    stats = corpus.stats
    mains = [
        p for p in transcript_files(corpus.root)
        if p.parent.parent.name == "projects" and not p.name.startswith("agent-") and _ends_with_newline(p)
    ]
    if not mains:
        raise RuntimeError(f"no transcript under {corpus.root} ends with a newline: cannot append safely")
    targets = rng.sample(mains, k=min(APPEND_EXISTING_FILES, len(mains)))
    new_sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    _, new_cwd = _session_of(targets[0])
    new_file = targets[0].parent / f"{new_sid}.jsonl"
    sessions = [(p, *_session_of(p)) for p in targets] + [(new_file, new_sid, new_cwd)]

    n_req = max(len(sessions), round(APPEND_FRACTION * stats.lines / 2))
    payload_each = max(200, int((APPEND_FRACTION * stats.bytes) / n_req) - 2_500)
    code = " ".join(rng.choices(("def", "x", "=", "return", "self.value", "if", "None:", "42", "é", "→"), k=4000))
    blob = "\n".join(f"{i:>6}\t{code[i % 3000:i % 3000 + 60]}" for i in range(1, 4000))  # cat -n style
    blob *= 2 + payload_each // len(blob)

    per_file: dict[Path, list[bytes]] = {p: [] for p, _, _ in sessions}
    total = Decimal(0)
    total_125 = Decimal(0)
    sums = dict.fromkeys(APPEND_RATES, 0)
    t = dt.datetime(2026, 11, 15, 9, 0, tzinfo=dt.UTC)
    parents: dict[Path, str | None] = {p: None for p, _, _ in sessions}
    for i in range(n_req):
        path, sid, cwd = sessions[i % len(sessions)]
        tokens = {
            "input": rng.randint(1, 60),
            "output": rng.randint(20, 4_000),
            "cache_write_5m": rng.randint(0, 6_000),
            "cache_write_1h": rng.randint(0, 20_000),
            "cache_read": rng.randint(5_000, 150_000),
        }
        for k, v in tokens.items():
            sums[k] += v
        total += append_cost(tokens)
        total_125 += append_cost(tokens, cw1h_rate=APPEND_RATES["input"] * Decimal("1.25"))
        t += dt.timedelta(seconds=rng.randint(20, 400))
        stamp = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
        a_uuid, u_uuid = str(uuid.UUID(int=rng.getrandbits(128), version=4)), str(uuid.UUID(int=rng.getrandbits(128), version=4))
        tool_id = "toolu_bench" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=18))
        envelope = {"parentUuid": parents[path], "isSidechain": False, "userType": "external", "cwd": cwd,
                    "sessionId": sid, "version": "2.1.244", "gitBranch": "main"}
        assistant = {
            **envelope,
            "message": {
                "id": f"msg_01bench{i:016d}", "type": "message", "role": "assistant", "model": APPEND_MODEL,
                "content": [
                    {"type": "text", "text": "Running the tests now. " * rng.randint(5, 60)},
                    {"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": "pytest -q"}},
                ],
                "stop_reason": "tool_use", "stop_sequence": None,
                "usage": {
                    "input_tokens": tokens["input"],
                    "cache_creation_input_tokens": tokens["cache_write_5m"] + tokens["cache_write_1h"],
                    "cache_read_input_tokens": tokens["cache_read"],
                    "cache_creation": {"ephemeral_5m_input_tokens": tokens["cache_write_5m"],
                                       "ephemeral_1h_input_tokens": tokens["cache_write_1h"]},
                    "output_tokens": tokens["output"],
                    "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                    "service_tier": "standard",
                },
            },
            "requestId": f"req_011Cbench{i:012d}", "type": "assistant", "uuid": a_uuid, "timestamp": stamp,
        }
        start = rng.randrange(0, max(1, len(blob) - payload_each))
        text = blob[start:start + payload_each]
        result = {
            **envelope, "parentUuid": a_uuid,
            "message": {"role": "user", "content": [{"tool_use_id": tool_id, "type": "tool_result",
                                                     "content": text}]},
            "type": "user", "uuid": u_uuid, "timestamp": stamp,
            "toolUseResult": {"stdout": "(see content)", "stderr": "", "interrupted": False, "isImage": False},
        }
        parents[path] = u_uuid
        per_file[path] += [_compact(assistant), _compact(result)]
    payloads = [(p, b"".join(chunks)) for p, chunks in per_file.items()]
    return AppendPlan(
        payloads=payloads,
        new_files=[new_file],
        requests=n_req,
        lines=2 * n_req,
        bytes=sum(len(b) for _, b in payloads),
        cost=total,
        tokens=sums,
        cost_1h_at_125=total_125,
    )


def _manifest(cdir: Path) -> Path:
    return cdir / "append-manifest.json"


def apply_append(corpus: Corpus, plan: AppendPlan) -> None:
    """Append the planned lines; the manifest (original sizes) is written *before* touching any file."""
    sizes = {str(p): (p.stat().st_size if p.exists() else None) for p, _ in plan.payloads}
    _manifest(corpus.dir).write_text(json.dumps({"sizes": sizes}, indent=1))
    for path, data in plan.payloads:
        with path.open("ab") as fh:
            fh.write(data)
    os.sync()


def restore_corpus(cdir: Path) -> None:
    """Undo an append (truncate to the recorded sizes, delete created files), e.g. after a crash."""
    manifest = _manifest(cdir)
    if not manifest.is_file():
        return
    sizes: dict[str, int | None] = json.loads(manifest.read_text())["sizes"]
    for name, size in sizes.items():
        path = Path(name)
        if size is None:
            path.unlink(missing_ok=True)
        elif path.exists():
            os.truncate(path, size)
    os.sync()
    manifest.unlink()


# ------------------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One tool run as printed: times and RSS, the total it reported, and what went wrong if anything."""

    key: str
    label: str
    wall_s: float
    peak_rss_mb: float  # largest single process (wait4 ru_maxrss)
    tree_rss_mb: float  # sampled sum over the process tree (what counts for a multi-process tool)
    returncode: int
    cpu_s: float = 0.0  # user + system seconds of the tool and its reaped children
    others_busy: float = 0.0  # share of the machine's CPUs other processes used during the run
    total_cost: Decimal | None = None
    tokens: dict[str, int] = field(default_factory=dict)
    requests: int | None = None
    per_model: dict[str, Decimal] = field(default_factory=dict)  # ccusage: summed modelBreakdowns
    per_day: dict[str, Decimal] = field(default_factory=dict)  # ccledger: cost per UTC day
    walls: list[float] = field(default_factory=list)  # every repeat, when this is a median
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.total_cost is not None


def _json_from(stdout: str) -> dict[str, Any]:
    start = stdout.find("{")
    if start < 0:
        raise ValueError("no JSON object on stdout")
    return json.loads(stdout[start:])


def _tail(text: str, n: int = 800) -> str:
    return text[-n:].strip()


_CLK_TCK = os.sysconf("SC_CLK_TCK")
IDLE_THRESHOLD = 0.15  # share of the machine's CPUs others may use while we measure
_wait_idle_s = 0.0  # set from --wait-idle


def _cpu_jiffies() -> tuple[int, int]:
    """``(busy, total)`` jiffies over all CPUs since boot, from the first line of ``/proc/stat``."""
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:9]]
    return sum(vals) - vals[3] - vals[4], sum(vals)  # idle and iowait are not busy


def _own_cpu(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


def others_busy(seconds: float) -> float:
    """Share of all CPUs used by *other* processes over ``seconds`` (0..1)."""
    b0, t0 = _cpu_jiffies()
    self0 = _own_cpu(resource.RUSAGE_SELF) + _own_cpu(resource.RUSAGE_CHILDREN)
    time.sleep(seconds)
    b1, t1 = _cpu_jiffies()
    self1 = _own_cpu(resource.RUSAGE_SELF) + _own_cpu(resource.RUSAGE_CHILDREN)
    if t1 <= t0:
        return 0.0
    return max(0.0, ((b1 - b0) / _CLK_TCK - (self1 - self0)) / ((t1 - t0) / _CLK_TCK))


def wait_idle() -> None:
    """Wait (at most ``--wait-idle`` s) until nothing else keeps the 2 cores busy.

    Why: the machine is shared; a test suite running next to a measurement makes a ratio meaningless.
    Each run also records how busy the others were (``others_busy`` column) so a noisy figure shows.
    """
    deadline = time.monotonic() + _wait_idle_s
    busy = others_busy(1.0)
    if busy <= IDLE_THRESHOLD:
        return
    log(f"machine busy ({busy:.0%} of CPUs used by other processes): waiting up to {_wait_idle_s:.0f} s")
    while time.monotonic() < deadline:
        busy = others_busy(2.0)
        if busy <= IDLE_THRESHOLD:
            log(f"  idle enough ({busy:.0%})")
            return
    log(f"  still busy ({busy:.0%}): measuring anyway, see the others_busy column")


def timed(argv: Sequence[str], env: dict[str, str], timeout_s: float) -> tuple[Result, float, float]:
    """``peers.measure`` plus the run's own CPU seconds and how busy everything else was meanwhile.

    CPU is the command's own user + system time (its worker processes included), as ``measure``'s
    launcher reports it; this process's ``RUSAGE_CHILDREN`` (command plus launcher) is the fallback.
    """
    wait_idle()
    b0, t0 = _cpu_jiffies()
    c0, s0 = _own_cpu(resource.RUSAGE_CHILDREN), _own_cpu(resource.RUSAGE_SELF)
    res = measure(argv, env, timeout_s=timeout_s)
    b1, t1 = _cpu_jiffies()
    ours = _own_cpu(resource.RUSAGE_CHILDREN) - c0  # the command plus its launcher
    mine = _own_cpu(resource.RUSAGE_SELF) - s0  # the RSS sampler thread
    span = (t1 - t0) / _CLK_TCK
    others = max(0.0, ((b1 - b0) / _CLK_TCK - ours - mine) / span) if span > 0 else 0.0
    return res, res.cpu_s or ours, others


def run_ccusage(version: int, root: Path, key: str, label: str) -> Run:
    argv, env = ccusage_cmd(version, "daily", root, PEER_ARGS)
    log(f"running {label}: {' '.join(argv)}")
    res, cpu, others = timed(argv, env, TIMEOUT_S[f"ccusage{version}"])
    run = Run(key, label, res.wall_s, res.peak_rss_mb, res.tree_rss_mb, res.returncode, cpu_s=cpu,
              others_busy=others, walls=[res.wall_s])
    if res.returncode != 0:
        run.error = f"exit {res.returncode}: {_tail(res.stderr)}"
        return run
    try:
        doc = _json_from(res.stdout)
        totals = doc["totals"]
        run.total_cost = Decimal(repr(float(totals["totalCost"])))
        run.tokens = {
            "input": int(totals["inputTokens"]),
            "output": int(totals["outputTokens"]),
            "cache_write": int(totals["cacheCreationTokens"]),
            "cache_read": int(totals["cacheReadTokens"]),
        }
        for day in doc.get("daily", []):
            for b in day.get("modelBreakdowns", []):
                name = str(b["modelName"])
                run.per_model[name] = run.per_model.get(name, Decimal(0)) + Decimal(repr(float(b["cost"])))
    except (ValueError, KeyError, TypeError) as exc:
        run.error = f"unreadable output: {exc}"
    log(f"  {res.wall_s:.2f} s, {res.peak_rss_mb:.0f} MB, total {run.total_cost}")
    return run


CCLEDGER_VENV = BENCH_DIR / ".peers" / "ccledger-venv"
# The console script's entry point (pyproject.toml [project.scripts]): what the venv's script must call.
_ENTRY = "from ccledger.cli.fast import console"


def ccledger_argv() -> list[str]:
    """The ``ccledger`` console script of a venv of its own, as a user's ``pipx``/``pip install`` gives them.

    Not this interpreter's: a machine-wide ``.pth`` file (this sandbox has one that imports certifi at
    every start-up) would be measured as ccledger's time. The venv holds an editable install of this
    checkout, so it always runs the code under test; it is created on first use (~1 min).
    """
    script = CCLEDGER_VENV / "bin" / "ccledger"
    if not script.is_file():
        log(f"creating {CCLEDGER_VENV} (editable install of this checkout)")
        subprocess.run([sys.executable, "-m", "venv", str(CCLEDGER_VENV)], check=True)
    if not script.is_file() or _ENTRY not in script.read_text(errors="replace"):
        # new, or installed before the console script's entry point changed: pip writes the script anew
        subprocess.run([str(CCLEDGER_VENV / "bin" / "pip"), "install", "-q", "-e", str(REPO)], check=True)
    return [str(script)]


def ccledger_env(work: Path, root: Path, db: Path) -> dict[str, str]:
    """Isolated like a ccusage run: empty HOME (no ~/.claude, no user price file), only this corpus."""
    home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
    # Installed packages come with compiled bytecode; a session that forbids writing it would make every
    # run recompile ccledger's modules (~70 ms), which no user's machine does.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        CLAUDE_CONFIG_DIR=str(root.resolve()),
        CCLEDGER_DB=f"sqlite:///{db}",
        TZ="UTC",
        NO_COLOR="1",
    )
    return env


def run_ccledger(work: Path, root: Path, db: Path, key: str, label: str) -> tuple[Run, Result]:
    argv = [*ccledger_argv(), "daily", "--json", "--tz", "UTC"]
    env = ccledger_env(work, root, db)
    res, cpu, others = timed(argv, env, TIMEOUT_S["ccledger"])
    run = Run(key, label, res.wall_s, res.peak_rss_mb, res.tree_rss_mb, res.returncode, cpu_s=cpu,
              others_busy=others, walls=[res.wall_s])
    if res.returncode != 0:
        run.error = f"exit {res.returncode}: {_tail(res.stderr)}"
        return run, res
    try:
        doc = _json_from(res.stdout)
        totals = doc["totals"]
        run.total_cost = Decimal(str(totals["cost"]))
        tok = totals.get("tokens", {})
        run.tokens = {k: int(tok[k]) for k in ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
                      if k in tok}
        run.requests = int(totals["requests"]) if "requests" in totals else None
        run.per_day = {str(r["period"]): Decimal(str(r["cost"])) for r in doc.get("rows", [])}
    except (ValueError, KeyError, TypeError) as exc:
        run.error = f"unreadable output: {exc}"
    log(f"  {label}: {res.wall_s:.2f} s, {res.peak_rss_mb:.0f} MB (tree {res.tree_rss_mb:.0f}), total {run.total_cost}")
    return run, res


def median_run(runs: Sequence[Run], key: str, label: str) -> Run:
    """The median-wall run of ``runs`` (an actual run, so its RSS and total belong to it)."""
    ordered = sorted(runs, key=lambda r: r.wall_s)
    mid = ordered[(len(ordered) - 1) // 2]
    out = Run(**{**mid.__dict__, "key": key, "label": label})
    out.walls = [r.wall_s for r in runs]
    out.wall_s = statistics.median(out.walls)
    out.peak_rss_mb = max(r.peak_rss_mb for r in runs)
    out.tree_rss_mb = max(r.tree_rss_mb for r in runs)
    out.cpu_s = statistics.median(r.cpu_s for r in runs)
    out.others_busy = max(r.others_busy for r in runs)
    bad = [r for r in runs if not r.ok or r.total_cost != runs[0].total_cost]
    if bad:
        out.error = "; ".join(r.error or f"total {r.total_cost} differs between repeats" for r in bad)
        if all(r.ok for r in runs):
            out.returncode = 0
    return out


_DB_SUFFIXES = ("", "-wal", "-shm", "-journal")


def snapshot_db(db: Path, dst: Path) -> None:
    for suffix in _DB_SUFFIXES:
        src = Path(f"{db}{suffix}")
        if src.exists():
            shutil.copy2(src, f"{dst}{suffix}")


def restore_db(snapshot: Path, db: Path) -> None:
    for suffix in _DB_SUFFIXES:
        Path(f"{db}{suffix}").unlink(missing_ok=True)
        src = Path(f"{snapshot}{suffix}")
        if src.exists():
            shutil.copy2(src, f"{db}{suffix}")


# ----------------------------------------------------------------------------- what each peer charges


@dataclass(frozen=True)
class PeerRules:
    """A peer's pricing, as far as it is known (bench/README.md "Verified peer facts" + the probe there).

    Only rules that can be applied to a de-duplicated request are here; line-level behaviour (which
    duplicate line is kept, lines without ``requestId`` counted per line) needs the lines themselves and
    is left to the remainder.
    """

    name: str
    zero_families: frozenset[str]  # normalised model ids it prices at $0 (besides unknown ones)
    cw1h_multiplier: Decimal  # x input for 1h cache writes
    bedrock_regional_premium: Decimal | None  # x on Bedrock region-prefixed ids (us./eu./...)
    line_level_note: str


PEER_RULES: dict[str, PeerRules] = {
    "ccusage18": PeerRules(
        name=f"ccusage {CCUSAGE_VERSIONS[18]}",
        zero_families=frozenset({"claude-opus-4-8", "claude-opus-5", "claude-sonnet-5", "claude-fable-5"}),
        cw1h_multiplier=Decimal("1.25"),
        bedrock_regional_premium=None,
        line_level_note=(
            "keeps the FIRST line of a streamed message (a mid-stream snapshot with a small output_tokens); "
            "counts /btw sidechain replays and lines without requestId once per line; counts malformed "
            "assistant lines a correct reader rejects (invalid UTF-8, neither message.id nor requestId)"
        ),
    ),
    "ccusage20": PeerRules(
        name=f"ccusage {CCUSAGE_VERSIONS[20]}",
        zero_families=frozenset(),
        cw1h_multiplier=Decimal(2),
        bedrock_regional_premium=Decimal("1.1"),
        line_level_note=(
            "counts every line of a message without requestId (same message.id) as its own request, and "
            "counts assistant lines with neither message.id nor requestId (a correct reader rejects them)"
        ),
    ),
}

_BEDROCK_REGION = re.compile(r"^(?:us|eu|apac|jp|au|ca)\.anthropic\.")

# Order matters: each effect is measured on what the previous ones left. Free models go first so that
# their figure is simply "what these requests cost per the price book".
EFFECTS: tuple[tuple[str, str], ...] = (
    ("zero_models", "prices these models at $0 (not in its price data)"),
    ("web_search", "does not price web search ($10 per 1,000)"),
    ("long_context", "no Sonnet 4/4.5 >200k whole-request tier (in force before 2026-03-28)"),
    ("batch", "ignores service_tier batch (-50 %)"),
    ("geo_us", "ignores inference_geo us (x1.1 on Claude 4.6+)"),
    ("cache_1h", "prices 1h cache writes at 1.25x input instead of 2x"),
    ("bedrock_regional", "Bedrock regional ids (us./eu./...): prices.md §4's +10 % for regional and "
     "multi-region endpoints from Claude 4.5 on, in the book, against the peer's own rule"),
)


@dataclass
class Breakdown:
    """``expected + sum(effects) = modelled``; ``actual - modelled = remainder`` (line-level effects)."""

    peer: str
    expected: Decimal
    actual: Decimal
    effects: dict[str, Decimal]
    counts: dict[str, str]  # what each effect touched, in words
    modelled: Decimal
    remainder: Decimal
    per_model_residual: dict[str, Decimal]
    token_deltas: dict[str, int]
    fields_over_200k: int
    reconstruction_errors: int


def _token_cost(r: Any, rate_in: Decimal, rate_out: Decimal, cw1h_mult: Decimal) -> Decimal:
    return (
        r.input_tokens * rate_in
        + r.output_tokens * rate_out
        + r.cache_write_5m * rate_in * Decimal("1.25")
        + r.cache_write_1h * rate_in * cw1h_mult
        + r.cache_read * rate_in * Decimal("0.1")
    ) / MTOK


def breakdown(key: str, requests: Iterable[Any], run: Run) -> Breakdown:
    """Re-price every expected request step by step under ``key``'s rules and name each step's effect.

    The steps undo, in order, what the price book applies and the peer does not (or add what the peer
    applies and the book does not). Before the first step each request's cost is recomputed from
    ``refprices`` and compared with ``ExpectedRequest.cost``: the decomposition is only trusted when that
    reconstruction is exact (``reconstruction_errors == 0``).
    """
    from tests.support import refprices

    rules = PEER_RULES[key]
    effects = {name: Decimal(0) for name, _ in EFFECTS}
    touched = {name: 0 for name, _ in EFFECTS}
    zero_seen: dict[str, Decimal] = {}
    cw1h_tokens = web_count = 0
    modelled_by_model: dict[str, Decimal] = {}
    expected_total = Decimal(0)
    exp_tokens = {"input": 0, "output": 0, "cache_write": 0, "cache_read": 0}
    over = errors = 0
    for r in requests:
        expected_total += r.cost
        exp_tokens["input"] += r.input_tokens
        exp_tokens["output"] += r.output_tokens
        exp_tokens["cache_write"] += r.cache_write_5m + r.cache_write_1h
        exp_tokens["cache_read"] += r.cache_read
        over += sum(v > 200_000 for v in (r.input_tokens, r.output_tokens, r.cache_write_5m + r.cache_write_1h,
                                          r.cache_read))
        price, unknown = refprices.lookup(r.model)
        family = refprices.normalize_model(r.model)
        if unknown or family in rules.zero_families:
            effects["zero_models"] -= r.cost
            touched["zero_models"] += 1
            zero_seen[r.model] = zero_seen.get(r.model, Decimal(0)) + r.cost
            modelled_by_model.setdefault(r.model, Decimal(0))
            continue
        long_ctx = refprices.is_long_context(r.model, r.input_tokens, r.cache_write_5m + r.cache_write_1h,
                                             r.cache_read)
        batch = Decimal("0.5") if r.service_tier == "batch" else Decimal(1)
        geo = Decimal("1.1") if r.inference_geo == "us" and price.geo_premium else Decimal(1)
        # The price book's own Bedrock regional rule (x1.1 from Claude 4.5 on, all but global. profiles).
        ours = Decimal("1.1") if price.claude_45_plus and refprices.is_bedrock_regional(r.model) else Decimal(1)
        web = r.web_search_requests * WEB_SEARCH_EACH
        rates = (refprices.LONG_INPUT, refprices.LONG_OUTPUT) if long_ctx else (price.input, price.output)
        s0 = _token_cost(r, *rates, Decimal(2)) * batch * geo * ours + web
        if s0 != r.cost:
            errors += 1
        s1 = s0 - web
        s2 = _token_cost(r, price.input, price.output, Decimal(2)) * batch * geo * ours
        s3 = s2 / batch
        s4 = s3 / geo
        s4b = s4 / ours
        s5 = _token_cost(r, price.input, price.output, rules.cw1h_multiplier)
        regional = rules.bedrock_regional_premium is not None and bool(_BEDROCK_REGION.match(r.model))
        s6 = s5 * rules.bedrock_regional_premium if regional and rules.bedrock_regional_premium else s5
        # bedrock_regional nets the book's premium (removed) against the peer's own (added back).
        steps = (("web_search", s0, s1), ("long_context", s1, s2), ("batch", s2, s3), ("geo_us", s3, s4),
                 ("bedrock_regional", s4, s4b), ("cache_1h", s4b, s5), ("bedrock_regional", s5, s6))
        for name, before, after in steps:
            if after != before:
                effects[name] += after - before
                touched[name] += 1
        web_count += r.web_search_requests
        if rules.cw1h_multiplier != 2:
            cw1h_tokens += r.cache_write_1h
        modelled_by_model[r.model] = modelled_by_model.get(r.model, Decimal(0)) + s6
    counts = {
        "zero_models": ", ".join(f"{m} ({touched_cost:.2f})" for m, touched_cost in sorted(zero_seen.items()))
        or "none",
        "web_search": f"{web_count:,} searches (on the models it prices)",
        "long_context": f"{touched['long_context']} requests",
        "batch": f"{touched['batch']} requests",
        "geo_us": f"{touched['geo_us']} requests",
        "cache_1h": f"{cw1h_tokens:,} 1h-write tokens",
        "bedrock_regional": f"{touched['bedrock_regional']} requests",
    }
    modelled = expected_total + sum(effects.values(), Decimal(0))
    actual = run.total_cost if run.total_cost is not None else Decimal(0)
    residual = {
        m: run.per_model.get(m, Decimal(0)) - modelled_by_model.get(m, Decimal(0))
        for m in set(run.per_model) | set(modelled_by_model)
    }
    deltas = {k: run.tokens.get(k, 0) - v for k, v in exp_tokens.items()}
    return Breakdown(rules.name, expected_total, actual, effects, counts, modelled, actual - modelled, residual,
                     deltas, over, errors)


# ---------------------------------------------------------------------------------------------- report


@dataclass
class Ratio:
    name: str
    value: float | None
    target: str
    passed: bool | None
    detail: str = ""


def _ratio(a: Run | None, b: Run | None) -> float | None:
    if a is None or b is None or a.returncode != 0 or b.returncode != 0 or b.wall_s <= 0:
        return None
    return a.wall_s / b.wall_s


def ratios(runs: dict[str, Run]) -> list[Ratio]:
    cc18, cc20, cold = runs.get("ccusage18"), runs.get("ccusage20"), runs.get("ccledger_cold")
    warm, cc20_warm = runs.get("ccledger_warm_append"), runs.get("ccusage20_append")
    out = []
    v = _ratio(cc18, cold)
    out.append(Ratio("ccusage18 / ccledger cold (wall)", v, f">= {TARGET_CC18_OVER_COLD:g}x",
                     None if v is None else v >= TARGET_CC18_OVER_COLD))
    v = _ratio(cold, cc20)
    out.append(Ratio("ccledger cold / ccusage20 (wall)", v, f"<= {TARGET_COLD_OVER_CC20:g}",
                     None if v is None else v <= TARGET_COLD_OVER_CC20))
    v = _ratio(cc20_warm, warm)
    out.append(Ratio("ccusage20 (+1%) / ccledger warm (+1%) (wall)", v, f">= {TARGET_CC20_OVER_WARM:g}x",
                     None if v is None else v >= TARGET_CC20_OVER_WARM))
    v = _ratio(cc20_warm, runs.get("ccledger_warm_nochange"))
    out.append(Ratio("ccusage20 (+1%) / ccledger warm (no change) (wall)", v, "info", None))
    ours = [r for k, r in runs.items() if k.startswith("ccledger") and r.returncode == 0]
    if cc18 is not None and cc18.returncode == 0 and ours:
        worst = max(ours, key=lambda r: r.tree_rss_mb)
        v = worst.tree_rss_mb / cc18.peak_rss_mb
        out.append(Ratio("peak RSS ccledger (max over runs, tree) / ccusage18", v, "< 1", v < 1,
                         f"{worst.tree_rss_mb:.0f} MB ({worst.label}) vs {cc18.peak_rss_mb:.0f} MB"))
    else:
        out.append(Ratio("peak RSS ccledger / ccusage18", None, "< 1", None, "ccusage 18 not run"))
    return out


def _usd(x: Decimal | None, places: int = 6) -> str:
    return "-" if x is None else f"{x:,.{places}f}"


def _signed(x: Decimal, places: int = 6) -> str:
    return f"{x:+,.{places}f}"


def print_table(runs: dict[str, Run]) -> None:
    print(f"{'tool / run':<40} {'wall s':>8} {'cpu s':>8} {'peak RSS MB':>12} {'tree RSS MB':>12} "
          f"{'others':>6} {'total USD':>14}  note")
    for r in runs.values():
        note = r.error if r.error else ""
        if len(r.walls) > 1:
            note = (f"median of {len(r.walls)}: " + ", ".join(f"{w:.2f}" for w in r.walls) + "  " + note).strip()
        print(f"{r.label:<40} {r.wall_s:>8.2f} {r.cpu_s:>8.2f} {r.peak_rss_mb:>12.1f} {r.tree_rss_mb:>12.1f} "
              f"{r.others_busy:>6.0%} {_usd(r.total_cost):>14}  {note}")
    noisy = [r.label for r in runs.values() if r.others_busy > IDLE_THRESHOLD]
    print("(peak RSS = largest process, from wait4; tree RSS = sampled sum over the process tree; others = "
          "share of the CPUs other processes used meanwhile)")
    if noisy:
        print(f"WARNING: other processes were busy during: {', '.join(noisy)}; those timings are inflated")


def print_ratios(items: list[Ratio]) -> None:
    print(f"{'ratio':<52} {'value':>8} {'target':>8}  result")
    for it in items:
        value = "-" if it.value is None else f"{it.value:.2f}"
        verdict = "info" if it.target == "info" else ("n/a" if it.passed is None else ("PASS" if it.passed else "FAIL"))
        print(f"{it.name:<52} {value:>8} {it.target:>8}  {verdict}  {it.detail}".rstrip())


def print_breakdown(b: Breakdown, rules: PeerRules) -> None:
    diff = b.actual - b.expected
    print(f"{b.peer}: {_usd(b.actual)} vs expected {_usd(b.expected)}: {_signed(diff)} USD")
    for name, text in EFFECTS:
        if b.effects[name] != 0:
            print(f"    {_signed(b.effects[name]):>16}  {text}: {b.counts[name]}")
    print(f"    {_signed(b.modelled - b.expected):>16}  = expected total under its known pricing rules "
          f"({_usd(b.modelled)})")
    print(f"    {_signed(b.remainder):>16}  remainder (estimated, not derivable from the expected requests): "
          f"{rules.line_level_note}")
    toks = ", ".join(f"{k} {v:+,}" for k, v in b.token_deltas.items() if v)
    if toks:
        print(f"{'':22}token counts vs expected: {toks}")
    top = sorted(b.per_model_residual.items(), key=lambda kv: -abs(kv[1]))[:3]
    if top and abs(top[0][1]) > PEER_TOLERANCE:
        print(f"{'':22}remainder by model (largest): " + ", ".join(f"{m} {_signed(v, 4)}" for m, v in top))
    if b.fields_over_200k:
        print(f"{'':22}note: {b.fields_over_200k} token fields >200k: its per-field long-context split is not "
              "modelled and sits in the remainder")
    if b.reconstruction_errors:
        print(f"{'':22}WARNING: {b.reconstruction_errors} expected costs could not be reconstructed from "
              "refprices; the breakdown is approximate")


def jsonable(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "__dataclass_fields__"):
        return jsonable(asdict(obj))
    return obj


# ------------------------------------------------------------------------------------------------ main


def check(label: str, got: Decimal | None, want: Decimal, tol: Decimal) -> dict[str, Any]:
    """One totals check, printed, returned for the JSON."""
    if got is None:
        print(f"{label:<54} no total (run failed)")
        return {"label": label, "got": None, "want": want, "diff": None, "pass": False}
    diff = got - want
    ok = abs(diff) <= tol
    print(f"{label:<54} {_usd(got, 9):>18} vs {_usd(want, 9):>18}  diff {_signed(diff, 9)}  "
          f"{'MATCH' if ok else 'MISMATCH'} (tol {tol})")
    return {"label": label, "got": got, "want": want, "diff": diff, "pass": ok}


def explain_ccledger_mismatch(run: Run, expected: Any) -> None:
    """When ccledger is off, say where: request count and the days that differ, to start the hunt."""
    exp_days = {d.isoformat(): c for d, c in expected.cost_by_day("UTC").items()}
    got_days = run.per_day
    diffs = sorted(
        ((d, got_days.get(d, Decimal(0)) - exp_days.get(d, Decimal(0))) for d in set(exp_days) | set(got_days)),
        key=lambda kv: -abs(kv[1]),
    )
    bad = [(d, v) for d, v in diffs if abs(v) > COST_TOLERANCE]
    print(f"{'':6}ccledger requests {run.requests} vs expected {len(expected.requests)}; "
          f"{len(bad)} of {len(diffs)} days differ; largest: "
          + ", ".join(f"{d} {_signed(v)}" for d, v in bad[:5]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark ccledger daily against ccusage 18 and 20 on a generated transcript corpus.",
        epilog="Targets (issue 2 §7): cold >= 10x faster than ccusage 18 and <= 1.5x ccusage 20's time; "
        "warm >= 10x faster than ccusage 20; peak RSS below ccusage 18's.",
    )
    parser.add_argument("--size", default="1GB", help="corpus size, e.g. 1GB (default), 300MB, 50MB")
    parser.add_argument("--profile", choices=("sparse", "dense"), default="sparse",
                        help="sparse: large tool results, ~90k lines/GB (default); dense: small lines, "
                             "~700k lines/GB like the peer measurements in transcripts.md")
    parser.add_argument("--full", action="store_true", help="also re-run ccusage 18 after the +1%% append (slow)")
    parser.add_argument("--skip-ccusage18", action="store_true", help="do not run ccusage 18 at all")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work dir (ledger DBs, each run's stdout/stderr) under bench/results/")
    parser.add_argument("--repeat", type=int, default=3, help="ccledger warm runs per kind (median; default 3)")
    parser.add_argument("--cold-repeat", type=int, default=3,
                        help="ccusage 20 and ccledger cold runs, alternating, and ccusage 20 runs after the "
                             "append, alternating with ccledger's warm runs (median of each; default 3)")
    parser.add_argument("--c18-repeat", type=int, default=1,
                        help="ccusage 18 runs, one at the start of each of the first N cold rounds (median; "
                             "default 1: it takes 15-70 s a run)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="corpus seed (part of the cache key)")
    parser.add_argument("--wait-idle", type=float, default=120.0,
                        help="before each run wait up to this many seconds for other processes to go quiet")
    parser.add_argument("--json-out", type=Path, default=None,
                        help="write every figure as JSON (default bench/results/history-<size>[-dense].json)")
    args = parser.parse_args(argv)
    target_bytes, label = parse_size(args.size)
    repeat = max(1, args.repeat)
    cold_repeat = max(1, args.cold_repeat)
    c18_repeat = min(max(1, args.c18_repeat), cold_repeat)
    global _wait_idle_s
    _wait_idle_s = max(0.0, args.wait_idle)

    run18 = not args.skip_ccusage18
    for version in (18, 20) if run18 else (20,):
        install_ccusage(version)  # idempotent: a version check when already installed
    if args.profile != "sparse":
        label = f"{label}-{args.profile}"
    json_out: Path = args.json_out or BENCH_DIR / "results" / f"history-{label}.json"
    corpus = ensure_corpus(label, target_bytes, args.seed, args.profile)
    corpus.stats = preread(corpus.root)
    st = corpus.stats
    speed_before = host_speed()
    log(f"host speed: a 2M-addition Python loop takes {speed_before * 1000:.0f} ms (best of 3)")
    log(f"corpus: {st.files:,} files, {mb(st.bytes):,.0f} MB, {st.lines:,} lines, {st.usage_lines:,} usage lines "
        f"(pre-read in {st.read_s:.1f} s)")
    if st.loose_usage_lines:
        log(f"WARNING: {st.loose_usage_lines} lines have a non-compact usage block; ccusage 20 skips them")

    results_dir = BENCH_DIR / "results"
    results_dir.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"history-{label}-", dir=results_dir))
    runs: dict[str, Run] = {}
    plan: AppendPlan | None = None
    expected = corpus.expected
    try:
        db = work / "ledger.db"
        snap = work / "ledger-after-cold.db"
        # The peers and ccledger cold alternate in rounds (ccusage 18 in the first ``--c18-repeat`` only):
        # the VM's speed drifts within minutes, and the ratio of two medians taken side by side is steadier
        # than that of two single runs.
        c18_label = f"ccusage {CCUSAGE_VERSIONS[18]} daily"
        c20_label = f"ccusage {CCUSAGE_VERSIONS[20]} claude daily"
        cold18: list[Run] = []
        cold20: list[Run] = []
        cold: list[Run] = []
        for i in range(cold_repeat):
            if run18 and i < c18_repeat:
                cold18.append(run_ccusage(18, corpus.root, "ccusage18", c18_label))
            cold20.append(run_ccusage(20, corpus.root, "ccusage20", c20_label))
            for suffix in _DB_SUFFIXES:
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            log(f"running ccledger daily, cold (empty ledger) ({i + 1}/{cold_repeat})")
            r, res = run_ccledger(work, corpus.root, db, "ccledger_cold", "ccledger daily cold")
            (work / "ccledger-cold.stderr").write_text(res.stderr)
            cold.append(r)
        if cold18:
            runs["ccusage18"] = median_run(cold18, "ccusage18", c18_label)
        runs["ccusage20"] = median_run(cold20, "ccusage20", c20_label)
        runs["ccledger_cold"] = median_run(cold, "ccledger_cold", "ccledger daily cold")
        snapshot_db(db, snap)

        plan = plan_append(corpus)
        log(f"append: {plan.requests} requests = {plan.lines} lines, {mb(plan.bytes):.1f} MB into "
            f"{len(plan.payloads)} files ({len(plan.new_files)} new); hand-priced ${plan.cost:.6f}")
        warm_append: list[Run] = []
        c20_append = f"ccusage {CCUSAGE_VERSIONS[20]} claude daily (+1%)"
        append20: list[Run] = []
        for i in range(max(repeat, cold_repeat)):
            if i < repeat:  # past the warm runs the corpus stays appended and the ledger as the last left it
                restore_corpus(corpus.dir)
                restore_db(snap, db)
                apply_append(corpus, plan)
                log(f"running ccledger daily, warm after +1% ({i + 1}/{repeat})")
                r, _ = run_ccledger(work, corpus.root, db, "ccledger_warm_append", "ccledger daily warm (+1%)")
                warm_append.append(r)
            if i < cold_repeat:  # ccusage 20 reads the same appended corpus, right after
                append20.append(run_ccusage(20, corpus.root, "ccusage20_append", c20_append))
        runs["ccledger_warm_append"] = median_run(warm_append, "ccledger_warm_append", "ccledger daily warm (+1%)")
        runs["ccusage20_append"] = median_run(append20, "ccusage20_append", c20_append)
        warm_same: list[Run] = []
        for i in range(repeat):
            log(f"running ccledger daily, warm with no new bytes ({i + 1}/{repeat})")
            r, _ = run_ccledger(work, corpus.root, db, "ccledger_warm_nochange", "ccledger daily warm (no change)")
            warm_same.append(r)
        runs["ccledger_warm_nochange"] = median_run(warm_same, "ccledger_warm_nochange",
                                                    "ccledger daily warm (no change)")
        if run18 and args.full:
            runs["ccusage18_append"] = run_ccusage(18, corpus.root, "ccusage18_append",
                                                   f"ccusage {CCUSAGE_VERSIONS[18]} daily (+1%)")
    finally:
        restore_corpus(corpus.dir)
        if args.keep:
            log(f"kept the work dir: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ print
    assert plan is not None
    speed_after = host_speed()
    print()
    print(f"ccledger history benchmark: corpus {label} = {st.files:,} files, {mb(st.bytes):,.1f} MB, "
          f"{st.lines:,} lines, {len(expected.requests):,} requests; +1% = {plan.lines:,} lines / "
          f"{mb(plan.bytes):.1f} MB in {len(plan.payloads)} files; {os.cpu_count()} cores; page cache warm")
    print()
    print_table(runs)
    print()
    items = ratios(runs)
    print_ratios(items)
    print()
    print("Totals (USD):")
    exp_total: Decimal = expected.total_cost()
    checks = [
        check("ccledger cold vs Expected.total_cost()", runs["ccledger_cold"].total_cost, exp_total, COST_TOLERANCE),
        check("ccledger warm (+1%) vs expected + appended",
              runs["ccledger_warm_append"].total_cost, exp_total + plan.cost, COST_TOLERANCE),
        check("ccledger warm (no change) vs expected + appended",
              runs["ccledger_warm_nochange"].total_cost, exp_total + plan.cost, COST_TOLERANCE),
    ]
    if not checks[0]["pass"] and runs["ccledger_cold"].ok:
        explain_ccledger_mismatch(runs["ccledger_cold"], expected)
    c20, c20w = runs["ccusage20"], runs.get("ccusage20_append")
    if c20.ok and c20w is not None and c20w.ok:
        assert c20.total_cost is not None and c20w.total_cost is not None
        checks.append(check("ccusage 20: (+1%) minus cold vs appended (its rules)",
                            c20w.total_cost - c20.total_cost, plan.cost, PEER_TOLERANCE))
    c18, c18w = runs.get("ccusage18"), runs.get("ccusage18_append")
    if c18 is not None and c18w is not None and c18.ok and c18w.ok:
        assert c18.total_cost is not None and c18w.total_cost is not None
        checks.append(check("ccusage 18: (+1%) minus cold vs appended w/ 1h at 1.25x",
                            c18w.total_cost - c18.total_cost, plan.cost_1h_at_125, PEER_TOLERANCE))
    print()
    print("Why the peers differ from the price book (expected = independently priced generator requests):")
    breakdowns: dict[str, Breakdown] = {}
    for key in ("ccusage18", "ccusage20"):
        run = runs.get(key)
        if run is None or not run.ok:
            continue
        b = breakdown(key, expected.requests, run)
        breakdowns[key] = b
        print_breakdown(b, PEER_RULES[key])
    cold = runs["ccledger_cold"]
    if cold.ok and checks[0]["pass"]:
        print(f"ccledger: {_usd(cold.total_cost)} = the price book to {COST_TOLERANCE} USD "
              f"(diff {_signed(checks[0]['diff'], 10)}); the peers' figures are explained by the rules above.")

    summary = readme_summary(label, st, expected, plan, runs, items, (speed_before, speed_after))
    print()
    print("For README (Performance):")
    print(summary)

    payload = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "python_loop_s": {"before": speed_before, "after": speed_after}},
        "args": vars(args),
        "corpus": {"dir": corpus.dir, "label": label, "target_bytes": target_bytes, "seed": corpus.seed,
                   "built_s": corpus.built_s, **asdict(st), "requests": len(expected.requests),
                   "expected_total": exp_total, "bad_lines": expected.bad_lines},
        "append": {k: v for k, v in asdict(plan).items() if k != "payloads"}
        | {"files": [p for p, _ in plan.payloads]},
        "runs": {k: {**asdict(r), "per_model": r.per_model} for k, r in runs.items()},
        "ratios": items,
        "totals_checks": checks,
        "peer_breakdowns": breakdowns,
        "readme_summary": summary,
    }
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(jsonable(payload), indent=2) + "\n")
    log(f"wrote {json_out}")
    failed = [it for it in items if it.passed is False] + [c for c in checks if not c["pass"]]
    return 1 if failed else 0


def readme_summary(label: str, st: CorpusStats, expected: Any, plan: AppendPlan, runs: dict[str, Run],
                   items: list[Ratio], speed: tuple[float, float]) -> str:
    """A Markdown block to paste into the README's Performance section."""
    lines = [
        f"`python bench/history.py --size {label}` on {os.cpu_count()} cores, {dt.date.today().isoformat()}: "
        f"{mb(st.bytes):,.0f} MB corpus, {st.lines:,} lines, {len(expected.requests):,} requests "
        f"(warm: +{plan.lines:,} lines / {mb(plan.bytes):.0f} MB); host speed: a 2M-addition Python loop "
        f"took {speed[0] * 1000:.0f} ms before, {speed[1] * 1000:.0f} ms after.",
        "",
        "| Run | Wall | CPU | Peak RSS |",
        "|---|---:|---:|---:|",
    ]
    for r in runs.values():
        rss = r.tree_rss_mb if r.key.startswith("ccledger") else r.peak_rss_mb
        lines.append(f"| {r.label} | {r.wall_s:.2f} s | {r.cpu_s:.2f} s | {rss:,.0f} MB |")
    lines += ["", "| Target | Measured | |", "|---|---:|---|"]
    for it in items:
        if it.target == "info":
            continue
        value = "-" if it.value is None else f"{it.value:.2f}"
        verdict = "n/a" if it.passed is None else ("pass" if it.passed else "**miss**")
        lines.append(f"| {it.name} {it.target} | {value} | {verdict} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

