"""The Realtime API's addresses, looked up once per process and refreshed in the background.

gevent resolves names in a small thread pool shared by everything in the process. A call whose
Realtime connect looks its host up waits behind every other lookup in that pool: in the outside
benchmark, recording starts whose lookups of api.twilio.com hung held every call's Realtime
connect for seconds. The connect takes its address from here instead; only the process's first
connect to a host (or the first after its address failed) waits for a lookup, and a numeric host
needs none.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent

log = logging.getLogger("realtime")

Address = tuple[int, tuple]  # (family, sockaddr), ready for socket.socket(family).connect(sockaddr)
# How long a looked-up address is used before a background lookup refreshes it (it is still used
# meanwhile, and after a failed refresh).
REFRESH_AFTER_S = 300.0


@dataclass
class _Entry:
    addresses: list[Address]
    looked_up_at: float
    refreshing: bool = False


class AddressCache:
    def __init__(self, lookup: Callable[..., list] = socket.getaddrinfo, clock: Callable[[], float] = time.monotonic,
                 refresh_after_s: float = REFRESH_AFTER_S):
        self._lookup = lookup
        self._clock = clock
        self._refresh_after_s = refresh_after_s
        # Guards `_entries` and each entry's `refreshing`; any greenlet may read or write (a
        # connect, a background refresh). Never held across a lookup.
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], _Entry] = {}

    def address(self, host: str, port: int) -> Address:
        """An address of `host`; raises OSError (socket.gaierror) when it cannot be looked up."""
        numeric = _numeric(host, port)
        if numeric is not None:
            return numeric
        key = (host, port)
        with self._lock:
            entry = self._entries.get(key)
            refresh = (entry is not None and not entry.refreshing
                       and self._clock() - entry.looked_up_at >= self._refresh_after_s)
            if refresh:
                entry.refreshing = True
        if entry is None:
            return self._look_up(key)[0]
        if refresh:
            gevent.spawn(self._refresh, key)
        return entry.addresses[0]

    def forget(self, host: str, port: int) -> None:
        with self._lock:
            self._entries.pop((host, port), None)

    def _look_up(self, key: tuple[str, int]) -> list[Address]:
        found = self._lookup(key[0], key[1], type=socket.SOCK_STREAM)
        addresses = [(family, sockaddr) for family, _, _, _, sockaddr in found]
        if not addresses:
            raise socket.gaierror(f"no address for {key[0]}")
        with self._lock:
            self._entries[key] = _Entry(addresses, self._clock())
        return addresses

    def _refresh(self, key: tuple[str, int]) -> None:
        try:
            self._look_up(key)
        except OSError as exc:
            log.warning("Realtime host lookup failed: the last address stays in use",
                        extra={"host": key[0], "error": str(exc)})
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.refreshing = False
                    entry.looked_up_at = self._clock()  # try again after another period, not at every connect


def _numeric(host: str, port: int) -> Address | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        return socket.AF_INET6, (host, port, 0, 0)
    return socket.AF_INET, (host, port)


def connect_tcp(address: Address, timeout_s: float) -> socket.socket:
    """A TCP connection to an address from the cache; the address being numeric, gevent's socket
    connects without asking the resolver again."""
    family, sockaddr = address
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect(sockaddr)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        sock.close()
        raise
    return sock


ADDRESSES = AddressCache()  # the process's one cache: every call's connects share it
