#!/usr/bin/env python3
"""tls_ca.py: a throw-away PKI for keyway's TLS tests, made at run time with the `openssl` CLI (Python 3 stdlib).

No key or certificate is kept in the repository: everything is made in a temp dir on first use and removed
when the process exits. Keys are EC P-256 (fast to make; every party here speaks ECDSA).

    pki = test_pki()                     # one per process, made on first call (~0.3 s)
    pki.ca_file                          # the test CA (PEM): what keyway's `tls.ca_file` points at
    pki.server_context()                 # ssl.SSLContext for a fake upstream: 127.0.0.1 + localhost
    pki.server_context("expired")        # ... with the expired certificate (see CERTS)
    pki.server_context(require_client_cert=True)   # mutual TLS: the client must present a cert of the CA
    pki.client_context()                 # ssl.SSLContext for a test that talks to a TLS fake directly
    pki.path("client.pem"), pki.path("client.key"), pki.subject("client")

Every subject carries a random tag (`pki.tag`), so a test can assert that no certificate content (CN,
organisation) reached a response or a log line.

CERTS (name -> what it is; files <name>.pem and <name>.key):
    server        signed by the CA, SAN IP:127.0.0.1 and DNS:localhost, valid now
    wrong-host    signed by the CA, SAN DNS:wrong-host.invalid only
    cn-only       signed by the CA, no SAN, its CN only (libcurl then quotes the CN in its error:
                  what keyway must never pass on)
    expired       signed by the CA, SAN IP:127.0.0.1, valid in 2020 only (made with `openssl ca`, since
                  OpenSSL 3.0's `x509 -req` cannot backdate)
    other-ca      signed by a second CA keyway does not trust, SAN IP:127.0.0.1
    client        client certificate (extendedKeyUsage clientAuth) signed by the CA
    other-client  client certificate signed by the second CA
    client-combined.pem   client.pem followed by client.key (one file for both settings)
    server-client serverAuth and clientAuth, SAN IP:127.0.0.1: the etcd members of the fleet tests
                  with client certificates required (etcd's JSON gateway dials the member's own TLS
                  port with the server certificate, which must then pass as a client's too)
"""

import atexit
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import threading

__all__ = ["TestPki", "test_pki", "CERTS"]

CERTS = ("server", "wrong-host", "cn-only", "expired", "other-ca", "client", "other-client", "server-client")

_REQ_CNF = """\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = placeholder
"""

_EXT_CNF = """\
[ ca_ext ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ server ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1,DNS:localhost
[ wrong_host ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:wrong-host.invalid
[ cn_only ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ server_client ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1,DNS:localhost
[ client ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

# `openssl ca` (the only 3.0 command that takes a start date) wants a database and a policy.
_CA_CNF = """\
[ ca ]
default_ca = test_ca
[ test_ca ]
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = any
unique_subject = no
email_in_dn = no
[ any ]
commonName = supplied
organizationName = optional
"""


class TestPki:
    """A CA, a second (untrusted) CA and the certificates of CERTS, in `directory`."""

    def __init__(self, directory):
        self.dir = directory
        self.tag = secrets.token_hex(6)
        self._openssl("version")  # fails early and clearly when the CLI is missing
        self._write("req.cnf", _REQ_CNF)
        self._write("ext.cnf", _EXT_CNF)
        self._ca("ca")
        self._ca("other-ca-root")
        self._leaf("server", "ca", "server")
        self._leaf("wrong-host", "ca", "wrong_host")
        self._leaf("cn-only", "ca", "cn_only")
        self._leaf("other-ca", "other-ca-root", "server")
        self._leaf("client", "ca", "client")
        self._leaf("other-client", "other-ca-root", "client")
        self._expired("expired", "ca")
        self._leaf("server-client", "ca", "server_client")
        with open(self.path("client-combined.pem"), "w", encoding="ascii") as out:
            for part in ("client.pem", "client.key"):
                with open(self.path(part), encoding="ascii") as f:
                    out.write(f.read())

    # ---- files ---------------------------------------------------------------------------------
    def path(self, name):
        return os.path.join(self.dir, name)

    @property
    def ca_file(self):
        return self.path("ca.pem")

    @property
    def other_ca_file(self):
        return self.path("other-ca-root.pem")

    def subject(self, name):
        """The CN of certificate `name` (random per process: look for it where it must not be)."""
        return "kw-test-%s-%s" % (name, self.tag)

    @property
    def organisation(self):
        return "Keyway Test PKI %s" % self.tag

    # ---- contexts ------------------------------------------------------------------------------
    def server_context(self, cert="server", require_client_cert=False, alpn=("http/1.1",)):
        """A server-side SSLContext with certificate `cert`; with require_client_cert, a handshake
        without a client certificate signed by the test CA fails."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.path(cert + ".pem"), self.path(cert + ".key"))
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca_file)
        return ctx

    def client_context(self, cert=None):
        """A client-side SSLContext trusting the test CA (and presenting client cert `cert`)."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if cert:
            ctx.load_cert_chain(self.path(cert + ".pem"), self.path(cert + ".key"))
        return ctx

    # ---- making ------------------------------------------------------------------------------
    def _write(self, name, text):
        with open(self.path(name), "w", encoding="ascii") as f:
            f.write(text)

    def _openssl(self, *args):
        try:
            cp = subprocess.run(("openssl",) + args, capture_output=True, text=True, timeout=60, cwd=self.dir)
        except FileNotFoundError:
            raise RuntimeError("the openssl CLI is not installed (Debian: apt-get install openssl)")
        if cp.returncode != 0:
            raise RuntimeError("openssl %s failed (%d): %s" % (args[0], cp.returncode, cp.stderr[-800:]))
        return cp.stdout

    def _subj(self, name):
        return "/CN=%s/O=%s" % (self.subject(name), self.organisation)

    def _key_and_csr(self, name):
        self._openssl("req", "-config", "req.cnf", "-new", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes", "-subj", self._subj(name),
                      "-keyout", name + ".key", "-out", name + ".csr")

    def _ca(self, name):
        # `req -x509` takes its extensions from the -config file only: a config with both sections.
        self._write(name + "-req.cnf", _REQ_CNF + "\n" + _EXT_CNF)
        self._openssl("req", "-config", name + "-req.cnf", "-x509", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes", "-sha256", "-days", "3",
                      "-subj", self._subj(name), "-extensions", "ca_ext",
                      "-keyout", name + ".key", "-out", name + ".pem")

    def _leaf(self, name, ca, extensions):
        self._key_and_csr(name)
        self._openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                      "-set_serial", str(secrets.randbits(63)), "-days", "2", "-sha256",
                      "-extfile", "ext.cnf", "-extensions", extensions, "-out", name + ".pem")

    def _expired(self, name, ca):
        self._key_and_csr(name)
        db = os.path.join(self.dir, "ca-db")
        os.makedirs(db, exist_ok=True)
        open(os.path.join(db, "index.txt"), "w").close()
        with open(os.path.join(db, "serial"), "w") as f:
            f.write("%016X\n" % secrets.randbits(63))
        self._write("ca.cnf", _CA_CNF.format(dir=db) + "\n" + _EXT_CNF)
        self._openssl("ca", "-config", "ca.cnf", "-batch", "-notext", "-cert", ca + ".pem", "-keyfile", ca + ".key",
                      "-in", name + ".csr", "-out", name + ".pem", "-startdate", "20200101000000Z",
                      "-enddate", "20200201000000Z", "-extensions", "server")


_lock = threading.Lock()
_pki = None


def test_pki():
    """The process's TestPki, made on first call in a temp dir that is removed at exit."""
    global _pki
    with _lock:
        if _pki is None:
            directory = tempfile.mkdtemp(prefix="keyway-pki-")
            if not os.environ.get("KEYWAY_IT_KEEP"):
                atexit.register(shutil.rmtree, directory, True)
            try:
                _pki = TestPki(directory)
            except BaseException:
                shutil.rmtree(directory, True)
                raise
        return _pki


# `test_pki` is a factory, not a test: keep unittest/pytest discovery away from it.
test_pki.__test__ = False
TestPki.__test__ = False


if __name__ == "__main__":
    p = test_pki()
    print(p.dir)
