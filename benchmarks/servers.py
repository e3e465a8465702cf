"""Local HTTP servers for the HTTP scenarios, run unguarded in their own process.

    python -m benchmarks.servers threaded|asyncio HOST

Prints the port on stdout, then serves until stdin closes. ``threaded``: http.server's ThreadingHTTPServer
(HTTP/1.0, one connection per request). ``asyncio``: a minimal HTTP/1.1 responder on asyncio streams with a deep
accept backlog, for 1,000 concurrent connections. Both answer every request with a 2-byte body.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"ok"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n" + BODY


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    request_queue_size = 4096
    daemon_threads = True


def _wait_for_stdin_eof() -> None:
    sys.stdin.read()


def threaded(host: str) -> None:
    server = _Server((host, 0), _Handler)
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _wait_for_stdin_eof()
    server.shutdown()


async def _serve(host: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _wait_for_stdin_eof)
    server.close()


def main() -> None:
    kind, host = sys.argv[1], sys.argv[2]
    if kind == "threaded":
        threaded(host)
    elif kind == "asyncio":
        asyncio.run(_serve(host))
    else:
        raise SystemExit(f"unknown server kind {kind!r}: threaded or asyncio")


if __name__ == "__main__":
    main()
