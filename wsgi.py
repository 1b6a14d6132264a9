"""WSGI entry point: ``gunicorn -c conf/gunicorn.conf.py wsgi:app``.

The config comes from CONFIG_FILE_PATH, else conf/config.yaml.
"""

from proxy.app import create_app
from proxy.logs import setup_logging

setup_logging()
app = create_app()
