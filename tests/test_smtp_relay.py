"""The concentrator's own e-mails (alerts, digests, reports, standard e-mails) reach the region's
relay as Airflow's SMTP hook and `rpu region check` reach it: SMTPS unless ``disable_ssl``, else
STARTTLS unless ``disable_tls``, and the relay's certificate checked. A real SMTPS server on
loopback with a certificate made here."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rpu.config.mail import SmtpSettings
from rpu.sandbox.smtp_sink import SmtpSink


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relais de test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("relais")
    cert_file, key_file = folder / "relais.pem", folder / "relais.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def smtps_relay(certificate):
    cert_file, key_file = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    with SmtpSink(tls_context=context) as sink:
        yield sink


def settings_of(connection: dict) -> SmtpSettings:
    return SmtpSettings.from_connection(connection["host"], connection["port"], None, None, connection["extra"])


def test_a_connection_is_read_as_airflow_s_smtp_hook_reads_it():
    def read(extra):
        settings = SmtpSettings.from_connection("relais", 465, None, None, extra)
        return settings.implicit_tls, settings.starttls

    assert read({}) == (True, False)  # the hook's default: SMTP over SSL
    assert read({"disable_ssl": True}) == (False, True)  # then STARTTLS
    assert read({"disable_ssl": "true", "disable_tls": True}) == (False, False)  # an internal relay, plain


def test_an_smtps_relay_with_a_trusted_certificate_gets_the_mail(smtps_relay, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the relay's certificate, trusted here
    settings = settings_of(smtps_relay.airflow_connection())
    assert settings.implicit_tls
    settings.send(["ars@example.org"], "Veille RPU : essai", "Bonjour,\n\nun essai du relais.\n")
    message = smtps_relay.wait_for()
    assert message["Subject"] == "Veille RPU : essai" and "un essai du relais" in message.get_content()


def test_an_smtps_relay_whose_certificate_is_not_trusted_gets_nothing(smtps_relay, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(ssl.SSLCertVerificationError):
        settings_of(smtps_relay.airflow_connection()).send(["ars@example.org"], "Veille RPU", "Bonjour")
    assert not smtps_relay.messages
