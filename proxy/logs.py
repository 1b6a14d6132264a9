"""Log set-up shared by the CLI, wsgi.py and tests: one line per record, to stderr."""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def setup_logging(debug: bool = False) -> None:
    """Idempotent: configures the root logger once; ``--detailed_debug`` turns on DEBUG."""
    level = logging.DEBUG if debug or os.environ.get("LITELLM_LOG", "").upper() == "DEBUG" else logging.INFO
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
    if os.environ.get("LLMRELAY_ACCESS_LOG", "1") == "0":
        logging.getLogger("llmrelay.access").setLevel(logging.WARNING)
