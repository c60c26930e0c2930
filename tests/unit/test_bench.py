"""bench/: parsing vegeta's results, percentiles, CPU deltas from /proc, the held-rate rule.

The sample results below are real ``vegeta encode -to json`` output (vegeta v12.13.0) of a
2-second, 5 req/s attack against a small local server that answered, in turn, a 200 whose
reason is a fallback, two 200s ``preferred``, a 503 with ``Retry-After`` and a 504; plus a
refused connection and a client timeout.
"""

from __future__ import annotations

import base64
import http.server
import json
import math
import threading
from pathlib import Path

import pytest

from bench import cpu, stats
from bench.stats import RunStats
from bench.vegeta import (
    Attack,
    Hit,
    find_vegeta,
    interval_ns,
    max_workers,
    parse_results,
    parse_timestamp_ns,
    rate_flag,
    rendezvous_note,
    send_lags_ms,
    status_note,
    targets_jsonl,
)

MIXED = """\
{"attack":"","seq":0,"code":200,"timestamp":"2026-12-01T22:27:43.265415567Z","latency":1837582,"bytes_out":9,"bytes_in":77,"error":"","body":"eyJyZXF1ZXN0X2lkIjogIjAiLCAibW9kZWwiOiAiY2hhbXBpb24iLCAicmVhc29uIjogImZhbGxiYWNrOiBjaGFtcGlvbiBsYXRlIn0=","method":"POST","url":"http://127.0.0.1:33583/score","headers":{"Server":["BaseHTTP/0.6 Python/3.11.7"],"Date":["Tue, 01 Dec 2026 22:27:43 GMT"],"Content-Type":["application/json"],"Content-Length":["77"]}}
{"attack":"","seq":1,"code":200,"timestamp":"2026-12-01T22:27:43.465590381Z","latency":812711,"bytes_out":9,"bytes_in":63,"error":"","body":"eyJyZXF1ZXN0X2lkIjogIjEiLCAibW9kZWwiOiAiY2hhbXBpb24iLCAicmVhc29uIjogInByZWZlcnJlZCJ9","method":"POST","url":"http://127.0.0.1:33583/score","headers":{"Date":["Tue, 01 Dec 2026 22:27:43 GMT"],"Content-Type":["application/json"],"Content-Length":["63"],"Server":["BaseHTTP/0.6 Python/3.11.7"]}}
{"attack":"","seq":2,"code":200,"timestamp":"2026-12-01T22:27:43.665614816Z","latency":8271134,"bytes_out":9,"bytes_in":63,"error":"","body":"eyJyZXF1ZXN0X2lkIjogIjIiLCAibW9kZWwiOiAiY2hhbXBpb24iLCAicmVhc29uIjogInByZWZlcnJlZCJ9","method":"POST","url":"http://127.0.0.1:33583/score","headers":{"Date":["Tue, 01 Dec 2026 22:27:43 GMT"],"Content-Type":["application/json"],"Content-Length":["63"],"Server":["BaseHTTP/0.6 Python/3.11.7"]}}
{"attack":"","seq":3,"code":503,"timestamp":"2026-12-01T22:27:43.865276794Z","latency":947823,"bytes_out":9,"bytes_in":72,"error":"503 Service Unavailable","body":"eyJlcnJvciI6IHsiY29kZSI6ICJvdmVybG9hZGVkIiwgIm1lc3NhZ2UiOiAiYnVzeSIsICJyZXF1ZXN0X2lkIjogbnVsbH19","method":"POST","url":"http://127.0.0.1:33583/score","headers":{"Content-Type":["application/json"],"Content-Length":["72"],"Retry-After":["1"],"Server":["BaseHTTP/0.6 Python/3.11.7"],"Date":["Tue, 01 Dec 2026 22:27:43 GMT"]}}
{"attack":"","seq":4,"code":504,"timestamp":"2026-12-01T22:27:44.065606653Z","latency":788512,"bytes_out":9,"bytes_in":68,"error":"504 Gateway Timeout","body":"eyJlcnJvciI6IHsiY29kZSI6ICJ0aW1lb3V0IiwgIm1lc3NhZ2UiOiAibGF0ZSIsICJyZXF1ZXN0X2lkIjogInIifX0=","method":"POST","url":"http://127.0.0.1:33583/score","headers":{"Server":["BaseHTTP/0.6 Python/3.11.7"],"Date":["Tue, 01 Dec 2026 22:27:44 GMT"],"Content-Type":["application/json"],"Content-Length":["68"]}}
{"attack":"","seq":5,"code":200,"timestamp":"2026-12-01T22:27:44.265773784Z","latency":799300,"bytes_out":9,"bytes_in":77,"error":"","body":"eyJyZXF1ZXN0X2lkIjogIjUiLCAibW9kZWwiOiAiY2hhbXBpb24iLCAicmVhc29uIjogImZhbGxiYWNrOiBjaGFtcGlvbiBsYXRlIn0=","method":"POST","url":"http://127.0.0.1:33583/score","headers":{"Content-Type":["application/json"],"Content-Length":["77"],"Server":["BaseHTTP/0.6 Python/3.11.7"],"Date":["Tue, 01 Dec 2026 22:27:44 GMT"]}}
{"attack":"","seq":6,"code":200,"timestamp":"2026-12-01T22:27:44.465991984Z","latency":1362139,"bytes_out":9,"bytes_in":63,"error":"","body":"eyJyZXF1ZXN0X2lkIjogIjYiLCAibW9kZWwiOiAiY2hhbXBpb24iLCAicmVhc29uIjogInByZWZlcnJlZCJ9","method":"POST","url":"http://127.0.0.1:33583/score","headers":{"Content-Type":["application/json"],"Content-Length":["63"],"Server":["BaseHTTP/0.6 Python/3.11.7"],"Date":["Tue, 01 Dec 2026 22:27:44 GMT"]}}
{"attack":"","seq":7,"code":200,"timestamp":"2026-12-01T22:27:44.665906024Z","latency":743713,"bytes_out":9,"bytes_in":63,"error":"","body":"eyJyZXF1ZXN0X2lkIjogIjciLCAibW9kZWwiOiAiY2hhbXBpb24iLCAicmVhc29uIjogInByZWZlcnJlZCJ9","method":"POST","url":"http://127.0.0.1:33583/score","headers":{"Content-Type":["application/json"],"Content-Length":["63"],"Server":["BaseHTTP/0.6 Python/3.11.7"],"Date":["Tue, 01 Dec 2026 22:27:44 GMT"]}}
{"attack":"","seq":8,"code":503,"timestamp":"2026-12-01T22:27:44.864937517Z","latency":868111,"bytes_out":9,"bytes_in":72,"error":"503 Service Unavailable","body":"eyJlcnJvciI6IHsiY29kZSI6ICJvdmVybG9hZGVkIiwgIm1lc3NhZ2UiOiAiYnVzeSIsICJyZXF1ZXN0X2lkIjogbnVsbH19","method":"POST","url":"http://127.0.0.1:33583/score","headers":{"Retry-After":["1"],"Server":["BaseHTTP/0.6 Python/3.11.7"],"Date":["Tue, 01 Dec 2026 22:27:44 GMT"],"Content-Type":["application/json"],"Content-Length":["72"]}}
{"attack":"","seq":9,"code":504,"timestamp":"2026-12-01T22:27:45.065191094Z","latency":708263,"bytes_out":9,"bytes_in":68,"error":"504 Gateway Timeout","body":"eyJlcnJvciI6IHsiY29kZSI6ICJ0aW1lb3V0IiwgIm1lc3NhZ2UiOiAibGF0ZSIsICJyZXF1ZXN0X2lkIjogInIifX0=","method":"POST","url":"http://127.0.0.1:33583/score","headers":{"Server":["BaseHTTP/0.6 Python/3.11.7"],"Date":["Tue, 01 Dec 2026 22:27:45 GMT"],"Content-Type":["application/json"],"Content-Length":["68"]}}
"""

REFUSED = """\
{"attack":"","seq":0,"code":0,"timestamp":"2026-12-01T22:27:36.525629137Z","latency":420829,"bytes_out":0,"bytes_in":0,"error":"Post \\"http://127.0.0.1/score\\": dial tcp 0.0.0.0:0-\\u003e127.0.0.1:80: connect: connection refused","body":null,"method":"POST","url":"http://127.0.0.1:/score","headers":null}
"""

TIMED_OUT = """\
{"attack":"","seq":0,"code":0,"timestamp":"2026-12-01T22:27:49.806014615Z","latency":200864646,"bytes_out":0,"bytes_in":0,"error":"Post \\"http://127.0.0.1:42299/slow\\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)","body":null,"method":"POST","url":"http://127.0.0.1:42299/slow","headers":null}
"""


def mixed_hits(note=rendezvous_note) -> list[Hit]:
    return parse_results(MIXED.splitlines(), note)


# ---- vegeta results --------------------------------------------------------------------------
def test_timestamps_keep_nanoseconds_and_zones():
    assert parse_timestamp_ns("1970-01-01T00:00:01.000000001Z") == 1_000_000_001
    assert parse_timestamp_ns("1970-01-01T02:00:01.5+02:00") == 1_500_000_000
    assert parse_timestamp_ns("2026-12-01T22:27:43Z") % 1_000_000_000 == 0
    with pytest.raises(ValueError):
        parse_timestamp_ns("yesterday")


def test_results_parse_codes_notes_latency_and_retry_after():
    hits = mixed_hits()
    assert [h.seq for h in hits] == list(range(10))
    assert [h.code for h in hits] == [200, 200, 200, 503, 504] * 2
    assert hits[0].note == "fallback"  # "fallback: champion late", up to the colon
    assert hits[1].note == "preferred"
    assert hits[3].note == "503 overloaded" and hits[3].retry_after
    assert hits[4].note == "504 timeout" and not hits[4].retry_after
    assert hits[0].latency_ms == pytest.approx(1.837582)
    assert hits[1].sent_ns - hits[0].sent_ns == 465590381 - 265415567


def test_status_note_is_the_code():
    assert [h.note for h in mixed_hits(status_note)][:5] == ["200", "200", "200", "503", "504"]


def test_requests_without_a_response_are_code_0_with_the_transport_error():
    (refused,) = parse_results(REFUSED.splitlines(), rendezvous_note)
    (late,) = parse_results(TIMED_OUT.splitlines(), rendezvous_note)
    assert (refused.code, refused.note) == (0, "connection refused")
    assert (late.code, late.note) == (0, "client timeout")
    assert late.latency_ms == pytest.approx(200.864646)


def test_send_lag_is_zero_on_schedule_and_shows_a_late_send():
    lags = send_lags_ms(mixed_hits(), 5)
    assert min(lags) == 0 and max(lags) < 5  # vegeta kept the 200 ms schedule
    step = interval_ns(10)
    hits = [Hit(i, 10**12 + (i + 1) * step, 1.0, 200, "", False) for i in range(5)]
    hits[3] = Hit(3, hits[3].sent_ns + 30_000_000, 1.0, 200, "", False)
    assert send_lags_ms(hits, 10) == [0, 0, 0, 30, 0]


def test_rate_flag_interval_and_workers():
    assert rate_flag(250) == "250/1s"
    assert rate_flag(12.5) == "25/2s"
    assert interval_ns(12.5) == 80_000_000
    assert interval_ns(3) == 333_333_333  # truncated, as vegeta's pacer does
    assert max_workers(1000, 5) >= 5000
    with pytest.raises(ValueError):
        rate_flag(0)


def test_targets_are_json_lines_with_base64_bodies():
    lines = targets_jsonl("http://h/x", [{"a": 1.5}, b"raw"]).splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["method"] == "POST" and first["url"] == "http://h/x"
    assert first["header"] == {"Content-Type": ["application/json"]}
    assert json.loads(base64.b64decode(first["body"])) == {"a": 1.5}
    assert base64.b64decode(second["body"]) == b"raw"


def test_targets_can_carry_a_request_id_each():
    lines = targets_jsonl("http://h/x", [{"a": 1}] * 2, request_ids=["r-0", "r-1"]).splitlines()
    assert [json.loads(line)["header"]["X-Request-ID"] for line in lines] == [["r-0"], ["r-1"]]


# ---- percentiles and run figures ------------------------------------------------------------
def test_percentile_is_nearest_rank():
    xs = [float(i) for i in range(1, 101)]
    assert stats.percentile(xs, 0.5) == 50
    assert stats.percentile(xs, 0.9) == 90
    assert stats.percentile(xs, 0.99) == 99
    assert stats.percentile(xs, 1.0) == 100
    assert stats.percentile([7.0], 0.99) == 7
    assert stats.percentile(list(range(1, 11)), 0.99) == 10
    assert math.isnan(stats.percentile([], 0.5))


def test_summarize_the_sample():
    run = stats.summarize(mixed_hits(), system="s", kind="sweep", rate=5, seconds=2)
    assert run.sent == 10
    assert run.ok_share == pytest.approx(0.6)
    assert run.codes == {"200": 6, "503": 2, "504": 2}
    assert run.outcomes == {"200": 6, "503 retry-after": 2, "503": 0, "504": 2, "other": 0}
    assert run.notes == {"preferred": 4, "fallback": 2, "503 overloaded": 2, "504 timeout": 2}
    assert run.p50 == pytest.approx(0.812711)  # the 5th of the 10 latencies
    assert run.max == pytest.approx(8.271134)
    assert run.achieved_rate == pytest.approx(5, rel=0.01)
    assert not stats.holds(run, 100)  # 60% HTTP 200
    doc = run.to_json()
    assert json.loads(json.dumps(doc))["outcomes"]["503 retry-after"] == 2


def test_summarize_nothing():
    run = stats.summarize([], system="s", kind="sweep", rate=5, seconds=2)
    assert run.sent == 0 and not stats.holds(run, 100) and stats.saturated(run, 100)
    assert run.to_json()["p99"] is None


def run_at(rate, p99, ok=1.0, lag=1.0) -> RunStats:
    return RunStats("s", "sweep", rate, 10, sent=1000, p99=p99, ok_share=ok, lag_p99=lag)


def test_holds_needs_the_sla_the_ok_share_and_an_on_time_generator():
    assert stats.holds(run_at(100, 99.9), 100)
    assert stats.holds(run_at(100, 100), 100)
    assert not stats.holds(run_at(100, 100.1), 100)
    assert stats.holds(run_at(100, 50, ok=0.999), 100)
    assert not stats.holds(run_at(100, 50, ok=0.998), 100)
    assert not stats.holds(run_at(100, 50, lag=10.5), 100)
    assert stats.holds(run_at(100, 50, lag=10.5), 100, check_lag=False)


def test_held_rate_is_the_highest_rate_that_held():
    runs = [run_at(100, 20), run_at(250, 140), run_at(500, 60), run_at(750, 900)]
    assert stats.held_rate(runs, 100) == stats.Held(500, True)
    assert stats.held_rate(runs[:1], 100) == stats.Held(100, False)  # may hold more
    assert stats.held_rate([run_at(100, 101)], 100).rate is None
    assert stats.held_rate([], 100) == stats.Held(None, False)
    assert stats.ratio(500, 250) == 2 and stats.ratio(500, None) is None


def test_a_sweep_stops_when_saturated_or_after_two_misses():
    assert not stats.stop_sweep([], 100)
    assert not stats.stop_sweep([run_at(100, 20), run_at(250, 150)], 100)
    assert stats.stop_sweep([run_at(100, 150), run_at(250, 150)], 100)
    assert stats.stop_sweep([run_at(100, 20), run_at(250, 1001)], 100)
    assert stats.stop_sweep([run_at(100, 20), run_at(250, 50, ok=0.8)], 100)


def test_light_rate():
    assert stats.light_rate(1000, 50) == 50
    assert stats.light_rate(200, 50) == 20
    assert stats.light_rate(20, 50) == 5
    assert stats.light_rate(None, 50) == 5


def test_slices_and_time_to_recovery():
    def hit(t_s, ms, code=200):
        return Hit(0, int(t_s * 1e9), ms, code, "", False)

    hits = [hit(0, 900), hit(1, 300), hit(5, 40), hit(6, 120), hit(10, 30), hit(14.9, 20)]
    parts = stats.slices(hits, 5, 15)
    assert [(p.start_s, p.sent) for p in parts] == [(0, 2), (5, 2), (10, 2)]
    assert [p.p99 for p in parts] == [900, 120, 30]
    assert stats.recovery_s(parts, 100) == 10
    assert stats.recovery_s(parts, 1000) == 0
    assert stats.recovery_s(parts[:2], 100) is None
    failed = stats.slices([hit(0, 10), hit(6, 10, 504)], 5, 10)
    assert [p.ok_share for p in failed] == [1.0, 0.0]
    assert stats.recovery_s(failed, 100) is None
    assert stats.slices([hit(0, 1)], 5, 15)[2].sent == 0


def test_tables_print_every_run():
    a = stats.summarize(mixed_hits(), system="rendezvous", kind="sweep", rate=5, seconds=2)
    a.cpu_per_1000 = {"proxy": 1.5, "kafka": None, "load generator": 0.25}
    text = stats.sweep_table([a], 100)
    row = text.splitlines()[-1]
    assert " 60.00 " in row and "! preferred 4, fallback 2" in row  # "!": not held
    cpu_text = stats.cpu_table([a], ("proxy", "kafka", "load generator"))
    row = cpu_text.splitlines()[-1]
    assert row.startswith("rendezvous sweep 5/s")
    assert row.split()[-4:] == ["1.500", "-", "0.250", "1.750"]
    assert "total" in stats.idle_table({"kafka": 2.0, "proxy": None}, 10)


# ---- CPU from /proc -------------------------------------------------------------------------
def stat_line(pid, ppid, utime, stime, cutime=0, cstime=0, comm="java", start=100) -> str:
    fields = [
        "S",
        ppid,
        1,
        1,
        0,
        -1,
        4194560,
        10,
        0,
        0,
        0,
        utime,
        stime,
        cutime,
        cstime,
        20,
        0,
        30,
        0,
        start,
        1000,
        100,
    ]
    return f"{pid} ({comm}) " + " ".join(str(f) for f in fields)


def test_parse_stat_counts_fields_from_the_last_parenthesis():
    st = cpu.parse_stat(stat_line(42, 7, 300, 50, 20, 5, comm="a) (b c"))
    assert (st.pid, st.ppid, st.ticks, st.starttime) == (42, 7, 375, 100)


def test_parse_stat_of_this_process():
    st = cpu.parse_stat(Path("/proc/self/stat").read_text())
    assert st.ppid > 0 and st.ticks >= 0
    me = cpu.scan()
    assert any("pytest" in p.cmdline for p in me.values())


def procs_of(*rows) -> dict[int, cpu.Proc]:
    """rows: (pid, ppid, ticks, cmdline)"""
    return {pid: cpu.Proc(cpu.ProcStat(pid, ppid, ticks, 1), cmd) for pid, ppid, ticks, cmd in rows}


STACK = procs_of(
    (1, 0, 0, "/sbin/init"),
    (10, 1, 500, "java -cp /s/jars/kafka/* kafka.Kafka /s/kafka/server.properties"),
    (11, 1, 900, "java ... org.apache.flink.runtime.taskexecutor.TaskManagerRunner"),
    (12, 1, 200, "java ... StandaloneSessionClusterEntrypoint"),
    (13, 1, 100, "/v/bin/python -m mlflow server --backend-store-uri sqlite:////s/m.db"),
    (14, 13, 300, "/v/bin/python -m uvicorn mlflow.server.fastapi_app:app"),
    (15, 1, 50, "/v/bin/python -m rendezvous.cli proxy --config /s/demo/rendezvous.yaml"),
    (20, 1, 800, "java ... kafka.Kafka /tmp/test-stack/kafka/server.properties"),
    (30, 1, 10, "/v/bin/python /v/bin/mlflow models serve -m models:/x@champion"),
    (31, 30, 40, "bash -c exec uvicorn mlflow.pyfunc.scoring_server.app:app"),
)


def test_find_roots_by_command_line_and_stack_pids():
    everything = cpu.find_roots(STACK)
    assert everything["kafka"] == [10, 20]
    assert everything["mlflow server"] == [13]  # its uvicorn worker is in its tree
    assert everything["mlflow serve"] == [30]
    mine = cpu.find_roots(STACK, stack_pids={10, 11, 12, 13, 15}, extra={"mlflow serve": [30]})
    assert mine == {
        "proxy": [15],
        "kafka": [10],
        "taskmanager": [11],
        "jobmanager": [12],
        "mlflow server": [13],
        "mlflow serve": [30],
    }


def test_snapshots_sum_trees_and_deltas_are_seconds():
    roots = {"mlflow server": [13], "mlflow serve": [30], "kafka": [10]}
    before = cpu.snapshot(roots, STACK)
    assert sum(t for _, t in before.trees["mlflow server"].values()) == 400
    later = dict(STACK)
    later[14] = cpu.Proc(cpu.ProcStat(14, 13, 350, 1), STACK[14].cmdline)  # +50 ticks
    later[10] = cpu.Proc(cpu.ProcStat(10, 1, 600, 1), STACK[10].cmdline)  # +100
    # The serve's bash child exited and was reaped: its 40 + 5 ticks are in the parent's
    # cutime now, on top of the parent's own +20.
    del later[31]
    later[30] = cpu.Proc(cpu.ProcStat(30, 1, 10 + 20 + 45, 1), STACK[30].cmdline)
    delta = cpu.cpu_delta(before, cpu.snapshot(roots, later), clk_tck=100)
    assert delta == {"mlflow server": 0.5, "kafka": 1.0, "mlflow serve": 0.25}
    assert cpu.per_thousand(delta, 500) == {"mlflow server": 1.0, "kafka": 2.0, "mlflow serve": 0.5}
    assert cpu.per_thousand({"kafka": 1.0, "proxy": None}, 0) == {"kafka": None, "proxy": None}


def test_a_missing_or_restarted_component_has_no_delta():
    roots = {"kafka": [10], "proxy": [15]}
    before = cpu.snapshot(roots, STACK)
    restarted = dict(STACK)
    restarted[10] = cpu.Proc(cpu.ProcStat(10, 1, 3, 999), STACK[10].cmdline)
    del restarted[15]
    delta = cpu.cpu_delta(before, cpu.snapshot(roots, restarted))
    assert delta == {"kafka": None, "proxy": None}


def test_read_pid_files(tmp_path):
    (tmp_path / "kafka.pid").write_text("123\n")
    (tmp_path / "broken.pid").write_text("x")
    assert cpu.read_pid_files(tmp_path) == {123}


# ---- a real attack --------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        busy = json.loads(body).get("busy")
        status = 503 if busy else 200
        doc = {"error": {"code": "overloaded"}} if busy else {"reason": "preferred"}
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if busy:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def local_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/score"
    server.shutdown()
    server.server_close()


def test_a_two_second_attack_at_5_per_second(local_server, tmp_path):
    vegeta = find_vegeta()  # `make test` installs it
    targets = tmp_path / "targets.jsonl"
    targets.write_text(targets_jsonl(local_server, [{"busy": False}] * 4 + [{"busy": True}]))
    atk = Attack(vegeta, targets, 5, 2, timeout_s=2, workdir=tmp_path)
    cpu_s = atk.wait()
    assert 0 <= cpu_s < 2
    hits = atk.results(rendezvous_note)
    assert not atk.output.exists()
    run = stats.summarize(hits, system="local", kind="sweep", rate=5, seconds=2)
    assert run.sent == 10
    assert run.outcomes["200"] == 8 and run.outcomes["503 retry-after"] == 2
    assert run.notes == {"preferred": 8, "503 overloaded": 2}
    assert run.lag_p99 < 100 and run.p99 < 1000


# ---- command line ---------------------------------------------------------------------------
def test_quick_presets_and_explicit_options():
    from bench.latency import parse_args

    full = parse_args([])
    assert full.rates == [100, 250, 500, 750, 1000, 1250, 1500]
    assert full.mlflow_rates == full.rates and full.seconds == 60 and full.settle_budget == 120
    quick = parse_args(["--quick"])
    assert (quick.rates, quick.mlflow_rates, quick.seconds) == ([100, 500, 1000], [100, 300], 15)
    assert quick.overload_seconds == 10 and quick.recovery_seconds == 15
    mine = parse_args(["--quick", "--seconds", "5", "--rates", "50,20", "--skip", "kafka"])
    assert (mine.rates, mine.seconds, mine.skip) == ([20, 50], 5, {"kafka"})


def test_chaos_recovery_and_back_times():
    from bench.chaos import back_s, recovery_s
    from bench.vegeta import Hit

    def hits(codes: str) -> list[Hit]:  # one request every 0.5 s from t=0, "." a 200, "x" not
        return [
            Hit(
                seq=i,
                sent_ns=int(i * 0.5e9),
                latency_ms=5.0,
                code=200 if c == "." else 504,
                note="",
                retry_after=False,
            )
            for i, c in enumerate(codes)
        ]

    # errors for 2 s, then 200s, one stray miss at 9 s
    run = hits("..xxxx" + "." * 12 + "x" + "." * 12)
    fault = int(1e9)
    assert recovery_s(run, fault) == 8.0  # the stray miss counts
    assert back_s(run, fault) == 2.0  # 200s from 3 s on for 5 s straight
    assert back_s(hits("." * 20), fault) == 0.0
    assert recovery_s(hits("." * 20), fault) == 0.0


def test_chaos_counts_the_give_ups_of_the_run_and_none_across_a_proxy_restart():
    from bench.chaos import lag_summary

    inf = float("inf")
    before = {0.005: 1, 0.02: 1, 0.1: 1, inf: 1}
    after = {0.005: 5, 0.02: 8, 0.1: 9, inf: 11}
    assert lag_summary(before, after) == {
        "give_ups": 10,
        "give_ups_lag_over_5ms": 6,
        "give_ups_lag_over_20ms": 3,
        "give_ups_lag_over_100ms": 2,
    }
    assert lag_summary(after, before) == {}  # counters began again
    assert lag_summary(None, after) == {}


def test_scaleout_targets_alternate_between_the_replicas(tmp_path):
    from bench.scaleout import write_targets

    path = tmp_path / "t.jsonl"
    bodies = [{"x": float(i)} for i in range(5)]
    write_targets(path, ["http://a:1", "http://b:2"], bodies)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [t["url"] for t in lines] == [
        f"http://{h}/v1/services/breast_cancer/score" for h in ("a:1", "b:2", "a:1", "b:2", "a:1")
    ]
    assert [json.loads(base64.b64decode(t["body"])) for t in lines] == bodies


def test_scaleout_table_prints_each_replicas_reads_and_a_dash_for_a_missing_process():
    from bench.scaleout import table

    run = RunStats(system="2 replicas", kind="sweep", rate=300.0, seconds=20.0)
    run.p50, run.p99, run.ok_share = 12.0, 80.5, 0.999
    run.cpu_per_1000 = {"proxy": 0.25, "proxy 2": 0.26, "kafka": 0.3}
    run.extra["results_read_per_request"] = [1.0, 2.02]
    row = table([run]).splitlines()[1]
    assert row.split()[:7] == ["2", "replicas", "300", "12.0", "80.5", "99.90", "0.250"]
    assert row.rstrip().endswith("1, 2.02")
    assert "-" in row.split()[9:12]
