"""Counting servers on loopback addresses, run in a thread of the test process.

Accepting and receiving raise no audit events, so these servers keep working
while a test has a strict guard installed in the same process.
"""

from __future__ import annotations

import socket
import threading
import time


class CountingTCPServer:
    """Accepts and closes connections on (host, port), counting them."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, family: int = socket.AF_INET) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.sock.settimeout(0.05)
        self.host, self.port = self.sock.getsockname()[:2]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def settle(self, expected: int | None = None, timeout: float = 2.0) -> int:
        """The count once pending connections are accepted (or when `expected` is reached)."""
        deadline = time.monotonic() + timeout
        last, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if expected is not None and self.accepted >= expected:
                break
            if self.accepted != last:
                last, stable_since = self.accepted, time.monotonic()
            elif expected is None and time.monotonic() - stable_since > 0.15:
                break
            time.sleep(0.01)
        return self.accepted

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> CountingTCPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CountingUDPServer:
    """Receives datagrams on (host, port), counting them."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, family: int = socket.AF_INET) -> None:
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.05)
        self.host, self.port = self.sock.getsockname()[:2]
        self.datagrams = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            self.datagrams += 1

    def settle(self, expected: int | None = None, timeout: float = 2.0) -> int:
        deadline = time.monotonic() + (timeout if expected else 0.3)
        while time.monotonic() < deadline and (expected is None or self.datagrams < expected):
            time.sleep(0.01)
        return self.datagrams

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> CountingUDPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
