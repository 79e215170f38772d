"""The city CA's certificates (kiroku.engines.pki) verify under the strict X.509 rules that
Python 3.13 applies by default (``ssl.VERIFY_X509_STRICT``: Debian trixie, the image's
Python): without an Authority Key Identifier a device there could not reach the broker."""

from __future__ import annotations

import socket
import ssl
import threading

from kiroku.engines import pki


def test_a_server_certificate_verifies_under_strict_rules(tmp_path):
    ca_cert, ca_key = pki.make_ca(tmp_path / "ca")
    cert, key = pki.server_certificate(ca_cert, ca_key, tmp_path / "server", ["127.0.0.1", "localhost"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(ca_cert))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default, explicit on older ones
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.getpeercert()["subject"]
            tls.send(b"x")
    thread.join(10)
    listener.close()
