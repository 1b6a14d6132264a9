"""WSGI entry point: ``gunicorn -c conf/gunicorn.conf.py wsgi:app``.

Under gunicorn with llmrelay's settings the master validates the config (``CONFIG_FILE_PATH``)
and each worker starts from that validated snapshot; elsewhere the file is loaded here.
"""

from proxy.app import create_app
from proxy.logs import setup_logging

setup_logging()
app = create_app()
