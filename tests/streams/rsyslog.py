"""Debian's rsyslogd as the receiver of the `syslog` stream tests: started by the test with a config of its
own in a temporary directory (imtcp on a free loopback port, optionally TLS with a CA and server
certificate made here), writing each message it receives as one JSON line: rsyslog's own RFC 5424 parse
of it beside the raw message."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RSYSLOGD = "/usr/sbin/rsyslogd"

# One JSON object a line: what rsyslog parsed (protocol-version 1 means it read RFC 5424) and the raw bytes.
CONFIG = """
global(workDirectory="{dir}" maxMessageSize="256k" {tls_global})
module(load="imtcp" {tls_module})
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="received")
template(name="parsed" type="list" option.jsonf="on") {{
  property(outname="protocol_version" name="protocol-version" format="jsonf")
  property(outname="pri" name="pri" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="structured_data" name="structured-data" format="jsonf")
  property(outname="raw" name="rawmsg" format="jsonf")
}}
ruleset(name="received") {{
  action(type="omfile" file="{dir}/received.jsonl" template="parsed")
}}
*.* action(type="omfile" file="{dir}/rsyslogd.log")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Pki:
    ca_pem: str
    cert_path: Path
    key_path: Path
    ca_path: Path


def make_pki(directory: Path, name: str = "auditkeep test CA") -> Pki:
    """A CA and a server certificate for 127.0.0.1 and localhost signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    pki = Pki(ca_pem=ca_pem, cert_path=directory / "server.pem", key_path=directory / "server.key",
              ca_path=directory / "ca.pem")
    pki.ca_path.write_text(ca_pem)
    pki.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    pki.key_path.chmod(0o600)
    return pki


@dataclass
class Rsyslog:
    directory: Path
    port: int
    pki: Pki | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def output(self) -> Path:
        return self.directory / "received.jsonl"

    def start(self) -> None:
        """Start rsyslogd in the foreground and wait until it accepts connections."""
        tls_global = tls_module = ""
        if self.pki is not None:
            tls_global = (f'DefaultNetstreamDriverCAFile="{self.pki.ca_path}" '
                          f'DefaultNetstreamDriverCertFile="{self.pki.cert_path}" '
                          f'DefaultNetstreamDriverKeyFile="{self.pki.key_path}"')
            tls_module = 'StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon"'
        conf = self.directory / "rsyslog.conf"
        conf.write_text(CONFIG.format(dir=self.directory, port=self.port, tls_global=tls_global,
                                      tls_module=tls_module))
        with (self.directory / "stderr.log").open("ab") as stderr:
            self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.directory / "rsyslogd.pid")],
                                         stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, f"rsyslogd exited: {self.diagnostics()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"rsyslogd did not listen: {self.diagnostics()}"
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it: it writes what it read, closes its connections, exits."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        self.proc = None

    def diagnostics(self) -> str:
        texts = [p.read_text(errors="replace")[-2000:] for p in (self.directory / "stderr.log",
                                                                 self.directory / "rsyslogd.log") if p.exists()]
        return " | ".join(texts)

    def received(self) -> list[dict[str, Any]]:
        """Every message written so far, in the order received (complete lines only)."""
        if not self.output.exists():
            return []
        lines = self.output.read_bytes().split(b"\n")[:-1]
        return [orjson.loads(line) for line in lines]


@contextmanager
def rsyslog(directory: Path, *, tls: bool = False) -> Iterator[Rsyslog]:
    directory.mkdir(parents=True, exist_ok=True)
    server = Rsyslog(directory=directory, port=free_port(), pki=make_pki(directory / "pki") if tls else None)
    server.start()
    try:
        yield server
    finally:
        server.stop()
