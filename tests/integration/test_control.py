"""Policy history on a real broker: promote, undo and restore read back from the control topic.

Each test has a control topic of its own (or, through the CLI, a service name of its own on
``rdv.control``), so no test sees another's versions.
"""

from __future__ import annotations

import uuid

import pytest
import yaml

from rendezvous import cli, config, control, serde
from rendezvous.clock import now_ms
from rendezvous.policy import Policy

pytestmark = pytest.mark.kafka

CONFIG = """
services:
  {name}:
    sla_ms: 200
    grace_ms: 500
    models:
      - {{name: champ, role: champion, callable: "udfs.zoo:constant"}}
      - {{name: shadow, role: challenger, callable: "udfs.zoo:constant"}}
      - {{name: backstop, role: backstop, callable: "udfs.zoo:constant"}}
    input:
      x: double
"""


def service_config(name: str) -> config.Config:
    return config.parse(yaml.safe_load(CONFIG.format(name=name)))


def test_an_empty_control_topic_gives_the_configurations_policy(stack, unique_topic):
    log = control.KafkaControl(stack.settings.kafka, topic=unique_topic("control"))
    cfg = service_config("credit")
    assert log.read() == []
    assert control.current_policy(log, cfg, "credit") == Policy(("champ", "backstop"), 200, 500, 0)


def test_promote_undo_and_restore_read_back_in_order(stack, unique_topic, kafka_producer):
    topic = unique_topic("control")
    log = control.KafkaControl(stack.settings.kafka, topic=topic)
    cfg = service_config("credit")
    # Records of other kinds, records that do not decode and other services' are passed over.
    kafka_producer.produce(
        topic, serde.encode(serde.Kind.TICK, {"source": "tests", "at_ms": now_ms()}), key=b"credit"
    )
    kafka_producer.produce(topic, b"", key=b"credit")
    kafka_producer.flush(10)
    control.promote(log, cfg, "credit", "shadow", issued_by="a@h", issued_ms=now_ms())
    other = service_config("debit")
    control.promote(log, other, "debit", "backstop", issued_by="b@h", issued_ms=now_ms())
    earlier, undone = control.undo(log, cfg, "credit", issued_by="c@h", issued_ms=now_ms())
    restored = control.restore(log, cfg, "credit", 1, issued_by="d@h", issued_ms=now_ms())

    assert earlier == 0 and undone == Policy(("champ", "backstop"), 200, 500, 2)
    assert restored == Policy(("shadow", "champ", "backstop"), 200, 500, 3)
    history = control.history(log, cfg, "credit")
    assert history.versions == (0, 1, 2, 3)
    assert [c.issued_by for c in history.changes] == ["configuration", "a@h", "c@h", "d@h"]
    issued = [c.issued_ms for c in history.changes[1:]]
    assert issued == sorted(issued)
    assert history.current.policy == restored
    # A fresh reader (another process) reads the same history.
    again = control.KafkaControl(stack.settings.kafka, topic=topic)
    assert control.history(again, cfg, "credit") == history


def test_cli_undo_and_models_on_the_stacks_control_topic(
    stack, stack_env, monkeypatch, capsys, tmp_path
):
    for name, value in stack_env.items():
        monkeypatch.setenv(name, value)
    name = "svc" + uuid.uuid4().hex[:8]
    path = tmp_path / "services.yaml"
    path.write_text(CONFIG.format(name=name))
    run = ["--config", str(path)]

    assert cli.main(["promote", "--undo", name, *run]) == 1
    assert f"{name}: nothing to undo" in capsys.readouterr().err
    assert cli.main(["promote", name, "shadow", *run]) == 0
    assert cli.main(["promote", "--undo", name, *run]) == 0
    out = capsys.readouterr().out
    assert "(restored policy version 0 as version 2)" in out

    assert cli.main(["models", *run]) == 0
    out = capsys.readouterr().out
    assert f"{name}: SLA 200 ms, preference champ > backstop (v2)" in out
    history = [line.strip() for line in out.splitlines() if line.startswith("    v")]
    assert [line.split()[0] for line in history] == ["v0", "v1", "v2"]
    assert "preference shadow > champ > backstop" in history[1]
    assert history[2].endswith("(current)") and "shadow" not in history[2]
