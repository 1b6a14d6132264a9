"""``llmrelay`` / ``python -m proxy``: patch with gevent before anything imports ssl or sockets.

The workers are forked from this process; patching after ``ssl`` was imported leaves SSL
contexts broken (RecursionError on the first HTTPS call), so this module imports nothing else
until the patch is done.
"""

from gevent import monkey

monkey.patch_all()


def main() -> None:
    from proxy.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
