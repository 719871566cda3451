"""Transcript reading: incremental offsets, rewritten files, partial last lines, huge lines, bad bytes,
two processes at once, and arbitrary bytes (hypothesis). Expected numbers are written out by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccledger.core.pricing import PriceBook
from ccledger.services.history import refresh
from ccledger.sources.transcripts import scan_file
from ccledger.store.ledger import Ledger
from tests.sources.lookup import LOOKUPS, count_decoded_chunks, use_lookup

BOOK = PriceBook.load()


def line(msg_id: str, output: int = 100, *, req: str | None = "auto", model: str = "claude-sonnet-4-5",
         ts: str = "2026-11-20T10:00:00.000Z", session: str = "s1", **extra) -> str:
    obj = {"type": "assistant", "timestamp": ts, "sessionId": session, "cwd": "/home/a/proj",
           "version": "2.1.0", "message": {"id": msg_id, "model": model, "usage": {
               "input_tokens": 1000, "output_tokens": output, "cache_creation_input_tokens": 0,
               "cache_read_input_tokens": 0}}}
    if req:
        obj["requestId"] = "req_" + msg_id if req == "auto" else req
    obj.update(extra)
    return json.dumps(obj, separators=(",", ":"))


def cost_usd(n_requests: int, outputs: int) -> float:
    """Sonnet 4.5: $3 per MTok input (1,000 per request), $15 per MTok output."""
    return n_requests * 1000 * 3 / 1e6 + outputs * 15 / 1e6


def setup(tmp_path: Path) -> tuple[Path, Path, Ledger]:
    root = tmp_path / "claude"
    proj = root / "projects" / "-home-a-proj"
    proj.mkdir(parents=True)
    return root, proj, Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")


def summary(ledger: Ledger) -> tuple[int, int]:
    rows = ledger.rollup(bucket_ms=86_400_000)
    return sum(r.requests for r in rows), sum(r.tokens.output for r in rows)


def test_incremental_reads_only_new_bytes(tmp_path):
    root, proj, ledger = setup(tmp_path)
    f = proj / "s1.jsonl"
    f.write_text(line("m1") + "\n" + line("m2") + "\n")
    s1 = refresh(ledger, BOOK, [root])
    assert (s1.files_read, s1.records) == (1, 2)
    size1 = f.stat().st_size
    with f.open("a") as fh:
        fh.write(line("m3", 7) + "\n")
    s2 = refresh(ledger, BOOK, [root])
    assert s2.bytes_read == f.stat().st_size - size1
    assert summary(ledger) == (3, 207)
    s3 = refresh(ledger, BOOK, [root])
    assert (s3.files_read, s3.bytes_read) == (0, 0)


def test_duplicate_lines_keep_the_most_complete_usage(tmp_path):
    root, proj, ledger = setup(tmp_path)
    # one streamed message written as three lines; the last carries the final output count
    (proj / "s1.jsonl").write_text("\n".join([line("m1", 3), line("m1", 40), line("m1", 500)]) + "\n")
    # a resumed session copies the message into another file; /btw replays it with a new requestId
    (proj / "s2.jsonl").write_text(line("m1", 500) + "\n" + line("m1", 500, req="req_other", isSidechain=True)
                                   + "\n" + line("m9", 1, req=None) + "\n")
    refresh(ledger, BOOK, [root])
    assert summary(ledger) == (2, 501)


def test_partial_last_line_waits_and_complete_one_counts(tmp_path):
    root, proj, ledger = setup(tmp_path)
    f = proj / "s1.jsonl"
    full = line("m2", 9)
    f.write_text(line("m1") + "\n" + full[:40])  # Claude Code is mid-write
    s = refresh(ledger, BOOK, [root])
    assert summary(ledger) == (1, 100) and s.bad_lines == 0
    with f.open("a") as fh:
        fh.write(full[40:])  # complete JSON, still no newline
    refresh(ledger, BOOK, [root])
    assert summary(ledger) == (2, 109)
    with f.open("a") as fh:
        fh.write("\n" + line("m3", 1) + "\n")
    refresh(ledger, BOOK, [root])
    assert summary(ledger) == (3, 110)


def test_lines_after_a_last_line_taken_before_its_newline_keep_their_numbers(tmp_path):
    """A complete last line is read before Claude Code writes its newline; the newline that follows
    later ends that line, so the lines after it are numbered as a fresh read numbers them (found in
    review: they were one too high), and text written before that newline makes the line bad."""
    f = tmp_path / "s1.jsonl"
    f.write_text(line("m1") + "\n" + line("m2", 9))
    first = scan_file(f, None)
    assert first is not None and len(first.records) == 2
    with f.open("a") as fh:
        fh.write("\ngarbage\n" + line("m3", 1) + "\n{bad\n")
    resumed = scan_file(f, first.state)
    fresh = scan_file(f, None)
    assert resumed is not None and fresh is not None
    assert [b.line_no for b in resumed.bad] == [b.line_no for b in fresh.bad] == [3, 5]
    assert [r.dedupe_key for r in resumed.records] == ["msg:m3"]
    assert resumed.state.line_no == fresh.state.line_no == 5
    # Text appended to the line already read (no newline between): that line is now bad.
    g = tmp_path / "s2.jsonl"
    g.write_text(line("m1") + "\n" + line("m2", 9))
    taken = scan_file(g, None)
    assert taken is not None
    with g.open("a") as fh:
        fh.write(" x\n" + line("m4", 1) + "\n")
    again = scan_file(g, taken.state)
    assert again is not None
    assert [(b.line_no, b.reason) for b in again.bad] == [(2, "text appended to a line already read")]
    assert [r.dedupe_key for r in again.records] == ["msg:m4"] and again.state.line_no == 3
    # An object glued to that line before any newline is part of it, not a line of its own (found in a
    # second review: it was counted as line 3 and every later line numbered one too high).
    h = tmp_path / "s3.jsonl"
    h.write_text(line("m1") + "\n" + line("m2", 9))
    taken = scan_file(h, None)
    assert taken is not None
    with h.open("a") as fh:
        fh.write(line("m3", 1))
    glued = scan_file(h, taken.state)
    assert glued is not None and (glued.records, glued.bad, glued.bytes_read) == ([], [], 0)
    with h.open("a") as fh:
        fh.write("\n" + line("m4", 1) + "\n")
    later = scan_file(h, glued.state)
    fresh = scan_file(h, None)
    assert later is not None and fresh is not None
    assert [b.line_no for b in later.bad] == [b.line_no for b in fresh.bad] == [2]
    assert [r.dedupe_key for r in later.records] == ["msg:m4"]
    assert later.state.line_no == fresh.state.line_no == 3


def test_absurd_token_counts_are_bad_lines_not_a_failed_refresh(tmp_path):
    """A count beyond what the store's integers hold (found in review: the refresh failed on it) or
    beyond any real request (10**9 tokens of a kind, 10**6 searches) is a bad line; the other requests
    are still stored."""
    root, proj, ledger = setup(tmp_path)
    huge = json.loads(line("m2"))
    huge["message"]["usage"]["input_tokens"] = 2**64 - 1  # a uint64 that simdjson reads
    big = json.loads(line("m3"))
    big["message"]["usage"]["server_tool_use"] = {"web_search_requests": 10**6 + 1}
    below = json.loads(line("m4"))
    below["message"]["usage"]["server_tool_use"] = {"web_search_requests": -(10**19)}
    # A corrupt copy of m1 must not displace the sound one, whichever is more "complete".
    twin = json.loads(line("m1"))
    twin["message"]["usage"]["cache_read_input_tokens"] = 10**9 + 1
    lines = [line("m1"), json.dumps(huge), json.dumps(big), json.dumps(below), json.dumps(twin)]
    (proj / "s1.jsonl").write_text("\n".join(lines) + "\n")
    s = refresh(ledger, BOOK, [root])
    assert [b.line_no for b in s.bad] == [2, 3, 4, 5] and s.bad_lines == 4
    assert summary(ledger) == (1, 100)


def test_a_file_emptied_while_it_is_read_is_a_warning(tmp_path, monkeypatch):
    """Truncated to nothing between the size check and the mapping, a file is reported, not a crash."""
    from ccledger.sources import transcripts

    def emptied(*args, **kwargs):
        raise ValueError("cannot mmap an empty file")

    monkeypatch.setattr(transcripts.mmap, "mmap", emptied)
    f = tmp_path / "s1.jsonl"
    f.write_text(line("m1") + "\n")
    scan = scan_file(f, None)
    assert scan is not None and scan.error == "the file was emptied while being read"


def test_shrunk_or_replaced_file_is_read_again(tmp_path):
    root, proj, ledger = setup(tmp_path)
    f = proj / "s1.jsonl"
    f.write_text(line("m1") + "\n" + line("m2") + "\n")
    refresh(ledger, BOOK, [root])
    f.write_text(line("m7", 1) + "\n")  # rewritten shorter (cleanup/resume)
    refresh(ledger, BOOK, [root])
    tmp = proj / "new.tmp"
    tmp.write_text(line("m8", 2) + "\n" + line("m9", 2) + "\n")
    os.replace(tmp, f)  # replaced by a new inode with longer content
    refresh(ledger, BOOK, [root])
    assert summary(ledger) == (5, 205)


def test_bad_lines_are_counted_with_their_place(tmp_path):
    root, proj, ledger = setup(tmp_path)
    f = proj / "s1.jsonl"
    good = line("m1").encode()
    f.write_bytes(b"\n".join([good, b"not json", b'{"type":"assistant","message":{"usage":{', b"\xff\xfe{}",
                              b"", b'{"type":"summary","summary":"t"}', line("m2", 5, model="").encode()]) + b"\n")
    s = refresh(ledger, BOOK, [root])
    assert s.bad_lines == 4
    assert [(b.line_no, b.reason.split(" ")[0]) for b in s.bad] == [(2, "not"), (3, "not"), (4, "not"), (7, "assistant")]
    assert s.bad[2].reason == "not UTF-8"
    assert summary(ledger) == (1, 100)


def test_unreadable_file_is_a_warning(tmp_path):
    root, proj, ledger = setup(tmp_path)
    (proj / "ok.jsonl").write_text(line("m1") + "\n")
    bad = proj / "locked.jsonl"
    bad.write_text(line("m2") + "\n")
    bad.chmod(0)
    try:
        s = refresh(ledger, BOOK, [root])
    finally:
        bad.chmod(0o644)
    if os.geteuid() != 0:  # root can read anything
        assert s.errors and s.errors[0][0].endswith("locked.jsonl")
    assert summary(ledger)[0] >= 1


def test_huge_line_is_not_loaded_into_memory(tmp_path):
    """A 100 MB snapshot line beside normal lines: skipped without parsing, peak memory stays low."""
    _root, proj, _ = setup(tmp_path)
    f = proj / "s1.jsonl"
    with f.open("wb") as fh:
        fh.write(line("m1").encode() + b"\n")
        fh.write(b'{"type":"file-history-snapshot","snapshot":"')
        chunk = b"x" * (1 << 20)
        for _ in range(100):
            fh.write(chunk)
        fh.write(b'"}\n' + line("m2").encode() + b"\n")
    # VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts at the peak of the process it was forked
    # from (here pytest, which can hold more than the limit by the end of a full run).
    code = (
        "from pathlib import Path\n"
        "from ccledger.sources.transcripts import scan_file\n"
        f"s = scan_file(Path({str(f)!r}), None)\n"
        "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(len(s.records), s.bad_count, hwm)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["2", "0"]
    # the mapping is file-backed; the process must not have copied the 100 MB line into its heap twice
    assert int(out[2]) < 200 * 1024, f"peak RSS {int(out[2]) // 1024} MB"


def test_subagent_files_fold_into_parent_session(tmp_path):
    root, proj, ledger = setup(tmp_path)
    sub = proj / "parent-session" / "subagents"
    sub.mkdir(parents=True)
    (sub / "agent-a1.jsonl").write_text(line("m5", session="whatever") + "\n")
    refresh(ledger, BOOK, [root])
    rows = list(ledger.iter_records())
    assert rows[0]["session_id"] == "parent-session" and rows[0]["agent_id"] == "a1" and rows[0]["is_sidechain"]


def test_two_processes_at_once_do_not_double_count(tmp_path):
    root, proj, _ = setup(tmp_path)
    for i in range(20):
        (proj / f"s{i}.jsonl").write_text("".join(line(f"m{i}_{j}", session=f"s{i}") + "\n" for j in range(200)))
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(root), "CCLEDGER_DB": f"sqlite:///{tmp_path / 'l.db'}"}
    code = "from ccledger.cli.main import run; import sys; sys.argv=['ccledger','refresh']; run()"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    assert summary(ledger) == (4000, 400_000)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000), tail=st.sampled_from([b"", b"\n", b'{"usage":{', b"\xff"]))
def test_arbitrary_bytes_never_crash_the_parser(tmp_path, data, tail):
    f = tmp_path / "fuzz.jsonl"
    f.write_bytes(data + b"\n" + line("m1").encode() + b"\n" + data + tail)
    scan = scan_file(f, None)
    assert scan is not None and scan.error is None
    assert scan.state.offset <= f.stat().st_size
    assert any(r.dedupe_key == "msg:m1" for r in scan.records)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))
def test_arbitrary_json_in_usage_shapes_never_crash(tmp_path, value):
    obj = json.loads(line("m1"))
    obj["message"]["usage"]["cache_creation"] = value
    obj["toolUseResult"] = value
    f = tmp_path / "shape.jsonl"
    f.write_text(json.dumps(obj) + "\n" + json.dumps({"message": {"usage": value}}) + "\n")
    scan = scan_file(f, None)
    assert scan is not None and scan.error is None


_GOOD = [b'{"a":1}', b"", b" \t\r", b'{"type":"user","message":{"content":"hi \xc3\xa9"}}', b"{}", b"  ",
         b' {"lead":"space"}', b'{"x":[1,{"y":"\\n{"}]}',
         # valid JSON that simdjson refuses (beyond 64 bits, beyond a double), so the exact path decides
         b'{"n":123456789012345678901234567890}', b'{"n":1e400}', b'{"a":1}\r']
_BAD = [b"\x0c", b" \x0b ", b'{"a":', b'{"a":1', b"garbage", b"3", b"[1]", b'{"a":"\xff"}', b'{"a":1}}', b"\x00", b"{}{}",
        b'{"message":{"usage":{}}}}', b'{"a":1},', b'{"a":1},{"b":2}', b'{"a":1},5', b' {"a":1},3',
        b'{"a":1} 5', b"1}", b'"s"', b'{"a":"\\ud800"}']


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 20)), min_size=1, max_size=40))
def test_bulk_validation_finds_exactly_the_bad_lines(spec):
    """Chunk validation must single out every bad line, even one that only fails beside others (two
    fragments that form one value, an unterminated line that runs on into the next)."""
    from ccledger.sources.transcripts import _bad_line_spans, _decode_run, _keyed_values, _object_lines

    lines = [(_BAD if bad else _GOOD)[i % (len(_BAD) if bad else len(_GOOD))] for bad, i in spec]
    buf = b"".join(line + b"\n" for line in lines)
    starts, pos = [], 0
    for line in lines:
        starts.append(pos)
        pos += len(line) + 1
    expected = [starts[k] for k, (bad, _) in enumerate(spec) if bad]
    assert [s for s, _ in _bad_line_spans(buf)] == expected
    assert [buf[s:e] for s, e in _bad_line_spans(buf)] == [lines[k] for k, (bad, _) in enumerate(spec) if bad]
    # The fast yes a chunk takes first (either kind) may only say yes to a chunk without bad lines.
    found = _object_lines(buf)
    if found is not None:
        starts, ends, blanks = found
        short = _decode_run(buf, len(starts))[0] is not None
        for yes in (short, _keyed_values(buf, list(zip(starts, ends, strict=True))) is not None):
            if yes:
                assert expected == [] and len(starts) + len(blanks) == len(lines)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_GOOD + _BAD) | st.binary(max_size=12), min_size=1, max_size=30))
def test_bad_line_search_agrees_with_judging_each_line_alone(lines):
    """Whatever the lines (fragments, raw bytes), the grouped search names exactly the lines the judge
    of one line calls bad; a line holding a newline is two lines here, as in a file."""
    from ccledger.sources.transcripts import _bad_line_spans, _line_is_bad

    buf = b"".join(line + b"\n" for line in lines)
    expected, pos = [], 0
    for line in buf[:-1].split(b"\n"):
        if line.strip(b" \t\r") and _line_is_bad(line):
            expected.append(pos)
        pos += len(line) + 1
    assert [s for s, _ in _bad_line_spans(buf)] == expected


# Lines that each start with "{" and end with "}" but may only be valid together with their neighbours
# once joined: an unclosed array or object a later line closes, and lines holding two values that make
# up the count. The request lines carry usage, one of them followed by a second value.
_PAD = '"pad":"' + "x" * 5000 + '",'
_FRAGMENTS = ['{"a":[{}', '{}]}', '{},{}', '{"x":{"y":{}', '{}},"z":{}}', "{}", '{"q":1}', '{"a":"}',
              '{"b":[{"c":1}', '{"d":2}]}', '{},{},{}', '{"usage":{}}]}', "REQ", "REQ,{}"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=12), st.booleans(),
       st.sampled_from(LOOKUPS))
def test_lines_that_only_parse_together_are_each_bad(tmp_path, monkeypatch, picks, long_lines, lookup):
    """Each line is judged on its own, whatever its neighbours: a line that is not one JSON object by
    itself (Python's json module decides here) is bad, and a request on such a line is not counted. With
    long lines (padding) they are read one at a time (``_long_lines``), with short ones the others."""
    from ccledger.sources.transcripts import _bad_line_spans

    use_lookup(monkeypatch, lookup)
    lines = []
    for k, frag in enumerate(picks):
        text = frag.replace("REQ", line(f"m{k}"))
        lines.append("{" + _PAD + text[1:] if long_lines and text != "{}" else text)
    expected_bad, expected_keys = [], []
    for n, text in enumerate(lines, start=1):
        try:
            ok = isinstance(json.loads(text), dict)
        except ValueError:
            ok = False
        if not ok:
            expected_bad.append(n)
        elif picks[n - 1] == "REQ":
            expected_keys.append(f"msg:m{n - 1}")
    buf = "".join(t + "\n" for t in lines).encode()
    starts = [0]
    for t in lines[:-1]:
        starts.append(starts[-1] + len(t.encode()) + 1)
    assert [s for s, _ in _bad_line_spans(buf)] == [starts[n - 1] for n in expected_bad]
    f = tmp_path / "frag.jsonl"
    f.write_bytes(buf)
    scan = scan_file(f, None)
    assert scan is not None and scan.error is None
    assert sorted({b.line_no for b in scan.bad}) == expected_bad
    assert sorted(r.dedupe_key for r in scan.records) == sorted(expected_keys)


def test_every_lookup_finds_the_same_lines_as_the_key_search(tmp_path, monkeypatch):
    """Lines a reader could mistake for requests, read with each way of finding usage lines: the same
    records, the same bad lines (with the same reasons) and the same code changes."""
    patch = {"type": "user", "uuid": "p1", "timestamp": "2026-11-20T10:00:02.000Z", "sessionId": "s1",
             "message": {"role": "user", "content": "x"},
             "toolUseResult": {"structuredPatch": [{"lines": ["+a", "+b", "-c", " d"]}]}}
    odd = [
        json.loads(line("m1")),
        {"type": "assistant", "timestamp": "2026-11-20T10:00:03.000Z", "usage": {"input_tokens": 1}},
        {"timestamp": "2026-11-20T10:00:03.000Z", "note": {"usage": {"input_tokens": 1}}},
        {"type": 5, "usage": {"input_tokens": 1}},
        {"type": "user", "toolUseResult": {"usage": {"input_tokens": 9}}},
        {"type": "assistant", "message": {"usage": None, "model": "x"}},
        {"type": "assistant", "message": "text", "x": {"usage": {}}},
        {"type": "user", "message": {"usage": {"input_tokens": 2}}},
        {"type": "assistant", "message": {"id": "m9", "model": "claude-sonnet-4-5", "usage": {"output_tokens": 3}}},
        patch,
        {"type": "user", "note": "structuredPatch", "structuredPatch": [{"lines": ["+x"]}]},
        # 12: a request written with a space before the colon (JSON allows it): read like the others
        '{"type":"assistant","timestamp":"2026-11-20T10:00:04.000Z","message":{"id":"m7",'
        '"model":"claude-sonnet-4-5","usage" :{"input_tokens":7}}}',
        # 13: an edit whose tool result also quotes a usage block: still an edit
        {**patch, "uuid": "p2", "toolUseResult": {"structuredPatch": [{"lines": ["+q"]}], "usage": {"x": 1}}},
        # 14, 15: user lines quoting a usage block, odd in other ways: not requests, so not bad either
        {"type": "user", "timestamp": 123, "toolUseResult": {"usage": {"input_tokens": 1}}},
        {"type": "user", "message": [{"usage": {"input_tokens": 1}}]},
        json.loads(line("m2", 5)),
        # an edit on a line of another type, and objects too large to list their keys (no edit in them)
        {**patch, "type": "system", "uuid": "p3", "toolUseResult": {"structuredPatch": [{"lines": ["+z", "-y", "-w"]}]}},
        {"type": "user", "message": {"role": "user", "content": "x", **{f"k{i}": i for i in range(40)}},
         "toolUseResult": {f"k{i}": i for i in range(40)}},
        {"type": "summary", **{f"k{i}": i for i in range(40)}},
        # tool results of every JSON type: only an object's own structuredPatch is an edit
        {**patch, "uuid": "p4", "toolUseResult": "a structuredPatch as text"},
        {**patch, "uuid": "p5", "toolUseResult": [{"structuredPatch": [{"lines": ["+l"]}]}]},
        {**patch, "uuid": "p6", "toolUseResult": {"structuredPatch": None}},
        {**patch, "uuid": "p7", "toolUseResult": 12345.5},
        {**patch, "uuid": "p8", "toolUseResult": None},
        {**patch, "uuid": "p9", "message": {"role": "user", "content": "structuredPatch"},
         "toolUseResult": {"stdout": "x", "structuredPatch": [{"lines": ["-m"]}]}},
    ]
    f = tmp_path / "odd.jsonl"
    decoded = count_decoded_chunks(monkeypatch)
    # Lines 4, 7, 14 and 15 do not fit the structs the decoding way reads a whole chunk into (a type or
    # timestamp that is not a string, a message that is not an object): it judges each such line alone
    # and decodes the runs of lines between them (``_scan_refused``). Without them ("fit") it reads the
    # chunk in one call.
    misfits = (3, 6, 13, 14)
    seen: dict[tuple[str, str], object] = {}
    for name, lines in (("all", odd), ("fit", [o for k, o in enumerate(odd) if k not in misfits])):
        f.write_text("".join((o if isinstance(o, str) else json.dumps(o, separators=(",", ":"))) + "\n"
                             for o in lines))
        for mode in LOOKUPS:
            use_lookup(monkeypatch, mode)
            decoded.clear()
            scan = scan_file(f, None)
            assert scan is not None and scan.error is None
            runs = {"fit": 1, "all": 4}[name] if mode == "decode" else 0  # "all": 0-2, 4-5, 7-12, 15-
            assert len(decoded) == runs
            seen[name, mode] = (sorted((r.dedupe_key, r.tokens) for r in scan.records),
                                [(b.line_no, b.reason) for b in scan.bad],
                                [(p.line_key, p.added, p.removed) for p in scan.patches])
        assert seen[name, "pointer"] == seen[name, "search"] == seen[name, "decode"], name
    # Independent of any path: the three good requests, the edits (p1: 2 added, 1 removed; p2; p3; p9: the
    # only tool result of the last six that is an object with a patch), and reported bad
    # the lines 2, 3, 4 (usage outside a message), 7 (a message that is not an object), 8 (a message
    # usage block without a model) and 9 (no timestamp); without the misfits, lines 8 and 9 are 6 and 7.
    for name, bad_lines in (("all", [2, 3, 4, 7, 8, 9]), ("fit", [2, 3, 6, 7])):
        records, bad, patches = seen[name, "search"]  # type: ignore[misc]
        assert [k for k, _ in records] == ["msg:m1", "msg:m2", "msg:m7"]
        assert [n for n, _ in bad] == bad_lines
        assert [(a, r) for _, a, r in patches] == [(2, 1), (1, 0), (1, 2), (0, 1)]


@pytest.mark.parametrize("lookup", LOOKUPS)
def test_fragments_that_parse_together_and_deep_nesting_are_judged_not_fatal(tmp_path, monkeypatch, lookup):
    """Two broken lines can form valid JSON once joined into the array the chunk is checked as; each is
    still bad on its own, and a non-object line must not reach ``_object_line``. Nesting the fast
    path accepts (~1000 levels) is accepted by the exact path too, whatever else is in the chunk;
    deeper nesting is bad, never an exception."""
    from ccledger.sources import transcripts

    use_lookup(monkeypatch, lookup)
    pad = json.dumps({"type": "user", "message": {"content": "x" * 9000}}, separators=(",", ":"))
    deep = '{"a":' + "[" * 1010 + "]" * 1010 + "}"
    deeper = '{"a":' + "[" * 5000 + "]" * 5000 + "}"
    deep_usage = ('{"type":"assistant","message":{"id":"d1","usage":{"input_tokens":1},"x":'
                  + "[" * 5000 + "]" * 5000 + "}}")  # fmt: skip
    chunks = [
        [pad, '{"a":[1', '{}]},1', pad],  # 1-4: the joined array has a number in it
        [pad, '{"a":[1', '{}]},{}', pad],  # 5-8: all objects once joined
        [pad, deep, pad],  # 9-11: deep, in a clean chunk
        [deep, "{bad"],  # 12-13: deep beside a bad line (the exact path judges this chunk)
        [deeper, deep_usage, line("m1")],  # 14-16
    ]
    f = tmp_path / "odd.jsonl"
    # Separate chunks: each group is followed by enough padding to fill one.
    filler = "\n".join([pad] * (transcripts.CHUNK_BYTES // len(pad) + 1))
    text, expected_bad, n = "", [], 0
    for group in chunks:
        text += "\n".join(group) + "\n" + filler + "\n"
        bad_here = {0: [2, 3], 1: [2, 3], 2: [], 3: [2], 4: [1, 2]}[chunks.index(group)]
        expected_bad += [n + k for k in bad_here]
        n += len(group) + filler.count("\n") + 1
    f.write_text(text)
    scan = transcripts.scan_file(f, None)
    assert scan is not None and scan.error is None
    assert [b.line_no for b in scan.bad] == expected_bad
    assert [r.dedupe_key for r in scan.records] == ["msg:m1"]


def test_usage_quoted_inside_a_tool_result_is_not_a_request(tmp_path):
    root, proj, ledger = setup(tmp_path)
    quoted = {"type": "user", "timestamp": "2026-11-20T10:00:01.000Z", "sessionId": "s1", "uuid": "u1",
              "message": {"role": "user", "content": "x"},
              "toolUseResult": {"stdout": {"usage": {"input_tokens": 5}}}}
    (proj / "s1.jsonl").write_text(line("m1") + "\n" + json.dumps(quoted, separators=(",", ":")) + "\n")
    s = refresh(ledger, BOOK, [root])
    assert (s.bad_lines, summary(ledger)) == (0, (1, 100))


def test_broken_lines_that_pair_up_into_valid_json_are_still_bad(tmp_path):
    """Two values on one line plus two halves that join into one value: counted, never a crash."""
    root, proj, ledger = setup(tmp_path)
    (proj / "s1.jsonl").write_bytes(
        (line("m1") + "\n{}{}\n" + '{"x":\n{"message":{"usage":{}}}}\n' + line("m2", 5) + "\n").encode()
    )
    s = refresh(ledger, BOOK, [root])
    assert s.bad_lines == 3
    assert summary(ledger) == (2, 105)


def test_config_dir_files_are_not_transcripts_but_a_path_folder_is(tmp_path):
    """~/.claude/history.jsonl (prompt history) must not be read; a --path folder of .jsonl files is."""
    root, proj, ledger = setup(tmp_path)
    (root / "history.jsonl").write_text('{"display":"hi"}\nnot json\n')
    loose = tmp_path / "exported"
    loose.mkdir()
    (loose / "s9.jsonl").write_text(line("m9", 1) + "\n")
    (proj / "s1.jsonl").write_text(line("m1") + "\n")
    s = refresh(ledger, BOOK, [root], extra_paths=[loose])
    assert (s.bad_lines, summary(ledger)) == (0, (2, 101))


def test_json_written_with_spaces_is_read_too(tmp_path):
    root, proj, ledger = setup(tmp_path)
    spaced = json.dumps(json.loads(line("m2", 7)))  # default separators: ", " and ": "
    (proj / "s1.jsonl").write_text(line("m1") + "\n" + spaced + "\n")
    assert refresh(ledger, BOOK, [root]).bad_lines == 0
    assert summary(ledger) == (2, 107)


def _four_sessions(tmp_path: Path) -> Path:
    root = tmp_path / "claude"
    proj = root / "projects" / "-home-a-proj"
    proj.mkdir(parents=True)
    for n in range(4):
        (proj / f"s{n}.jsonl").write_text("".join(line(f"m{n}-{i}", 10 + i) + "\n" for i in range(5)))
    # the same request copied into a second file (a resumed session): still one record
    with (proj / "s3.jsonl").open("a") as fh:
        fh.write(line("m0-4", 14) + "\n")
    return root


def test_a_new_store_gets_its_schema_while_workers_read(tmp_path):
    """``refresh`` on a store that does not exist yet: the file is not needed to plan the read, the schema
    is created while the worker processes read, and everything lands (checked with two workers and one)."""
    root = _four_sessions(tmp_path)
    for workers in (2, 1):
        db = tmp_path / f"new-{workers}" / "l.db"
        ledger = Ledger(f"sqlite:///{db}")
        assert ledger.cursors_if_any() == {} and not db.exists()
        stats = refresh(ledger, BOOK, [root], workers=workers)
        assert ledger.is_current()
        assert stats.records == 21  # lines kept per file; the copy in s3 is one of them
        assert summary(ledger) == (20, 4 * sum(10 + i for i in range(5)))
        assert len(ledger.cursors()) == 4
        again = refresh(ledger, BOOK, [root], workers=workers)
        assert (again.files_read, summary(ledger)) == (0, (20, 4 * sum(10 + i for i in range(5))))
        ledger.close()


def test_workers_write_their_last_groups_as_they_read_them(tmp_path, monkeypatch):
    """Near the end each worker writes group by group (when the lock is free) instead of keeping rows for
    one last batch: every request and file cursor still lands once, whichever worker holds the lock."""
    from ccledger.services import history

    log = tmp_path / "flushes"
    real_flush = history._Batch.flush

    def logged(self, *, wait: bool = True) -> None:  # type: ignore[no-untyped-def]
        with log.open("a") as fh:  # the workers are forked processes: they report through a file
            fh.write("w" if wait else "n")
        real_flush(self, wait=wait)

    monkeypatch.setattr(history._Batch, "flush", logged)
    monkeypatch.setattr(history, "TAIL_SHARE", 2)  # the last half of the groups, here
    root = tmp_path / "claude"
    proj = root / "projects" / "-home-a-proj"
    proj.mkdir(parents=True)
    for n in range(40):
        (proj / f"s{n}.jsonl").write_text("".join(line(f"m{n}-{i}", 10 + i) + "\n" for i in range(3)))
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    stats = refresh(ledger, BOOK, [root], workers=2)
    assert stats.records == 120 and stats.files_read == 40
    assert summary(ledger) == (120, 40 * sum(10 + i for i in range(3)))
    assert len(ledger.cursors()) == 40
    flushes = log.read_text()
    assert flushes.count("n") >= 10 and flushes.count("w") == 2  # group by group, then each worker's last
    ledger.close()


@pytest.mark.postgres
def test_workers_write_to_postgres_too(tmp_path):
    from tests.ledger.conftest import pg_schema_url

    root = _four_sessions(tmp_path)
    gen = pg_schema_url()
    url = next(gen)
    try:
        ledger = Ledger(url)
        stats = refresh(ledger, BOOK, [root], workers=2)
        assert stats.records == 21
        assert summary(ledger) == (20, 4 * sum(10 + i for i in range(5)))
        ledger.close()
    finally:
        gen.close()


def test_nothing_to_read_still_creates_the_store(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'empty.db'}")
    stats = refresh(ledger, BOOK, [tmp_path / "no-such-config-dir"])
    assert stats.files_seen == 0
    assert ledger.is_current() and ledger.count() == 0


def test_a_worker_asks_glibc_to_keep_freed_memory():
    """``keep_freed_memory`` (run by each refresh worker) sets malloc's thresholds where glibc is the C
    library, and says no elsewhere; run in a child process, whose allocator it changes."""
    import platform
    import subprocess
    import sys

    code = (
        "from ccledger.services.history import keep_freed_memory\n"
        "ok = keep_freed_memory()\n"
        "bufs = [bytes(300_000 + i) for i in range(50)]\n"  # blocks of the size it is for still work
        "del bufs\n"
        "print(ok)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert proc.stdout.strip() == str(glibc)


def test_what_a_file_yields_does_not_depend_on_the_chunk_sizes_or_the_path_long_lines_take(
    tmp_path, monkeypatch
):
    """Chunks grow after long lines (``LONG_CHUNK_BYTES``), which are then read where they lie, one at a
    time (``_long_lines`` on the file mapping), and stay small for short ones: with the generated
    corpus's big tool results, malformed and truncated lines, the records, bad lines (with their numbers
    and reasons) and code changes are the same with tiny chunks as with the real sizes, and the same when
    every chunk after the first is read line by line in place as when none is."""
    import mmap

    from ccledger.sources import transcripts
    from tests.support.corpus import generate

    root = tmp_path / "claude"
    generate(root, seed=11, sessions=6, requests_per_session=25, big_tool_results=True)
    files = sorted((root / "projects").rglob("*.jsonl"))
    in_place: list[int] = []
    real_long_lines = transcripts._long_lines

    def spy(src, pos, stop, *rest):  # type: ignore[no-untyped-def]
        if isinstance(src, mmap.mmap):
            in_place.append(stop - pos)
        return real_long_lines(src, pos, stop, *rest)

    monkeypatch.setattr(transcripts, "_long_lines", spy)

    def read_all() -> list[object]:
        out: list[object] = []
        for f in files:
            scan = scan_file(f, None)
            assert scan is not None and scan.error is None
            out.append((sorted((r.dedupe_key, r.tokens, r.ts) for r in scan.records),
                        [(b.line_no, b.reason) for b in scan.bad],
                        sorted((p.line_key, p.added, p.removed) for p in scan.patches),
                        scan.state.offset, scan.state.line_no))
        return out

    real = read_all()
    assert any(r[1] for r in real) and any(r[0] for r in real)  # bad lines and records to compare
    assert in_place  # the real sizes read some long lines in place
    monkeypatch.setattr(transcripts, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(transcripts, "LONG_CHUNK_BYTES", 16384)
    assert read_all() == real
    in_place.clear()
    monkeypatch.setattr(transcripts, "_POINTER_LINE_BYTES", 0)  # every chunk after the first in place
    assert read_all() == real
    assert sum(in_place) > sum(f.stat().st_size for f in files) // 2
    in_place.clear()
    monkeypatch.setattr(transcripts, "_POINTER_LINE_BYTES", 1 << 40)  # none: every chunk decoded whole
    assert read_all() == real
    assert not in_place


@pytest.mark.parametrize("lookup", [*LOOKUPS, "oversized"])
def test_any_json_whitespace_around_the_usage_colon_is_read(tmp_path, monkeypatch, lookup):
    """``"usage" : {``, tabs, a carriage return: JSON allows whitespace on either side of a colon, and a
    transcript rewritten by another tool may have it. Every such request is read, by each way of finding
    usage lines, by the check of an unterminated last line, and when every line counts as oversized (read
    in place, ``SHAPE_ONLY_BYTES``); ``"usage" : null`` is still no request."""
    from ccledger.sources import transcripts

    if lookup == "oversized":
        monkeypatch.setattr(transcripts, "SHAPE_ONLY_BYTES", 16)
    else:
        use_lookup(monkeypatch, lookup)
    root, proj, ledger = setup(tmp_path)
    styles = ['"usage" :{', '"usage" : {', '"usage"\t:\t{', '"usage":\r{', '"usage"  :   {']
    lines = [line("m0", 1)]
    for n, style in enumerate(styles, start=1):
        text = line(f"m{n}", 1 << n)
        assert text.count('"usage":{') == 1
        lines.append(text.replace('"usage":{', style))
    nulled = json.loads(line("m9", 999))
    nulled["message"]["usage"] = None
    lines.append(json.dumps(nulled, separators=(",", ":")).replace('"usage":null', '"usage" : null'))
    last = line("m6", 1 << 6).replace('"usage":{', '"usage" :  {')
    (proj / "s1.jsonl").write_text("".join(t + "\n" for t in lines) + last)  # the last without a newline
    stats = refresh(ledger, BOOK, [root])
    # m9's usage is null: an assistant line without a usage block is no request (and not bad)
    assert stats.bad_lines == 0
    assert summary(ledger) == (7, 1 + sum(1 << n for n in range(1, 7)))


def test_the_usage_key_search_stays_inside_its_range():
    """``_usage_block_at`` looks at ``buf[start:end]`` only, on bytes and on a file mapping alike: a key
    whose ``{`` lies past ``end`` is not found, however the colon is spaced."""
    import mmap

    from ccledger.sources.transcripts import _usage_block_at

    for text in (b'{"usage":{}}', b'{"usage" :{}}', b'{"usage": {}}'):
        brace = text.index(b"{", 1)
        with mmap.mmap(-1, len(text)) as mm:
            mm.write(text)
            for buf in (text, mm):
                assert _usage_block_at(buf, 0, len(text)) == 1
                assert _usage_block_at(buf, 0, brace + 1) == 1
                assert _usage_block_at(buf, 0, brace) == -1, (text, buf)
                assert _usage_block_at(buf, 2, len(text)) == -1


def _read(f: Path) -> tuple[list[object], list[tuple[int, str]]]:
    scan = scan_file(f, None)
    assert scan is not None and scan.error is None
    return sorted((r.dedupe_key, r.tokens) for r in scan.records), [(b.line_no, b.reason) for b in scan.bad]


def test_a_byte_order_mark_makes_a_line_bad_whichever_way_it_is_read(tmp_path, monkeypatch):
    """simdjson skips a leading UTF-8 byte-order mark, the judge (msgspec) does not: a line that starts
    with one is bad (not JSON), request or not, also where long lines are parsed in place."""
    from ccledger.sources import transcripts

    pad = json.dumps({"type": "user", "message": {"content": "y" * 5000}}, separators=(",", ":"))
    bom = "\ufeff"
    lines = [pad] * 120 + [bom + '{"type":"user"}', bom + line("m1"), line("m2")] + [pad] * 3
    f = tmp_path / "bom.jsonl"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(transcripts, "_POINTER_LINE_BYTES", 1 << 40)  # never in place: the reference
    want = _read(f)
    assert [n for n, _ in want[1]] == [121, 122] and all(r.startswith("not JSON") for _, r in want[1])
    assert [k for k, _ in want[0]] == ["msg:m2"]
    in_place: list[int] = []
    real = transcripts._long_lines
    monkeypatch.setattr(transcripts, "_long_lines", lambda src, *a: in_place.append(1) or real(src, *a))
    for bytes_per_line in (4096, 0):  # the real threshold, and every chunk after the first in place
        monkeypatch.setattr(transcripts, "_POINTER_LINE_BYTES", bytes_per_line)
        assert _read(f) == want
    assert in_place


def test_short_lines_after_long_ones_are_decoded_as_short_lines_are(tmp_path):
    """After a chunk of long lines the next chunk is read in place only if its own lines are long too: a
    chunk of short lines is decoded whole, as anywhere else in a file, so it reads a line with duplicate
    keys as every short chunk does (msgspec: the last ``type`` and ``message`` win, here a request)."""
    pad = json.dumps({"type": "user", "message": {"content": "y" * 5000}}, separators=(",", ":"))
    short = [json.dumps({"type": "user", "message": {"content": f"hi {i}"}}) for i in range(3000)]
    dup = '{"type":"user","message":{"content":"hi"},' + line("m7")[1:]  # the last keys are the request's
    head, tail = tmp_path / "after_long.jsonl", tmp_path / "alone.jsonl"
    head.write_text("\n".join([pad] * 60 + [dup] + short) + "\n")
    tail.write_text("\n".join([*short, dup]) + "\n")
    assert [k for k, _ in _read(tail)[0]] == ["msg:m7"]
    assert _read(head)[0] == _read(tail)[0] and not _read(head)[1]


def test_a_simdjson_document_left_alive_is_an_error_not_a_slow_path(tmp_path, monkeypatch):
    """Reading long lines in place reuses one simdjson parser, which refuses to parse while an object of
    its last document is alive. That refusal is a bug in the reader, so it is raised, not taken for a
    line simdjson cannot read (which would quietly send every later line to the slower judge)."""
    from ccledger.sources import transcripts

    pad = json.dumps({"type": "user", "message": {"content": "y" * 5000}}, separators=(",", ":"))
    f = tmp_path / "long.jsonl"
    f.write_text("\n".join([pad] * 120) + "\n")
    kept: list[object] = []
    real = transcripts._object_line
    monkeypatch.setattr(transcripts, "_object_line", lambda el, *a: kept.append(el) or real(el, *a))
    with pytest.raises(RuntimeError, match="re-use"):
        scan_file(f, None)


def test_records_are_built_in_the_field_order_of_usage_records():
    """``_record`` passes a record's fields by position (keywords cost ~4x as much per request): the
    order it assumes must be UsageRecord's, and a record read from a line must hold each value where a
    reader of the record expects it."""
    from ccledger.core.records import UsageRecord
    from ccledger.sources import transcripts

    n = len(transcripts._RECORD_FIELDS)
    assert UsageRecord.__struct_fields__[:n] == transcripts._RECORD_FIELDS
    obj = transcripts._decode_assistant(json.dumps({
        "type": "assistant", "timestamp": "2026-11-20T10:00:00.000Z", "sessionId": "s9", "cwd": "/w/p",
        "gitBranch": "dev", "version": "2.3.4", "isSidechain": True, "agentId": "a7", "requestId": "req_9",
        "message": {"id": "msg_9", "model": "claude-opus-4-8", "usage": {
            "input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 6, "service_tier": "batch", "inference_geo": "us",
            "speed": "fast", "server_tool_use": {"web_search_requests": 2}}},
    }).encode())
    rec = transcripts._record(obj, None, None)
    assert isinstance(rec, UsageRecord)
    got = {f: getattr(rec, f) for f in UsageRecord.__struct_fields__ if f not in ("ts", "tokens", "extra")}
    assert got == {
        "source": "transcript", "dedupe_key": "msg:msg_9", "model": "claude-opus-4-8",
        "web_search_requests": 2, "service_tier": "batch", "inference_geo": "us", "speed": "fast",
        "session_id": "s9", "project": "/w/p", "git_branch": "dev", "client_version": "2.3.4",
        "is_sidechain": True, "agent_id": "a7", "parent_agent_id": "", "user_id": "", "group_id": "",
        "key_id": "", "workspace": "", "request_id": "req_9", "duration_ms": None, "lines_added": 0,
        "lines_removed": 0, "cost_nanos": None, "unknown_model": False,
    }
    assert (rec.tokens.input, rec.tokens.output, rec.tokens.cache_read, rec.tokens.cache_write) == (3, 4, 5, 6)
    assert rec.ts.isoformat() == "2026-11-20T10:00:00+00:00" and rec.extra == {}


_MIXED = [
    "REQ", "REQ", "PATCH", '{"type":"user","message":{"content":"ok"}}', "", "   ", "REQ\r",
    '{"type":"user","message":"a string"}', '{"type":5}', '{"type":"user","timestamp":7}',
    '{"type":"assistant","message":{"id":"x","model":"m","usage":{"input_tokens":-1}},"timestamp":"t"}',
    '{"a":"\xff"}', '{"a":1', '{"a":1}}', '{}{}', '{"a":[1,2}', '{"type":"user","x":01}', "not json",
    '{"a":{}', '{"type":"assistant","usage":{"input_tokens":1}}', '{"a":"b}',
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(range(len(_MIXED))), min_size=1, max_size=40), st.sampled_from(LOOKUPS))
def test_a_chunk_split_at_its_bad_lines_reads_as_one_judged_line_by_line(tmp_path, monkeypatch, picks, lookup):
    """``_scan_refused`` decodes the runs of clean lines of a chunk that is not clean throughout and
    judges alone each line the decoders stop at: the records, bad lines (numbers and reasons) and edits
    are those of judging the whole chunk line by line (``_scan_judged``, the way every such chunk took
    before), for any mix of requests, edits, blank lines, CRs, bad UTF-8, broken JSON, two values on a
    line and values that do not fit the structs."""
    from ccledger.sources import transcripts

    use_lookup(monkeypatch, lookup)
    patch = json.dumps({"type": "user", "uuid": "P", "timestamp": "2026-11-20T10:00:02.000Z", "sessionId": "s",
                        "toolUseResult": {"structuredPatch": [{"lines": ["+a", "-b"]}]}})
    lines = []
    for k, i in enumerate(picks):
        text = _MIXED[i].replace("REQ", line(f"m{k % 7}", output=k)).replace("PATCH", patch.replace('"P"', f'"p{k}"'))
        lines.append(text.encode("latin-1") if "\xff" in text else text.encode())
    f = tmp_path / "mixed.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")

    def read() -> tuple[object, ...]:
        scan = scan_file(f, None)
        assert scan is not None and scan.error is None
        return (sorted((r.dedupe_key, r.tokens) for r in scan.records), [(b.line_no, b.reason) for b in scan.bad],
                sorted((p.line_key, p.added, p.removed) for p in scan.patches), scan.state.line_no)

    got = read()

    def judged(buf, base, line_no, where, scan, hint):  # type: ignore[no-untyped-def]
        transcripts._scan_judged(buf, base, line_no, where, scan)
        return line_no + buf.count(b"\n")

    real = transcripts._scan_refused
    transcripts._scan_refused = judged  # not monkeypatch: it would undo this only after every example
    try:
        want = read()
    finally:
        transcripts._scan_refused = real
    assert got == want
    assert got[3] == len(lines)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["{}", '{"a":1}', "{}\r", "", "{", "}", "x", "{}}", "{\r", " {}", "{} ", "\r"]),
                min_size=1, max_size=12), st.booleans())
def test_object_lines_finds_every_line_shaped_like_an_object(parts, final_newline):
    """``_object_lines`` (the fast yes's first look at a chunk): where each line starts and ends and where
    the blank lines are, or None when a line does not start with ``{`` and end with ``}`` (a CR before
    the newline allowed), when the chunk starts with a blank line or lacks its final newline. The
    expectation is computed here from ``split``."""
    from ccledger.sources.transcripts import _object_lines

    buf = ("\n".join(parts) + ("\n" if final_newline else "")).encode()
    want: tuple[list[int], list[int], list[int]] | None = ([], [], [])
    pos = 0
    lines = buf.split(b"\n")[:-1] if buf.endswith(b"\n") else None
    if lines is None or not buf.startswith(b"{"):
        want = None
    else:
        for text in lines:
            if not text and want[0]:
                want[2].append(pos - 1)
            elif text.startswith(b"{") and (text.endswith(b"}") or text.endswith(b"}\r")):
                want[0].append(pos)
                want[1].append(pos + len(text))
            else:
                want = None
                break
            pos += len(text) + 1
    assert _object_lines(buf) == want
