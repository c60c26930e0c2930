"""`rendezvous demo`: the whole path on the local stack, from model training to answers."""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from rendezvous.errors import RendezvousError
from rendezvous.settings import StackSettings

SERVICE = "breast_cancer"


def prepare(settings: StackSettings, *, retrain: bool = False, print=print) -> str:
    """Steps 1-4, each idempotent: the stack, the models, the jobs, the proxy. Returns the
    scoring URL of the demo service."""
    import httpx

    from rendezvous import deploy
    from rendezvous.stack import Stack
    from rendezvous.stack.procs import Service, ensure_port_free

    stack = Stack(settings)
    print(f"1/5 starting the local stack in {settings.home}")
    stack.up()

    ensure_models(settings, retrain=retrain, print=print)
    config_path = write_config(settings)
    print(f"    configuration written to {config_path}")

    print("3/5 submitting the enrich, scoring and rendezvous jobs")
    deploy.submit(stack, config_path, log=lambda line: print("  " + line))

    from rendezvous.proxy import tls

    served = proxy_settings(settings)  # what the proxy will run with: its TLS files checked
    base = tls.url(served)
    print(f"4/5 starting the proxy on {base} ({tls.describe(served)})")
    proxy = Service("proxy", settings.run_dir, settings.logs_dir)
    if proxy.pid() is None:
        ensure_port_free(
            settings.host,
            settings.proxy_port,
            wanted_by="the demo's proxy",
            setting="RDV_PROXY_PORT",
        )
        proxy.start(_proxy_argv(settings), env=_proxy_env(settings), cwd=settings.home)

    verify = tls.verify(served)

    def ready() -> bool:
        try:
            return httpx.get(base + "/readyz", timeout=1, verify=verify).status_code == 200
        except httpx.HTTPError:
            return False

    proxy.wait_ready(ready, timeout_s=60, what=f"GET {base}/readyz")
    return f"{base}/v1/services/{SERVICE}/score"


def proxy_settings(settings: StackSettings):
    """The settings of the demo's proxy, as the process started with :func:`_proxy_argv` and
    :func:`_proxy_env` builds them: its URL and TLS files (``RDV_PROXY_TLS_*``) are the ones
    the demo's own requests and readiness waits use."""
    from rendezvous.proxy import proxy_settings as settings_of

    return settings_of(
        settings,
        _proxy_env(settings),
        config=settings.home / "demo" / "rendezvous.yaml",
        port=settings.proxy_port,
    )


def ensure_models(settings: StackSettings, *, retrain: bool = False, print=print) -> None:
    """Train and register the demo models in MLflow unless every alias is registered."""
    from rendezvous.demo_models import register_demo_models

    versions = None if retrain else _registered_versions(settings.mlflow_url)
    if versions:
        listed = ", ".join(f"{alias} v{v}" for alias, v in versions.items())
        print(f"2/5 demo models already registered in MLflow ({listed}; --retrain to redo)")
        return
    print(f"2/5 training and registering the demo models in MLflow ({settings.mlflow_url})")
    with _quiet(settings.logs_dir / "demo-mlflow.log"):
        registered = register_demo_models(settings.mlflow_url, name=SERVICE)
    for role, info in registered.get("models", {}).items():
        what = info.get("algorithm") or info.get("callable")
        where = f"version {info['version']}" if "version" in info else "a Python rule"
        print(f"    {role:<11} {what:<36} {where:<12} accuracy {info['accuracy']:.3f}")


def write_config(settings: StackSettings) -> Path:
    """Write the demo service's configuration file under the state folder; its path."""
    import schemas
    from rendezvous.config import FORMAT_VERSION
    from rendezvous.demo_models import demo_service_config

    demo_dir = settings.home / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    config_path = demo_dir / "rendezvous.yaml"
    schema = Path(schemas.__file__).parent / "config.schema.json"
    config_path.write_text(
        f"# yaml-language-server: $schema={schema}\n"
        + yaml.safe_dump(
            {"version": FORMAT_VERSION, "services": {SERVICE: demo_service_config(SERVICE)}},
            sort_keys=False,
        )
    )
    return config_path


def _proxy_argv(settings: StackSettings, *extra: str) -> list[str]:
    return [
        str(settings.python),
        "-m",
        "rendezvous.cli",
        "proxy",
        "--config",
        str(settings.home / "demo" / "rendezvous.yaml"),
        "--port",
        str(settings.proxy_port),
        *extra,
    ]


def _proxy_env(settings: StackSettings) -> dict[str, str]:
    # The proxy reads the stack's addresses (Kafka, MLflow) from these settings, not defaults.
    return {**_env(), **settings.to_env()}


def replace_proxy(settings: StackSettings, *, timeout_s: float = 60.0) -> float:
    """Replace the demo's running proxy with a new one without refusing a connection: the
    new replica binds the same port (both share it with ``SO_REUSEPORT``) and listens once it
    is ready; then the old one is stopped (it stops accepting, answers what it accepted and
    exits). Returns the seconds the new replica took to be ready."""
    import uuid

    import httpx

    from rendezvous.proxy import tls
    from rendezvous.stack.procs import Service

    served = proxy_settings(settings)
    base, verify = tls.url(served), tls.verify(served)
    old = Service("proxy", settings.run_dir, settings.logs_dir)
    new = Service("proxy-next", settings.run_dir, settings.logs_dir)
    replica = "r" + uuid.uuid4().hex[:11]
    new.start(
        _proxy_argv(settings, "--replica-id", replica),
        env=_proxy_env(settings),
        cwd=settings.home,
    )

    def new_one_ready() -> bool:
        # A new connection per probe: the kernel spreads them over both listeners.
        try:
            r = httpx.get(base + "/readyz", timeout=1, verify=verify)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and r.json().get("replica_id") == replica

    try:
        waited = new.wait_ready(new_one_ready, timeout_s=timeout_s, what=f"replica {replica}")
    except RendezvousError:
        new.stop()
        raise
    old.stop()
    new.pid_file.replace(old.pid_file)
    return waited


def _registered_versions(tracking_uri: str) -> dict[str, str] | None:
    """The demo model's alias -> version, or None when any alias is missing."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from rendezvous.demo_models import ALIASES

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        return {a: client.get_model_version_by_alias(SERVICE, a).version for a in ALIASES}
    except MlflowException:
        return None


def _warm_up(
    client,
    url: str,
    bodies: list,
    *,
    concurrency: int = 1,
    in_a_row: int = 20,
    timeout_s: float = 240,
) -> int:
    """Send rounds of ``concurrency`` requests at once until ``in_a_row`` rounds in a row come
    back from the preferred model well within the SLA: jobs just submitted spend their first
    seconds loading models, and a cold JVM compiles its hot code for a minute or more, when even
    the backstop can miss a 100 ms SLA. Returns how many were sent."""
    from rendezvous.demo_models import SLA_MS

    deadline = time.monotonic() + timeout_s
    sent = streak = 0

    def one(i: int) -> bool:
        t0 = time.perf_counter()
        resp = client.post(url, json=bodies[i % len(bodies)])
        fast = (time.perf_counter() - t0) * 1000 <= SLA_MS / 2
        return fast and resp.status_code == 200 and resp.json()["reason"] == "preferred"

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        while streak < in_a_row and time.monotonic() < deadline:
            ok = all(pool.map(one, range(sent, sent + concurrency)))
            sent += concurrency
            streak = streak + 1 if ok else 0
            if not ok:
                time.sleep(0.2)
    return sent


def run(settings: StackSettings, *, requests: int, concurrency: int, retrain: bool = False) -> int:
    import httpx

    from rendezvous.demo_models import demo_requests
    from rendezvous.proxy import tls

    url = prepare(settings, retrain=retrain)
    bodies = demo_requests(requests, seed=7)
    with httpx.Client(timeout=30, verify=tls.verify(proxy_settings(settings))) as client:
        t0 = time.monotonic()
        warmed = _warm_up(client, url, bodies, concurrency=concurrency)
        print(
            f"5/5 sending {len(bodies)} requests ({concurrency} at a time) after {warmed} "
            f"warm-up requests ({time.monotonic() - t0:.0f} s until the jobs answered "
            "in time)"
        )

        def call(body):
            t0 = time.perf_counter()
            resp = client.post(url, json=body)
            return resp.status_code, resp.json(), (time.perf_counter() - t0) * 1000

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            outcomes = list(pool.map(call, bodies))

    by_answer = Counter()
    latencies = []
    first_error: dict[int, str] = {}
    for status, body, ms in outcomes:
        latencies.append(ms)
        if status == 200:
            by_answer[(body["model"], body["role"], body["reason"])] += 1
        else:
            error = body.get("error", {})
            by_answer[(f"HTTP {status}", "-", error.get("code", "?"))] += 1
            first_error.setdefault(status, error.get("message", ""))
    print()
    print(f"{'answers':>8}  {'model':<14} {'role':<10} reason")
    for (model, role, reason), n in by_answer.most_common():
        print(f"{n:>8}  {model:<14} {role:<10} {reason}")
    for status, message in sorted(first_error.items()):
        print(f"  first HTTP {status}: {message}")
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"\nlatency at the client: p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms "
        f"over {len(latencies)} requests"
    )
    print("\nTry it yourself:")
    print(f"  curl -s -X POST {url} -H 'content-type: application/json' -d '{_json(bodies[0])}'")
    print(
        f"  Flink UI {settings.flink_url}   MLflow UI {settings.mlflow_url}   `rendezvous down` to stop"
    )
    return 0


@contextlib.contextmanager
def _quiet(log_path):
    """Send MLflow's chatter (run links, registration notices) to a log file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    level = logging.getLogger("mlflow").level
    with (
        open(log_path, "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        try:
            yield
        finally:
            logging.getLogger("mlflow").setLevel(level)


def _json(body) -> str:
    from rendezvous import serde

    return serde.to_json(body)


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def cmd_demo(args: argparse.Namespace, settings: StackSettings) -> int:
    return run(settings, requests=args.requests, concurrency=args.concurrency, retrain=args.retrain)


def add_cli(sub) -> None:
    p = sub.add_parser(
        "demo", help="start the stack, train and register demo models, serve and send requests"
    )
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--retrain", action="store_true", help="train and register new model versions")
    p.set_defaults(func=cmd_demo)


if __name__ == "__main__":  # pragma: no cover
    try:
        sys.exit(run(StackSettings.from_env(), requests=200, concurrency=4))
    except RendezvousError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(2)
