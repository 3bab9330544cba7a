"""Logs, metrics and the health endpoint of the worker."""
