"""The reference of the comparisons: the first choice of the policy each request was decided
under, not the configuration's role ``champion`` (see rendezvous/archive/reference.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from rendezvous import cli
from rendezvous.archive import metrics, reference, report
from rendezvous.archive.report import Window
from tests.unit.archive_data import decision, promo_archive, score


@pytest.fixture
def promo(tmp_path) -> metrics.ServiceReport:
    root = promo_archive(tmp_path / "archive")
    scores, decisions = report.load(root, service=None, window=Window())
    requests = report.load_policies(root, service=None, window=Window())
    (promo,) = metrics.build_reports(scores, decisions, requests=requests)
    return promo


def row(r: metrics.ServiceReport, model: str) -> dict:
    (found,) = r.models[r.models["model"] == model].to_dict("records")
    return found


def test_agreement_is_with_the_first_choice_of_each_requests_policy(promo):
    # References: p1, p2 a (v0 requests rows); p3, p4 b (v1 rows); p5 b (its decision is v1,
    # whose first choice the v1 rows name); p7 a (scores only: the role champion).
    # b against a on p1, p2, p7: 1=1, 1!=0, 0!=1 -> 1/3. a against b on p3, p4, p5: 1=1,
    # 1!=0, 0=0 -> 2/3. (With the role champion everywhere, b would be 3/6 and a nothing.)
    b, a = row(promo, "b"), row(promo, "a")
    assert (b["compared"], b["agreement"]) == (3, pytest.approx(1 / 3))
    assert (a["compared"], a["agreement"]) == (3, pytest.approx(2 / 3))
    # deltas b - a on p1, p2, p7: (0.7-0.6), (0.7-0.5), (0.5-0.6) -> mean 0.2/3
    assert b["delta_mean"] == pytest.approx(0.2 / 3)
    assert promo.first_choices == ((0, "a", 2), (1, "b", 3), (None, "a", 1))
    assert any("1 request(s) without a policy record" in n for n in promo.notes)


def test_a_given_reference_holds_for_every_request(tmp_path):
    root = promo_archive(tmp_path)
    scores, decisions = report.load(root, service=None, window=Window())
    (r,) = [metrics.service_report("promo", scores, decisions, reference="b")]
    # a against b on all six: agree on p1, p3, p5 -> 1/2; b is never compared
    assert row(r, "a")["agreement"] == 0.5 and row(r, "a")["compared"] == 6
    assert pd.isna(row(r, "b")["agreement"]) and pd.isna(row(r, "b")["compared"])


def test_a_version_without_requests_rows_takes_its_preferred_decisions():
    # v2 has no requests rows: q2 answered by c as "preferred" names c its first choice, so
    # q1 (v2, a fallback) is compared with c too. q3 is an orphan (version -1): no reference.
    decisions = pd.DataFrame(
        [
            decision("q1", "d", "fallback: c late", policy_version=2),
            decision("q2", "c", "preferred", policy_version=2),
            decision(
                "q3", None, "orphan: scores arrived but the request never did", policy_version=-1
            ),
        ]
    )
    scores = pd.DataFrame([score("q4", "e", "champion", "1", 5)])
    got = reference.first_choices(scores, decisions, None)
    assert got.set_index("request_id")[["reference", "source"]].to_dict("index") == {
        "q1": {"reference": "c", "source": reference.FROM_VERSION},
        "q2": {"reference": "c", "source": reference.FROM_VERSION},
        "q4": {"reference": "e", "source": reference.FROM_ROLE},
    }


def test_a_promoted_canary_drifts_only_where_it_was_not_the_first_choice(tmp_path):
    # b as the canary: it was the first choice of p3, p4, p5, so its drift reads p1, p2, p7;
    # the reference values are a's on p1, p2, p7 and b's on p3, p4, p5.
    root = promo_archive(tmp_path, b_role="canary")
    scores, decisions = report.load(root, service=None, window=Window())
    requests = report.load_policies(root, service=None, window=Window())
    (r,) = metrics.build_reports(scores, decisions, requests=requests)
    (drift,) = r.drift
    assert (drift.canary, drift.champion_n, drift.canary_n) == ("b", 6, 3)


def test_first_of():
    assert reference.first_of("b, a") == "b"
    assert reference.first_of("") is None and reference.first_of(None) is None


def test_the_report_names_the_first_choice_per_policy(tmp_path, capsys):
    root = promo_archive(tmp_path)
    assert cli.main(["report", "--archive", str(root)]) == 0
    out = capsys.readouterr().out
    assert (
        "promo: 6 requests, 5 decisions, compared with a (first choice of policy v0, 2 "
        "requests), b (first choice of policy v1, 3 requests), a (role champion, 1 requests)"
    ) in out
    b = next(x for x in out.splitlines() if x.strip().startswith("b "))
    assert "33.3%" in b
