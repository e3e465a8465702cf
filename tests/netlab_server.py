"""The netlab server process: a DNS server and counting TCP/UDP servers, driven by JSON lines on stdin/stdout.

It runs unguarded (``SOCKGUARD_MODE=off``) inside the test network namespace, started by ``netlab.Lab``. The
control channel is a pipe, never a socket, so a guard installed in the pytest process cannot cut it.

One thread, one selector. Before every command the server drains every socket (accepts, reads, answers whatever
the kernel has queued), so a count read right after a client call includes that call: no sleeps, no races.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import selectors
import socket
import sys
from collections.abc import Callable
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

DNS_ADDRESS = "127.0.0.53"
BLACKHOLE_ADDRESS = "127.0.0.54"
MAX_CNAME_CHAIN = 16
MAX_REQUEST = 1 << 20  # an HTTP request larger than this is cut off
MAX_PAYLOADS = 1000  # datagram payloads kept per UDP server

Handler = Callable[[], None]


class CommandError(Exception):
    """A bad command from the test: reported back as {"error": ...}."""


def normalize(name: Any) -> str:
    if not isinstance(name, str) or not name.strip(".").strip():
        raise CommandError(f"bad DNS name {name!r}: expected a non-empty string like 'api.partner.test'")
    return name.strip().rstrip(".").lower()


def parse_address(host: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except (ValueError, TypeError):
        raise CommandError(f"bad address {host!r}: netlab servers listen on IP addresses, not names")


# --- DNS -------------------------------------------------------------------


class Zone:
    """name -> {"ttl": int, "A": [...], "AAAA": [...], "CNAME": target or None}."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.log: list[list[str]] = []  # [qname, qtype, transport, server]

    def set(self, name: Any, a: list[str], aaaa: list[str], ttl: Any) -> None:
        for value in a:
            if not isinstance(parse_address(value), ipaddress.IPv4Address):
                raise CommandError(f"A record for {name!r}: {value!r} is not an IPv4 address")
        for value in aaaa:
            if not isinstance(parse_address(value), ipaddress.IPv6Address):
                raise CommandError(f"AAAA record for {name!r}: {value!r} is not an IPv6 address")
        self.records[normalize(name)] = {"ttl": check_ttl(ttl), "A": list(a), "AAAA": list(aaaa), "CNAME": None}

    def cname(self, name: Any, target: Any, ttl: Any) -> None:
        if normalize(name) == normalize(target):
            raise CommandError(f"CNAME {name!r} points at itself")
        self.records[normalize(name)] = {"ttl": check_ttl(ttl), "A": [], "AAAA": [], "CNAME": normalize(target)}

    def lookup(self, name: str) -> dict[str, Any] | None:
        """The record for ``name``, else the closest wildcard ("*.cdn.test" covers "a.b.cdn.test")."""
        record = self.records.get(name)
        labels = name.split(".")
        for i in range(1, len(labels)):
            if record is not None:
                break
            record = self.records.get("*." + ".".join(labels[i:]))
        return record

    def answer(self, wire: bytes, transport: str, server: str) -> bytes | None:
        """Log the query; return the response (None for garbage or when ``server`` never answers)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            self.log.append(["", "", transport, server])
            return None
        if not query.question:
            self.log.append(["", "", transport, server])
            return None
        question = query.question[0]
        qname = question.name.to_text(omit_final_dot=True).lower()
        self.log.append([qname, dns.rdatatype.to_text(question.rdtype), transport, server])
        if server != "main":
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        owner, current = question.name, qname
        for _ in range(MAX_CNAME_CHAIN):
            record = self.lookup(current)
            if record is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                break
            if record["CNAME"] and question.rdtype != dns.rdatatype.CNAME:
                response.answer.append(dns.rrset.from_text(owner, record["ttl"], "IN", "CNAME", record["CNAME"] + "."))
                owner, current = dns.name.from_text(record["CNAME"]), record["CNAME"]
                continue
            rdtype = dns.rdatatype.to_text(question.rdtype)
            values = [record["CNAME"] + "."] if rdtype == "CNAME" and record["CNAME"] else record.get(rdtype) or []
            if values:
                response.answer.append(dns.rrset.from_text(owner, record["ttl"], "IN", rdtype, *values))
            break
        else:
            response.set_rcode(dns.rcode.SERVFAIL)  # a CNAME loop
        return response.to_wire()


def check_ttl(ttl: Any) -> int:
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= 2**31 - 1:
        raise CommandError(f"bad TTL {ttl!r}: expected an integer number of seconds >= 0")
    return ttl


# --- sockets ---------------------------------------------------------------


def bind(host: str, port: Any, kind: int) -> socket.socket:
    address = parse_address(host)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise CommandError(f"bad port {port!r}: expected an integer 0-65535 (0 picks a free one)")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((str(address), port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
    except OSError as exc:
        sock.close()
        raise CommandError(f"cannot listen on {host} port {port}: {exc}")
    sock.setblocking(False)
    return sock


class Loop:
    """The selector plus every open socket, each registered with its handler."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()

    def add(self, sock: socket.socket, handler: Handler) -> None:
        self.selector.register(sock, selectors.EVENT_READ, handler)

    def drop(self, sock: socket.socket) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def drain(self) -> None:
        """Handle everything that is ready now, until nothing is (bounded, in case a client floods us)."""
        for _ in range(1000):
            ready = [key for key, _ in self.selector.select(0) if key.data is not None]
            if not ready:
                return
            for key in ready:
                key.data()


class TcpServer:
    """Counts accepted connections. Modes: plain (read and discard), http (one response, then close), close.
    ``keepalive`` (http): answer every request on a connection and keep it open; ``routes``: per-path
    {"status", "body", "headers"} overriding the server's own (the path without its query string)."""

    def __init__(self, loop: Loop, sock: socket.socket, config: dict[str, Any]) -> None:
        self.loop, self.sock = loop, sock
        self.accepted = 0
        self.requests: list[dict[str, Any]] = []
        self.received = 0
        self.conns: set[socket.socket] = set()
        self.configure(config)
        loop.add(sock, self.on_accept)

    def configure(self, config: dict[str, Any]) -> None:
        self.http = bool(config.get("http"))
        self.close_at_once = bool(config.get("close"))
        self.status = int(config.get("status") or 200)
        self.body = str(config.get("body") or "").encode()
        self.headers = dict(config.get("headers") or {})
        self.keepalive = bool(config.get("keepalive"))
        self.routes = dict(config.get("routes") or {})
        for status in [self.status] + [int(r.get("status") or 200) for r in self.routes.values()]:
            if not 100 <= status <= 599:
                raise CommandError(f"bad HTTP status {status}")

    def on_accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.accepted += 1
            if self.close_at_once:
                conn.close()
                continue
            conn.setblocking(False)
            self.conns.add(conn)
            self.loop.add(conn, functools.partial(self.on_data, conn, bytearray()))

    def on_data(self, conn: socket.socket, buffer: bytearray) -> None:
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.finish(conn)
            return
        self.received += len(data)
        if not self.http:
            return
        buffer += data
        while True:
            request = parse_http(buffer)
            if request is None and len(buffer) < MAX_REQUEST:
                return
            size = request.pop("size") if request is not None else len(buffer)
            del buffer[:size]
            self.requests.append(request or {"method": "", "path": "", "headers": {}, "body": ""})
            if not self.keepalive or request is None or request["headers"].get("connection", "").lower() == "close":
                self.respond(conn, request, close=True)
                return
            if not self.respond(conn, request, close=False):
                return

    def respond(self, conn: socket.socket, request: dict[str, Any] | None, *, close: bool) -> bool:
        """Answer one request; ``close``: then shut the connection. False if the connection is gone."""
        route = self.routes.get(((request or {}).get("path") or "").partition("?")[0]) or {}
        status = int(route.get("status") or self.status)
        body = str(route["body"]).encode() if "body" in route else self.body
        reason = {200: "OK", 204: "No Content", 301: "Moved Permanently", 302: "Found", 404: "Not Found"}
        lines = [f"HTTP/1.1 {status} {reason.get(status, 'Status')}"]
        headers = {"Content-Type": "text/plain", "Content-Length": str(len(body))}
        headers["Connection"] = "close" if close else "keep-alive"
        headers.update(self.headers)
        headers.update(route.get("headers") or {})
        lines += [f"{key}: {value}" for key, value in headers.items()]
        try:
            conn.setblocking(True)
            conn.settimeout(5)
            conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            if close:
                conn.shutdown(socket.SHUT_WR)
            else:
                conn.setblocking(False)
                return True
        except OSError:
            pass
        self.finish(conn)
        return False

    def finish(self, conn: socket.socket) -> None:
        self.conns.discard(conn)
        self.loop.drop(conn)

    def close(self) -> None:
        for conn in list(self.conns):
            self.finish(conn)
        self.loop.drop(self.sock)

    def stats(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "requests": self.requests, "received": self.received}


def parse_http(buffer: bytearray) -> dict[str, Any] | None:
    """The request once complete (headers, plus a Content-Length body; "size": its bytes), else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if len(buffer) < end + 4 + length:
        return None
    method, _, rest = head[0].partition(" ")
    path = rest.rpartition(" ")[0] or rest
    body = bytes(buffer[end + 4 : end + 4 + length]).decode("latin-1")
    return {"method": method, "path": path, "headers": headers, "body": body, "size": end + 4 + length}


class UdpServer:
    """Counts datagrams; optionally echoes them."""

    def __init__(self, loop: Loop, sock: socket.socket, config: dict[str, Any]) -> None:
        self.loop, self.sock = loop, sock
        self.datagrams = 0
        self.payloads: list[str] = []
        self.configure(config)
        loop.add(sock, self.on_datagram)

    def configure(self, config: dict[str, Any]) -> None:
        self.echo = bool(config.get("echo"))

    def on_datagram(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.datagrams += 1
            if len(self.payloads) < MAX_PAYLOADS:
                self.payloads.append(data.decode("latin-1"))
            if self.echo:
                try:
                    self.sock.sendto(data, peer)
                except OSError:
                    pass

    def close(self) -> None:
        self.loop.drop(self.sock)

    def stats(self) -> dict[str, Any]:
        return {"datagrams": self.datagrams, "payloads": self.payloads}


class DnsServer:
    """UDP and TCP on one address; ``server`` names it in the query log ("main" answers, others stay silent)."""

    def __init__(self, loop: Loop, zone: Zone, address: str, server: str) -> None:
        self.loop, self.zone, self.server = loop, zone, server
        self.udp = bind(address, 53, socket.SOCK_DGRAM)
        self.tcp = bind(address, 53, socket.SOCK_STREAM)
        loop.add(self.udp, self.on_udp)
        loop.add(self.tcp, self.on_accept)

    def on_udp(self) -> None:
        while True:
            try:
                wire, peer = self.udp.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            response = self.zone.answer(wire, "udp", self.server)
            if response is not None:
                try:
                    self.udp.sendto(response, peer)
                except OSError:
                    pass

    def on_accept(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn.setblocking(False)
            self.loop.add(conn, functools.partial(self.on_tcp_data, conn, bytearray()))

    def on_tcp_data(self, conn: socket.socket, buffer: bytearray) -> None:
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.loop.drop(conn)
            return
        buffer += data
        while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
            size = int.from_bytes(buffer[:2], "big")
            wire = bytes(buffer[2 : 2 + size])
            del buffer[: 2 + size]
            response = self.zone.answer(wire, "tcp", self.server)
            if response is not None:
                try:
                    conn.setblocking(True)
                    conn.settimeout(5)
                    conn.sendall(len(response).to_bytes(2, "big") + response)
                    conn.setblocking(False)
                except OSError:
                    self.loop.drop(conn)
                    return


# --- the control channel -----------------------------------------------------


class Lab:
    def __init__(self) -> None:
        self.loop = Loop()
        self.zone = Zone()
        self.servers: dict[tuple[str, str, int], TcpServer | UdpServer] = {}
        self.dns = [DnsServer(self.loop, self.zone, DNS_ADDRESS, "main")]
        self.dns.append(DnsServer(self.loop, self.zone, BLACKHOLE_ADDRESS, "blackhole"))

    def listen(self, proto: str, host: Any, port: Any, config: dict[str, Any]) -> dict[str, Any]:
        canonical = str(parse_address(host))
        existing = self.servers.get((proto, canonical, port)) if port else None
        if existing is not None:
            existing.configure(config)
            return {"host": canonical, "port": port}
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        sock = bind(canonical, port, kind)
        port = sock.getsockname()[1]
        server = TcpServer(self.loop, sock, config) if proto == "tcp" else UdpServer(self.loop, sock, config)
        self.servers[(proto, canonical, port)] = server
        return {"host": canonical, "port": port}

    def server(self, args: dict[str, Any]) -> TcpServer | UdpServer:
        key = (args.get("proto", ""), str(parse_address(args.get("host"))), args.get("port"))
        if key not in self.servers:
            raise CommandError(f"no {key[0]} server on {key[1]} port {key[2]} (closed, or removed by reset())")
        return self.servers[key]

    def reset(self) -> None:
        for server in self.servers.values():
            server.close()
        self.servers.clear()
        self.zone.records.clear()
        self.zone.log.clear()

    def handle(self, command: dict[str, Any]) -> Any:
        op = command.get("op")
        args = command.get("args") or {}
        if op == "sync":
            return None
        if op in ("tcp", "udp"):
            return self.listen(op, args.get("host"), args.get("port", 0), args)
        if op == "stats":
            return self.server(args).stats()
        if op == "close":
            key_server = self.server(args)
            key_server.close()
            del self.servers[(args["proto"], str(parse_address(args["host"])), args["port"])]
            return None
        if op == "dns_set":
            self.zone.set(args.get("name"), list(args.get("A") or []), list(args.get("AAAA") or []), args.get("ttl"))
            return None
        if op == "dns_cname":
            self.zone.cname(args.get("name"), args.get("target"), args.get("ttl"))
            return None
        if op == "dns_remove":
            return self.zone.records.pop(normalize(args.get("name")), None) is not None
        if op == "dns_log":
            return self.zone.log
        if op == "dns_clear_log":
            self.zone.log.clear()
            return None
        if op == "reset":
            self.reset()
            return None
        raise CommandError(f"unknown command {op!r}")


def main() -> int:
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # a stray print() must never corrupt the control channel

    def reply(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    try:
        lab = Lab()
    except CommandError as exc:
        reply({"ready": False, "error": str(exc)})
        return 1
    reply({"ready": True, "pid": os.getpid()})
    os.set_blocking(0, False)
    pending = bytearray()
    running = True

    def on_stdin() -> None:
        nonlocal running
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return
        if not data:
            running = False  # the pytest process went away
            return
        pending.extend(data)
        while running and b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            lab.loop.drain()
            command: Any = None
            try:
                command = json.loads(line)
                if command.get("op") == "quit":
                    running = False
                    reply({"id": command.get("id"), "result": None})
                    return
                reply({"id": command.get("id"), "result": lab.handle(command)})
            except (CommandError, ValueError, TypeError, KeyError, AttributeError) as exc:
                reply({"id": command.get("id") if isinstance(command, dict) else None, "error": str(exc) or repr(exc)})

    lab.loop.selector.register(0, selectors.EVENT_READ, None)
    while running:
        for key, _ in lab.loop.selector.select():
            if key.data is None:
                on_stdin()
            else:
                key.data()
            if not running:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
