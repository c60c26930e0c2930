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
