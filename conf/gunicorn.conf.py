"""gunicorn settings for llmrelay: ``gunicorn -c conf/gunicorn.conf.py wsgi:app``.

The serving defaults live in the package (proxy/serving.py): gevent workers, in-place reload on
SIGHUP, drain on SIGTERM, timeouts, keep-alive, no control socket. Reuse them like this in your
own gunicorn file and override what you need below.
"""

import os

from proxy.serving import settings

globals().update(settings())

# This example serves the config beside it unless CONFIG_FILE_PATH says otherwise.
os.environ.setdefault("CONFIG_FILE_PATH", os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.yaml"))
