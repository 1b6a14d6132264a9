"""The client's address behind a reverse proxy, believed only when a trusted proxy says so.

gunicorn's ``forwarded_allow_ips`` (``FORWARDED_ALLOW_IPS``, default ``127.0.0.1``) names the
proxies trusted to set ``X-Forwarded-For``. A request whose peer is one of them gets as its
client the right-most address in ``X-Forwarded-For`` that is not itself a trusted proxy (nginx's
``$proxy_add_x_forwarded_for`` appends the address it saw, so anything a client wrote in the
header itself stays to the left and is ignored). From any other peer the header is ignored.

The WSGI wrapper sets ``REMOTE_ADDR`` to that client, as werkzeug's ProxyFix does, and keeps
the peer in ``llmrelay.peer``; the access log and the spend record read ``REMOTE_ADDR``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(setting: str | None = None) -> list[Network] | None:
    """Parsed ``forwarded_allow_ips``: None means every peer (``*``)."""
    text = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1") if setting is None else setting
    items = [s.strip() for s in text.split(",") if s.strip()]
    if "*" in items:
        return None
    out: list[Network] = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue  # gunicorn also accepts names it cannot match; they trust nothing here
    return out


def is_trusted(address: str, networks: list[Network] | None) -> bool:
    if networks is None:
        return True
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str, forwarded_for: str | None, networks: list[Network] | None) -> str:
    """The client: ``peer`` unless a trusted peer forwarded the request for someone else."""
    if not forwarded_for or not is_trusted(peer, networks):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, networks):
            return hop
    return hops[0] if hops else peer


class ForwardedFor:
    """WSGI middleware: ``REMOTE_ADDR`` becomes the client's address (see the module docstring)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], setting: str | None = None) -> None:
        self.app = app
        self.networks = trusted_networks(setting)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        peer = environ.get("REMOTE_ADDR") or ""
        environ["llmrelay.peer"] = peer
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded:
            environ["REMOTE_ADDR"] = client_address(peer, forwarded, self.networks)
        return self.app(environ, start_response)
