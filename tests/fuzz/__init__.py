"""On-demand fuzzing runs that are not part of the test suite (pytest.ini skips this folder)."""
