"""The web UI's HTTPS certificate: made on the device at first start, or the city's own.

The certificate's SHA-256 fingerprint is printed on the console at start so that the
first person to open the admin page can check it is talking to this device.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import ipaddress
import socket
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware.fsutil import atomic_write, makedirs_durable


def paths(data_dir: Path) -> tuple[Path, Path]:
    folder = Path(data_dir) / "web" / "tls"
    return folder / "cert.pem", folder / "key.pem"


def ensure_certificate(data_dir: Path, device: str) -> Path:
    """The certificate to serve, generating a self-signed one (10 years, P-256) if none exists.

    At first boot the web UI and the console banner ask at the same moment: the first makes
    it under a lock, the other waits and uses the same one (made twice, one's key could end
    up beside the other's certificate, and the banner would name a certificate nobody serves).
    """
    cert_path, key_path = paths(data_dir)
    if cert_path.exists() and key_path.exists():
        return cert_path
    with _locked(cert_path.parent):
        if not (cert_path.exists() and key_path.exists()):
            _make_certificate(cert_path, key_path, device)
    return cert_path


@contextmanager
def _locked(folder: Path):
    """The key and the certificate are written as a pair: one writer at a time."""
    makedirs_durable(folder)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _make_certificate(cert_path: Path, key_path: Path, device: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    hostname = socket.gethostname()
    names = [x509.DNSName(n) for n in sorted({hostname, f"{hostname}.local", "localhost"})]
    names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kiroku {device}"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kiroku")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    atomic_write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), mode=0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def install(data_dir: Path, cert_file: Path, key_file: Path) -> str:
    """Use the city's own certificate; returns its fingerprint. Refuses a pair that does not match."""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    if cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise ValueError("the certificate and the key do not belong together")
    cert_path, key_path = paths(data_dir)
    with _locked(cert_path.parent):
        atomic_write(key_path, Path(key_file).read_bytes(), mode=0o600)
        atomic_write(cert_path, Path(cert_file).read_bytes(), mode=0o644)
    return fingerprint(cert_path)


def fingerprint(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
