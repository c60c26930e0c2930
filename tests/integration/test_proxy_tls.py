"""TLS on real proxy replicas (`rendezvous proxy` processes on the test stack's Kafka), with
certificates made here: HTTPS with the CA trusted, no answer over plain HTTP, client
certificates under mutual TLS, and a start that fails in one line before listening.

The replicas take async requests only (202 needs no stream job), so no Flink job is submitted.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from rendezvous.proxy import tls
from rendezvous.proxy.settings import ProxySettings
from tests import proxy_process
from tests.conftest import free_port
from tests.integration.feed import write_service
from tests.proxy_process import stop
from tests.tls_certs import authority, issue

pytestmark = pytest.mark.kafka

MODELS = ('{name: m, role: champion, callable: "udfs.zoo:constant"}',)
PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("pki")
    ca = authority()
    server_cert, server_key = issue(ca, "localhost").write(folder, "server", password=PASSWORD)
    client = issue(ca, "client", server=False)
    client_cert, client_key = client.write(folder, "client")
    stranger = issue(authority("another CA"), "stranger", server=False)
    stranger_cert, stranger_key = stranger.write(folder, "stranger")
    _, other_key = issue(ca, "other").write(folder, "other")
    (folder / "ca.crt").write_bytes(ca.cert_pem())
    return {
        "folder": folder,
        "ca": folder / "ca.crt",
        "server_cert": server_cert,
        "server_key": server_key,
        "client": (str(client_cert), str(client_key)),
        "stranger": (str(stranger_cert), str(stranger_key)),
        "other_key": other_key,
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> tuple[str, Path]:
    name = "tls" + uuid.uuid4().hex[:6]
    path = write_service(
        tmp_path_factory.mktemp("tls-config") / "services.yaml",
        name,
        sla_ms=200,
        grace_ms=500,
        models=MODELS,
    )
    return name, path


def proxy_argv(stack, config_path: Path, port: int, *extra: str) -> list[str]:
    return proxy_process.proxy_argv(stack, config_path, port, f"tls-{uuid.uuid4().hex[:6]}", *extra)


def start_tls_proxy(stack, config_path: Path, settings: ProxySettings, *extra: str):
    """A replica with ``settings``' certificate (its key's password in the environment),
    ready: probed the way the project's own commands probe, at ``tls.url`` trusting the
    replica's own certificate."""
    url = tls.url(settings)
    assert url.startswith("https://")
    return proxy_process.start_proxy(
        stack,
        config_path,
        settings.port,
        f"tls-{uuid.uuid4().hex[:6]}",
        "--tls-cert",
        str(settings.tls_cert),
        "--tls-key",
        str(settings.tls_key),
        *extra,
        env={"RDV_PROXY_TLS_KEY_PASSWORD": PASSWORD},
        url=url,
        verify=tls.verify(settings),
    )


def trusting(ca: Path, client: tuple[str, str] | None = None) -> ssl.SSLContext:
    """A client's context that trusts ``ca`` (with host name checks), presenting ``client``."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        ctx.load_cert_chain(*client)
    return ctx


def submit(url: str, service: str, verify: ssl.SSLContext | bool) -> int | str:
    """The status of an async request, or the name of the error that came instead."""
    try:
        r = httpx.post(
            f"{url}/v1/services/{service}/requests", json={"x": 1.0}, timeout=10, verify=verify
        )
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return r.status_code


def test_a_replica_with_a_certificate_answers_https_only(stack, pki, service):
    name, path = service
    port = free_port()
    settings = ProxySettings(
        port=port,
        tls_cert=pki["server_cert"],
        tls_key=pki["server_key"],
        tls_key_password=PASSWORD,
    )
    proc = start_tls_proxy(stack, path, settings)
    try:
        # A client that trusts the CA, and checks the host name the certificate names.
        r = httpx.post(
            f"https://localhost:{port}/v1/services/{name}/requests",
            json={"x": 1.0},
            timeout=10,
            verify=trusting(pki["ca"]),
        )
        assert r.status_code == 202, r.text
        status = httpx.get(
            f"https://localhost:{port}{r.json()['status_url']}",
            timeout=10,
            verify=trusting(pki["ca"]),
        )
        assert status.status_code in (200, 202) and status.json()["request_id"]
        # Plain HTTP on the TLS port gets no HTTP answer at all.
        plain = submit(f"http://127.0.0.1:{port}", name, True)
        assert not (isinstance(plain, int) and plain < 400), plain
        # A client that does not trust the certificate is refused by its own check.
        assert submit(f"https://localhost:{port}", name, True) == "ConnectError"
    finally:
        stop(proc)


def test_with_a_client_ca_only_clients_with_a_certificate_it_signed_are_answered(
    stack, pki, service
):
    name, path = service
    port = free_port()
    settings = ProxySettings(
        port=port,
        tls_cert=pki["server_cert"],
        tls_key=pki["server_key"],
        tls_key_password=PASSWORD,
        tls_client_ca=pki["ca"],
        tls_probe_cert=pki["client"][0],
        tls_probe_key=pki["client"][1],
    )
    proc = start_tls_proxy(stack, path, settings, "--tls-client-ca", str(pki["ca"]))
    url = f"https://localhost:{port}"
    try:
        assert submit(url, name, trusting(pki["ca"], pki["client"])) == 202
        for refused in (None, pki["stranger"]):  # no certificate, or one of another CA
            outcome = submit(url, name, trusting(pki["ca"], refused))
            assert not isinstance(outcome, int), f"{refused}: answered {outcome}"
        # /healthz is behind the handshake too: the project's probe presents its certificate
        r = httpx.get(f"{tls.url(settings)}/healthz", timeout=10, verify=tls.verify(settings))
        assert r.status_code == 200
    finally:
        stop(proc)


def test_a_key_that_is_not_the_certificates_fails_the_start_in_one_line(stack, pki, service):
    _, path = service
    port = free_port()
    argv = proxy_argv(
        stack,
        path,
        port,
        "--tls-cert",
        str(pki["server_cert"]),
        "--tls-key",
        str(pki["other_key"]),
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: proxy setting tls_key='{pki['other_key']}': ")
    assert "does not match the certificate" in lines[0] and "RDV_PROXY_TLS_KEY" in lines[0]
    assert "proxy replica" not in done.stdout  # it never got as far as starting
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))  # nothing listened


def test_a_wrong_password_fails_the_start_in_one_line(stack, pki, service):
    _, path = service
    argv = proxy_argv(
        stack,
        path,
        free_port(),
        "--tls-cert",
        str(pki["server_cert"]),
        "--tls-key",
        str(pki["server_key"]),
    )
    env = {**os.environ, "RDV_PROXY_TLS_KEY_PASSWORD": "wrong"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: proxy setting tls_key_password: the password does not decrypt the private key "
        f"'{pki['server_key']}'; set RDV_PROXY_TLS_KEY_PASSWORD to that key's password"
    )


def test_the_demos_replica_replacement_waits_for_the_new_replica_over_https(
    stack, stack_env, pki, tmp_path, monkeypatch
):
    """`rendezvous.demo.replace_proxy` with the proxy's TLS variables set: its readiness
    waits go to https:// and trust the replica's own certificate."""
    from rendezvous import demo
    from rendezvous.settings import StackSettings
    from rendezvous.stack.procs import Service

    settings = StackSettings.from_env(stack_env, home=tmp_path / "home", proxy_port=free_port())
    (settings.home / "demo").mkdir(parents=True)
    write_service(
        settings.home / "demo" / "rendezvous.yaml",
        "tlsdemo",
        sla_ms=200,
        grace_ms=500,
        models=MODELS,
    )
    monkeypatch.setenv("RDV_PROXY_TLS_CERT", str(pki["server_cert"]))
    monkeypatch.setenv("RDV_PROXY_TLS_KEY", str(pki["server_key"]))
    monkeypatch.setenv("RDV_PROXY_TLS_KEY_PASSWORD", PASSWORD)
    served = demo.proxy_settings(settings)
    url, verify = tls.url(served), tls.verify(served)
    assert url == f"https://127.0.0.1:{settings.proxy_port}"

    def replica() -> str | None:
        try:
            r = httpx.get(f"{url}/readyz", timeout=1, verify=verify)
        except httpx.HTTPError:
            return None
        return r.json()["replica_id"] if r.status_code == 200 else None

    first = Service("proxy", settings.run_dir, settings.logs_dir)
    proc = first.start(demo._proxy_argv(settings), env=demo._proxy_env(settings), cwd=settings.home)
    try:
        first.wait_ready(lambda: replica() is not None, timeout_s=60, what="the first replica")
        before = replica()
        demo.replace_proxy(settings, timeout_s=60)
        proc.wait(timeout=30)  # the first replica was stopped
        after = replica()
        assert after is not None and after != before
        r = httpx.post(
            f"https://localhost:{settings.proxy_port}/v1/services/tlsdemo/requests",
            json={"x": 1.0},
            timeout=10,
            verify=trusting(pki["ca"]),
        )
        assert r.status_code == 202, r.text
    finally:
        Service("proxy", settings.run_dir, settings.logs_dir).stop()
        Service("proxy-next", settings.run_dir, settings.logs_dir).stop()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
