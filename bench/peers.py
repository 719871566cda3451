"""Install and run the peers that ccledger is benchmarked against.

Peers (facts and pins: ``bench/README.md``):

* ccusage 18.0.11 -- the TypeScript release, run with the machine's ``node``.
* ccusage 20.0.24 -- a static Rust binary shipped inside npm packages; we run the binary itself, not the
  node wrapper, so the measurement is of the peer and not of node's start-up. 20.0.26 has no linux-x64
  binary on npm, hence the pin.
* LiteLLM proxy 1.108.7 -- the gateway peer, in its own venv. Newer releases need packages the registry
  here lacks and make pip backtrack for minutes, hence the pin.

Everything is installed under ``bench/.peers/`` (gitignored) so a benchmark never touches the global npm
prefix or the project's own environment, and so that re-running a benchmark does not re-download.
Every ``install_*`` function is idempotent: it checks the installed version first.

CLI: ``python bench/peers.py install`` installs all three and prints what to run;
``python bench/peers.py selftest`` repeats the checks recorded in the README (tiny corpus through both
ccusage versions, LiteLLM boot against a local HTTP server).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

BENCH_DIR = Path(__file__).resolve().parent
PEERS_DIR = BENCH_DIR / ".peers"

CCUSAGE_VERSIONS: dict[int, str] = {18: "18.0.11", 20: "20.0.24"}
LITELLM_VERSION = "1.108.7"
LITELLM_VENV = PEERS_DIR / "litellm-venv"

# LiteLLM would otherwise fetch these from GitHub at import time; there is no network here, and a
# benchmark must not depend on one anyway (peers.md §3).
LITELLM_OFFLINE_ENV: dict[str, str] = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
}

# Variables that would make a "bare" LiteLLM proxy silently attach to a database or cache, or a ccusage
# run read a config other than the one we point it at.
_SCRUBBED_ENV_PREFIXES = ("DATABASE_URL", "REDIS_", "LITELLM_", "CLAUDE_", "CCUSAGE_", "XDG_", "NODE_OPTIONS")

_temp_dirs: list[Path] = []


def _make_temp_dir(prefix: str) -> Path:
    """A temp dir removed at interpreter exit, so isolated HOMEs do not pile up in /tmp."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _temp_dirs.append(path)
    return path


@atexit.register
def _cleanup_temp_dirs() -> None:
    for path in _temp_dirs:
        shutil.rmtree(path, ignore_errors=True)


def _base_env() -> dict[str, str]:
    """The caller's environment minus anything that could redirect a peer to other data or services."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}


# --------------------------------------------------------------------------------------------- ccusage


def _ccusage_prefix(version: int) -> Path:
    if version not in CCUSAGE_VERSIONS:
        raise ValueError(f"unsupported ccusage major version {version}; known: {sorted(CCUSAGE_VERSIONS)}")
    return PEERS_DIR / f"ccusage{version}"


def _installed_npm_version(package_json: Path) -> str | None:
    try:
        return str(json.loads(package_json.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def _ccusage_native_binary(prefix: Path) -> Path:
    """Path of the Rust binary inside the platform package that ccusage 20's node wrapper would spawn.

    ``node_modules/.bin/ccusage`` in 20.x is ``src/cli.js``: a node script that resolves
    ``@ccusage/ccusage-<platform>-<arch>/bin/ccusage`` and spawns it. We run that binary directly.
    """
    machine = os.uname().machine.lower()
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    plat = {"linux": "linux", "darwin": "darwin"}.get(sys.platform)
    if arch is None or plat is None:
        raise RuntimeError(f"no ccusage native package for {sys.platform}/{os.uname().machine}")
    return prefix / "node_modules" / "@ccusage" / f"ccusage-{plat}-{arch}" / "bin" / "ccusage"


def install_ccusage(version: int) -> list[str]:
    """Install ccusage ``version`` (18 or 20) into ``bench/.peers/ccusage<version>``; return its argv prefix.

    Idempotent: nothing is downloaded when the pinned version is already there. Each major version gets
    its own npm prefix because both publish the same package name.

    For 18 the argv prefix is ``[node, .../dist/index.js]``. For 20 it is ``[<native binary>]``; npm
    installs that file without its execute bit (the wrapper chmods it on first run), so we set it here.
    """
    prefix = _ccusage_prefix(version)
    pinned = CCUSAGE_VERSIONS[version]
    package_json = prefix / "node_modules" / "ccusage" / "package.json"
    if _installed_npm_version(package_json) != pinned:
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm not found on PATH (Debian package 'npm')")
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--save-exact",
             f"ccusage@{pinned}"],
            check=True,
            env={**os.environ, "npm_config_update_notifier": "false"},
        )
        if _installed_npm_version(package_json) != pinned:
            raise RuntimeError(f"npm did not install ccusage@{pinned} into {prefix}")
    if version == 20:
        binary = _ccusage_native_binary(prefix)
        if not binary.is_file():
            raise RuntimeError(f"ccusage {pinned}: no native binary at {binary} (optional dep not installed)")
        if not os.access(binary, os.X_OK):
            binary.chmod(0o755)
        return [str(binary)]
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found on PATH (ccusage 18 needs node >= 20.19.4)")
    entry = json.loads(package_json.read_text())["bin"]["ccusage"]
    return [node, str((package_json.parent / entry).resolve())]


def ccusage_cmd(
    version: int, report: str, config_dir: Path, extra: list[str]
) -> tuple[list[str], dict[str, str]]:
    """argv and env to run a ccusage Claude report (``daily``, ``monthly``, ``session``...) on ``config_dir``.

    ``config_dir`` is a Claude config dir: the transcripts are ``config_dir/projects/<project>/*.jsonl``.
    ``extra`` is appended verbatim, typically ``["--json", "--offline", "--mode", "calculate"]``; both
    versions accept exactly those flags (checked with ``--help``). 20.x needs the ``claude`` subcommand:
    its bare ``ccusage daily`` is a unified report over every agent it can detect.

    Isolation, so a run measures only the corpus: ``HOME`` (and every XDG dir) is a fresh empty temp dir,
    so neither version can find the real ``~/.claude``, ``~/.config/claude`` or a ``ccusage.json``; the
    caller should also run it with ``cwd`` set to a dir without ``.ccusage/`` (``measure`` defaults to
    that HOME). ``TZ=UTC`` makes day buckets reproducible (``--timezone`` in ``extra`` overrides it).
    Neither version has an update check; the only network access either makes is fetching LiteLLM's
    price JSON, which ``--offline`` turns off -- pass it.
    """
    argv = [*install_ccusage(version)]
    if version == 20:
        argv.append("claude")
    argv += [report, *extra]
    home = _make_temp_dir("ccledger-bench-home-")
    env = _base_env()
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        CLAUDE_CONFIG_DIR=str(Path(config_dir).resolve()),
        TZ="UTC",
        NO_COLOR="1",
    )
    return argv, env


# --------------------------------------------------------------------------------------------- measure


@dataclass(frozen=True)
class Result:
    """One measured run.

    ``peak_rss_mb`` is the kernel's ``ru_maxrss`` from ``wait4()`` on the command: the peak RSS of the
    largest single process in the tree (the command and every descendant it waited for). It is the number
    GNU ``time -v`` prints as "Maximum resident set size", obtained the same way (through a small
    launcher: see ``_LAUNCHER``), without needing the ``time`` package. ``wall_s`` and ``cpu_s`` (user +
    system, descendants included) are the command's alone, measured by the launcher. ``tree_rss_mb`` is the peak of the *sum* of RSS over all live processes in the run's
    session, sampled every ``sample_s``: it catches a wrapper plus child running at once (e.g. ccusage
    20's node shim), but as a sample it can miss a short spike, so treat it as a lower bound (it is never
    below ``peak_rss_mb``, which is itself a floor for the tree's peak).
    """

    wall_s: float
    peak_rss_mb: float
    stdout: str
    returncode: int
    stderr: str = ""
    tree_rss_mb: float = 0.0
    cpu_s: float = 0.0


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _session_rss_bytes(sid: int) -> int:
    """Sum of RSS of all processes whose session id is ``sid`` (the run's own session, see ``measure``):
    a look at every process on the machine, for kernels without ``/proc/<pid>/task/<tid>/children``."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
            # Fields after the parenthesised comm: state ppid pgrp session ...
            fields = stat[stat.rindex(b")") + 2 :].split()
            if int(fields[3]) != sid:
                continue
            with open(f"/proc/{entry.name}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * _PAGE_SIZE
        except (OSError, ValueError, IndexError):
            continue  # the process exited while we looked
    return total


_HAS_CHILDREN_FILES = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _tree_rss_bytes(root: int) -> int:
    """Sum of RSS of ``root`` and its descendants, found through each thread's ``children`` file.

    Why not ``_session_rss_bytes``: reading the ``stat`` of every process on the machine every 50 ms cost
    the sampler ~0.8-3.5 ms a sample (by the VM's speed), CPU taken from the command measured, and most
    from one that keeps every core busy (a first run's workers) rather than one that leaves a core idle.
    Here a sample reads a few files per process of the run.
    """
    if not _HAS_CHILDREN_FILES:
        return _session_rss_bytes(root)
    total = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * _PAGE_SIZE
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError, IndexError):
            continue  # the process (or thread) exited while we looked
    return total


def measure(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    cwd: Path | None = None,
    timeout_s: float | None = None,
    sample_s: float = 0.05,
) -> Result:
    """Run ``argv`` with ``env`` and return wall time, peak RSS, stdout and exit code.

    The command runs in its own session (``start_new_session``) so that the RSS sampler can find all of
    its descendants and a timeout can kill the whole tree. Output goes to temp files rather than pipes:
    a peer printing megabytes of JSON can neither block nor be slowed by a reader thread. ``cwd``
    defaults to ``env["HOME"]`` (the empty dir ``ccusage_cmd`` made) so no project-local config is found.
    On timeout the tree is killed and ``returncode`` is the negative signal number.
    """
    if cwd is None:
        cwd = Path(env.get("HOME") or tempfile.gettempdir())
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(prefix="measure-", suffix=".txt") as report:  # fmt: skip
        start = time.perf_counter()
        # Through the small launcher (see _LAUNCHER): a child started straight from this process would
        # report this process's own peak RSS as its own.
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _LAUNCHER, report.name, *argv], env=env, cwd=cwd,
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
        )  # fmt: skip
        done = threading.Event()
        tree_peak = 0

        def sample() -> None:
            nonlocal tree_peak
            while not done.is_set():
                tree_peak = max(tree_peak, _tree_rss_bytes(proc.pid))
                done.wait(sample_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        killer: threading.Timer | None = None
        if timeout_s is not None:
            killer = threading.Timer(timeout_s, _kill_group, args=(proc.pid,))
            killer.start()
        try:
            _, status, rusage = os.wait4(proc.pid, 0)
        finally:
            wall = time.perf_counter() - start
            done.set()
            if killer is not None:
                killer.cancel()
        # We reaped the child ourselves; tell Popen so it does not try again.
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.join()
        _kill_group(proc.pid)  # leftovers (daemonised grandchildren) must not outlive the run
        out.seek(0)
        err.seek(0)
        cpu_s = rusage.ru_utime + rusage.ru_stime
        maxrss_kib = rusage.ru_maxrss
        try:  # the launcher's figures for the command alone (absent if it was killed)
            inner_wall, inner_rss, inner_cpu = report.read().decode().split()
            wall, maxrss_kib, cpu_s = float(inner_wall), int(inner_rss), float(inner_cpu)
        except ValueError:
            pass
        return Result(
            wall_s=wall,
            peak_rss_mb=maxrss_kib / 1024,  # Linux reports KiB
            stdout=out.read().decode("utf-8", "replace"),
            returncode=proc.returncode,
            stderr=err.read().decode("utf-8", "replace"),
            # The largest process's own peak is a floor for the tree's, and catches what sampling missed.
            tree_rss_mb=max(tree_peak / (1024 * 1024), maxrss_kib / 1024),
            cpu_s=cpu_s,
        )


# Runs the measured command and writes "wall_s maxrss_kib cpu_s" for it alone. Why a launcher: on Linux a
# child's ru_maxrss starts at the peak RSS of the process it was forked from (exec records the old address
# space's high-water mark), so a command started straight from a benchmark holding a 300 MB corpus model
# reported >= 300 MB. The launcher is a bare ``python -S`` (~10 MB), which bounds that error; its own
# start-up is outside the timed span.
_LAUNCHER = """
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(report, "w") as fh:
    fh.write(f"{wall} {ru.ru_maxrss} {ru.ru_utime + ru.ru_stime}")
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------- LiteLLM


def _venv_python() -> Path:
    return LITELLM_VENV / "bin" / "python"


def _installed_litellm_version() -> str | None:
    python = _venv_python()
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True, text=True, check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def install_litellm() -> Path:
    """Install ``litellm[proxy]==1.108.7`` into ``bench/.peers/litellm-venv``; return the ``litellm`` script.

    Idempotent (checks the installed distribution's version). Takes about a minute and ~750 MB on a
    fresh machine. ``prometheus_client`` and prisma are not in ``[proxy]`` and are not installed: the
    benchmark runs the bare proxy (no DB, no callbacks), as ccledger's gateway is compared bare too.
    """
    if _installed_litellm_version() != LITELLM_VERSION:
        if not _venv_python().exists():
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [str(_venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q",
             f"litellm[proxy]=={LITELLM_VERSION}"],
            check=True,
        )
        if _installed_litellm_version() != LITELLM_VERSION:
            raise RuntimeError(f"pip did not install litellm=={LITELLM_VERSION} into {LITELLM_VENV}")
    return LITELLM_VENV / "bin" / "litellm"


def write_litellm_config(path: Path, upstream_url: str) -> Path:
    """Write the minimal bare-proxy config of peers.md §3, routing every ``claude-*`` id to ``upstream_url``.

    LiteLLM appends ``/v1/messages`` to ``api_base``, so ``upstream_url`` is the upstream's root. The
    master key is read from the environment so it never lands on disk. YAML is written by hand (every
    value is a plain scalar) to avoid a PyYAML dependency in the bench.
    """
    upstream_url = upstream_url.rstrip("/")
    path.write_text(
        "model_list:\n"
        '  - model_name: "claude-*"\n'
        "    litellm_params:\n"
        '      model: "anthropic/claude-*"\n'
        f"      api_base: {json.dumps(upstream_url)}\n"
        "      api_key: sk-ant-fake-upstream\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"
        "  master_key: os.environ/LITELLM_MASTER_KEY\n"
    )
    return path


class LiteLLMProxy(NamedTuple):
    """A running proxy; unpacks as ``(process, base_url, master_key)``."""

    process: subprocess.Popen[bytes]
    base_url: str
    master_key: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (good enough for a benchmark on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_litellm(
    upstream_url: str,
    port: int | None = None,
    *,
    workers: int = 1,
    extra_args: Sequence[str] = (),
    work_dir: Path | None = None,
    startup_timeout_s: float = 120.0,
) -> LiteLLMProxy:
    """Start a bare LiteLLM proxy in front of ``upstream_url`` and wait until ``/health/liveliness`` is 200.

    Returns ``(process, base_url, master_key)``; stop it with ``stop_litellm``. The master key is 48
    random bytes because LiteLLM 1.108.7 refuses to start with a publicly known default like
    ``sk-1234``. The proxy runs in its own session so ``stop_litellm`` can stop its uvicorn workers too.
    Its output goes to ``<work_dir>/litellm.log`` (a temp dir by default): read it when start-up fails.
    Start-up takes ~7 s on the 2-core machine (peers.md §2).
    """
    litellm = install_litellm()
    work_dir = work_dir if work_dir is not None else _make_temp_dir("ccledger-bench-litellm-")
    work_dir.mkdir(parents=True, exist_ok=True)
    config = write_litellm_config(work_dir / "config.yaml", upstream_url)
    port = port if port is not None else free_port()
    master_key = "sk-bench-" + secrets.token_urlsafe(48)
    env = _base_env()
    env.update(LITELLM_OFFLINE_ENV)
    env["LITELLM_MASTER_KEY"] = master_key
    env["PATH"] = f"{LITELLM_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    argv = [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    if workers != 1:
        argv += ["--num_workers", str(workers)]
    argv += list(extra_args)
    log_path = work_dir / "litellm.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, env=env, cwd=work_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"litellm exited with {process.returncode} during start-up; see {log_path}")
        try:
            with urllib.request.urlopen(f"{base_url}/health/liveliness", timeout=2) as resp:
                if resp.status == 200:
                    return LiteLLMProxy(process, base_url, master_key)
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            stop_litellm(process)
            raise TimeoutError(f"litellm not live after {startup_timeout_s:.0f} s; see {log_path}")
        time.sleep(0.25)


def stop_litellm(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the proxy's whole process group, then SIGKILL whatever is left after ``grace_s``."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace_s)
    _kill_group(process.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


@contextlib.contextmanager
def litellm_proxy(upstream_url: str, port: int | None = None, **kwargs: object) -> Iterator[LiteLLMProxy]:
    """``start_litellm`` as a context manager, so a failing benchmark never leaves a proxy running."""
    proxy = start_litellm(upstream_url, port, **kwargs)  # type: ignore[arg-type]
    try:
        yield proxy
    finally:
        stop_litellm(proxy.process)


def install_all() -> dict[str, list[str]]:
    """Install every peer; return name -> argv prefix (for LiteLLM: the ``litellm`` script)."""
    return {
        "ccusage18": install_ccusage(18),
        "ccusage20": install_ccusage(20),
        "litellm": [str(install_litellm())],
    }


# --------------------------------------------------------------------------------------------- selftest

# Probe cases, each on its own UTC day so one ``daily --json`` run shows every case apart. ``want`` is the
# correct list-price cost (Sonnet 4.5, $/MTok: input 3, output 15, 5m write 3.75, 1h write 6, read 0.30;
# web search $10/1000). ``why`` says what a wrong answer would mean. ``req=None`` omits ``requestId``.
_SONNET = "claude-sonnet-4-5-20250929"
_SELFTEST_CASES: list[dict[str, object]] = [
    {"day": "2026-11-20", "msg": "msg_plain", "req": "req_plain", "want": 0.0105,
     "why": "plain: 1000 in + 500 out",
     "usage": {"input_tokens": 1000, "output_tokens": 500}},
    # Same (message.id, requestId) twice: a mid-stream snapshot (10 out) then the final line (1000 out).
    {"day": "2026-11-21", "msg": "msg_dup", "req": "req_dup", "want": 0.0153,
     "why": "dup snapshot->final: last/max 0.0153, first 0.00045, both 0.01575",
     "usage": {"input_tokens": 100, "output_tokens": 10}},
    {"day": "2026-11-21", "msg": "msg_dup", "req": "req_dup",
     "usage": {"input_tokens": 100, "output_tokens": 1000}},
    {"day": "2026-11-22", "msg": "msg_1h", "req": "req_1h", "want": 0.60,
     "why": "100k 1h cache writes: 2x = 0.60, priced as 5m = 0.375",
     "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 100_000,
               "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 100_000}}},
    {"day": "2026-11-23", "msg": "msg_ws", "req": "req_ws", "want": 0.115,
     "why": "10 web searches + 1000 out: 0.10 + 0.015; tokens only 0.015",
     "usage": {"input_tokens": 0, "output_tokens": 1000, "server_tool_use": {"web_search_requests": 10}}},
    # Same key again, but the larger line first: tells "keep last" from "keep largest".
    {"day": "2026-11-24", "msg": "msg_dup2", "req": "req_dup2", "want": 0.0153,
     "why": "dup large->small: max 0.0153, last 0.00045, first 0.0153",
     "usage": {"input_tokens": 100, "output_tokens": 1000}},
    {"day": "2026-11-24", "msg": "msg_dup2", "req": "req_dup2",
     "usage": {"input_tokens": 100, "output_tokens": 10}},
    {"day": "2026-11-25", "msg": "msg_noreq", "req": None, "want": 0.0153,
     "why": "same message.id, no requestId, 10 then 1000 out: deduped 0.0153, not 0.01575",
     "usage": {"input_tokens": 100, "output_tokens": 10}},
    {"day": "2026-11-25", "msg": "msg_noreq", "req": None,
     "usage": {"input_tokens": 100, "output_tokens": 1000}},
    {"day": "2026-11-26", "msg": "msg_resume", "req": "req_resume", "want": 0.0105,
     "why": "one line copied into a second file (resumed session): once 0.0105, twice 0.021",
     "usage": {"input_tokens": 1000, "output_tokens": 500}},
    {"day": "2026-11-26", "msg": "msg_resume", "req": "req_resume", "file": "s2",
     "usage": {"input_tokens": 1000, "output_tokens": 500}},
    {"day": "2026-11-27", "msg": "msg_btw", "req": "req_btw_parent", "want": 0.0105,
     "why": "/btw replay: same message.id, new requestId, sidechain: once 0.0105, twice 0.021",
     "usage": {"input_tokens": 1000, "output_tokens": 500}},
    {"day": "2026-11-27", "msg": "msg_btw", "req": "req_btw_replay", "sidechain": True,
     "usage": {"input_tokens": 1000, "output_tokens": 500}},
    {"day": "2026-11-28", "msg": "msg_5m", "req": "req_5m", "want": 0.375,
     "why": "100k 5m cache writes (1.25x) = 0.375",
     "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 100_000,
               "cache_creation": {"ephemeral_5m_input_tokens": 100_000, "ephemeral_1h_input_tokens": 0}}},
    {"day": "2026-12-01", "msg": "msg_dup3", "req": "req_dup3", "want": 0.0153,
     "why": "same key 3x, output 10, 1000, 500: largest 0.0153, last 0.0078, first 0.00045",
     "usage": {"input_tokens": 100, "output_tokens": 10}},
    {"day": "2026-12-01", "msg": "msg_dup3", "req": "req_dup3",
     "usage": {"input_tokens": 100, "output_tokens": 1000}},
    {"day": "2026-12-01", "msg": "msg_dup3", "req": "req_dup3",
     "usage": {"input_tokens": 100, "output_tokens": 500}},
    {"day": "2026-12-02", "msg": "msg_twice", "req": "req_twice_a", "want": 0.021,
     "why": "same message.id, two requestIds, no sidechain: two requests by our key, 0.021",
     "usage": {"input_tokens": 1000, "output_tokens": 500}},
    {"day": "2026-12-02", "msg": "msg_twice", "req": "req_twice_b",
     "usage": {"input_tokens": 1000, "output_tokens": 500}},
    # Long-context probes. Sonnet 4.5's >200k tier is historic (1M beta only, retired 2026-04-30), so the
    # standard price is what ccledger should report today; these show how a peer splits a big request.
    {"day": "2026-11-29", "msg": "msg_big", "req": "req_big", "want": 0.90,
     "why": "300k plain input: standard 0.90; per-field tier 200k*3+100k*6 = 1.20; whole-request tier 1.80",
     "usage": {"input_tokens": 300_000, "output_tokens": 0}},
    {"day": "2026-11-30", "msg": "msg_split", "req": "req_split", "want": 0.495,
     "why": "150k in + 100k read + 1000 out (250k input, no field >200k): standard 0.495, tier 0.9825",
     "usage": {"input_tokens": 150_000, "cache_read_input_tokens": 100_000, "output_tokens": 1000}},
]


def write_selftest_corpus(config_dir: Path) -> list[Path]:
    """Write the probe transcripts (``projects/-tmp-x/s1.jsonl`` and ``s2.jsonl``); return their paths.

    Lines are written the way Claude Code writes them (compact JSON, one object per line) with only the
    fields that matter for cost plus the usual envelope, so a peer's parser takes its normal path.
    Compact matters: ccusage 20 pre-filters lines with a byte search for ``"usage":{`` and silently
    drops a line written with ``json.dumps``' default ``": "`` separator.
    """
    project = config_dir / "projects" / "-tmp-x"
    project.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {}
    for i, case in enumerate(_SELFTEST_CASES):
        usage = {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "service_tier": "standard"}
        usage.update(case["usage"])  # type: ignore[arg-type]
        line: dict[str, object] = {
            "parentUuid": None, "isSidechain": bool(case.get("sidechain", False)), "userType": "external",
            "cwd": "/tmp/x", "sessionId": str(case.get("file", "s1")), "version": "2.0.30",
            "gitBranch": "main",
            "type": "assistant", "uuid": f"00000000-0000-4000-8000-{i:012d}",
            "timestamp": f"{case['day']}T12:00:{i:02d}.000Z",
        }
        if case["req"] is not None:
            line["requestId"] = case["req"]
        line["message"] = {
            "id": case["msg"], "type": "message", "role": "assistant", "model": _SONNET,
            "content": [{"type": "text", "text": "ok"}], "stop_reason": None, "stop_sequence": None,
            "usage": usage,
        }
        files.setdefault(str(case.get("file", "s1")), []).append(json.dumps(line, separators=(",", ":")))
    paths = []
    for name, lines in files.items():
        path = project / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def _selftest() -> int:
    """Run the probes the README records and print, per day, the correct cost and each peer's answer.

    For humans, not CI: it needs the peers installed (it installs them) and LiteLLM takes ~7 s to boot.
    """
    corpus = _make_temp_dir("ccledger-bench-selftest-")
    write_selftest_corpus(corpus)
    reports: dict[int, dict[str, dict[str, object]]] = {}
    for version in (18, 20):
        argv, env = ccusage_cmd(version, "daily", corpus, ["--json", "--offline", "--mode", "calculate"])
        res = measure(argv, env, timeout_s=120)
        print(f"ccusage {version}: rc={res.returncode} wall={res.wall_s:.3f}s "
              f"peak_rss={res.peak_rss_mb:.1f}MB tree_rss~{res.tree_rss_mb:.1f}MB\n  argv: {' '.join(argv)}")
        if res.returncode != 0:
            print(res.stderr)
            return 1
        doc = json.loads(res.stdout)
        print(f"  keys: top={sorted(doc)} totals={sorted(doc['totals'])} day={sorted(doc['daily'][0])}")
        reports[version] = {str(day["date"]): day for day in doc["daily"]}
    print(f"\n{'day':<11} {'correct':>8} {'cc18':>9} {'cc18 out':>8} {'cc20':>9} {'cc20 out':>8}  case")
    for case in _SELFTEST_CASES:
        if "want" not in case:
            continue
        day = str(case["day"])
        cells = []
        for version in (18, 20):
            got = reports[version].get(day, {})
            cells += [f"{float(got.get('totalCost', 0.0)):>9.5f}", f"{got.get('outputTokens', '-')!s:>8}"]  # type: ignore[arg-type]
        print(f"{day:<11} {float(case['want']):>8.5f} {' '.join(cells)}  {case['why']}")  # type: ignore[arg-type]

    upstream_port = free_port()
    upstream = subprocess.Popen(  # a dumb local "upstream": the proxy only has to boot against it
        [sys.executable, "-m", "http.server", str(upstream_port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=corpus,
    )
    try:
        start = time.perf_counter()
        with litellm_proxy(f"http://127.0.0.1:{upstream_port}") as (process, base_url, _key):
            print(f"\nlitellm {LITELLM_VERSION}: /health/liveliness 200 at {base_url} (pid {process.pid}) "
                  f"after {time.perf_counter() - start:.1f} s; stopping")
        print(f"litellm stopped: returncode {process.returncode}")
    finally:
        upstream.terminate()
        upstream.wait(10)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="install all peers under bench/.peers/ (idempotent)")
    sub.add_parser("selftest", help="install, then run the checks recorded in bench/README.md")
    args = parser.parse_args(argv)
    if args.cmd == "install":
        for name, cmd in install_all().items():
            print(f"{name}: {' '.join(cmd)}")
        return 0
    return _selftest()


if __name__ == "__main__":
    sys.exit(main())
