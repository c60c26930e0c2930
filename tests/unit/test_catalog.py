"""Service definitions on the control log: several files on one cluster, each owning its
services; what the enrich job builds from them; and the policy a changed definition brings."""

from __future__ import annotations

import pytest

from rendezvous import catalog, control, deploy, serde
from rendezvous.catalog import Catalog
from rendezvous.control import MemoryControl
from rendezvous.enrich import EnrichError, ServiceBook
from rendezvous.errors import ConfigError
from rendezvous.policy import NO_POLICY

pytestmark = pytest.mark.unit

CREDIT = """
services:
  credit:
    sla_ms: {sla}
    models:
      - {{name: champ, role: champion, callable: "udfs.zoo:constant"}}
      - {{name: shadow, role: challenger, callable: "udfs.zoo:constant"}}
      - {{name: backstop, role: backstop, callable: "udfs.zoo:constant"}}
    input:
      x: double
      region: string
    enrich:
      - {{op: lookup, key: region, table: data/regions.csv}}
"""

FRAUD = """
services:
  fraud:
    sla_ms: 50
    models:
      - {name: champ, role: champion, callable: "udfs.zoo:constant"}
    input:
      x: double
"""

ISSUED = {"issued_by": "ops@host", "issued_ms": 1_764_590_400_000}


def write(folder, text: str, name: str = "services.yaml"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "regions.csv").write_text("region,country\nnorth,SE\nsouth,IT\n")
    path = folder / name
    path.write_text(text)
    return path


def submit(log, path, **kwargs):
    plan, apply = control.define(
        log, catalog.from_file(path), source=str(path.resolve()), **kwargs, **ISSUED
    )
    return plan, apply()


def book_of(log) -> ServiceBook:
    book = ServiceBook()
    for kind, record in log.entries():
        book.apply(kind, record)
    return book


def test_a_definition_carries_its_lookup_tables_and_needs_no_file_to_build(tmp_path):
    path = write(tmp_path / "a", CREDIT.format(sla=100))
    (defined,) = catalog.from_file(path).values()
    assert defined.tables == {"data/regions.csv": "region,country\nnorth,SE\nsouth,IT\n"}
    record = catalog.Definition(**{**defined.__dict__, "version": 0}).to_record()
    kind, decoded = serde.decode(serde.encode(serde.Kind.SERVICE, record))
    assert kind == serde.Kind.SERVICE
    (path.parent / "data" / "regions.csv").unlink()
    book = ServiceBook()
    assert book.apply(kind, decoded) == f"credit: definition v0 from {path.resolve()}"
    assert book.enricher("credit").apply({"x": 1.0, "region": "south"})["country"] == "IT"
    assert book.policy("credit").preference == ("champ", "backstop")  # the shadow is not


def test_two_files_define_their_services_side_by_side(tmp_path):
    log = MemoryControl()
    a = write(tmp_path / "a", CREDIT.format(sla=100))
    b = write(tmp_path / "b", FRAUD)
    submit(log, a)
    plan, _ = submit(log, b)
    assert [d.service for d in plan.publish] == ["fraud"]
    assert set(log.catalog().services) == {"credit", "fraud"}
    book = book_of(log)
    assert book.policy("credit").sla_ms == 100 and book.policy("fraud").sla_ms == 50
    again, changes = submit(log, a)
    assert again.publish == () and again.unchanged == ("credit",) and changes == []


def test_a_service_of_another_file_is_refused_and_nothing_is_written(tmp_path):
    log = MemoryControl()
    submit(log, write(tmp_path / "a", CREDIT.format(sla=100)))
    before = log.entries()
    other = write(tmp_path / "b", CREDIT.format(sla=300))
    with pytest.raises(ConfigError) as refused:
        submit(log, other)
    assert f"service 'credit' is already served from {tmp_path / 'a' / 'services.yaml'}" in (
        refused.value.message
    )
    assert "`rendezvous remove credit`" in refused.value.message
    assert log.entries() == before


def test_a_changed_sla_in_the_file_becomes_the_next_policy_version(tmp_path):
    log = MemoryControl()
    path = write(tmp_path / "a", CREDIT.format(sla=100))
    submit(log, path)
    path.write_text(CREDIT.format(sla=250))
    plan, changes = submit(log, path)
    assert plan.changed == ("credit",) and [d.version for d in plan.publish] == [1]
    assert [(c.policy.sla_ms, c.policy.version) for c in changes] == [(250, 1)]
    assert changes[0].issued_by == f"ops@host ({path.resolve()})"
    assert book_of(log).policy("credit").sla_ms == 250


def test_a_promotion_stays_when_the_file_changes_something_else(tmp_path):
    log = MemoryControl()
    path = write(tmp_path / "a", CREDIT.format(sla=100))
    submit(log, path)
    cfg = catalog.from_file(path)["credit"].spec()
    from rendezvous.config import Config

    control.promote(log, Config({"credit": cfg}), "credit", "shadow", **ISSUED)
    path.write_text(
        CREDIT.format(sla=100).replace("region: string", "region: string\n      y: double")
    )
    plan, changes = submit(log, path)
    assert plan.changed == ("credit",) and changes == []
    assert book_of(log).policy("credit").preference[0] == "shadow"


def test_prune_removes_the_files_own_services_only(tmp_path):
    log = MemoryControl()
    a = write(tmp_path / "a", CREDIT.format(sla=100) + FRAUD.removeprefix("\nservices:\n"))
    submit(log, a)
    other = write(tmp_path / "b", FRAUD.replace("fraud", "loans"))
    submit(log, other)
    a.write_text(CREDIT.format(sla=100))
    plan, _ = submit(log, a, prune=True)
    assert plan.removed == ("fraud",)
    assert set(log.catalog().services) == {"credit", "loans"}
    book = book_of(log)
    assert book.enricher("fraud") is None and book.policy("fraud") is None
    assert book.enricher("loans") is not None


def test_a_removed_service_can_come_back_from_another_file(tmp_path):
    log = MemoryControl()
    submit(log, write(tmp_path / "a", FRAUD))
    control.remove(log, "fraud", **ISSUED)
    with pytest.raises(Exception, match="'fraud' is not defined on this cluster"):
        control.remove(log, "fraud", **ISSUED)
    plan, _ = submit(log, write(tmp_path / "b", FRAUD))
    assert [(d.service, d.version) for d in plan.publish] == [("fraud", 2)]
    assert log.catalog().get("fraud").source == str((tmp_path / "b" / "services.yaml").resolve())


def test_reading_the_log_again_from_any_offset_changes_nothing(tmp_path):
    """A restored enrich job reads every record, then its source replays some again."""
    log = MemoryControl()
    path = write(tmp_path / "a", CREDIT.format(sla=100))
    submit(log, path)
    path.write_text(CREDIT.format(sla=250))
    submit(log, path)
    entries = log.entries()
    for start in range(len(entries) + 1):
        book = book_of(log)
        for kind, record in entries[start:]:
            book.apply(kind, record)
        assert book.policy("credit").sla_ms == 250
        assert book.catalog.get("credit").version == 1


def test_a_definition_the_job_cannot_build_keeps_the_previous_one(tmp_path):
    log = MemoryControl()
    submit(log, write(tmp_path / "a", FRAUD))
    book = book_of(log)
    bad = {**log.catalog().get("fraud").to_record(), "version": 1}
    bad["definition"] = bad["definition"].replace('"sla_ms":50', '"sla_ms":"soon"')
    with pytest.raises(EnrichError, match="definition v1 .* cannot be applied"):
        book.apply(serde.Kind.SERVICE, bad)
    assert book.catalog.get("fraud").version == 0 and book.policy("fraud").sla_ms == 50


def test_an_undefined_service_gets_no_policy_in_the_job():
    assert ServiceBook().policy("nobody") is None
    assert NO_POLICY.version == -1


def test_a_lookup_table_too_large_to_travel_is_refused_naming_the_step(tmp_path):
    path = write(tmp_path / "a", CREDIT.format(sla=100))
    (path.parent / "data" / "regions.csv").write_text("region,country\n" + "x,y\n" * 70_000)
    with pytest.raises(ConfigError, match=r"services\.credit\.enrich\[0\]: lookup table .* bytes"):
        catalog.from_file(path)


def test_catalog_takes_only_higher_versions():
    held = Catalog()
    record = {"service": "s", "version": 3, "definition": None, "source": "f", "issued_ms": 1}
    assert held.apply(record) is not None
    assert held.apply({**record, "version": 2}) is None
    assert held.get("s") is None and held.services == {}


# ---- which jobs serve a service, and whether it answers --------------------------------


def test_service_status_from_the_jobs_that_run(tmp_path):
    spec = catalog.from_file(write(tmp_path / "a", CREDIT.format(sla=100)))["credit"].spec()
    pref = ("champ", "shadow", "backstop")
    scorers = {deploy.score_job_name("credit", m) for m in pref}
    shared = {deploy.ENRICH_JOB, deploy.JOIN_JOB}
    status = deploy.service_status(spec, pref, shared | scorers)
    assert (status.state, status.detail) == (
        "serving",
        "answers with champ (its first choice); 3/3 models scoring",
    )
    assert status.jobs[:2] == (deploy.ENRICH_JOB, deploy.JOIN_JOB) and len(status.jobs) == 5
    less = shared | scorers - {deploy.score_job_name("credit", "champ")}
    assert deploy.service_status(spec, pref, less).detail == (
        "answers with shadow; not scoring: champ"
    )
    assert deploy.service_status(spec, pref, scorers | {deploy.JOIN_JOB}).state == "down"
    assert deploy.service_status(spec, pref, shared).detail.startswith("no model of its")


def test_working_jobs_leave_out_a_job_with_tasks_not_running():
    overview = [
        {"name": "a", "state": "RUNNING", "tasks": {"total": 2, "running": 2}},
        {"name": "b", "state": "RUNNING", "tasks": {"total": 2, "running": 1}},
        {"name": "c", "state": "RESTARTING", "tasks": {"total": 2, "running": 2}},
    ]
    assert deploy.working_jobs(overview) == {"a"}


def test_service_of_a_job_name():
    assert deploy.service_of(deploy.score_job_name("credit", "champ")) == "credit"
    assert deploy.service_of(deploy.JOIN_JOB) is None


def test_cli_without_a_file_works_on_the_services_defined_on_the_cluster(
    tmp_path, monkeypatch, capsys
):
    from rendezvous import cli

    log = MemoryControl()
    submit(log, write(tmp_path / "b", FRAUD))
    monkeypatch.setenv("RDV_HOME", str(tmp_path / "state"))  # no demo file there
    monkeypatch.setattr(control, "KafkaControl", lambda kafka: log)
    assert cli.main(["models"]) == 0
    assert capsys.readouterr().out.startswith("fraud: SLA 50 ms, preference champ (v0)")
    assert cli.main(["promote", "fraud", "champ", "--sla-ms", "40"]) == 0
    assert book_of(log).policy("fraud").sla_ms == 40
