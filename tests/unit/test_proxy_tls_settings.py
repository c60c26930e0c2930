"""The proxy's TLS settings: plain HTTP without them, the files checked when the settings are
built (one line naming the setting and the fix), uvicorn's options, and how the project's own
commands reach a replica that serves HTTPS."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from rendezvous import cli
from rendezvous.errors import ConfigError
from rendezvous.proxy import proxy_settings, tls
from rendezvous.proxy.server import listening_socket, server_options
from rendezvous.proxy.settings import ProxySettings
from rendezvous.settings import StackSettings
from tests.conftest import free_port
from tests.proxy_harness import CONFIG
from tests.served_proxy import served
from tests.tls_certs import authority, issue

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate it signed (with a plain and an encrypted key), another key,
    a client certificate, and files that are no PEM."""
    folder = tmp_path_factory.mktemp("pki")
    ca = authority()
    server = issue(ca, "localhost")
    cert, key = server.write(folder, "server")
    _, encrypted = server.write(folder / "enc", "server", password="s3cret")
    _, other_key = issue(ca, "other").write(folder, "other")
    client_cert, client_key = issue(ca, "client", server=False).write(folder, "client")
    (folder / "ca.crt").write_bytes(ca.cert_pem())
    (folder / "junk.pem").write_text("not a certificate\n")
    (folder / "both.pem").write_bytes(server.cert_pem() + server.key_pem())
    return {
        "cert": cert,
        "key": key,
        "encrypted": encrypted,
        "other_key": other_key,
        "ca": folder / "ca.crt",
        "client_cert": client_cert,
        "client_key": client_key,
        "junk": folder / "junk.pem",
        "both": folder / "both.pem",
        "missing": folder / "missing.pem",
        "folder": folder,
    }


def test_without_a_certificate_the_proxy_serves_plain_http() -> None:
    s = ProxySettings.from_env({})
    assert s.tls_cert is None and s.server_ssl is None
    assert tls.uvicorn_options(s) == {} and not any(k.startswith("ssl") for k in server_options(s))
    assert tls.url(s) == "http://127.0.0.1:8000" and tls.describe(s) == "plain HTTP"
    assert tls.client_context(s) is None and tls.verify(s) is True


def test_the_tls_files_come_from_the_environment_and_give_uvicorn_its_options(pki) -> None:
    env = {
        "RDV_PROXY_TLS_CERT": str(pki["cert"]),
        "RDV_PROXY_TLS_KEY": str(pki["encrypted"]),
        "RDV_PROXY_TLS_KEY_PASSWORD": "s3cret",
        "RDV_PROXY_TLS_CLIENT_CA": str(pki["ca"]),
        "RDV_PROXY_TLS_PROBE_CERT": str(pki["client_cert"]),
        "RDV_PROXY_TLS_PROBE_KEY": str(pki["client_key"]),
    }
    s = ProxySettings.from_env(env, port=8443)
    assert isinstance(s.server_ssl, ssl.SSLContext)
    assert s.server_ssl.verify_mode == ssl.CERT_REQUIRED  # mutual TLS
    assert "s3cret" not in repr(s) and s.tls_key_password_text == "s3cret"
    options = server_options(s)
    assert {k: v for k, v in options.items() if k.startswith("ssl")} == {
        "ssl_certfile": str(pki["cert"]),
        "ssl_keyfile": str(pki["encrypted"]),
        "ssl_keyfile_password": "s3cret",
        "ssl_ca_certs": str(pki["ca"]),
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
    }
    assert tls.url(s) == "https://127.0.0.1:8443"
    assert tls.describe(s) == "HTTPS, client certificates required"
    probe = tls.client_context(s)
    assert probe is not None and probe.verify_mode == ssl.CERT_REQUIRED
    assert not probe.check_hostname  # the server's own certificate is pinned instead


def test_a_certificate_file_that_holds_its_key_needs_no_key_setting(pki) -> None:
    s = ProxySettings(tls_cert=pki["both"])
    assert s.server_ssl is not None and tls.uvicorn_options(s)["ssl_keyfile"] is None
    assert tls.describe(s) == "HTTPS" and "ssl_ca_certs" not in tls.uvicorn_options(s)


def test_the_cli_flags_name_the_files_and_the_stack_gives_the_rest(pki, monkeypatch) -> None:
    args = cli.build_parser().parse_args(
        ["proxy", "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]), "--port", "9443"]
    )
    assert (args.tls_cert, args.tls_key, args.tls_client_ca) == (
        str(pki["cert"]),
        str(pki["key"]),
        None,
    )
    stack = StackSettings.from_env({}, home=pki["folder"] / "home")
    s = proxy_settings(
        stack, {}, port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=None
    )
    assert s.tls_cert == pki["cert"] and s.port == 9443 and tls.url(s).startswith("https://")
    # the variables, for what the flags do not say
    s = proxy_settings(stack, {"RDV_PROXY_TLS_CERT": str(pki["both"])}, tls_cert=None)
    assert s.tls_cert == pki["both"]


def _error(**values: object) -> str:
    with pytest.raises(ConfigError) as err:
        ProxySettings(**values)
    text = err.value.message
    assert "\n" not in text  # one line
    return text


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (
            {"tls_cert": "missing"},
            [
                "proxy setting tls_cert=",
                "cannot read the file (No such file or directory)",
                "RDV_PROXY_TLS_CERT (or --tls-cert)",
            ],
        ),
        ({"tls_cert": "folder"}, ["tls_cert=", "cannot read the file", "RDV_PROXY_TLS_CERT"]),
        ({"tls_cert": "junk", "tls_key": "key"}, ["tls_cert=", "no PEM certificate"]),
        (
            {"tls_cert": "cert", "tls_key": "missing"},
            ["tls_key=", "cannot read the file", "RDV_PROXY_TLS_KEY (or --tls-key)"],
        ),
        ({"tls_cert": "cert", "tls_key": "junk"}, ["tls_key=", "no PEM private key"]),
        ({"tls_cert": "cert"}, ["tls_cert=", "no PEM private key", "tls_key is not set"]),
        (
            {"tls_cert": "cert", "tls_key": "other_key"},
            [
                "proxy setting tls_key=",
                "does not match the certificate in tls_cert=",
                "RDV_PROXY_TLS_KEY (or --tls-key) to the key the certificate was issued for",
            ],
        ),
        (
            {"tls_cert": "cert", "tls_key": "encrypted"},
            ["tls_key=", "encrypted and no password", "set RDV_PROXY_TLS_KEY_PASSWORD"],
        ),
        (
            {"tls_cert": "cert", "tls_key": "encrypted", "tls_key_password": "wrong"},
            ["proxy setting tls_key_password:", "does not decrypt", "RDV_PROXY_TLS_KEY_PASSWORD"],
        ),
        (
            {"tls_cert": "cert", "tls_key": "key", "tls_client_ca": "junk"},
            ["tls_client_ca=", "no PEM certificate", "RDV_PROXY_TLS_CLIENT_CA"],
        ),
        (
            {"tls_cert": "cert", "tls_key": "key", "tls_client_ca": "missing"},
            ["tls_client_ca=", "cannot read the file", "--tls-client-ca"],
        ),
        ({"tls_key": "key"}, ["tls_key is set but tls_cert is not", "RDV_PROXY_TLS_CERT"]),
        ({"tls_client_ca": "ca"}, ["tls_client_ca is set but tls_cert is not"]),
        (
            {"tls_cert": "cert", "tls_key": "key", "tls_client_ca": "ca", "tls_probe_cert": "cert"},
            ["tls_probe_cert and tls_probe_key go together"],
        ),
        (
            {
                "tls_cert": "cert",
                "tls_key": "key",
                "tls_probe_cert": "client_cert",
                "tls_probe_key": "client_key",
            },
            ["tls_probe_cert is set but tls_client_ca is not"],
        ),
    ],
    ids=lambda v: "-".join(f"{k}={w}" for k, w in v.items()) if isinstance(v, dict) else "",
)
def test_a_bad_tls_setting_fails_in_one_line_naming_the_setting_and_the_fix(
    pki, values: dict[str, str], words: list[str]
) -> None:
    paths = {k: pki[v] for k, v in values.items() if k != "tls_key_password"}
    if "tls_key_password" in values:
        paths["tls_key_password"] = values["tls_key_password"]
    text = _error(**paths)
    for word in words:
        assert word in text, text


def test_a_password_without_a_certificate_is_refused_and_not_shown() -> None:
    text = _error(tls_key_password="hunter2")
    assert "tls_key_password is set but tls_cert is not" in text and "hunter2" not in text


def test_a_wrong_password_is_not_shown(pki) -> None:
    text = _error(tls_cert=pki["cert"], tls_key=pki["encrypted"], tls_key_password="hunter2")
    assert "hunter2" not in text


def test_the_probe_certificate_is_checked_too(pki) -> None:
    s = ProxySettings(
        tls_cert=pki["cert"],
        tls_key=pki["key"],
        tls_client_ca=pki["ca"],
        tls_probe_cert=pki["client_cert"],
        tls_probe_key=pki["other_key"],
    )
    with pytest.raises(ConfigError, match="tls_probe_key=.*does not match the certificate"):
        tls.client_context(s)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "https://127.0.0.1:8443"),
        ("::", "https://[::1]:8443"),
        ("::1", "https://[::1]:8443"),
        ("proxy.internal", "https://proxy.internal:8443"),
    ],
)
def test_the_url_a_local_client_uses(pki, host: str, url: str) -> None:
    assert tls.url(ProxySettings(host=host, port=8443, tls_cert=pki["both"])) == url


def test_the_served_proxy_answers_https_on_the_socket_serve_binds(pki) -> None:
    """uvicorn with the replica's options on a pre-bound SO_REUSEPORT socket, as ``serve``
    runs it: TLS applies to that socket, and the project's own probe reaches it."""
    settings = ProxySettings(
        replica_id="tls", port=free_port(), tick_interval_ms=0, tls_cert=pki["both"]
    )
    options = server_options(settings)
    options.pop("log_level")
    sock = listening_socket(settings.host, settings.port)
    try:
        with served(settings, CONFIG, sockets=[sock], **options):
            r = httpx.get(f"{tls.url(settings)}/healthz", verify=tls.verify(settings), timeout=10)
            assert r.status_code == 200 and r.json()["replica_id"] == "tls"
            r = httpx.post(
                f"https://localhost:{settings.port}/v1/services/credit/score",
                json={"amount": 10},
                verify=ssl.create_default_context(cafile=str(pki["ca"])),
                timeout=10,
            )
            assert r.status_code == 200, r.text
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{settings.port}/healthz", timeout=10)
    finally:
        sock.close()
