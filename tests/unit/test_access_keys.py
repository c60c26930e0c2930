"""API keys: what is made and stored, the ring of keys, and `rendezvous keys` on a log in memory."""

from __future__ import annotations

import hashlib
import re

import pytest

from rendezvous import cli, serde
from rendezvous.access import cli as keys_cli
from rendezvous.access import keys
from rendezvous.access.log import MemoryKeyLog

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000


def test_a_new_key_is_random_and_only_its_sha256_is_kept() -> None:
    key, record = keys.new_key("ci", ["credit", "fraud", "credit"], created_by="a@h", created_ms=T0)
    assert re.fullmatch(r"rdv_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key)
    assert keys.key_id_of(key) == record["key_id"]
    assert record["digest"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in repr(record) and key.split("_", 2)[2] not in repr(record)
    assert record["services"] == ["credit", "fraud"] and record["revoked_ms"] is None
    other, _ = keys.new_key("ci", ["credit"], created_by="a@h", created_ms=T0)
    assert other != key
    # the record is what goes on the topic
    assert serde.decode_as(serde.Kind.API_KEY, serde.encode(serde.Kind.API_KEY, record)) == record


def test_a_key_needs_a_service() -> None:
    with pytest.raises(ValueError, match="at least one service"):
        keys.new_key("ci", [], created_by="a@h", created_ms=T0)


def test_scope_and_revocation() -> None:
    _, record = keys.new_key("ci", ["credit"], created_by="a@h", created_ms=T0)
    assert keys.allows(record, "credit") and not keys.allows(record, "fraud")
    _, everything = keys.new_key("ops", ["*"], created_by="a@h", created_ms=T0)
    assert keys.allows(everything, "anything") and keys.scope_text(everything) == "every service"
    gone = keys.revoked(record, revoked_by="b@h", revoked_ms=T0 + 5)
    assert (gone["revoked_ms"], gone["revoked_by"]) == (T0 + 5, "b@h")
    assert keys.revoked(gone, revoked_by="c@h", revoked_ms=T0 + 9) == gone  # the first one stays


def test_the_ring_keeps_the_latest_record_of_each_key() -> None:
    key, record = keys.new_key("ci", ["credit"], created_by="a@h", created_ms=T0)
    ring = keys.KeyRing([record])
    assert ring.find(key) == record and len(ring) == 1
    gone = keys.revoked(record, revoked_by="b@h", revoked_ms=T0 + 5)
    ring.apply(record["key_id"], gone)
    assert ring.find(key) == gone and len(ring.by_digest) == 1
    ring.apply(record["key_id"], None)  # a tombstone
    assert ring.find(key) is None and len(ring) == 0 and ring.by_digest == {}
    assert ring.find("rdv_000000000000_" + "x" * 43) is None


# ---- the CLI, on a log in memory --------------------------------------------------------------
@pytest.fixture
def log(monkeypatch) -> MemoryKeyLog:
    memory = MemoryKeyLog()
    monkeypatch.setattr(keys_cli, "key_log", lambda settings: memory)
    # no service defined on a cluster: only a --config file's weights count
    real = keys_cli.weighted_services
    monkeypatch.setattr(
        keys_cli,
        "weighted_services",
        lambda args, settings: real(args, settings) if getattr(args, "config", None) else set(),
    )
    return memory


def test_create_prints_the_key_alone_on_stdout_and_publishes_its_digest(log, capsys) -> None:
    assert cli.main(["keys", "create", "--name", "ci", "--service", "credit"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    [record] = log.records
    assert keys.digest(key) == record["digest"] and record["services"] == ["credit"]
    assert record["key_id"] in err and "shown only now" in err and key not in err
    assert cli.main(["keys", "create", "--name", "ops", "--all-services"]) == 0
    assert log.records[1]["services"] == ["*"]


def test_create_needs_services_one_way_or_the_other(log, capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["keys", "create", "--name", "ci"])
    with pytest.raises(SystemExit):
        cli.main(["keys", "create", "--name", "ci", "--service", "a", "--all-services"])
    assert "--service" in capsys.readouterr().err and log.records == []


def test_create_checks_the_services_against_a_configuration(log, capsys, tmp_path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(
        "services:\n  credit:\n    sla_ms: 100\n    models:\n"
        '      - {name: m, role: champion, callable: "udfs.rules:approve"}\n'
        "    input:\n      x: double\n"
    )
    argv = ["keys", "create", "--name", "ci", "--config", str(path), "--service"]
    assert cli.main([*argv, "credit"]) == 0
    assert cli.main([*argv, "nope"]) == 2
    assert "credit" in capsys.readouterr().err and len(log.records) == 1


def test_list_and_revoke(log, capsys) -> None:
    assert cli.main(["keys", "list"]) == 0
    assert "no valid API keys" in capsys.readouterr().out
    cli.main(["keys", "create", "--name", "ci", "--service", "credit"])
    key = capsys.readouterr().out.strip()
    key_id = keys.key_id_of(key)
    assert cli.main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "valid" in listed and "credit" in listed and key not in listed

    assert cli.main(["keys", "revoke", key_id]) == 0
    assert f"revoked API key {key_id}" in capsys.readouterr().out
    assert log.read()[key_id]["revoked_ms"] is not None
    assert cli.main(["keys", "list"]) == 0
    assert key_id not in capsys.readouterr().out
    assert cli.main(["keys", "list", "--all"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert cli.main(["keys", "revoke", key]) == 0  # the whole key names it too
    assert "already revoked" in capsys.readouterr().out and len(log.records) == 2

    assert cli.main(["keys", "revoke", "0123456789ab"]) == 1
    assert "no API key 0123456789ab" in capsys.readouterr().err
    assert cli.main(["keys", "revoke", "not-an-id"]) == 1
    assert "not a key id" in capsys.readouterr().err


def test_the_key_topic_is_compacted_single_partition_and_created_with_the_others() -> None:
    from rendezvous import topics
    from rendezvous.stack.kafka import _topic_config

    assert topics.API_KEYS in topics.ALL and topics.API_KEYS in topics.SINGLE_PARTITION
    assert _topic_config(topics.API_KEYS) == {"cleanup.policy": "compact"}


def test_create_with_a_quota_and_list_shows_it(log, capsys) -> None:
    argv = ["keys", "create", "--name", "ci", "--service", "credit"]
    assert cli.main([*argv, "--quota", "500", "--per", "1h"]) == 0
    assert "500 requests per 1h" in capsys.readouterr().err
    assert log.records[0]["quota"] == {"requests": 500, "period_ms": 3_600_000}
    assert cli.main(["keys", "list"]) == 0
    assert "500 requests per 1h" in capsys.readouterr().out
    for bad in (["--quota", "5"], ["--per", "1h"], ["--quota", "5", "--per", "soon"]):
        with pytest.raises(SystemExit):
            cli.main([*argv, *bad])
    assert len(log.records) == 1


def test_a_quota_over_services_with_quota_weights_is_said_in_tokens(log, capsys, tmp_path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(
        "services:\n"
        "  heavy:\n    sla_ms: 100\n    models:\n"
        '      - {name: m, role: champion, callable: "udfs.rules:approve", quota_weight: 4}\n'
        "    input:\n      x: double\n"
        "  light:\n    sla_ms: 100\n    models:\n"
        '      - {name: m, role: champion, callable: "udfs.rules:approve"}\n'
        "    input:\n      x: double\n"
    )
    argv = ["keys", "create", "--name", "ci", "--quota", "100", "--per", "1d"]
    assert cli.main([*argv, "--service", "heavy", "--config", str(path)]) == 0
    assert "100 tokens per 1d" in capsys.readouterr().err
    assert cli.main([*argv, "--service", "light", "--config", str(path)]) == 0
    assert "100 requests per 1d" in capsys.readouterr().err
    assert cli.main([*argv, "--all-services", "--config", str(path)]) == 0
    assert "100 tokens per 1d" in capsys.readouterr().err
    assert cli.main(["keys", "list", "--config", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert ["tokens" in line for line in lines] == [True, False, True]
    assert cli.main(["keys", "list"]) == 0  # no service with weights defined anywhere
    assert "tokens" not in capsys.readouterr().out
