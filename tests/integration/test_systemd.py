"""test_systemd.py: keywayd's systemd protocol (docs/operations.md) seen from a fake manager: a unix
datagram NOTIFY_SOCKET bound by the test, WATCHDOG_USEC set. READY=1 only once the listener accepts,
STATUS= lines, WATCHDOG=1 pings, RELOADING=1 then READY=1 on SIGHUP (also for a refused config),
STOPPING=1 and exit 0 on SIGTERM. Plus the unit under a real `systemd-run --user` when one is usable."""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import Keyway, closed_port, request

WATCHDOG_USEC = 400000  # keywayd pings every WATCHDOG_USEC/2 = 0.2 s


class FakeNotifySocket:
    """A bound AF_UNIX datagram socket playing systemd's notify socket; records (time, fields)."""

    def __init__(self, path, on_ready=None):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.on_ready = on_ready  # called from the reader thread as soon as READY=1 arrives
        self.messages = []        # [(monotonic time, {"READY": "1", ...}, raw text)]
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            text = data.decode("utf-8", "replace")
            fields = {}
            for line in text.split("\n"):
                if "=" in line:
                    k, _, v = line.partition("=")
                    fields[k] = v
            if fields.get("READY") == "1" and self.on_ready is not None:
                self.on_ready(fields)
            with self._cond:
                self.messages.append((time.monotonic(), fields, text))
                self._cond.notify_all()

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()

    def snapshot(self):
        with self._cond:
            return list(self.messages)

    def wait_for(self, pred, start=0, timeout=5.0):
        """Index of the first message at or after `start` with pred(fields) true, else None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.messages)):
                    if pred(self.messages[i][1]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.1))


class NotifyProtocolTest(unittest.TestCase):

    def setUp(self):
        self.port = closed_port()  # fixed port: the READY callback must probe it without reading logs
        self.kw = Keyway({"bundleiq": {"base_url": "http://127.0.0.1:9"}},
                         extra={"listen": "127.0.0.1:%d" % self.port})
        self.addCleanup(self.kw.cleanup)
        self.kw.init()
        self.ready_probe = []  # what a client saw at the instant READY=1 arrived
        self.notify = FakeNotifySocket(self.kw.dir / "notify.sock", on_ready=self._probe)
        self.addCleanup(self.notify.close)
        self.kw.env["NOTIFY_SOCKET"] = self.notify.path
        self.kw.env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)

    def _probe(self, fields):
        # Runs in the notify reader thread the moment READY=1 is received, before anything else.
        try:
            resp = request(self.port, "GET", "/_keyway/ready", timeout=5)
            self.ready_probe.append(resp.status)
        except OSError as e:
            self.ready_probe.append("connect failed: %r" % e)

    def _fields_since(self, start):
        return [f for _, f, _ in self.notify.snapshot()[start:]]

    def test_ready_after_listeners_status_and_watchdog(self):
        self.kw.start()
        i = self.notify.wait_for(lambda f: f.get("READY") == "1", timeout=5)
        self.assertIsNotNone(i, "no READY=1 datagram: %r" % self.notify.snapshot())
        ready = self.notify.snapshot()[i][1]
        # The first READY=1 is the startup one: the port already accepted and /_keyway/ready answered.
        self.assertTrue(self.ready_probe, "READY callback did not run")
        self.assertEqual(self.ready_probe[0], 200,
                         "at READY=1 the listener must accept and /_keyway/ready answer 200")
        self.assertTrue(ready.get("STATUS"), "READY=1 without a STATUS= summary: %r" % ready)
        self.assertIn(str(self.port), ready["STATUS"], "STATUS should name the bound address")
        before_ready = self._fields_since(0)[:i]
        self.assertFalse(any(f.get("WATCHDOG") == "1" for f in before_ready),
                         "WATCHDOG=1 before READY=1")
        # Watchdog pings every WATCHDOG_USEC/2: ~7 in 1.5 s; require a steady stream, not one ping.
        t0 = time.monotonic()
        time.sleep(1.5)
        pings = [t for t, f, _ in self.notify.snapshot() if f.get("WATCHDOG") == "1" and t >= t0]
        self.assertGreaterEqual(len(pings), 4, "too few WATCHDOG=1 pings in 1.5 s: %d" % len(pings))
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        self.assertLess(max(gaps), WATCHDOG_USEC / 1e6, "a watchdog gap reached WatchdogSec: %r" % gaps)
        self.assertTrue(self.kw.running)

    def test_sighup_reloading_then_ready(self):
        self.kw.start()
        self.assertIsNotNone(self.notify.wait_for(lambda f: f.get("READY") == "1"))
        mark = len(self.notify.snapshot())
        self.kw.signal(signal.SIGHUP)
        r = self.notify.wait_for(lambda f: f.get("RELOADING") == "1", start=mark)
        self.assertIsNotNone(r, "no RELOADING=1 after SIGHUP: %r" % self._fields_since(mark))
        k = self.notify.wait_for(lambda f: f.get("READY") == "1", start=r + 1)
        self.assertIsNotNone(k, "no READY=1 after RELOADING=1: %r" % self._fields_since(mark))
        self.assertIsNotNone(self.kw.wait_for_record(lambda rec: rec.get("msg") == "configuration reloaded"))
        self.assertEqual(request(self.port, "GET", "/_keyway/ready").status, 200)

    def test_refused_reload_still_ends_with_ready(self):
        # An invalid config must not leave systemd waiting in "reloading": READY=1 follows anyway.
        self.kw.start()
        self.assertIsNotNone(self.notify.wait_for(lambda f: f.get("READY") == "1"))
        self.kw.write_config("listen: [not, an, address\n")
        mark = len(self.notify.snapshot())
        self.kw.signal(signal.SIGHUP)
        r = self.notify.wait_for(lambda f: f.get("RELOADING") == "1", start=mark)
        self.assertIsNotNone(r)
        self.assertIsNotNone(self.notify.wait_for(lambda f: f.get("READY") == "1", start=r + 1))
        self.assertTrue(self.kw.running)
        self.assertEqual(request(self.port, "GET", "/_keyway/ready").status, 200)

    def test_sigterm_stopping_and_exit_0(self):
        self.kw.start()
        self.assertIsNotNone(self.notify.wait_for(lambda f: f.get("READY") == "1"))
        mark = len(self.notify.snapshot())
        self.kw.signal(signal.SIGTERM)
        code = self.kw.wait_exit(15)
        self.assertEqual(code, 0, "keywayd exit code after SIGTERM; stderr:\n%s" % self.kw.stderr_tail())
        s = self.notify.wait_for(lambda f: f.get("STOPPING") == "1", start=mark, timeout=2)
        self.assertIsNotNone(s, "no STOPPING=1 after SIGTERM: %r" % self._fields_since(mark))
        self.assertFalse(any(f.get("READY") == "1" for f in self._fields_since(s)),
                         "READY=1 after STOPPING=1")

    def test_startup_failure_never_sends_ready(self):
        # A store that cannot open (no master key) is a fatal start error: exit != 0, no READY=1.
        os.remove(str(self.kw.state_dir / "master.key"))
        exe_env = dict(self.kw.env)
        cp = subprocess.run([self.kw_binary(), "--config", str(self.kw.config_path)], env=exe_env,
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
        self.assertNotEqual(cp.returncode, 0)
        time.sleep(0.3)
        self.assertFalse(any(f.get("READY") == "1" for f in self._fields_since(0)),
                         "READY=1 sent by a daemon that failed to start")

    @staticmethod
    def kw_binary():
        from harness import binary
        return binary("keywayd")


def _user_manager_usable():
    if shutil.which("systemd-run") is None or shutil.which("systemctl") is None:
        return False, "systemd-run/systemctl not installed"
    try:
        cp = subprocess.run(["systemctl", "--user", "is-system-running"], capture_output=True,
                            text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return False, "systemctl --user failed: %r" % e
    state = cp.stdout.strip()
    if state not in ("running", "degraded"):
        return False, "no usable systemd user manager (is-system-running: %r %r)" % (
            state, cp.stderr.strip()[:200])
    return True, ""


_USABLE, _WHY = _user_manager_usable()


@unittest.skipUnless(_USABLE, _WHY)
class RealSystemdUserTest(unittest.TestCase):
    """keywayd as a Type=notify transient unit of the user manager: start (waits for READY=1),
    reload (waits for RELOADING=1/READY=1), stop (clean, exit 0)."""

    def test_start_reload_stop_under_systemd_run(self):
        port = closed_port()
        kw = Keyway({"bundleiq": {"base_url": "http://127.0.0.1:9"}}, extra={"listen": "127.0.0.1:%d" % port})
        self.addCleanup(kw.cleanup)
        kw.init()
        unit = "keyway-it-%d" % os.getpid()
        self.addCleanup(subprocess.run, ["systemctl", "--user", "stop", unit], capture_output=True)
        cp = subprocess.run(["systemd-run", "--user", "--unit", unit, "-p", "Type=notify",
                             "-p", "NotifyAccess=main", "-p", "WatchdogSec=5s",
                             "-p", "ExecReload=/bin/kill -HUP $MAINPID",
                             self._keywayd(), "--config", str(kw.config_path)],
                            capture_output=True, text=True, timeout=60)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        # systemd-run returns once READY=1 arrived (Type=notify): the port must accept now.
        self.assertEqual(request(port, "GET", "/_keyway/ready").status, 200)
        cp = subprocess.run(["systemctl", "--user", "reload", unit], capture_output=True, text=True, timeout=60)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(request(port, "GET", "/_keyway/ready").status, 200)
        cp = subprocess.run(["systemctl", "--user", "stop", unit], capture_output=True, text=True, timeout=60)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        show = subprocess.run(["systemctl", "--user", "show", unit, "-p", "Result,ExecMainStatus"],
                              capture_output=True, text=True, timeout=30).stdout
        self.assertNotIn("Result=watchdog", show)

    @staticmethod
    def _keywayd():
        from harness import binary
        return binary("keywayd")


if __name__ == "__main__":
    unittest.main()
