"""The client-library compatibility suite (`scripts/compat`); see `compat/__main__.py`."""
