"""An HTTP relay in front of an S3 server that injects the faults a real network and a real S3
have: a reply lost after the request took effect, a reply held back, a 409 or 503 answer.

    relay = Relay(server.host, server.port).start()        # 127.0.0.1, a free port
    rule = relay.add(Rule("drop_reply", method="PUT", path=r"driver\\.lease", header="If-None-Match"))
    ...                                                     # clients use relay.endpoint
    assert rule.fired.wait(30)                              # events, not sleeps
    relay.stop()

Requests and replies pass through byte for byte (chunked bodies as they came, which pyarrow's
uploads use; no header added: botocore joins two Date headers into one it cannot parse), except
``Expect: 100-continue``, which the relay answers itself (the header is not signed). A rule
matches a request by method, a regular expression searched in its target (path and query) and
a header it must carry; it fires on its first ``times`` matches:

- ``drop_reply``: the request is forwarded and takes effect; its reply is read and thrown away,
  and the client's connection closed (botocore then retries: a retried conditional PUT finds
  its own write);
- ``hold_reply``: the reply is held until ``rule.release`` is set (or ``seconds`` pass);
- ``status``: answered at once with ``status`` (409 ConditionalRequestConflict, 503 SlowDown),
  the request never reaching the server;
- ``pass``: relayed as it is, only counted (to wait for the n-th such request).
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field

from .s3 import Endpoint, free_port

_ERRORS = {409: ("Conflict", "ConditionalRequestConflict",
                 "A conflicting conditional operation is currently in progress against this resource."),
           503: ("Slow Down", "SlowDown", "Please reduce your request rate."),
           500: ("Internal Server Error", "InternalError", "We encountered an internal error.")}


@dataclass
class Rule:
    action: str  # drop_reply | hold_reply | status | pass
    method: str = "PUT"
    path: str = ""  # a regular expression searched in the request target
    header: str = ""  # a header the request must carry (e.g. If-None-Match)
    times: int = 1
    status: int = 409
    seconds: float = 600.0  # hold_reply: the longest a reply is held
    hits: int = 0
    fired: threading.Event = field(default_factory=threading.Event)  # set at the last of ``times``
    hit: threading.Event = field(default_factory=threading.Event)  # set at the first
    release: threading.Event = field(default_factory=threading.Event)  # ends a hold_reply

    def matches(self, method: str, target: str, headers: dict[str, str]) -> bool:
        return (self.hits < self.times and method == self.method and re.search(self.path, target)
                is not None and (not self.header or self.header.lower() in headers))


class Relay(Endpoint):
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.host, self.port = "127.0.0.1", free_port()
        self.rules: list[Rule] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def start(self) -> Relay:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, name="relay", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for rule in self.rules:
            rule.release.set()
        for sock in list(self._sockets):
            _close(sock)

    # -- the relay itself -----------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _rule(self, method: str, target: str, headers: dict[str, str]) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, target, headers):
                    rule.hits += 1
                    return rule
        return None

    def _serve(self, client: socket.socket) -> None:
        self._sockets.add(client)
        upstream: socket.socket | None = None
        source = _Reader(client)
        try:
            while True:
                head = source.head()
                if head is None:
                    return
                method, target, headers = _parse_request(head)
                if headers.get("expect", "").lower() == "100-continue":
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    head = _without_header(head, b"expect")
                body = source.body(headers, request=True)
                rule = self._rule(method, target, headers)
                if rule is not None and rule.action == "status":
                    client.sendall(_error(rule.status))
                    _fired(rule)
                    continue
                if upstream is None:
                    upstream = socket.create_connection(self.upstream)
                    self._sockets.add(upstream)
                    replies = _Reader(upstream)
                upstream.sendall(head + body)
                reply_head = replies.head()
                if reply_head is None:
                    return
                status, reply_headers = _parse_reply(reply_head)
                reply = reply_head + replies.body(reply_headers, request=False, method=method,
                                                  status=status)
                if rule is not None and rule.action == "drop_reply":
                    _fired(rule)
                    return  # the request took effect; the client never hears of it
                if rule is not None and rule.action == "hold_reply":
                    _fired(rule)
                    rule.release.wait(rule.seconds)
                if rule is not None and rule.action == "pass":
                    _fired(rule)
                client.sendall(reply)
                if reply_headers.get("connection", "").lower() == "close":
                    _close(upstream)
                    upstream = None
        except OSError:
            return
        finally:
            _close(client)
            self._sockets.discard(client)
            if upstream is not None:
                _close(upstream)
                self._sockets.discard(upstream)


def _fired(rule: Rule) -> None:
    rule.hit.set()
    if rule.hits >= rule.times:
        rule.fired.set()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _Reader:
    """Buffered reads of HTTP messages from a socket, returning the bytes as they came."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def head(self) -> bytes | None:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                return None
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise OSError("connection closed mid-message")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise OSError("connection closed mid-message")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def body(self, headers: dict[str, str], *, request: bool, method: str = "",
             status: int = 200) -> bytes:
        if not request and (method == "HEAD" or status in (204, 304) or 100 <= status < 200):
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raw = b""
            while True:
                size_line = self.line()
                raw += size_line
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        trailer = self.line()
                        raw += trailer
                        if trailer == b"\r\n":
                            return raw
                raw += self.exactly(size + 2)
        if "content-length" in headers:
            return self.exactly(int(headers["content-length"]))
        if request:
            return b""
        while self._fill():  # a reply without a length ends with its connection
            pass
        data, self.buf = self.buf, b""
        return data


def _headers(lines: list[bytes]) -> dict[str, str]:
    headers = {}
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def _parse_request(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    method, target, _ = lines[0].decode("latin-1").split(" ", 2)
    return method, target, _headers(lines[1:])


def _parse_reply(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    return int(lines[0].split(b" ")[1]), _headers(lines[1:])


def _without_header(head: bytes, name: bytes) -> bytes:
    lines = head.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.lower().startswith(name + b":"))


def _error(status: int) -> bytes:
    reason, code, message = _ERRORS[status]
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>relay</RequestId></Error>").encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
