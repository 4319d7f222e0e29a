"""What the two servers (``activelab serve`` and ``activelab label-studio-backend``) check before they listen.

Both bind to 127.0.0.1 by default and warn when told to listen elsewhere, refuse a port they cannot bind
with one sentence instead of uvicorn's log, and print the address a person should open.
"""

from __future__ import annotations

import ipaddress
import socket

from activelab.errors import ConfigError


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_url(host: str, port: int, path: str = "") -> str:
    """``http://host:port/path``, with an IPv6 address in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}"


def check_port_free(host: str, port: int) -> None:
    """Refuse, with one sentence, a port outside 1-65535 or one that cannot be bound on ``host`` now."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a TCP port (1-65535).")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port or "
                              "--host.") from None
