"""schemathesis against the proxy's own ``/openapi.json``, on demand (not part of the test suite).

    pip install '.[fuzz]'
    python -m tests.fuzz.schemathesis_run                         # 25 fuzzed cases per operation
    python -m tests.fuzz.schemathesis_run --max-examples 250      # the long run (10,000+ cases)
    python -m tests.fuzz.schemathesis_run --max-time 900          # keep fuzzing for 15 minutes

It starts a real proxy (the installed build, tests/servers.py) whose models are all answered by
the built-in mock provider (``demo`` and a ``*`` wildcard, so any model name is served) behind a
master key, and runs ``schemathesis run`` with that key against every documented operation: the
examples, coverage, fuzzing and stateful phases. Nothing answers as an upstream, so every 5xx is
the proxy's own. Checks: no 5xx (``not_a_server_error``), answers conform to the documented
schema and content type where the document has one, no traceback in a body and every error in
its surface's shape (tests/fuzz/hooks.py). After the run the proxy must still be alive and its
log free of tracebacks. The last line is the summary; the exit status is 0 only when all held.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from tests.servers import ProxyProcess

ROOT = Path(__file__).resolve().parents[2]
MASTER = "sk-schemathesis"
CHECKS = ("not_a_server_error", "response_schema_conformance", "content_type_conformance",
          "no_traceback", "errors_in_their_shape")
CONFIG: dict[str, Any] = {
    "model_list": [
        {"model_name": "demo", "litellm_params": {"model": "openai/demo", "mock_response": "hello there"}},
        {"model_name": "*", "litellm_params": {"model": "openai/*", "mock_response": "hi"}},
    ],
    "general_settings": {"master_key": MASTER, "max_request_size_mb": 1},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.schemathesis_run", description=__doc__.split("\n")[0])
    parser.add_argument("--max-examples", type=int, default=25, help="fuzzed cases per operation (default 25)")
    parser.add_argument("--max-time", type=int, help="fuzz until this many seconds are spent (repeats the phases)")
    parser.add_argument("--timeout", type=float, default=3600, help="stop the run after this many seconds")
    parser.add_argument("--seed", type=int, help="schemathesis' seed, to replay a run")
    parser.add_argument("--workers", default="2", help="concurrent schemathesis workers (default 2)")
    parser.add_argument("--proxy-workers", type=int, default=1, help="gunicorn workers of the proxy (default 1)")
    parser.add_argument("--report-dir", type=Path, help="keep schemathesis' reports here (default: a temp folder)")
    return parser.parse_args(argv)


def schemathesis_command(args: argparse.Namespace, url: str, report: Path) -> list[str]:
    cmd = [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()", "run",
           f"{url}/openapi.json", "--header", f"Authorization: Bearer {MASTER}", "--checks", ",".join(CHECKS),
           "--max-examples", str(args.max_examples), "--workers", str(args.workers), "--request-timeout", "30",
           "--report", "json,junit", "--report-json-path", str(report / "report.json"),
           "--report-junit-path", str(report / "junit.xml"), "--no-color"]
    if args.max_time:
        cmd += ["--max-time", str(args.max_time)]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    return cmd


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import schemathesis
    except ImportError:
        sys.exit("schemathesis is not installed: pip install '.[fuzz]'")
    report = args.report_dir or Path(tempfile.mkdtemp(prefix="llmrelay-schemathesis-"))
    report.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.monotonic()
    with ProxyProcess(CONFIG, workers=args.proxy_workers) as proxy:
        try:
            done = subprocess.run(schemathesis_command(args, proxy.url, report), cwd=report, env=env,
                                  timeout=args.timeout, check=False)
            code: int | str = done.returncode
        except subprocess.TimeoutExpired:
            code = f"stopped after {args.timeout:.0f} s"
        alive = requests.get(f"{proxy.url}/health/liveliness", timeout=10).status_code == 200
        log = proxy.log()
    tracebacks = log.count("Traceback (most recent call last)")
    if tracebacks:
        print(log[log.index("Traceback (most recent call last)"):][:3000], file=sys.stderr)
    result = json.loads((report / "report.json").read_text()) if (report / "report.json").exists() else {}
    cases = result.get("test_cases", {})
    ops = result.get("operations", {})
    failures = sum(f.get("count", 1) for f in result.get("failures", []))
    errors = sum(e.get("count", 1) for e in result.get("errors", []))
    ok = code == 0 and alive and not tracebacks
    print(f"schemathesis {schemathesis.__version__}: {cases.get('generated', 0)} cases on "
          f"{ops.get('tested', 0)}/{ops.get('total', 0)} operations in {time.monotonic() - start:.0f} s, "
          f"{failures} failures, {errors} errors, {tracebacks} tracebacks in the proxy log, proxy "
          f"{'alive' if alive else 'DOWN'}, seed {result.get('seed')}, exit {code} -> "
          f"{'OK' if ok else 'FAILED'} (reports in {report})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
