"""etcd_cluster.py: a real etcd cluster on loopback ports for the fleet tests (stdlib only).

EtcdCluster(size=3) starts `size` etcd members (Debian's etcd-server, 3.4), each with its own client
and peer port on 127.0.0.1 and its data dir under one temp dir (removed by stop() unless
KEYWAY_IT_KEEP=1), a unique --initial-cluster-token and a fast heartbeat, so that a leader is elected
in well under a second after the leader stops. The members' stdout/stderr go to files in the temp dir;
every start failure quotes their tail.

Fault injection: kill(i) (SIGKILL), start(i) (the same member again, on its data dir), pause(i)
(SIGSTOP: a hung endpoint whose TCP connections still open) and resume(i) (SIGCONT), kill_all(),
start_all().

Backups: snapshot_save(path) (etcdctl snapshot save against one member) and restore_all(path) (every
member stopped, restored from that file by etcdctl snapshot restore with its own name and URLs into a
new data dir that replaces its old one, and started on it: etcd's own procedure for a cluster restored from a backup).

Data, through the v3 JSON gateway (urllib): revision(), put(), get(), delete(), compact(), dump()
(every key and value of the whole keyspace), scan_for() (which of some byte strings appear anywhere in
the keyspace, raw or hex or base64-encoded) and scan_files() (the same over every file of every
member's data dir: the bbolt database and the WAL, so history and deleted values count too).

The binaries: $KEYWAY_ETCD, else `etcd` on PATH; $KEYWAY_ETCDCTL, else `etcdctl` on PATH (only for
the backups). Missing, EtcdCluster() raises EtcdError (a test failure, not a skip: scripts/test
installs etcd-server and etcd-client).
"""

import atexit
import base64
import binascii
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

__all__ = ["EtcdCluster", "EtcdError", "etcd_binary", "encoded_forms", "end_process",
           "remove_temp_dir"]

# Every key: the range "\0" .. "\0" is etcd's "key >= \0", i.e. the whole keyspace.
_ALL = b"\0"


class EtcdError(AssertionError):
    """The cluster could not be started or did not answer; the message says why."""


def etcd_binary():
    """Path of the etcd server binary, or raises EtcdError saying how to get one."""
    exe = os.environ.get("KEYWAY_ETCD") or shutil.which("etcd") or (
        "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)
    if not exe or not os.access(exe, os.X_OK):
        raise EtcdError("etcd not found (KEYWAY_ETCD unset and no `etcd` on PATH): the fleet tests need a "
                        "real etcd; install Debian's etcd-server (scripts/test does: apt-get install "
                        "etcd-server etcd-client)")
    return exe


def etcdctl_binary():
    """Path of etcdctl, or raises EtcdError saying how to get one."""
    exe = os.environ.get("KEYWAY_ETCDCTL") or shutil.which("etcdctl") or (
        "/usr/bin/etcdctl" if os.access("/usr/bin/etcdctl", os.X_OK) else None)
    if not exe or not os.access(exe, os.X_OK):
        raise EtcdError("etcdctl not found (KEYWAY_ETCDCTL unset and no `etcdctl` on PATH): install "
                        "Debian's etcd-client (scripts/test does)")
    return exe


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _unb64(text):
    return base64.b64decode(text or "")


def _free_ports(n):
    """n distinct free 127.0.0.1 TCP ports (held open together while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def encoded_forms(needle):
    """The byte strings that betray `needle` in stored data: itself, its hex (both cases) and its
    standard and URL-safe base64 at each of the three alignments it can have inside a longer encoded
    value (only the characters that depend on the needle alone, without padding)."""
    forms = {needle, binascii.hexlify(needle), binascii.hexlify(needle).upper()}
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + needle)
        # The first ceil(4k/3) characters mix in the padding prefix; a partial last group mixes in
        # whatever follows the needle in the real value.
        lead = (4 * k + 2) // 3
        full_groups = (k + len(needle)) // 3
        stable = enc[lead:4 * full_groups]
        if len(stable) >= 8:  # shorter forms would match by chance
            forms.add(stable)
            forms.add(stable.replace(b"+", b"-").replace(b"/", b"_"))
    return forms


def end_process(proc):
    """Ends a server process: SIGCONT first (a paused one would not act on SIGTERM yet), SIGTERM,
    SIGKILL after 5 s; waits for it."""
    try:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except OSError:
        pass


def remove_temp_dir(path, what):
    """Removes a server's temp dir, or keeps it and says where with KEYWAY_IT_KEEP=1."""
    if os.environ.get("KEYWAY_IT_KEEP"):
        print("keyway-it: kept %s in %s" % (what, path), file=sys.stderr)
    else:
        shutil.rmtree(path, ignore_errors=True)


class _Member:
    def __init__(self, index, name, client_port, peer_port, data_dir, log_path, scheme):
        self.scheme = scheme  # of the client URL; peers always talk plain http
        self.index = index
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc = None
        self.paused = False
        self.killed = False  # stopped on purpose: not expected to answer
        self.log = None

    @property
    def client_url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.client_port)

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """A real etcd cluster of `size` members on loopback. start() (done by the constructor unless
    start=False) waits until every member is healthy; stop() ends every member and removes the data."""

    def __init__(self, size=3, start=True, start_timeout=60.0, quota_bytes=64 * 1024 * 1024, tls=None):
        """tls: a tls_ca.TestPki: the client URLs are https with its "server-client" certificate, and a
        client certificate of its CA is required (the harness presents "client")."""
        self.exe = etcd_binary()
        self.size = size
        self.tls = tls
        self._ssl = tls.client_context("client") if tls is not None else None
        self._auth = None   # (root password, token) once enable_auth() ran
        self._stopped = False
        self.quota_bytes = quota_bytes
        self.dir = Path(tempfile.mkdtemp(prefix="keyway-etcd-"))
        self.token = "keyway-it-" + uuid.uuid4().hex
        self.members = []
        self._new_members()
        # The members run in their own sessions (a ^C of the tests does not reach them): whatever
        # ends this process without stop() still ends them.
        atexit.register(self.stop)
        if start:
            try:
                self._start_fresh(start_timeout)
            except BaseException:
                self.stop()
                raise

    # -- set-up --
    def _new_members(self):
        ports = _free_ports(2 * self.size)
        gen = len(list(self.dir.glob("gen*")))
        base = self.dir / ("gen%d" % gen)
        base.mkdir()
        scheme = "https" if self.tls is not None else "http"
        self.members = [_Member(i, "m%d" % i, ports[2 * i], ports[2 * i + 1], base / ("m%d.etcd" % i),
                                base / ("m%d.log" % i), scheme) for i in range(self.size)]

    def _argv(self, m):
        initial = ",".join("%s=%s" % (o.name, o.peer_url) for o in self.members)
        return [self.exe,
                "--name", m.name,
                "--data-dir", str(m.data_dir),
                "--listen-client-urls", m.client_url,
                "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url,
                "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", initial,
                "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new",
                # A leader lost is replaced within about a second, so a test does not wait on Raft.
                "--heartbeat-interval", "50",
                "--election-timeout", "500",
                "--quota-backend-bytes", str(self.quota_bytes),
                "--logger", "zap",
                "--log-outputs", "stderr",
                "--log-level", "error"] + ([
                    "--cert-file", self.tls.path("server-client.pem"),
                    "--key-file", self.tls.path("server-client.key"),
                    "--trusted-ca-file", self.tls.ca_file,
                    "--client-cert-auth"] if self.tls is not None else [])

    def _env(self):
        # The members' own environment: no ETCD_* or ETCDCTL_* variables of the caller change flags.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        env["ETCDCTL_API"] = "3"
        return env

    def _spawn(self, m):
        m.log = open(m.log_path, "ab")
        m.log.write(b"--- start %s\n" % time.strftime("%H:%M:%S").encode())
        m.log.flush()
        m.proc = subprocess.Popen(self._argv(m), stdin=subprocess.DEVNULL, stdout=m.log, stderr=m.log,
                                  env=self._env(), cwd=str(self.dir), start_new_session=True)
        m.paused = False
        m.killed = False

    def _start_fresh(self, timeout):
        """Starts every member on new data dirs; a port taken meanwhile by someone else (the ports
        were free when chosen, then released for etcd to bind) gets new ports and another try."""
        for attempt in range(3):
            for m in self.members:
                self._spawn(m)
            try:
                self.wait_healthy(timeout)
                return self
            except EtcdError as e:
                if attempt == 2 or "address already in use" not in str(e):
                    raise
                self._stop_members()
                self._new_members()
        return self

    # -- lifecycle --
    def endpoints(self):
        return [m.client_url for m in self.members]

    def tail(self, i, n=30):
        """The last n lines of member i's stdout/stderr."""
        try:
            lines = self.members[i].log_path.read_text(errors="replace").splitlines()
        except OSError as e:
            return "(no log: %s)" % e
        return "\n".join(lines[-n:])

    def _tails(self):
        return "\n".join("member %d (%s, %s): %s\n%s" % (
            m.index, m.client_url, "running" if m.running else "exited %s" % (
                m.proc.returncode if m.proc else "never started"),
            "paused" if m.paused else "", self.tail(m.index)) for m in self.members)

    def member_health(self, i, timeout=2.0):
        """True when member i answers /health with {"health": "true"} (it has a leader, no alarm)."""
        try:
            with urllib.request.urlopen(self.members[i].client_url + "/health", timeout=timeout,
                                        context=self._ssl) as r:
                return json.loads(r.read().decode()).get("health") in ("true", True)
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout=60.0, members=None):
        """Waits until every started member that is not paused or killed on purpose (or those listed)
        reports healthy; one that exited on its own is an error at once."""
        deadline = time.monotonic() + timeout
        want = list(members) if members is not None else [
            m.index for m in self.members if m.proc is not None and not m.paused and not m.killed]
        while True:
            dead = [i for i in want if not self.members[i].running]
            if dead:
                raise EtcdError("etcd member(s) %s exited while starting:\n%s" % (dead, self._tails()))
            probe = min(2.0, max(0.2, deadline - time.monotonic()))
            sick = [i for i in want if not self.member_health(i, timeout=probe)]
            if not sick:
                return self
            if time.monotonic() > deadline:
                raise EtcdError("etcd member(s) %s not healthy within %.0fs:\n%s" % (sick, timeout, self._tails()))
            time.sleep(0.1)

    def kill(self, i):
        """SIGKILL member i (a crash: nothing flushed beyond what etcd already fsynced)."""
        m = self.members[i]
        if m.running:
            os.kill(m.proc.pid, signal.SIGKILL)
            m.proc.wait(10)
        m.paused = False
        m.killed = True
        if m.log:
            m.log.close()
            m.log = None

    def start(self, i, wait=True, timeout=60.0):
        """Starts member i again on its data dir and ports (it rejoins the cluster). With wait, waits
        until it is healthy, which needs a quorum of members up."""
        m = self.members[i]
        if m.running:
            raise EtcdError("etcd member %d is already running" % i)
        self._spawn(m)
        if wait:
            self.wait_healthy(timeout, members=[i])
        return self

    def pause(self, i):
        """SIGSTOP member i: its sockets stay open and connections are accepted by the kernel, but
        nothing answers (a hung endpoint, not a refused one)."""
        m = self.members[i]
        if not m.running:
            raise EtcdError("etcd member %d is not running" % i)
        os.kill(m.proc.pid, signal.SIGSTOP)
        m.paused = True

    def resume(self, i):
        m = self.members[i]
        if m.running:
            os.kill(m.proc.pid, signal.SIGCONT)
        m.paused = False

    def kill_all(self):
        for i in range(self.size):
            self.kill(i)

    def start_all(self, wait=True, timeout=60.0):
        """Starts every stopped member at once (one alone cannot get a quorum to report healthy)."""
        for m in self.members:
            if not m.running:
                self._spawn(m)
        if wait:
            self.wait_healthy(timeout)
        return self

    # -- backups --
    def _etcdctl(self, *args, timeout=60.0):
        argv = [etcdctl_binary()] + list(args)
        if self.tls is not None:
            argv += ["--cacert", self.tls.ca_file, "--cert", self.tls.path("client.pem"),
                     "--key", self.tls.path("client.key")]
        cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=self._env(), cwd=str(self.dir), timeout=timeout)
        if cp.returncode != 0:
            raise EtcdError("%s exited %d: %s%s" % (" ".join(argv[:3]), cp.returncode, cp.stdout[-2000:],
                                                    cp.stderr[-2000:]))
        return cp

    def snapshot_save(self, path, endpoint=None):
        """Saves a snapshot of the keyspace (etcd's backup) to `path` from member `endpoint` (default:
        the first running, unpaused one); returns the revision it holds."""
        if self._auth is not None:
            # etcdctl would need the root password in argv: no test needs this, so it is refused.
            raise EtcdError("snapshot_save() does not support a cluster with authentication")
        i = endpoint if endpoint is not None else next(
            m.index for m in self.members if m.running and not m.paused)
        self._etcdctl("--endpoints", self.members[i].client_url, "snapshot", "save", str(path))
        cp = self._etcdctl("snapshot", "status", str(path), "--write-out", "json")
        return int(json.loads(cp.stdout)["revision"])

    def restore_all(self, path, wait=True, timeout=60.0):
        """Restores the whole cluster from the snapshot file `path`: every member stopped, restored by
        `etcdctl snapshot restore` with its own name, peer URL, the cluster's members and token into a
        new data dir, and started on that dir (the old one removed). The
        keyspace and its revision are the snapshot's; what was written after it is gone."""
        self._stop_members()
        initial = ",".join("%s=%s" % (o.name, o.peer_url) for o in self.members)
        restored = []
        for m in self.members:
            n = len(list(m.data_dir.parent.glob("%s.restored*" % m.name)))
            new_dir = m.data_dir.parent / ("%s.restored%d.etcd" % (m.name, n))
            self._etcdctl("snapshot", "restore", str(path), "--name", m.name, "--initial-cluster", initial,
                          "--initial-cluster-token", self.token, "--initial-advertise-peer-urls", m.peer_url,
                          "--data-dir", str(new_dir))
            restored.append(new_dir)
        for m, new_dir in zip(self.members, restored):
            # The old dir goes (kept with KEYWAY_IT_KEEP=1): nothing uses it, and scan_files() would
            # read its preallocated WAL files once more for every needle.
            if not os.environ.get("KEYWAY_IT_KEEP"):
                shutil.rmtree(m.data_dir, ignore_errors=True)
            m.data_dir = new_dir
        return self.start_all(wait=wait, timeout=timeout)

    def _stop_members(self):
        for m in self.members:
            if m.running:
                end_process(m.proc)
            m.paused = False
            if m.log:
                m.log.close()
                m.log = None

    def stop(self):
        """Ends every member and removes the data (kept with KEYWAY_IT_KEEP=1). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        self._stop_members()
        remove_temp_dir(self.dir, "etcd data")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- v3 JSON gateway --
    def call(self, path, body, timeout=5.0, endpoint=None):
        """POSTs JSON to /v3/<path> on `endpoint` (an index), else on each running, unpaused member in
        turn until one answers. Returns the decoded answer; raises EtcdError when none did."""
        order = [endpoint] if endpoint is not None else [
            m.index for m in self.members if m.running and not m.paused]
        errors = []
        data = json.dumps(body).encode()
        for i in order:
            url = "%s/v3/%s" % (self.members[i].client_url, path)
            headers = {"Content-Type": "application/json"}
            if self._auth is not None and path != "auth/authenticate":
                headers["Authorization"] = self._root_token(i, timeout)
            req = urllib.request.Request(url, data=data, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as r:
                    return json.loads(r.read().decode())
            except urllib.error.HTTPError as e:
                detail = e.read().decode(errors="replace")[:500]
                if self._auth is not None and "invalid auth token" in detail:
                    self._auth = (self._auth[0], None)  # expired (simple tokens last 5 min): once more
                    return self.call(path, body, timeout, endpoint=i)
                # An answer from etcd itself (bad request, compacted, ...): no other member would differ.
                raise EtcdError("etcd %s: HTTP %d: %s" % (url, e.code, detail)) from None
            except (OSError, ValueError) as e:
                errors.append("%s: %s" % (url, e))
        raise EtcdError("no etcd member answered /v3/%s: %s" % (path, "; ".join(errors) or "none running"))

    # -- authentication --
    def enable_auth(self, users):
        """Turns etcd's authentication on. users: {name: (password, key prefix bytes)}; each gets a
        role with read and write access to its prefix only. The harness itself goes on as root."""
        root_password = uuid.uuid4().hex
        self.call("auth/user/add", {"name": "root", "password": root_password})
        self.call("auth/role/add", {"name": "root"})
        self.call("auth/user/grant", {"user": "root", "role": "root"})
        for name, (password, prefix) in users.items():
            self.call("auth/role/add", {"name": name})
            self.call("auth/role/grant", {"name": name, "perm": {
                "key": _b64(prefix), "range_end": _b64(_prefix_end(prefix)), "permType": "READWRITE"}})
            self.call("auth/user/add", {"name": name, "password": password})
            self.call("auth/user/grant", {"user": name, "role": name})
        self.call("auth/enable", {})
        self._auth = (root_password, None)

    def _root_token(self, i, timeout):
        password, token = self._auth
        if token is None:
            doc = self.call("auth/authenticate", {"name": "root", "password": password}, timeout, endpoint=i)
            token = doc["token"]
            self._auth = (password, token)
        return token

    def revision(self, endpoint=None):
        """The cluster's current revision (header.revision of a linearizable range)."""
        doc = self.call("kv/range", {"key": _b64(_ALL), "range_end": _b64(_ALL), "count_only": True},
                        endpoint=endpoint)
        return int(doc["header"]["revision"])

    def put(self, key, value, timeout=5.0):
        """Puts bytes under bytes; returns the revision of the write. A put sent while the leader
        is being replaced may wait for etcd's own request timeout: a short timeout and a retry is
        quicker (a put is idempotent)."""
        doc = self.call("kv/put", {"key": _b64(key), "value": _b64(value)}, timeout=timeout)
        return int(doc["header"]["revision"])

    def mod_revision(self, key):
        """The revision of the last write to key (0 when it does not exist)."""
        kvs = self.call("kv/range", {"key": _b64(key)}).get("kvs") or []
        return int(kvs[0].get("mod_revision", 0)) if kvs else 0

    def get(self, key):
        """The value of key (bytes), or None."""
        doc = self.call("kv/range", {"key": _b64(key)})
        kvs = doc.get("kvs") or []
        return _unb64(kvs[0].get("value")) if kvs else None

    def delete(self, key, prefix=False):
        """Deletes key (or every key starting with it); returns the number deleted."""
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(_prefix_end(key))
        return int(self.call("kv/deleterange", body).get("deleted", 0))

    def compact(self, revision):
        """Compacts history up to `revision` and waits for the physical removal."""
        return self.call("kv/compaction", {"revision": int(revision), "physical": True}, timeout=30.0)

    def status(self, i, timeout=2.0):
        """Member i's /v3/maintenance/status: version, leader, raftIndex, dbSize ..."""
        return self.call("maintenance/status", {}, timeout=timeout, endpoint=i)

    def leader(self):
        """Index of the current leader as the running, unpaused members see it, or None."""
        ids, leader_id = {}, None
        for m in self.members:
            if not m.running or m.paused:
                continue
            try:
                st = self.status(m.index)
            except EtcdError:
                continue
            ids[st["header"]["member_id"]] = m.index
            leader_id = st.get("leader") or leader_id
        return ids.get(leader_id)

    def dump(self, prefix=None):
        """Every (key, value) of the whole keyspace (or under `prefix`), as bytes, at one revision."""
        if prefix is None:
            body = {"key": _b64(_ALL), "range_end": _b64(_ALL)}
        else:
            body = {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}
        doc = self.call("kv/range", body, timeout=15.0)
        return [(_unb64(kv.get("key")), _unb64(kv.get("value"))) for kv in doc.get("kvs") or []]

    def scan_for(self, needles):
        """Which of `needles` (bytes) appear in a key or value of the whole keyspace, raw or in any of
        encoded_forms(). Returns {needle: [where, ...]} for the ones found (empty: none)."""
        found = {}
        kvs = self.dump()
        for needle in needles:
            forms = encoded_forms(needle)
            for key, value in kvs:
                for what, blob in (("key", key), ("value of %r" % key[:80], value)):
                    for form in forms:
                        if form in blob:
                            found.setdefault(needle, []).append(
                                "%s (%s)" % (what, "raw" if form == needle else "encoded %r" % form[:16]))
        return found

    def scan_files(self, needles):
        """The same scan over the bytes of every file of every member's data dir (database and WAL:
        also older revisions and deleted keys). Returns {needle: [file, ...]} for those found."""
        found = {}
        blobs = []
        for path in sorted(self.dir.rglob("*")):
            if path.is_file() and path.suffix != ".log":
                try:
                    blobs.append((path, _read_used(path)))
                except OSError:
                    pass
        for needle in needles:
            forms = encoded_forms(needle)
            for path, blob in blobs:
                if any(form in blob for form in forms):
                    found.setdefault(needle, []).append(str(path.relative_to(self.dir)))
        return found


def _read_used(path, chunk=1 << 20):
    """The bytes of a member's file up to its preallocated zero tail: a WAL segment is 64 MiB of
    zeros after its last record, and a MiB of zeros never occurs inside a record."""
    if path.suffix != ".wal":
        return path.read_bytes()
    out = bytearray()
    zeros = bytes(chunk)
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block or block == zeros[:len(block)]:
                break
            out += block
    return bytes(out).rstrip(b"\0")


def _prefix_end(prefix):
    """etcd's range_end for "every key starting with prefix"."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return _ALL
