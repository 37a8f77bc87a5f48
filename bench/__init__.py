"""voicegate's benchmarks: ratios against baselines measured in the same run.

Run them with `python -m bench` (or `bench/run`); see `bench/README.md`. Never part of pytest.
"""
