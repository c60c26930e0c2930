"""Rendezvous architecture for ML serving on Apache Flink, Apache Kafka and MLflow."""

from rendezvous import relocate as _relocate

__version__ = "0.1.0"

# The top-level packages of this project (shipped with every job: rendezvous.shipping).
PACKAGES = ("rendezvous", "jobs", "udfs", "schemas")

_relocate.install(PACKAGES)
