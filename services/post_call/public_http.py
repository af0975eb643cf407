"""HTTP to addresses on the public internet only, for requests whose target a business chose.

The check runs where the socket is opened: the name is resolved once, every address it
resolves to must be public, and the socket goes to one of those checked addresses. A name
that resolves to a public address when the URL is saved and to 127.0.0.1 when the event is
sent (DNS rebinding) is caught then. TLS still verifies the certificate for the name and
sends it as SNI, and the Host header stays the name: only the socket's address is pinned.
"""
from __future__ import annotations

import ipaddress
import socket

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 ranges that carry an IPv4 address a gateway may deliver to: NAT64 and 6to4.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class AddressRefused(OSError):
    """The target resolves to an address that is not on the public internet."""


def why_not_public(address: str | IPAddress) -> str | None:
    """None for a public unicast address; else what it is, e.g. "loopback"."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            reason = why_not_public(embedded)
            return f"{reason} (IPv4 {embedded} inside IPv6)" if reason else None
        if ip in _NAT64_LOCAL:
            return "private"
        if ip.teredo is not None:
            return "tunnelled (Teredo)"
        if ip.is_site_local:
            return "private"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        # 169.254.169.254 and fe80::: the cloud metadata service answers there.
        return "link-local (cloud metadata)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def resolve_public(host: str, port: int) -> list[tuple]:
    """getaddrinfo's answers for host:port, refused whole if any address is not public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AddressRefused(f"{host} does not resolve: {exc}") from None
    for info in infos:
        reason = why_not_public(info[4][0].split("%", 1)[0])
        if reason:
            raise AddressRefused(f"{host} resolves to {info[4][0]}, a {reason} address, not a public one")
    return infos


def _connect(conn: HTTPConnection, allow_private: bool) -> socket.socket:
    """The socket for urllib3's connection `conn`, to a checked address."""
    if allow_private:
        infos = socket.getaddrinfo(conn._dns_host, conn.port, type=socket.SOCK_STREAM)
    else:
        try:
            infos = resolve_public(conn._dns_host, conn.port)
        except AddressRefused as exc:
            raise NewConnectionError(conn, str(exc)) from exc
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            if conn.timeout is not None:
                sock.settimeout(conn.timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}")


def _pools(allow_private: bool) -> dict[str, type[HTTPConnectionPool]]:
    class Plain(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _connect(self, allow_private)

    class Tls(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _connect(self, allow_private)

    class PlainPool(HTTPConnectionPool):
        ConnectionCls = Plain

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = Tls

    return {"http": PlainPool, "https": TlsPool}


class PublicOnlyAdapter(HTTPAdapter):
    """A requests transport whose every new socket goes through the check above."""

    def __init__(self, allow_private: bool = False):
        self._allow_private = allow_private
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pools(self._allow_private)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # Through a proxy the socket would go to the proxy, not to the checked address.
        raise AddressRefused("proxies are not used for business webhooks")


def public_session(allow_private: bool = False) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: the check is on the real target
    adapter = PublicOnlyAdapter(allow_private)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
