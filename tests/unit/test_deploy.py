"""Which jobs a configuration plans, and where a scoring job added to a live system starts."""

from __future__ import annotations

from rendezvous import deploy
from rendezvous.settings import StackSettings

CONFIG = """
services:
  credit:
    sla_ms: 200
    models:
      - {name: champ, role: champion, callable: "udfs.zoo:constant"}
      - {name: shadow, role: challenger, callable: "udfs.zoo:constant"}
      - {name: backstop, role: backstop, callable: "udfs.zoo:constant"}
    input:
      x: double
"""


def start_of(job: deploy.JobPlan) -> str:
    return job.args[job.args.index("--start") + 1]


def test_plan_has_the_shared_jobs_and_one_scorer_per_model(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(CONFIG)
    jobs = deploy.plan(StackSettings(home=tmp_path), path)
    assert [j.name for j in jobs] == [
        "rendezvous-enrich",
        "rendezvous-join",
        "rendezvous-archive",
        "rendezvous-score credit/champ",
        "rendezvous-score credit/shadow",
        "rendezvous-score credit/backstop",
    ]
    assert {start_of(j) for j in jobs} == {"committed"}
    scorer = jobs[-1]
    assert scorer.args[scorer.args.index("--model") + 1] == "backstop"


def test_a_scorer_joining_a_live_system_starts_live_and_nothing_else_changes(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(CONFIG)
    jobs = deploy.plan(StackSettings(home=tmp_path), path)
    joined = [deploy.joining_live(j) for j in jobs]
    for before, after in zip(jobs, joined, strict=True):
        if before.name.startswith(deploy.SCORE_JOB_PREFIX):
            assert start_of(after) == "live"
            assert [a for a in after.args if a != "live"] == [
                a for a in before.args if a != "committed"
            ]
        else:
            assert after == before


def test_jobs_get_the_kafka_properties_file_by_path_never_its_secrets(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(CONFIG)
    assert not any(
        "--kafka-properties" in j.args for j in deploy.plan(StackSettings(home=tmp_path), path)
    )
    props = tmp_path / "client.properties"
    props.write_text(
        "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.username=u\nsasl.password=hunter2\n"
    )
    settings = StackSettings(home=tmp_path, kafka_bootstrap="b:9093", kafka_properties=props)
    for job in deploy.plan(settings, path):
        assert job.args[job.args.index("--kafka-properties") + 1] == str(props.resolve())
        assert job.args[job.args.index("--bootstrap") + 1] == "b:9093"
        assert not any("hunter2" in a for a in job.args)
