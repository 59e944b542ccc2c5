"""Banzai peer: a brokerless worker mesh for data and ML pipelines."""

__version__ = "0.1.0"
