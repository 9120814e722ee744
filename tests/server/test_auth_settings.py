"""The server's token and TLS settings: checked at start, never shown; client certificates
when --tls-client-ca asks for them."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from pydantic import ValidationError

from forkwire.client.local import LocalServer
from forkwire.protocol import Hello, Welcome, decode_reply, pack
from forkwire.server.config import Settings

SECRET = "settings-secret-42"


def test_the_token_is_never_shown() -> None:
    settings = Settings(token=SECRET)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())
    assert settings.secret() == SECRET


def test_the_token_file_gives_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {SECRET}  \nignored\n")
    assert Settings(token_file=path).secret() == SECRET
    path.write_text("\n")
    with pytest.raises(ValueError, match="no token on its first line"):
        Settings(token_file=path).secret()
    with pytest.raises(ValueError, match="cannot read --token-file"):
        Settings(token_file=tmp_path / "missing").secret()
    assert Settings().secret() is None


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"token": "a", "token_file": "f"}, "not both"),
        ({"token": ""}, "must not be empty"),
        ({"tls_key": "k.pem"}, "need --tls-cert"),
        ({"tls_client_ca": "ca.pem"}, "need --tls-cert"),
    ],
)
def test_contradictory_settings_are_refused(fields: dict[str, str], said: str) -> None:
    with pytest.raises(ValidationError, match=said):
        Settings(**fields)  # type: ignore[arg-type]


def _server(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forkwire.server", "--port", "0", "--db", "memory://", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_an_unreadable_token_file_or_certificate_is_one_line(tmp_path: Path) -> None:
    done = _server("--token-file", str(tmp_path / "missing"))
    assert done.returncode == 2
    assert "cannot read --token-file" in done.stderr.strip().splitlines()[-1]
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    done = _server("--tls-cert", str(bad))
    assert done.returncode == 1
    assert "forkwire-server: cannot start:" in done.stderr.strip().splitlines()[-1]


async def _hello_over_tls(port: int, context: ssl.SSLContext) -> object:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        writer.write(pack(Hello()))
        async with asyncio.timeout(5):
            header = await reader.readexactly(4)
            return decode_reply(await reader.readexactly(int.from_bytes(header, "big")))
    finally:
        writer.close()


async def test_client_certificates_are_required_with_tls_client_ca(tmp_path: Path) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    client_ca.cert_pem.write_to_path(str(tmp_path / "clients.pem"))
    server = await LocalServer.start(
        "--db", "memory://", "--no-udp", "--tls-cert", str(tmp_path / "server.pem"),
        "--tls-client-ca", str(tmp_path / "clients.pem"),
    )  # fmt: skip
    try:
        context = ssl.create_default_context()
        server_ca.configure_trust(context)
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await _hello_over_tls(server.port, context)
        client_ca.issue_cert("client@example").configure_cert(context)
        assert isinstance(await _hello_over_tls(server.port, context), Welcome)
        # A certificate from another CA is refused as no certificate is.
        stranger = ssl.create_default_context()
        server_ca.configure_trust(stranger)
        trustme.CA().issue_cert("client@example").configure_cert(stranger)
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await _hello_over_tls(server.port, stranger)
    finally:
        await server.stop()
    failures = server.named("tls_handshake_failed")
    assert failures, "the refused handshakes are logged"
