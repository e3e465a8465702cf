"""Counting servers on loopback addresses, run in a thread of the test process.

Accepting and receiving raise no audit events, so these servers keep working
while a test has a strict guard installed in the same process.
"""

from __future__ import annotations

import socket
import threading
import time


class _CountingServer:
    kind = socket.SOCK_STREAM

    def __init__(self, host: str = "127.0.0.1", port: int = 0, family: int = socket.AF_INET) -> None:
        self.sock = socket.socket(family, self.kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.settimeout(0.05)
        self.host, self.port = self.sock.getsockname()[:2]
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self._receive_one()
            except (TimeoutError, OSError):
                continue
            self.count += 1

    def _receive_one(self) -> None:
        raise NotImplementedError

    def settle(self, expected: int | None = None, timeout: float = 2.0) -> int:
        """The count once pending traffic is handled: waits for `expected`, or
        until the count has been stable for a moment."""
        deadline = time.monotonic() + timeout
        last, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if expected is not None and self.count >= expected:
                break
            if self.count != last:
                last, stable_since = self.count, time.monotonic()
            elif expected is None and time.monotonic() - stable_since > 0.15:
                break
            time.sleep(0.01)
        return self.count

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CountingTCPServer(_CountingServer):
    """Accepts and closes connections on (host, port), counting them."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, family: int = socket.AF_INET) -> None:
        super().__init__(host, port, family)
        self.sock.listen(128)
        self._thread.start()

    def _receive_one(self) -> None:
        conn, _ = self.sock.accept()
        conn.close()

    @property
    def accepted(self) -> int:
        return self.count


class CountingUDPServer(_CountingServer):
    """Receives datagrams on (host, port), counting them."""

    kind = socket.SOCK_DGRAM

    def __init__(self, host: str = "127.0.0.1", port: int = 0, family: int = socket.AF_INET) -> None:
        super().__init__(host, port, family)
        self._thread.start()

    def _receive_one(self) -> None:
        self.sock.recvfrom(65535)

    @property
    def datagrams(self) -> int:
        return self.count
