"""icefeed's load and benchmark harness: ``python -m load run`` (see load/README.md)."""
