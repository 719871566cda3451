"""ccledger's gateway vs LiteLLM proxy vs the bare upstream: added latency, throughput, memory, metering.

Why one script measures all three in one run: the targets of issue 3 §7 are *differences* (added latency =
proxy − direct) and *ratios* (ccledger RPS / LiteLLM RPS), so every target must be measured on the same
machine, in the same state, against the same upstream. Figures from separate runs would mostly compare
how busy the machine was.

What it does (``python bench/gateway.py --help``), everything on 127.0.0.1:

1. Starts the fake Anthropic upstream (``python -m tests.support.fake_upstream --no-record``, uvloop,
   instant responses); creates a fresh SQLite store with a user, a virtual key and an org daily spend cap
   of $1,000,000 through the ``ccledger`` CLI, so the gateway runs its real enforcement path (reserve,
   settle, utilization headers) without ever rejecting; per-user RPM/TPM limits are set far above the
   load so the buckets are consulted but never empty. Then starts ``ccledger gateway --config`` (1
   worker) and, unless ``--skip-litellm``, LiteLLM proxy 1.108.7 through ``bench/peers.py`` (1 worker).
2. Warms each target up (``--warmup`` non-stream and as many stream requests).
3. **Sequential latency**: ``--requests`` non-stream requests (~200-byte body) per target with one
   keep-alive ``httpx.Client`` per target, then as many streaming requests (time to the first body
   byte, i.e. the first SSE event, and to the end). The targets are *interleaved* request by request,
   so a burst of noise on the machine hits them alike instead of whichever ran at that moment. Block A
   is direct, direct-x (a second upstream on the proxy's core, for reference) and ccledger; LiteLLM is
   timed in block B against its own direct baseline, because its work after each response would
   otherwise land on the next request sharing its core.
4. **Throughput**: ``--concurrency`` (32) async clients (aiohttp, uvloop) in a *separate process* for
   ``--seconds`` each, non-stream, against direct, ccledger and LiteLLM in turn. The CPU time of every
   process is read from ``/proc`` so the table can say whether the proxy or the harness was the limit.
5. **Memory**: ``VmHWM`` (peak RSS) of the gateway process after the load; for LiteLLM the sum over its
   whole process tree.
6. **Metering**: the ledger must hold exactly one record per successful gateway request the bench made.

CPU placement (2 cores): the proxy under test is pinned to CPU 0 and everything else (this process's
sequential client, the load client, the fake upstream) to CPU 1, so the proxy has one core to itself,
which is what "per worker" means, and the client never steals it. The price is that client + upstream
share one core: the direct load figure is therefore the harness's ceiling, and a proxy that reaches it
is reported as harness-bound (its CPU use shows how much headroom it had). ``--no-pin`` turns this off.

Nothing here uses the network beyond loopback; everything started is in its own session and is killed
(process group) at exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from peers import LITELLM_VERSION, PEERS_DIR, free_port, start_litellm, stop_litellm  # noqa: E402

# Targets of issue 3 §7.
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P95_MS = 2.0
TARGET_RPS_RATIO = 5.0
TARGET_RSS_MB = 80.0

MODEL = "claude-sonnet-4-5"
ANTHROPIC_VERSION = "2023-06-01"
UPSTREAM_KEY = "sk-ant-fake-upstream"
PROXIES = ("ccledger", "litellm")
NOISY_PCT = 30.0  # "others" above this (% of one core) during a phase makes its figures suspect
PROXY_CPU = 0  # the proxy under test gets this core to itself
HARNESS_CPU = 1  # clients and the fake upstream share the other one
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PY_SPY_DIR = PEERS_DIR / "py-spy"
_SCRUB_PREFIXES = ("CCLEDGER_", "ANTHROPIC_", "CLAUDE_", "DATABASE_URL", "XDG_", "PYTHONPROFILE")


def log(msg: str) -> None:
    """Progress to stderr, so stdout stays the report that can be pasted as is."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def request_body(stream: bool) -> bytes:
    """A ~200-byte Messages request, compact JSON, as Claude Code would send a short turn."""
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Reply with one short sentence about the weather on "
                                                  "the coast today, in plain words, nothing else."}],
    }  # fmt: skip
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


# ----------------------------------------------------------------------------------------- processes


class Procs:
    """Every process this run started, each in its own session, so one call can stop them all.

    Why sessions: uvicorn and LiteLLM may fork workers; killing the process group (= session leader's
    pid) takes them down too, and the session id lets ``/proc`` scans find every descendant for CPU and
    RSS accounting and for the final no-leftovers check.
    """

    def __init__(self) -> None:
        self.started: dict[str, subprocess.Popen[bytes]] = {}
        self.sids: set[int] = set()

    def add(self, name: str, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.started[name] = proc
        self.sids.add(proc.pid)
        return proc

    def stop(self, name: str, grace_s: float = 10.0) -> None:
        proc = self.started.pop(name, None)
        if proc is None:
            return
        if name == "litellm":
            stop_litellm(proc, grace_s)
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group, even if the leader exited
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def stop_all(self) -> None:
        for name in list(self.started):
            self.stop(name)

    def leftovers(self) -> list[int]:
        """Pids still alive in any session we created (should be none after ``stop_all``)."""
        return [pid for sid in self.sids for pid in session_pids(sid)]


PROCS = Procs()


def _on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops everything


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run the block with this thread's CPU affinity set to ``cpus``, so a child forked in it inherits it.

    Why not ``taskset`` or setting the child's affinity afterwards: ``peers.start_litellm`` builds its own
    argv, and a process's threads created before a later ``sched_setaffinity`` keep the old mask.
    """
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _stat_fields(pid: int | str) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2 :].split()  # fields from "state" on; comm may contain spaces


def session_pids(sid: int) -> list[int]:
    """Live pids whose session id is ``sid`` (``/proc/<pid>/task/*/children`` is missing on this kernel)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            f = _stat_fields(entry.name)
            if f is not None and int(f[3]) == sid and f[0] != b"Z":
                pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of ``pids`` (threads included), from ``/proc/<pid>/stat``."""
    total = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f is not None:
            total += int(f[11]) + int(f[12])
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine since boot (all cores), from ``/proc/stat``."""
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = parts[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` field (``VmHWM``, ``VmRSS``) of ``/proc/<pid>/status``; 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def kill_sessions_with(marker: str) -> None:
    """SIGKILL the process group of every process whose command line contains ``marker``.

    Only for a path unique to this run (never a program name), so nothing else can match.
    """
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if marker.encode() in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(int(entry.name)), signal.SIGKILL)


def affinity_of(pids: Sequence[int]) -> list[int]:
    """The union of the CPU masks of every thread of ``pids`` (to show the pinning held)."""
    cpus: set[int] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    cpus |= os.sched_getaffinity(int(tid))
    return sorted(cpus)


def clean_env(home: Path) -> dict[str, str]:
    """The caller's env minus anything that could point ccledger at another store, key or config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
    env["HOME"] = str(home)
    return env


def ccledger_argv() -> list[str]:
    """The installed ``ccledger`` console script next to this interpreter (what an operator runs)."""
    script = Path(sys.executable).with_name("ccledger")
    if script.is_file():
        return [str(script)]
    found = shutil.which("ccledger")
    if found:
        return [found]
    return [sys.executable, "-c", "from ccledger.cli.main import run; run()"]


def wait_http(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 60.0) -> float:
    """Poll ``GET url`` until 200; return seconds waited. Fails early if ``proc`` died (see its log)."""
    import httpx

    start = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}; log {log_path}:\n"
                               f"{log_path.read_text(errors='replace')[-2000:]}")  # fmt: skip
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s; log {log_path}")
        time.sleep(0.1)


def start_upstream(work: Path, port: int, cpus: set[int] | None, name: str = "upstream") -> str:
    """Start a fake upstream and wait for its ``listening on`` line; return its base URL.

    It has no health route, hence the line. ``--no-record`` keeps its memory flat under load.
    """
    log_path = work / f"{name}.log"
    with open(log_path, "wb") as out, pinned(cpus):
        proc = PROCS.add(name, subprocess.Popen(
            [sys.executable, "-m", "tests.support.fake_upstream", "--port", str(port), "--no-record"],
            cwd=REPO, env=clean_env(work / "home"), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        ))  # fmt: skip
    deadline = time.monotonic() + 30
    while b"listening on" not in log_path.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"fake upstream did not start: {log_path.read_text(errors='replace')}")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"


def setup_store(work: Path) -> tuple[str, str]:
    """Fresh SQLite store with user ``bench``, a virtual key and a $1M org daily cap; return (url, key).

    Done with the CLI an operator would use, so the bench also proves that path. The cap is what makes
    the gateway reserve and settle spend on every request (without one it skips that work).
    """
    db_url = f"sqlite:///{work / 'store.db'}"
    env = clean_env(work / "home")
    base = [*ccledger_argv(), "--db", db_url]

    def run(*args: str) -> str:
        res = subprocess.run([*base, *args], env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"ccledger {' '.join(args)} failed: {res.stderr}")
        return res.stdout

    run("users", "add", "bench", "--name", "Bench")
    key = run("keys", "create", "bench", "--name", "gateway-bench").strip()
    run("limits", "set", "--scope", "org", "--period", "daily", "--usd", "1000000")
    if not key.startswith("ccl_"):
        raise RuntimeError(f"unexpected key from `ccledger keys create`: {key[:8]}…")
    return db_url, key


def start_gateway(work: Path, upstream_url: str, db_url: str, port: int, cpus: set[int] | None) -> str:
    """Write the gateway TOML and run ``ccledger gateway --config`` (1 worker); return its base URL."""
    config = work / "gateway.toml"
    config.write_text(
        "[gateway]\n"
        f"upstream_url = {json.dumps(upstream_url)}\n"
        f"upstream_api_key = {json.dumps(UPSTREAM_KEY)}\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        "workers = 1\n"
        f"store_url = {json.dumps(db_url)}\n"
        f"spool_path = {json.dumps(str(work / 'spool.jsonl'))}\n"
        f"models = [{{ id = {json.dumps(MODEL)} }}]\n"
        "\n[gateway.rate_limits]\n"
        "rpm_per_user = 1e9\n"  # consulted on every request, never empty at bench rates
        "tpm_per_user = 1e12\n"
    )
    log_path = work / "gateway.log"
    with open(log_path, "wb") as out, pinned(cpus):
        proc = PROCS.add("ccledger", subprocess.Popen(
            [*ccledger_argv(), "gateway", "--config", str(config)],
            cwd=work, env=clean_env(work / "home"), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        ))  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    waited = wait_http(f"{base}/healthz", proc, log_path)
    log(f"ccledger gateway ready at {base} (pid {proc.pid}) after {waited:.1f} s")
    return base


# ------------------------------------------------------------------------------------ measurements


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), ``q`` in 0..100."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class Dist:
    """Summary of a latency sample, in milliseconds."""

    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Dist:
        ms = [s * 1000 for s in seconds]
        if not ms:
            return cls(0, *([float("nan")] * 5))
        return cls(len(ms), percentile(ms, 50), percentile(ms, 95), percentile(ms, 99),
                   statistics.fmean(ms), max(ms))  # fmt: skip


@dataclass
class Target:
    """One thing to send requests to: the bare upstream or a proxy in front of it."""

    name: str
    base_url: str
    key: str
    pids: list[int] = field(default_factory=list)  # the server's processes (for CPU / RSS)
    sid: int = 0
    # Requests the server handles per request sent to this target: the shared fake upstream also serves
    # every proxied request, so its CPU per *direct* request is its CPU / (1 + number of proxies).
    serves: int = 1

    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key, "anthropic-version": ANTHROPIC_VERSION,
                "content-type": "application/json"}  # fmt: skip

    def server_pids(self) -> list[int]:
        return session_pids(self.sid) if self.sid else self.pids


@dataclass
class Seq:
    """Sequential results of one target."""

    total: Dist
    stream_ttfb: Dist
    stream_total: Dist
    ok: int
    errors: int
    # CPU the server (for direct: the upstream) used per request, over the timed loops. A floor under a
    # single-threaded proxy's added latency, and unlike latency it hardly moves with machine noise.
    cpu_ms_plain: float = float("nan")
    cpu_ms_stream: float = float("nan")


class Counter:
    """Successful responses per target: the metering check compares the ledger against ccledger's."""

    def __init__(self) -> None:
        self.ok: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.samples: dict[str, str] = {}

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        bucket = self.ok if ok else self.errors
        bucket[name] = bucket.get(name, 0) + 1
        if not ok and name not in self.samples:
            self.samples[name] = detail[:300]


def one_request(client: Any, target: Target, body: bytes, counter: Counter) -> tuple[float, dict[str, str]]:
    """POST one non-stream request and read it fully; return (seconds, response headers)."""
    t0 = time.perf_counter()
    resp = client.post(f"{target.base_url}/v1/messages", content=body, headers=target.headers())
    data = resp.read()
    elapsed = time.perf_counter() - t0
    ok = resp.status_code == 200 and b'"usage"' in data
    counter.add(target.name, ok, f"{resp.status_code} {data[:200]!r}")
    return elapsed, dict(resp.headers)


def one_stream(client: Any, target: Target, body: bytes, counter: Counter) -> tuple[float, float]:
    """POST one streaming request; return (seconds to the first body byte, seconds to the end).

    First *body* byte, not headers: for a relay what matters is when the first SSE event arrives.
    """
    t0 = time.perf_counter()
    first = None
    chunks = []
    with client.stream("POST", f"{target.base_url}/v1/messages", content=body,
                       headers=target.headers()) as resp:  # fmt: skip
        for chunk in resp.iter_raw():
            if first is None and chunk:
                first = time.perf_counter() - t0
            chunks.append(chunk)
        total = time.perf_counter() - t0
        status = resp.status_code
    data = b"".join(chunks)
    ok = status == 200 and b"message_stop" in data
    counter.add(target.name, ok, f"{status} {data[:200]!r}")
    return (first if first is not None else total), total


def sequential(targets: list[Target], n: int, warmup: int, counter: Counter) -> tuple[dict[str, Seq], dict[str, str], float]:
    """Warm up, then ``n`` non-stream and ``n`` stream requests per target, interleaved across targets.

    One keep-alive ``httpx.Client`` per target. The GC is paused while timing (and run between phases)
    so the client's own collections do not land in one target's tail. Returns the results, the headers
    of ccledger's first response (to show the spend cap was applied) and how busy the rest of the
    machine was during the timed loops (% of one core).
    """
    import httpx

    clients = {t.name: httpx.Client(timeout=60.0, trust_env=False) for t in targets}
    plain, streamed = request_body(False), request_body(True)
    first_headers: dict[str, str] = {}
    pids = {t.name: t.server_pids() for t in targets}
    all_pids = sorted({p for ps in pids.values() for p in ps})
    try:
        for t in targets:
            for _ in range(warmup):
                _, hdrs = one_request(clients[t.name], t, plain, counter)
                if t.name == "ccledger" and not first_headers:
                    first_headers = hdrs
            for _ in range(warmup):
                one_stream(clients[t.name], t, streamed, counter)
        errs_before, ok_before = dict(counter.errors), dict(counter.ok)
        totals: dict[str, list[float]] = {t.name: [] for t in targets}
        ttfb: dict[str, list[float]] = {t.name: [] for t in targets}
        stotal: dict[str, list[float]] = {t.name: [] for t in targets}
        cpu0 = {name: cpu_seconds(ps) for name, ps in pids.items()}
        busy0, own0, wall0 = machine_busy_seconds() - cpu_seconds(all_pids), os.times(), time.monotonic()
        gc.collect()
        gc.disable()
        try:
            for _ in range(n):
                for t in targets:
                    totals[t.name].append(one_request(clients[t.name], t, plain, counter)[0])
            cpu1 = {name: cpu_seconds(ps) for name, ps in pids.items()}
            gc.enable()
            gc.collect()
            gc.disable()
            for _ in range(n):
                for t in targets:
                    a, b = one_stream(clients[t.name], t, streamed, counter)
                    ttfb[t.name].append(a)
                    stotal[t.name].append(b)
            cpu2 = {name: cpu_seconds(ps) for name, ps in pids.items()}
        finally:
            gc.enable()
        own1 = os.times()
        own = (own1.user + own1.system) - (own0.user + own0.system)
        others = max(0.0, machine_busy_seconds() - cpu_seconds(all_pids) - busy0 - own)
        others_pct = 100 * others / (time.monotonic() - wall0)
        out = {
            t.name: Seq(Dist.of(totals[t.name]), Dist.of(ttfb[t.name]), Dist.of(stotal[t.name]),
                        counter.ok.get(t.name, 0) - ok_before.get(t.name, 0),
                        counter.errors.get(t.name, 0) - errs_before.get(t.name, 0),
                        1000 * (cpu1[t.name] - cpu0[t.name]) / max(n * t.serves, 1),
                        1000 * (cpu2[t.name] - cpu1[t.name]) / max(n * t.serves, 1))
            for t in targets
        }  # fmt: skip
        return out, first_headers, others_pct
    finally:
        for c in clients.values():
            c.close()


@dataclass
class Load:
    """Throughput of one target under ``concurrency`` clients."""

    ok: int
    errors: dict[str, int]
    seconds: float
    rps: float
    latency: Dist
    warm_ok: int  # the one request per client made before the window (counted for metering)
    server_cpu_pct: float  # CPU used by the server process tree, % of one core
    cpu_ms_per_req: float  # server CPU per successful request: its per-core ceiling is 1000 / this
    upstream_cpu_pct: float
    client_cpu_pct: float
    others_cpu_pct: float  # everything else on the machine (both cores), % of one core


def run_load(target: Target, upstream_pids: list[int], seconds: float, concurrency: int,
             cpus: set[int] | None, work: Path) -> Load:  # fmt: skip
    """Run the load client in its own process against ``target``; it also accounts every process's CPU.

    The client is a separate process so its event loop shares neither a GIL nor a core with the server
    (it is pinned with the upstream, see the module docstring). It reads the servers' CPU counters itself
    at the start and end of its timed window, so process start-up and warm-up are not in the figures.
    """
    server = target.server_pids() if target.name != "direct" else []
    spec = {"url": f"{target.base_url}/v1/messages", "headers": target.headers(),
            "body": request_body(False).decode(), "seconds": seconds, "concurrency": concurrency,
            "server_pids": server, "upstream_pids": upstream_pids}  # fmt: skip
    spec_path = work / f"load-{target.name}.json"
    spec_path.write_text(json.dumps(spec))
    out_path = work / f"load-{target.name}.out"
    with open(out_path, "wb") as out, pinned(cpus):
        proc = PROCS.add(f"load-{target.name}", subprocess.Popen(
            [sys.executable, __file__, "--load-client", str(spec_path)], cwd=REPO,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        ))  # fmt: skip
    try:
        rc = proc.wait(seconds + 120)
    finally:
        PROCS.stop(f"load-{target.name}")
    text = out_path.read_text(errors="replace")
    if rc != 0:
        raise RuntimeError(f"load client failed for {target.name} (rc {rc}):\n{text[-2000:]}")
    res = json.loads(text.strip().splitlines()[-1])
    ok, wall, cpu = int(res["ok"]), float(res["seconds"]), res["cpu"]
    return Load(
        ok=ok, errors=res["errors"], seconds=wall, rps=ok / wall, latency=Dist(**res["latency"]),
        warm_ok=int(res["warm_ok"]),
        server_cpu_pct=100 * cpu["server"] / wall if server else float("nan"),
        cpu_ms_per_req=1000 * cpu["server"] / ok if server and ok else float("nan"),
        upstream_cpu_pct=100 * cpu["upstream"] / wall, client_cpu_pct=100 * cpu["client"] / wall,
        others_cpu_pct=100 * max(0.0, cpu["machine"] - cpu["server"] - cpu["upstream"] - cpu["client"]) / wall,
    )  # fmt: skip


def load_client(spec_path: str) -> int:
    """The load generator (runs in its own process): ``concurrency`` aiohttp workers on one connector.

    Each worker makes one request before the window opens (so connection set-up and the server's first
    touches are not timed), then loops until the deadline. Requests in flight at the deadline finish and
    count; ``seconds`` runs to the last completion, so RPS = ok / seconds is not inflated.
    """
    import aiohttp

    spec = json.loads(Path(spec_path).read_text())
    body = spec["body"].encode()
    conc = int(spec["concurrency"])

    def cpu_now() -> dict[str, float]:
        own = os.times()
        return {"server": cpu_seconds(spec["server_pids"]), "upstream": cpu_seconds(spec["upstream_pids"]),
                "client": own.user + own.system, "machine": machine_busy_seconds()}  # fmt: skip

    async def main() -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=conc, limit_per_host=conc)
        timeout = aiohttp.ClientTimeout(total=60)
        lat: list[float] = []
        errors: dict[str, int] = {}
        counts = {"ok": 0, "warm_ok": 0}
        ready = 0
        all_ready = asyncio.Event()
        go = asyncio.Event()
        window = [0.0, 0.0]  # start, deadline

        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def once() -> tuple[bool, str]:
                try:
                    async with session.post(spec["url"], data=body, headers=spec["headers"]) as resp:
                        data = await resp.read()
                        if resp.status == 200 and b'"usage"' in data:
                            return True, ""
                        return False, f"http {resp.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    return False, type(exc).__name__

            async def worker() -> None:
                nonlocal ready
                good, _ = await once()
                counts["warm_ok"] += good
                ready += 1
                if ready == conc:
                    all_ready.set()
                await go.wait()
                while time.perf_counter() < window[1]:
                    t0 = time.perf_counter()
                    good, why = await once()
                    if good:
                        counts["ok"] += 1
                        lat.append(time.perf_counter() - t0)
                    else:
                        errors[why] = errors.get(why, 0) + 1

            tasks = [asyncio.create_task(worker()) for _ in range(conc)]
            await all_ready.wait()
            cpu0 = cpu_now()
            window[0] = time.perf_counter()
            window[1] = window[0] + float(spec["seconds"])
            go.set()
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - window[0]
            cpu1 = cpu_now()
        return {"ok": counts["ok"], "warm_ok": counts["warm_ok"], "errors": errors, "seconds": elapsed,
                "latency": asdict(Dist.of(lat)), "cpu": {k: cpu1[k] - cpu0[k] for k in cpu0}}  # fmt: skip

    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(main())
    print(json.dumps(result), flush=True)
    return 0


def ours_cpu() -> float:
    """CPU seconds of every process this run started (servers, load client) plus this one."""
    own = os.times()
    return cpu_seconds(sorted({p for sid in PROCS.sids for p in session_pids(sid)})) + own.user + own.system


def wait_idle(max_wait_s: float, threshold_pct: float = 30.0) -> float:
    """Wait until other processes use < ``threshold_pct`` of one core; return the last figure seen.

    The machine is shared; a test suite running next to a measurement would make the ratios meaningless,
    so the bench waits (bounded) before each phase and the tables say how busy the rest of the machine
    was while measuring. Our own (idle) servers are not "others".
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        b0, o0 = machine_busy_seconds(), ours_cpu()
        time.sleep(1.0)
        busy = 100 * max(0.0, machine_busy_seconds() - b0 - (ours_cpu() - o0))
        if busy < threshold_pct or time.monotonic() > deadline:
            if busy >= threshold_pct:
                log(f"rest of the machine still {busy:.0f}% busy after {max_wait_s:.0f} s; measuring anyway")
            return busy
        log(f"waiting for the machine to go idle: other processes use {busy:.0f}% of a core")


def ledger_count(db_url: str, expected: int, timeout_s: float = 15.0) -> int:
    """Records in the ledger, polled until ``expected`` (the writer batches every 200 ms) or timeout."""
    from ccledger.store.ledger import Ledger

    deadline = time.monotonic() + timeout_s
    while True:
        ledger = Ledger.open(db_url)
        try:
            n = ledger.count()
        finally:
            ledger.close()
        if n >= expected or time.monotonic() > deadline:
            return n
        time.sleep(0.25)


def daily_requests(db_url: str, home: Path) -> int:
    """``totals.requests`` of ``ccledger --db URL --no-refresh daily --json``: the report a team would read."""
    res = subprocess.run(
        [*ccledger_argv(), "--db", db_url, "--no-refresh", "daily", "--json"],
        env=clean_env(home), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"ccledger daily failed: {res.stderr}")
    return int(json.loads(res.stdout)["totals"]["requests"])


# ------------------------------------------------------------------------------------------- py-spy


def code_state() -> str:
    """Git HEAD plus a digest of ``src/ccledger`` as measured, so figures can be tied to the code.

    Why the digest: the gateway is edited in the working tree between commits; HEAD alone would not
    say which version of the hot path a table belongs to.
    """
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((REPO / "src" / "ccledger").rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip() or "?"  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"], capture_output=True,
                           text=True, check=False).stdout.strip()  # fmt: skip
    return f"{head}{' + uncommitted changes' if dirty else ''} (src digest {digest.hexdigest()[:12]})"


def ensure_py_spy() -> Path:
    """py-spy installed with ``pip --target`` under ``bench/.peers/py-spy`` (not into the project env)."""
    binary = PY_SPY_DIR / "bin" / "py-spy"
    if not binary.is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "--target", str(PY_SPY_DIR), "py-spy"], check=True)  # fmt: skip
    return binary


_IDLE_LEAVES = ("_worker (concurrent/futures/thread.py:81)",)  # a thread-pool worker waiting for work
_HOT_PREFIXES = ("ccledger/gateway/", "ccledger/control/", "ccledger/store/", "ccledger/core/", "ccledger/sources/",
                 "uvicorn/protocols/", "sqlalchemy/engine/default.py")  # fmt: skip


def summarize_profile(raw: Path, top: int = 25) -> list[str]:
    """Where the gateway's CPU goes, from py-spy's ``--format raw`` (collapsed stacks, one per line).

    Idle thread-pool workers are dropped (py-spy does not always see that they are blocked). Shares are
    of the remaining, busy samples: "self" is the leaf frame, "inclusive" counts a frame once per stack
    and lists only ccledger's and the ASGI server's own frames, so the outer frames every stack shares
    do not crowd the list.
    """
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    total = main = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[-1] in _IDLE_LEAVES:
            idle += n
            continue
        total += n
        main += n if frames[0].startswith("<module>") else 0
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
        for frame in set(frames):
            if any(p in frame for p in _HOT_PREFIXES):
                incl_n[frame] = incl_n.get(frame, 0) + n
    if not total:
        return ["(no busy samples)"]
    lines = [f"{total} busy samples ({idle} idle thread-pool samples dropped); event-loop thread "
             f"{100 * main / total:.0f}%, other threads {100 * (total - main) / total:.0f}%", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in sorted(self_n.items(), key=lambda x: -x[1])[:top]]
    lines.append("inclusive (ccledger, uvicorn protocol and SQL frames):")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in sorted(incl_n.items(), key=lambda x: -x[1])[:top]]
    return lines


# ------------------------------------------------------------------------------------------- report


@dataclass
class Check:
    what: str
    value: float | None
    target: str
    ok: bool | None  # None: not measured (e.g. LiteLLM skipped)


def fmt(x: float | None, places: int = 2) -> str:
    return "—" if x is None or x != x else f"{x:.{places}f}"


def print_report(seq: dict[str, Seq], loads: dict[str, Load], rss: dict[str, dict[str, float]],
                 checks: list[Check], meta: dict[str, Any]) -> None:  # fmt: skip
    """The whole result as plain-text tables on stdout (paste-able into the README)."""
    names = list(seq)
    print(f"\nccledger gateway bench — {meta['when']} — {meta['machine']}")
    print(f"code: {meta['code']}")
    print(f"sequential: {meta['requests']} req/target after {meta['warmup']} warm-up, interleaved; "
          f"load: {meta['concurrency']} clients × {meta['seconds']:g} s; pinning: {meta['pinning']}")
    print(f"\nSequential latency, ms (one keep-alive httpx.Client per target; rest of the machine "
          f"{meta['others_seq_pct']:.0f}% busy)")
    print(f"{'target':<10} {'p50':>7} {'p95':>7} {'p99':>7} │ {'stream TTFB p50':>15} {'p95':>7} {'p99':>7} │"
          f" {'stream total p50':>16} {'p95':>7} │ {'errors':>6} │ {'CPU ms/req':>10} {'stream':>7}")
    for n in names:
        s = seq[n]
        print(f"{n:<10} {fmt(s.total.p50):>7} {fmt(s.total.p95):>7} {fmt(s.total.p99):>7} │ "
              f"{fmt(s.stream_ttfb.p50):>15} {fmt(s.stream_ttfb.p95):>7} {fmt(s.stream_ttfb.p99):>7} │ "
              f"{fmt(s.stream_total.p50):>16} {fmt(s.stream_total.p95):>7} │ {s.errors:>6} │ "
              f"{fmt(s.cpu_ms_plain):>10} {fmt(s.cpu_ms_stream):>7}")
    print("  (CPU ms/req: the server's own CPU per request, non-stream and stream; for direct rows, the fake upstream's)")
    print("\nAdded latency, ms (proxy − its direct baseline, same percentile)")
    print(f"{'proxy vs baseline':<21} {'p50':>7} {'p95':>7} {'p99':>7} │ {'TTFB p50':>8} {'p95':>7} {'p99':>7} │"
          f" {'stream total p50':>16} {'p95':>7}")
    pairs = [(n, "direct-b" if n == "litellm" and "direct-b" in seq else "direct") for n in names if n in PROXIES]
    if "direct-x" in seq and "ccledger" in seq:
        pairs.append(("ccledger", "direct-x"))
    for n, ref in pairs:
        s, d = seq[n], seq[ref]
        label = f"{n} vs {ref}"
        print(f"{label:<21} {fmt(s.total.p50 - d.total.p50):>7} {fmt(s.total.p95 - d.total.p95):>7} "
              f"{fmt(s.total.p99 - d.total.p99):>7} │ {fmt(s.stream_ttfb.p50 - d.stream_ttfb.p50):>8} "
              f"{fmt(s.stream_ttfb.p95 - d.stream_ttfb.p95):>7} {fmt(s.stream_ttfb.p99 - d.stream_ttfb.p99):>7} │ "
              f"{fmt(s.stream_total.p50 - d.stream_total.p50):>16} {fmt(s.stream_total.p95 - d.stream_total.p95):>7}")
    if "direct-x" in seq:
        print("  (direct-x: the same fake upstream pinned to the proxy's core, so its requests cross cores as\n"
              "   proxied ones do: direct vs direct-x is how much placement alone moves latency on this VM)")
    if "direct-b" in seq:
        print("  (litellm is timed in a second block, interleaved with direct-b only: it keeps its core busy after\n"
              "   each response, which would otherwise land on the next request to share that core)")
    print(f"\nThroughput, {meta['concurrency']} concurrent clients (aiohttp, separate process), non-stream, 1 worker")
    print(f"{'target':<10} {'ok':>7} {'errors':>6} {'RPS':>8} {'lat p50':>8} {'p95':>7} │ {'server CPU':>10}"
          f" {'CPU ms/req':>10} {'upstream':>8} {'client':>7} {'others':>7}")
    for n, ld in loads.items():
        print(f"{n:<10} {ld.ok:>7} {sum(ld.errors.values()):>6} {ld.rps:>8.1f} {fmt(ld.latency.p50, 1):>8} "
              f"{fmt(ld.latency.p95, 1):>7} │ {fmt(ld.server_cpu_pct, 0) + '%':>10} {fmt(ld.cpu_ms_per_req):>10} "
              f"{fmt(ld.upstream_cpu_pct, 0) + '%':>8} {fmt(ld.client_cpu_pct, 0) + '%':>7} "
              f"{fmt(ld.others_cpu_pct, 0) + '%':>7}")
    print("  (CPU columns: % of one core over the window; 'others' = rest of the machine, both cores)")
    print("\nMemory, MB")
    print(f"{'server':<10} {'processes':>9} {'RSS after warm-up':>17} {'RSS after load':>14} "
          f"{'peak (VmHWM)':>12} │ {'growth KB/req':>13}")
    for n, r in rss.items():
        print(f"{n:<10} {int(r['processes']):>9} {r['rss_warm_mb']:>17.1f} {r['rss_after_mb']:>14.1f} "
              f"{r['hwm_mb']:>12.1f} │ {r['growth_kb_per_req']:>13.2f}")
    print("  (growth: (RSS after load − after warm-up) / requests of the load phase; a plateau is ~0)")
    print("\nMetering: " + meta["metering"])
    noisy = max([meta["others_seq_pct"], *(ld.others_cpu_pct for ld in loads.values())])
    if noisy > NOISY_PCT:
        print(f"\nWARNING: other processes used up to {noisy:.0f}% of a core while measuring; "
              "latency and RPS figures are unreliable (CPU ms/req much less so). Re-run on an idle machine.")
    print("\nTargets (issue 3 §7)")
    for c in checks:
        verdict = "n/a" if c.ok is None else ("PASS" if c.ok else "FAIL")
        print(f"  {c.what:<52} {fmt(c.value):>9}  {c.target:<10} {verdict}")


def jsonable(obj: Any) -> Any:
    """Dataclasses and NaN-free floats, for ``--json-out``."""
    if hasattr(obj, "__dataclass_fields__"):
        return jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=300, help="sequential requests per target and mode (300)")
    p.add_argument("--warmup", type=int, default=20, help="warm-up requests per target and mode (20)")
    p.add_argument("--seconds", type=float, default=10.0, help="load duration per target (10)")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent load clients (32)")
    p.add_argument("--quick", action="store_true", help="100 sequential requests, 3 s load")
    p.add_argument("--skip-litellm", action="store_true", help="no LiteLLM (its start-up alone takes ~12 s)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the proxy to CPU 0 and the rest to CPU 1")
    p.add_argument("--wait-idle", type=float, default=120.0, help="max seconds to wait for an idle machine")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="also py-spy the gateway during an extra load run; raw stacks and a summary in DIR")
    p.add_argument("--json-out", type=Path, default=BENCH_DIR / "results" / "gateway.json")
    p.add_argument("--keep", action="store_true",
                   help="keep the work dir (store, configs, server logs) under bench/results/")
    p.add_argument("--load-client", help=argparse.SUPPRESS)  # internal: run as the load generator
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.seconds = min(args.requests, 100), min(args.seconds, 3.0)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.load_client:
        return load_client(args.load_client)
    signal.signal(signal.SIGTERM, _on_signal)
    # Started in the background by a non-interactive shell, SIGINT arrives ignored; Ctrl-C / kill -INT
    # must still stop the run (and its servers).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ncpu = len(os.sched_getaffinity(0))
    pin = not args.no_pin and ncpu >= 2
    proxy_cpus = {PROXY_CPU} if pin else None
    harness_cpus = {HARNESS_CPU} if pin else None
    if pin:
        os.sched_setaffinity(0, harness_cpus)  # type: ignore[arg-type]
    work = Path(tempfile.mkdtemp(prefix="ccledger-bench-gw-"))
    (work / "home").mkdir()
    log(f"work dir {work}")
    try:
        return run(args, work, proxy_cpus, harness_cpus)
    finally:
        PROCS.stop_all()
        left = PROCS.leftovers()
        log("all servers stopped" if not left else f"LEFTOVER processes: {left}")
        if args.keep:
            kept = BENCH_DIR / "results" / f"gateway-work-{time.strftime('%Y%m%d-%H%M%S')}"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(work), kept)
            log(f"kept the work dir (store, configs, server logs) as {kept}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, proxy_cpus: set[int] | None, harness_cpus: set[int] | None) -> int:
    others_start = wait_idle(args.wait_idle)
    upstream_url = start_upstream(work, free_port(), harness_cpus)
    upstream_pids = session_pids(PROCS.started["upstream"].pid)
    db_url, key = setup_store(work)
    code = code_state()  # as the gateway process loads it (the working tree may change during the run)
    gw_url = start_gateway(work, upstream_url, db_url, free_port(), proxy_cpus)
    targets = [Target("direct", upstream_url, UPSTREAM_KEY, pids=upstream_pids),
               Target("ccledger", gw_url, key, sid=PROCS.started["ccledger"].pid)]  # fmt: skip
    if proxy_cpus is not None:
        # Reference only: the same upstream on the proxy's core, so a request crosses cores as a proxied
        # one does (4 core crossings through a proxy, 0 for direct). How far direct and direct-x differ
        # shows how much placement alone moves latency on this VM, i.e. how finely an "added latency"
        # of about a millisecond can be read here.
        cross_url = start_upstream(work, free_port(), proxy_cpus, name="upstream-x")
        targets.insert(1, Target("direct-x", cross_url, UPSTREAM_KEY,
                                 pids=session_pids(PROCS.started["upstream-x"].pid)))  # fmt: skip
    if not args.skip_litellm:
        log(f"starting LiteLLM {LITELLM_VERSION} (~12 s)")
        t0 = time.monotonic()
        try:
            with pinned(proxy_cpus):
                proxy = start_litellm(upstream_url, free_port(), work_dir=work / "litellm")
        except BaseException:
            # start_litellm only hands the process back once it is live; interrupted before that, find
            # it by its config path (unique to this run) so it does not outlive us.
            kill_sessions_with(str(work / "litellm" / "config.yaml"))
            raise
        PROCS.add("litellm", proxy.process)
        log(f"LiteLLM ready at {proxy.base_url} (pid {proxy.process.pid}) after {time.monotonic() - t0:.1f} s")
        targets.append(Target("litellm", proxy.base_url, proxy.master_key, sid=proxy.process.pid))
    proxies = [t for t in targets if t.name in PROXIES]
    for t in targets[1:]:
        log(f"{t.name}: processes {t.server_pids()}, CPUs {affinity_of(t.server_pids())}")

    counter = Counter()
    # Block A: direct, direct-x and ccledger interleaved. LiteLLM gets its own block B with its own
    # direct baseline: it keeps working for a while after each response (its CPU per request exceeds its
    # latency), and on the shared proxy core that tail would land on whatever request came next.
    block_a = [t for t in targets if t.name != "litellm"]
    block_a[0].serves = 2  # the fake upstream also serves ccledger's requests in this block
    wait_idle(args.wait_idle)
    log(f"sequential A ({', '.join(t.name for t in block_a)}): {args.warmup} warm-up + {args.requests} "
        "requests per target, non-stream then stream")
    seq, gw_headers, seq_others = sequential(block_a, args.requests, args.warmup, counter)
    if "litellm" in PROCS.started:
        block_b = [Target("direct-b", upstream_url, UPSTREAM_KEY, pids=upstream_pids, serves=2), targets[-1]]
        wait_idle(args.wait_idle)
        log("sequential B (direct-b, litellm): same counts")
        seq_b, _, others_b = sequential(block_b, args.requests, args.warmup, counter)
        seq.update(seq_b)
        seq_others = max(seq_others, others_b)
    spend_headers = {k: v for k, v in gw_headers.items() if k.startswith("anthropic-ratelimit-unified")}
    rss_warm = {t.name: sum(status_kb(p, "VmRSS") for p in t.server_pids()) / 1024 for t in proxies}

    loads: dict[str, Load] = {}
    for t in [targets[0], *proxies]:
        wait_idle(args.wait_idle)
        log(f"load: {t.name}, {args.concurrency} clients × {args.seconds:g} s")
        loads[t.name] = run_load(t, upstream_pids, args.seconds, args.concurrency, harness_cpus, work)
        ld = loads[t.name]
        log(f"  {ld.rps:.1f} RPS, {ld.ok} ok, errors {ld.errors or 0}, server CPU {fmt(ld.server_cpu_pct, 0)}%")
        if t.name == "ccledger":
            counter.ok["ccledger"] = counter.ok.get("ccledger", 0) + ld.ok + ld.warm_ok

    rss: dict[str, dict[str, float]] = {}
    for t in proxies:
        pids = t.server_pids()
        rss_now = sum(status_kb(p, "VmRSS") for p in pids) / 1024
        served = loads[t.name].ok + loads[t.name].warm_ok + sum(loads[t.name].errors.values())
        rss[t.name] = {"processes": len(pids), "rss_warm_mb": rss_warm[t.name], "rss_after_mb": rss_now,
                       "hwm_mb": sum(status_kb(p, "VmHWM") for p in pids) / 1024,
                       # Growth over the load phase per request served: ~0 for a server whose memory
                       # plateaus; a steady positive figure means the peak depends on how long it ran.
                       "growth_kb_per_req": 1024 * (rss_now - rss_warm[t.name]) / served if served else 0.0}  # fmt: skip

    profile_lines: list[str] = []
    if args.profile:
        profile_lines = profile_gateway(args, proxies[0], upstream_pids, harness_cpus, work, counter)

    expected = counter.ok.get("ccledger", 0)
    recorded = ledger_count(db_url, expected)
    reported = daily_requests(db_url, work / "home")
    metering_ok = recorded == expected == reported
    metering = (f"{expected} successful gateway requests; ledger holds {recorded} records; "
                f"`ccledger daily --json` totals.requests = {reported} → {'PASS' if metering_ok else 'FAIL'}; "
                f"spend-cap headers on responses: {'yes' if spend_headers else 'NO'} "
                f"({', '.join(f'{k}={v}' for k, v in sorted(spend_headers.items())[:2])})")

    d, c = seq["direct"], seq["ccledger"]
    lite = loads.get("litellm")
    ratio = loads["ccledger"].rps / lite.rps if lite and lite.rps else None
    checks = [
        Check("ccledger added latency, non-stream p50 (ms)", c.total.p50 - d.total.p50,
              f"≤ {TARGET_ADDED_P50_MS:g}", c.total.p50 - d.total.p50 <= TARGET_ADDED_P50_MS),
        Check("ccledger added latency, non-stream p95 (ms)", c.total.p95 - d.total.p95,
              f"≤ {TARGET_ADDED_P95_MS:g}", c.total.p95 - d.total.p95 <= TARGET_ADDED_P95_MS),
        Check("ccledger added latency, stream first byte p50 (ms)", c.stream_ttfb.p50 - d.stream_ttfb.p50,
              f"≤ {TARGET_ADDED_P50_MS:g}", c.stream_ttfb.p50 - d.stream_ttfb.p50 <= TARGET_ADDED_P50_MS),
        Check("ccledger added latency, stream first byte p95 (ms)", c.stream_ttfb.p95 - d.stream_ttfb.p95,
              f"≤ {TARGET_ADDED_P95_MS:g}", c.stream_ttfb.p95 - d.stream_ttfb.p95 <= TARGET_ADDED_P95_MS),
        Check("throughput ccledger / LiteLLM (1 worker each)", ratio, f"≥ {TARGET_RPS_RATIO:g}×",
              None if ratio is None else ratio >= TARGET_RPS_RATIO),
        Check("ccledger peak RSS per worker (MB)", rss["ccledger"]["hwm_mb"], f"≤ {TARGET_RSS_MB:g}",
              rss["ccledger"]["hwm_mb"] <= TARGET_RSS_MB),
        Check("metering: ledger records = successful requests", float(recorded), f"= {expected}", metering_ok),
        Check("errors (all phases, all targets)", float(sum(counter.errors.values())
              + sum(sum(ld.errors.values()) for ld in loads.values())), "= 0",
              not counter.errors and not any(ld.errors for ld in loads.values())),
    ]  # fmt: skip
    if "direct-x" in seq:
        x = seq["direct-x"]
        checks.insert(4, Check("  (info) same, non-stream p50 vs direct-x (ms)", c.total.p50 - x.total.p50,
                               "info", None))  # fmt: skip
        checks.insert(5, Check("  (info) same, stream first byte p50 vs direct-x (ms)",
                               c.stream_ttfb.p50 - x.stream_ttfb.p50, "info", None))  # fmt: skip
    if ratio is not None:
        db = seq.get("direct-b", d)
        checks.insert(len(checks) - 3, Check("  (for reference) LiteLLM added latency p50 (ms)",
                               seq["litellm"].total.p50 - db.total.p50, "info", None))  # fmt: skip
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}, LiteLLM {LITELLM_VERSION}",
        "requests": args.requests, "warmup": args.warmup, "seconds": args.seconds,
        "concurrency": args.concurrency, "others_busy_at_start_pct": others_start,
        "others_seq_pct": seq_others,
        "pinning": (f"proxy on CPU {PROXY_CPU}, client + upstream on CPU {HARNESS_CPU}" if proxy_cpus
                    else "none"),
        "metering": metering,
        "code": code,
    }  # fmt: skip
    print_report(seq, loads, rss, checks, meta)
    if counter.samples:
        print("\nfirst error per target: " + json.dumps(counter.samples))
    if profile_lines:
        print("\npy-spy profile of the gateway under load (extra run, not in the figures above)")
        print("\n".join(profile_lines))
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(jsonable({
        "meta": meta, "sequential": seq, "load": loads, "rss": rss, "checks": checks,
        "metering": {"expected": expected, "ledger": recorded, "daily_totals_requests": reported},
        "spend_headers": spend_headers, "errors": counter.errors, "error_samples": counter.samples,
    }), indent=2))  # fmt: skip
    log(f"wrote {args.json_out}")
    return 0 if all(ch.ok is not False for ch in checks) else 1


def profile_gateway(args: argparse.Namespace, gw: Target, upstream_pids: list[int],
                    harness_cpus: set[int] | None, work: Path, counter: Counter) -> list[str]:  # fmt: skip
    """One more ccledger load run with py-spy recording the gateway; return the summary lines.

    A separate run because sampling pauses the process (blocking mode, for whole stacks): it perturbs.
    """
    py_spy = ensure_py_spy()
    args.profile.mkdir(parents=True, exist_ok=True)
    raw = args.profile / "ccledger-gateway.txt"
    pid = PROCS.started["ccledger"].pid
    with open(args.profile / "py-spy.log", "wb") as spy_log, pinned(harness_cpus):
        spy = PROCS.add("py-spy", subprocess.Popen(
            [str(py_spy), "record", "--pid", str(pid), "--duration", str(int(args.seconds) + 2), "--rate", "200",
             "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=spy_log, start_new_session=True,
        ))  # fmt: skip
    time.sleep(1.0)
    log("profiling: extra ccledger load run under py-spy")
    ld = run_load(gw, upstream_pids, args.seconds, args.concurrency, harness_cpus, work)
    counter.ok["ccledger"] = counter.ok.get("ccledger", 0) + ld.ok + ld.warm_ok
    with contextlib.suppress(subprocess.TimeoutExpired):
        spy.wait(30)
    PROCS.stop("py-spy")
    if not raw.is_file():
        return [f"py-spy wrote nothing; see {args.profile / 'py-spy.log'}"]
    lines = [f"(load under py-spy: {ld.rps:.1f} RPS; raw stacks: {raw})", *summarize_profile(raw)]
    (args.profile / "summary.txt").write_text("\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    sys.exit(main())
