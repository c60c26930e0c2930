"""The live metrics through a real Prometheus: it scrapes the proxy and Flink's reporter on the
stack under test, and what it answers equals what the archive's SQL counts.

One service (a scripted champion, a flaky canary, a backstop) behind a proxy; N requests, some
asking the champion to fail or to be late. Prometheus (Debian's package, `make prometheus`) runs
with the repository's rules on a free port, scraping every second.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from rendezvous import deploy
from rendezvous import live_metrics as lm
from rendezvous.archive.sql import ArchiveSQL
from rendezvous.settings import REPO_ROOT
from tests.conftest import wait_until
from tests.integration.feed import write_service
from tests.integration.test_http_e2e import free_port, start_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.flink, pytest.mark.kafka]

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
RULES = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = REPO_ROOT / "deploy" / "prometheus" / "rules_test.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "rendezvous.json"
MISSING = "Prometheus is not installed: run `make prometheus` (Debian's package)"

SLA_MS, GRACE_MS, N = 1000, 2000, 24
MODELS = (
    '{name: champion, role: champion, callable: "udfs.zoo:scripted", params: {value: 0.9}}',
    '{name: canary, role: canary, callable: "udfs.zoo:flaky", params: {value: 0.1, every: 3}}',
    '{name: backstop, role: backstop, callable: "udfs.zoo:constant", params: {value: 0.5}}',
)
INPUTS = ("x: double", "delay_ms: {type: double, default: 0}", "fail: {type: double, default: 0}")


def body(i: int) -> dict:
    """Every sixth request fails the champion, every eighth makes it late."""
    if i % 6 == 5:
        return {"x": float(i), "fail": 1.0}
    if i % 8 == 7:
        return {"x": float(i), "delay_ms": SLA_MS + 300.0}
    return {"x": float(i)}


class Prometheus:
    """A Prometheus server of the test's own: its HTTP API on a free loopback port."""

    def __init__(self, home: Path, targets: dict[str, list[str]]) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": hosts}]}
                for job, hosts in targets.items()
            ],
        }
        (home / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (home / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, timeout_s=60, what=f"Prometheus ready at {self.url}")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, (self.home / "prometheus.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str):
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            answer = json.loads(resp.read())
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, promql: str) -> dict[tuple[str, ...], float]:
        """An instant query: each series' label values (in label-name order, without its
        name) -> its value."""
        out = {}
        for series in self.api("query", query=promql)["result"]:
            labels = tuple(v for k, v in sorted(series["metric"].items()) if k != "__name__")
            out[labels] = float(series["value"][1])
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def scraped(stack, tmp_path_factory):
    """The service's jobs, a proxy, N requests answered, and Prometheus scraping all of it;
    yields (Prometheus, the service name, the status codes the proxy answered)."""
    assert PROMETHEUS.exists(), MISSING
    name = "prom" + uuid.uuid4().hex[:6]
    home = tmp_path_factory.mktemp("prom")
    path = write_service(
        home / "services.yaml", name, sla_ms=SLA_MS, grace_ms=GRACE_MS, models=MODELS, inputs=INPUTS
    )
    jobs = deploy.submit(stack, path, log=lambda _: None)
    port = free_port()
    proxy = start_proxy(stack, path, port, f"prom-{name}")
    endpoints = [
        url.split("//", 1)[1].rsplit("/", 1)[0] for url in stack.flink.metrics_endpoints().values()
    ]
    assert len(endpoints) == 1 + stack.settings.flink_taskmanagers, endpoints
    prometheus = Prometheus(home, {"rendezvous-proxy": [f"127.0.0.1:{port}"], "flink": endpoints})
    codes: Counter = Counter()
    url = f"http://127.0.0.1:{port}/v1/services/{name}/score"
    try:
        with httpx.Client(timeout=10) as client:
            deadline = time.monotonic() + 180
            for k in range(1000):  # warm up: the jobs just started
                r = client.post(url, json={"x": 0.0}, headers={"X-Request-ID": f"{name}-w{k}"})
                codes[r.status_code] += 1
                if r.status_code == 200 and r.json()["reason"] == "preferred":
                    break
                assert time.monotonic() < deadline, f"no preferred answer in warm-up: {r.text}"
                time.sleep(0.5)
            for i in range(N):
                r = client.post(url, json=body(i), headers={"X-Request-ID": f"{name}-{i}"})
                codes[r.status_code] += 1
        yield prometheus, name, codes
    finally:
        prometheus.stop()
        proxy.terminate()
        proxy.wait(timeout=10)
        for jid in jobs.values():
            stack.flink.cancel(jid)


def metric(name: str) -> str:
    return lm.prometheus_name(name)


def archive_counts(stack, name: str) -> dict[str, dict]:
    """What the archive's SQL counts for the service: scores and errors per model, answers per
    (model, reason kind), late scores per model in the decisions, and the decisions of the
    requests the test sent."""
    with ArchiveSQL(stack.settings.archive_dir) as db:
        scores = db.frame(
            "SELECT model, count(*) AS n, count(*) FILTER (WHERE status = 'error') AS errors "
            "FROM scores WHERE service = ? GROUP BY model",
            [name],
        )
        reasons = db.frame(
            "SELECT coalesce(model, ?) AS model, reason, count(*) AS n FROM decisions "
            "WHERE service = ? GROUP BY ALL",
            [lm.NO_MODEL, name],
        )
        joined = db.frame(
            "SELECT s.model AS model, count(*) AS n, count(*) FILTER (WHERE s.late) AS late "
            "FROM (SELECT unnest(scores) AS s FROM decisions WHERE service = ?) GROUP BY ALL",
            [name],
        )
        decisions = db.frame(
            "SELECT count(*) AS n FROM decisions WHERE request_id LIKE ?", [f"{name}-%"]
        )
    answers: Counter = Counter()
    for row in reasons.itertuples():
        answers[(row.model, lm.reason_kind(row.reason))] += int(row.n)
    return {
        "scores": {r.model: int(r.n) for r in scores.itertuples()},
        "errors": {r.model: int(r.errors) for r in scores.itertuples()},
        "answers": dict(answers),
        "joined": {r.model: int(r.n) for r in joined.itertuples()},
        "late": {r.model: int(r.late) for r in joined.itertuples()},
        "requests": {"all": int(decisions["n"][0])},
    }


def prometheus_counts(prometheus: Prometheus, name: str) -> dict[str, dict]:
    """The same figures, from Prometheus."""
    sel = f'{{service="{name}"}}'

    def by_model(metric_name: str) -> dict:
        rows = prometheus.query(f"sum by (model) ({metric(metric_name)}{sel})")
        return {model: int(v) for (model,), v in rows.items()}

    answers = prometheus.query(f"sum by (model, reason) ({metric(lm.ANSWERS_NAME)}{sel})")
    proxied = prometheus.query(f"sum(rdv_proxy_requests_total{sel})")
    return {
        "scores": by_model(lm.SCORES_NAME),
        "errors": by_model(lm.SCORE_ERRORS_NAME),
        "answers": {labels: int(v) for labels, v in answers.items()},
        "joined": by_model(lm.JOINED_SCORES_NAME),
        "late": by_model(lm.LATE_SCORES_NAME),
        "requests": {"all": int(sum(proxied.values()))},
    }


def test_prometheus_counts_what_the_archive_holds(scraped, stack):
    prometheus, name, codes = scraped
    sent = sum(codes.values())
    seen: dict[str, dict] = {}

    def agree() -> bool:
        seen["archive"] = archive_counts(stack, name)
        seen["prometheus"] = prometheus_counts(prometheus, name)
        return seen["archive"]["requests"]["all"] == sent and seen["archive"] == seen["prometheus"]

    # the join's decisions reach the archive on its checkpoints, the archive's files on its own
    try:
        wait_until(agree, timeout_s=240, what="the archive and Prometheus to agree", interval_s=2)
    except AssertionError:
        assert seen.get("archive") == seen.get("prometheus"), f"sent {sent}: {codes}"
        raise
    figures = seen["archive"]
    assert set(figures["scores"]) == {"champion", "canary", "backstop"}
    assert figures["errors"]["canary"] > 0 and figures["errors"]["champion"] > 0
    assert figures["late"]["champion"] > 0
    kinds = {kind for _, kind in figures["answers"]}
    assert {"preferred", "fallback"} <= kinds, figures["answers"]
    # the proxy counted every request it answered, by status code
    by_code = prometheus.query(f'sum by (code) (rdv_proxy_requests_total{{service="{name}"}})')
    assert {int(code): int(v) for (code,), v in by_code.items()} == dict(codes)


def test_the_latency_histogram_counts_every_score(scraped):
    prometheus, name, _ = scraped
    sel = f'service="{name}"'
    buckets = metric(lm.SCORE_LATENCY_NAME)
    every = prometheus.query(f'sum by (model) ({buckets}{{{sel},le="+Inf"}})')
    scores = prometheus.query(f"sum by (model) ({metric(lm.SCORES_NAME)}{{{sel}}})")
    assert every == scores and every
    # the late champion's scores are above the SLA, every in-time one below it
    below = prometheus.query(f'sum by (model) ({buckets}{{{sel},le="1000"}})')
    assert below[("champion",)] < every[("champion",)]
    p99 = prometheus.query(
        f"histogram_quantile(0.99, sum by (model, le) (rate({buckets}{{{sel}}}[5m])))"
    )
    assert set(p99) == {("backstop",), ("canary",), ("champion",)}


def test_the_rules_evaluate_on_the_live_series(scraped):
    prometheus, name, _ = scraped
    defined = yaml.safe_load(RULES.read_text())["groups"]
    groups = prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == sum(len(g["rules"]) for g in defined)
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] not in ("ok", "unknown")}
    assert not bad

    def recorded() -> dict:
        return prometheus.query(f'rendezvous:late_ratio:rate5m{{service="{name}"}}')

    # one series per model of the service (a ratio of rates: NaN once the window is quiet)
    late = wait_until(recorded, timeout_s=60, what="the late ratio to be recorded")
    assert set(late) == {(m, name) for m in ("backstop", "canary", "champion")}
    assert all(v != v or 0 <= v <= 1 for v in late.values())  # NaN or a share


NAME = re.compile(r"\b(?:flink_[A-Za-z0-9_]+|rdv_[a-z0-9_]+|rendezvous:[a-z0-9_:]+)")


def test_every_metric_of_the_dashboard_and_the_rules_is_scraped(scraped):
    prometheus, _, _ = scraped
    scraped_names = set(prometheus.api("label/__name__/values"))
    rules = yaml.safe_load(RULES.read_text())
    recorded = {
        r["record"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "record" in r
    }

    def raw_names(expr: str) -> set[str]:
        names = set()
        for found in NAME.findall(expr):
            names |= raw_names(recorded[found]) if found in recorded else {found}
        return names

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = set().union(*(raw_names(e) for e in exprs))
    # a histogram's series are its name with _bucket, _sum and _count
    assert "rdv_proxy_request_duration_seconds_bucket" in used
    missing = sorted(used - scraped_names)
    assert not missing, f"the dashboard or the rules use metrics nobody exports: {missing}"


def test_promtool_checks_and_tests_the_rules():
    assert PROMTOOL.exists(), MISSING
    for argv in (["check", "rules", str(RULES)], ["test", "rules", str(RULES_TEST)]):
        done = subprocess.run(
            [str(PROMTOOL), *argv], capture_output=True, text=True, cwd=RULES.parent
        )
        assert done.returncode == 0, done.stdout + done.stderr
