"""Listener addresses as fluxd's flags take them, and where a listener ended up bound."""

from __future__ import annotations

from dataclasses import dataclass


def parse_address(address: str) -> tuple[str | None, int]:
    """``host:port`` as Go's listeners take it: ``:8080`` (all interfaces), ``[::1]:0``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host or None), int(port)


@dataclass(frozen=True)
class Listener:
    """A running HTTP listener: where it is bound (port 0 resolved)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
