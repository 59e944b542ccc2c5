"""Banzai task library: one module per task family."""
