"""The benchmark is run on demand (python -m tests.bench.run), never by pytest."""

collect_ignore_glob = ["*"]
