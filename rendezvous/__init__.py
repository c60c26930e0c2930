"""Rendezvous architecture for ML serving on Apache Flink, Apache Kafka and MLflow."""

__version__ = "0.1.0"
