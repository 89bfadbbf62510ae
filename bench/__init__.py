"""The gateway's benchmark harness (issue 5): `make bench`, `make bench-smoke`; see `bench/run.py`."""
