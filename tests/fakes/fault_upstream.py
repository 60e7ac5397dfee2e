#!/usr/bin/env python3
"""fault_upstream.py: upstreams that fail below HTTP, for keyway's upstream-fault tests (Python 3 stdlib).

fake_upstream.py speaks HTTP well and can close or stall politely; this file covers what it cannot:

- FaultServer: a raw TCP server on 127.0.0.1 port 0. For every connection it (optionally) reads one
  request (head + Content-Length body), records it, plays a Script of bytes and pauses, then ends the
  connection as scripted: "close" (FIN), "reset" (RST, via SO_LINGER 0) or "stall" (hold it open, say
  nothing, until the peer goes or the server stops).
- TlsFake: a TLS server (python ssl) whose certificate is self-signed and names the wrong host, made
  at run time with the `openssl` CLI (make_self_signed). A correct client must refuse the handshake;
  the fake counts handshakes that succeeded and failed, and answers 200 to any request that gets
  through (which would be the bug). mode="stall" accepts TCP and never answers the ClientHello.

    srv = FaultServer(Script([b"HTTP/1.1 200 OK\\r\\nContent-Length: 100\\r\\n\\r\\nabc"], then="reset")).start()
    ... point an upstream's base_url at srv.url ...
    srv.connections, srv.requests          # what arrived
    srv.stop()

Thread-safety: every public method may be called from any thread; one thread per connection.
"""

import os
import socket
import ssl
import struct
import subprocess
import threading
import time

__all__ = ["Script", "FaultServer", "TlsFake", "make_self_signed"]


class Script:
    """What a FaultServer does on each connection.

    items         sent in order after the request was read: bytes are written, an int/float is a
                  pause in seconds.
    then          "close" (FIN), "reset" (RST) or "stall" (keep the connection open, silent).
    read_request  read one full request (head, Content-Length body) before sending; False: send at
                  once on accept (a server that talks first).
    """

    def __init__(self, items=(), then="close", read_request=True):
        if then not in ("close", "reset", "stall"):
            raise ValueError("then must be close, reset or stall")
        self.items = list(items)
        self.then = then
        self.read_request = read_request


class _Base:
    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.port = None
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._listener = None
        self._accept_thread = None
        self._socks = set()
        self._threads = set()
        self._connections = 0
        self._requests = []

    def start(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, 0))
        ls.listen(512)
        ls.settimeout(0.2)
        self._listener = ls
        self.port = ls.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="fault-accept", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._accept_thread:
            self._accept_thread.join(5)
        if self._listener:
            self._listener.close()
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(2)

    def __enter__(self):
        return self.start() if self.port is None else self

    def __exit__(self, *exc):
        self.stop()

    @property
    def connections(self):
        """TCP connections accepted since start (or since reset())."""
        with self._lock:
            return self._connections

    @property
    def requests(self):
        """Raw heads (bytes, up to and including the blank line) of the requests read."""
        with self._lock:
            return list(self._requests)

    def reset(self):
        with self._lock:
            self._connections = 0
            self._requests = []

    def wait_for_connections(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._connections < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return self._connections

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)
                continue
            t = threading.Thread(target=self._run, args=(sock,), daemon=True)
            with self._lock:
                self._connections += 1
                self._socks.add(sock)
                self._threads.add(t)
                self._lock.notify_all()
            t.start()

    def _run(self, sock):
        try:
            self._serve(sock)
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass
            with self._lock:
                self._socks.discard(sock)
                self._threads.discard(threading.current_thread())

    def _serve(self, sock):
        raise NotImplementedError

    def _hold(self, sock):
        """Keeps `sock` open and silent until the peer closes it or the server stops."""
        sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                if not sock.recv(65536):
                    return
            except socket.timeout:
                continue

    def _read_request(self, sock):
        """Reads one request head and its Content-Length body; records the head. None at EOF."""
        buf = bytearray()
        sock.settimeout(10)
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                return None
            buf += data
        end = buf.index(b"\r\n\r\n") + 4
        head = bytes(buf[:end])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    length = 0
        body = bytes(buf[end:])
        while len(body) < length:
            data = sock.recv(65536)
            if not data:
                break
            body += data
        with self._lock:
            self._requests.append(head)
            self._lock.notify_all()
        return head


class FaultServer(_Base):
    """Raw TCP upstream that plays a Script on every connection (see the module doc)."""

    def __init__(self, script=None, host="127.0.0.1"):
        super().__init__(host)
        self._script = script or Script()

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def set_script(self, script):
        with self._lock:
            self._script = script

    def _serve(self, sock):
        with self._lock:
            script = self._script
        if script.read_request and self._read_request(sock) is None:
            return
        for item in script.items:
            if isinstance(item, (int, float)):
                if self._stop.wait(float(item)):
                    return
            else:
                sock.sendall(item)
        if script.then == "reset":
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif script.then == "stall":
            self._hold(sock)


def make_self_signed(directory, common_name="wrong.example"):
    """Writes key.pem and cert.pem (self-signed, for `common_name` only) into `directory` with the
    openssl CLI; returns (cert_path, key_path). Raises RuntimeError when openssl is missing or fails."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
            "-subj", "/CN=%s" % common_name, "-addext", "subjectAltName=DNS:%s" % common_name,
            "-keyout", key, "-out", cert]
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise RuntimeError("the openssl CLI is not installed (Debian: apt-get install openssl)")
    if cp.returncode != 0:
        raise RuntimeError("openssl req failed (%d): %s" % (cp.returncode, cp.stderr[-500:]))
    return cert, key


class TlsFake(_Base):
    """TLS upstream with a certificate the client must not trust (see the module doc).

    mode "tls": handshake, then answer 200 to any request that gets through.
    mode "stall": accept TCP, never read the ClientHello, never answer.
    """

    def __init__(self, cert, key, mode="tls", host="127.0.0.1"):
        super().__init__(host)
        if mode not in ("tls", "stall"):
            raise ValueError("mode must be tls or stall")
        self.mode = mode
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(cert, key)
        self._ok = 0
        self._failed = 0
        self.failures = []  # str(exception) of each failed handshake (the client's alert)

    @property
    def url(self):
        return "https://%s:%d" % (self.host, self.port)

    @property
    def handshakes_ok(self):
        with self._lock:
            return self._ok

    @property
    def handshakes_failed(self):
        with self._lock:
            return self._failed

    def _serve(self, sock):
        if self.mode == "stall":
            self._hold(sock)
            return
        sock.settimeout(10)
        try:
            tls = self._ctx.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self._lock:
                self._failed += 1
                self.failures.append(str(e))
            return
        with self._lock:
            self._ok += 1
        try:
            while self._read_request(tls) is not None:
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 15\r\n\r\n"
                            b"tls-got-through")
        finally:
            tls.close()
