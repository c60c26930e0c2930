"""Plain Python functions usable as models: ``callable: "udfs.<module>:<function>"``.

A scoring job loads one of these the way it loads an MLflow model and calls it once per
request with the request's features (and the model's ``params``). :mod:`udfs.rules` holds
business rules (the demo's backstop); :mod:`udfs.zoo` holds test models named by their
behaviour (slow, failing, flaky, ...).

This folder is not where the functions Flink runs live: the Flink operators are in ``jobs/``
(one module per job), and the logic they call — enrichment, scoring, the rendezvous join — is
in pure modules of ``rendezvous/`` (``enrich.py``, ``scoring.py``, ``core.py``, ``batch.py``)
that never import PyFlink and are tested without it.
"""
