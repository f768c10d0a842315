"""Settings become the same Kafka connection for aiokafka clients and for Faust."""

import shutil
import ssl
import subprocess

import pytest

from streams.kafka_config import bootstrap_list, client_kwargs, faust_broker_settings
from streams.settings import SettingsError, load_settings


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate and its key (serves as CA and as client certificate)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "client.pem", folder / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=shopcast-test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


def test_plaintext_is_just_the_servers():
    settings = load_settings(bootstrap_servers="k1:9092, kafka://k2:9093,")
    assert client_kwargs(settings) == {
        "bootstrap_servers": ["k1:9092", "k2:9093"], "security_protocol": "PLAINTEXT"}
    faust = faust_broker_settings(settings)
    assert faust == {"broker": ["kafka://k1:9092", "kafka://k2:9093"],
                     "broker_credentials": None}


def test_a_server_without_port_names_the_variable():
    with pytest.raises(SettingsError, match="SHOPCAST_BOOTSTRAP_SERVERS.*no port"):
        bootstrap_list(load_settings(bootstrap_servers="kafka.example.com"))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext(mechanism):
    settings = load_settings(bootstrap_servers="k:9092", security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism=mechanism, sasl_username="shop",
                             sasl_password="s3cret")
    kwargs = client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == mechanism
    assert kwargs["sasl_plain_username"] == "shop"
    assert kwargs["sasl_plain_password"] == "s3cret"
    assert "ssl_context" not in kwargs

    credentials = faust_broker_settings(settings)["broker_credentials"]
    assert type(credentials).__name__ == "SASLCredentials"
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.mechanism.value == mechanism
    assert (credentials.username, credentials.password) == ("shop", "s3cret")


def test_sasl_ssl_with_scram_and_a_private_ca(certificate):
    cert, _ = certificate
    settings = load_settings(bootstrap_servers="k:9093", security_protocol="SASL_SSL",
                             sasl_mechanism="SCRAM-SHA-512", sasl_username="shop",
                             sasl_password="s3cret", ssl_cafile=cert)
    kwargs = client_kwargs(settings)
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any(c["subject"] == ((("commonName", "shopcast-test"),),)
               for c in context.get_ca_certs())
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"

    credentials = faust_broker_settings(settings)["broker_credentials"]
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.ssl_context is not None


def test_mutual_tls(certificate):
    cert, key = certificate
    settings = load_settings(bootstrap_servers="k:9093", security_protocol="SSL",
                             ssl_cafile=cert, ssl_certfile=cert, ssl_keyfile=key,
                             ssl_check_hostname=False)
    kwargs = client_kwargs(settings)
    assert kwargs["security_protocol"] == "SSL"
    assert kwargs["ssl_context"].check_hostname is False
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert "sasl_mechanism" not in kwargs

    credentials = faust_broker_settings(settings)["broker_credentials"]
    assert type(credentials).__name__ == "SSLCredentials"
    assert credentials.protocol.value == "SSL"


def test_ssl_without_files_trusts_the_system_cas():
    kwargs = client_kwargs(load_settings(bootstrap_servers="k:9093", security_protocol="SSL"))
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_a_missing_tls_file_names_the_variable(tmp_path):
    settings = load_settings(bootstrap_servers="k:9093", security_protocol="SSL",
                             ssl_cafile=tmp_path / "nope.pem")
    with pytest.raises(SettingsError, match="SHOPCAST_SSL_CAFILE.*nope.pem"):
        client_kwargs(settings)


def test_a_key_without_its_certificate_is_refused(certificate):
    _, key = certificate
    settings = load_settings(bootstrap_servers="k:9093", security_protocol="SSL",
                             ssl_keyfile=key)
    with pytest.raises(SettingsError, match="SHOPCAST_SSL_KEYFILE.*SHOPCAST_SSL_CERTFILE"):
        client_kwargs(settings)


def test_a_broken_certificate_names_the_variables(tmp_path, certificate):
    _, key = certificate
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    settings = load_settings(bootstrap_servers="k:9093", security_protocol="SSL",
                             ssl_certfile=bad, ssl_keyfile=key)
    with pytest.raises(SettingsError, match="SHOPCAST_SSL_CERTFILE"):
        client_kwargs(settings)


def test_tls_files_are_ignored_for_plaintext(tmp_path):
    settings = load_settings(bootstrap_servers="k:9092", ssl_cafile=tmp_path / "nope.pem")
    assert "ssl_context" not in client_kwargs(settings)


def test_the_password_never_shows_in_credentials_repr():
    settings = load_settings(bootstrap_servers="k:9092", security_protocol="SASL_PLAINTEXT",
                             sasl_username="shop", sasl_password="s3cret")
    assert "s3cret" not in repr(faust_broker_settings(settings))
