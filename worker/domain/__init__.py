"""Pure domain layer: no I/O, no framework imports."""
