"""Interoperability test: talk to a real `dynreg serve` the way Tencent's device SDKs do.

Written from ../shared/PROTOCOL.md and docs/api.md alone. Nothing here is ported from the
Swift sources, so a misreading of the protocol on either side shows up as a failure here.
The `test_vector_*` tests prove this Python side against the shared known-answer vectors
first; they need no server (`python3 -m pytest interop -q -k vector`).

Only the standard library and `cryptography` are used, as a device-side script would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import socket

import pytest
from brokers import make_ca, make_leaf, pem_of
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

REPO_ROOT = Path(__file__).resolve().parents[1]
VECTOR_DIR = REPO_ROOT / "Sources" / "DynRegTestVectors" / "Resources"

PUBLIC_GATEWAY = "ap-guangzhou.gateway.tencentdevices.com"
PAYLOAD_IV = b"0" * 16  # sixteen ASCII '0' characters, not sixteen zero bytes
LISTENING = re.compile(r"dynreg listening on http://127\.0\.0\.1:([1-9][0-9]*)")  # the real port, not 0
HASHES = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}
HMACS = {"hmacsha256": hashlib.sha256, "hmacsha1": hashlib.sha1}


# --------------------------------------------------------------------------------------
# The device side of the protocol, as the SDKs compute it
# --------------------------------------------------------------------------------------


def canonical_host(host_header: str) -> str:
    """The host a device signs: its URL's host, i.e. the Host header without a port."""
    return host_header.split(":", 1)[0]


def v2_string_to_sign(host: str, algorithm: str, timestamp: int, nonce: int, body: bytes,
                      body_hash: str) -> str:
    # The body hash is over the raw bytes sent, never over a re-serialisation.
    return "\n".join([
        "POST", host, "/device/register", "",  # the query string is always empty
        algorithm.lower(), str(timestamp), str(nonce),
        HASHES[body_hash](body).hexdigest(),
    ])


def v2_signature(product_secret: str, string_to_sign: str, algorithm: str) -> str:
    digest = hmac.new(product_secret.encode(), string_to_sign.encode(), HMACS[algorithm.lower()])
    return base64.b64encode(digest.digest()).decode()  # Base64 of the raw digest


def legacy_signature(product_secret: str, device_name: str, nonce: int, product_id: str,
                     timestamp: int) -> str:
    text = f"deviceName={device_name}&nonce={nonce}&productId={product_id}&timestamp={timestamp}"
    hex_digest = hmac.new(product_secret.encode(), text.encode(), hashlib.sha1).hexdigest()
    # The legacy quirk: Base64 over the 40 lowercase hex characters, not over the digest.
    return base64.b64encode(hex_digest.encode()).decode()


def _payload_cipher(product_secret: str) -> Cipher:
    return Cipher(algorithms.AES(product_secret.encode()[:16]), modes.CBC(PAYLOAD_IV))


def encrypt_payload(product_secret: str, plaintext: bytes) -> str:
    # Zero padding up to a multiple of 16; nothing added when already aligned (no PKCS#7).
    padded = plaintext + b"\0" * (-len(plaintext) % 16)
    encryptor = _payload_cipher(product_secret).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def decrypt_payload(product_secret: str, payload: str, length: int) -> bytes:
    """Decrypt as both SDK families do, and insist they agree."""
    ciphertext = base64.b64decode(payload, validate=True)
    assert ciphertext and len(ciphertext) % 16 == 0, f"ciphertext of {len(ciphertext)} bytes"
    decryptor = _payload_cipher(product_secret).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    assert 0 <= len(padded) - length < 16, f"Len {length} does not fit {len(padded)} padded bytes"
    assert padded[length:] == b"\0" * (len(padded) - length), "padding is not zero bytes"
    java_style = padded[:length]  # Java SDK: trim to Len
    python_style = padded.rstrip(b"\0")  # Python SDK: strip trailing NULs
    assert java_style == python_style, "trim-to-Len and strip-NULs disagree"
    return java_style


def mqtt_credentials(product_id: str, device_name: str, psk: str, *, app_id: str = "12010126",
                     conn_id: str = "a1B2c", expiry: int | None = None,
                     algorithm: str = "hmacsha256") -> tuple[str, str, str]:
    client_id = product_id + device_name
    if expiry is None:
        expiry = int(time.time()) + 3600
    username = f"{client_id};{app_id};{conn_id};{expiry}"
    token = hmac.new(base64.b64decode(psk), username.encode(), HMACS[algorithm]).hexdigest()
    return client_id, username, f"{token};{algorithm}"


# --------------------------------------------------------------------------------------
# Known-answer vectors: prove the functions above before trusting them against a server
# --------------------------------------------------------------------------------------


def load_vectors(name: str) -> list[dict]:
    return json.loads((VECTOR_DIR / name).read_text(encoding="utf-8"))


def vector_params(name: str):
    return [pytest.param(v, id=v["name"]) for v in load_vectors(name)]


@pytest.mark.parametrize("vector", vector_params("signature-v2.json"))
def test_vector_v2_signature(vector):
    body = vector["body"].encode()
    assert canonical_host(vector["hostHeader"]) == vector["canonicalHost"]
    assert HASHES[vector["bodyHashAlgorithm"]](body).hexdigest() == vector["bodyHashHex"]
    text = v2_string_to_sign(vector["canonicalHost"], vector["algorithmHeader"], vector["timestamp"],
                             vector["nonce"], body, vector["bodyHashAlgorithm"])
    assert text == vector["stringToSign"]
    assert v2_signature(vector["productSecret"], text, vector["algorithmHeader"]) == vector["signature"]


@pytest.mark.parametrize("vector", vector_params("signature-legacy.json"))
def test_vector_legacy_signature(vector):
    signature = legacy_signature(vector["productSecret"], vector["deviceName"], vector["nonce"],
                                 vector["productId"], vector["timestamp"])
    assert signature == vector["signature"]


@pytest.mark.parametrize("vector", vector_params("payload.json"))
def test_vector_payload(vector):
    plaintext = vector["plaintext"].encode()
    assert len(plaintext) == vector["len"]
    assert encrypt_payload(vector["productSecret"], plaintext) == vector["payload"]
    assert decrypt_payload(vector["productSecret"], vector["payload"], vector["len"]) == plaintext
    assert b"\\/" not in plaintext
    assert json.loads(plaintext)["encryptionType"] in (1, 2)


@pytest.mark.parametrize("vector", vector_params("mqtt-credentials.json"))
def test_vector_mqtt_credentials(vector):
    client_id, username, password = mqtt_credentials(
        vector["productId"], vector["deviceName"], vector["psk"], app_id=vector["appId"],
        conn_id=vector["connId"], expiry=vector["expiry"], algorithm=vector["algorithm"])
    assert (client_id, username, password) == (vector["clientId"], vector["username"], vector["password"])


# --------------------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    raw: bytes

    @property
    def json(self):
        return json.loads(self.raw)


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict | None = None) -> Reply:
    # http.client rather than urllib: the tests need the exact Host header and body bytes.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.read())
    finally:
        conn.close()


def new_nonce() -> int:
    return secrets.randbelow(2**31)  # SDKs send 0 ... 2^31-1


def new_device_name() -> str:
    return "dev-" + secrets.token_hex(6)


class Server:
    def __init__(self, port: int, admin_token: str, broker_token: str):
        self.port = port
        self.admin_token = admin_token
        self.broker_token = broker_token
        self.host_header = f"127.0.0.1:{port}"  # what an SDK pointed at this server sends

    # Admin API ---------------------------------------------------------------------

    def admin(self, method: str, path: str, payload: dict | None = None,
              token: str | None = None) -> Reply:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        return http_request(self.port, method, "/admin/v1" + path, body, headers)

    def create_product(self, **settings) -> dict:
        # Explicit switches: docs/api.md does not state the defaults.
        payload = {"name": "interop-" + secrets.token_hex(3), "authType": "key",
                   "dynamicRegistration": True, "autoCreate": True, **settings}
        reply = self.admin("POST", "/products", payload)
        assert reply.status == 201, reply.raw
        product = reply.json
        assert len(product["productSecret"]) >= 16, "SDKs refuse product secrets under 16 characters"
        return product

    def device_status(self, product_id: str, device_name: str) -> str:
        reply = self.admin("GET", f"/products/{product_id}/devices/{device_name}")
        assert reply.status == 200, reply.raw
        return reply.json["status"]

    # Device endpoints --------------------------------------------------------------

    def register_v2(self, product: dict, device_name: str, *, secret: str | None = None,
                    algorithm: str = "hmacsha256", body_hash: str | None = None,
                    sign_host: str = "127.0.0.1", body: bytes | None = None,
                    timestamp: int | None = None, nonce: int | None = None) -> Reply:
        if body is None:
            body = json.dumps({"ProductId": product["productId"], "DeviceName": device_name},
                              separators=(",", ":")).encode()
        if body_hash is None:
            # Tencent's signing tool hashes the body with SHA-1 for hmacsha1.
            body_hash = "sha1" if algorithm.lower() == "hmacsha1" else "sha256"
        timestamp = int(time.time()) if timestamp is None else timestamp
        nonce = new_nonce() if nonce is None else nonce
        text = v2_string_to_sign(sign_host, algorithm, timestamp, nonce, body, body_hash)
        headers = {
            "Host": self.host_header,
            "Content-Type": "application/json; charset=utf-8",
            "X-TC-Algorithm": algorithm,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Nonce": str(nonce),
            "X-TC-Signature": v2_signature(secret or product["productSecret"], text, algorithm),
        }
        return http_request(self.port, "POST", "/device/register", body, headers)

    def legacy_body(self, product: dict, device_name: str, *, secret: str | None = None,
                    product_id: str | None = None, timestamp: int | None = None,
                    nonce: int | None = None) -> bytes:
        product_id = product_id or product["productId"]
        timestamp = int(time.time()) if timestamp is None else timestamp
        nonce = new_nonce() if nonce is None else nonce
        signature = legacy_signature(secret or product["productSecret"], device_name, nonce,
                                     product_id, timestamp)
        # Built the way the C SDK's sprintf does.
        return (f'{{"deviceName":"{device_name}","nonce":{nonce},"productId":"{product_id}",'
                f'"timestamp":{timestamp},"signature":"{signature}"}}').encode()

    def register_legacy(self, product: dict, device_name: str, *, secret: str | None = None,
                        product_id: str | None = None, timestamp: int | None = None,
                        nonce: int | None = None) -> Reply:
        body = self.legacy_body(product, device_name, secret=secret, product_id=product_id,
                                timestamp=timestamp, nonce=nonce)
        # Sent with the C SDK's form content type.
        headers = {"Host": self.host_header, "Content-Type": "application/x-www-form-urlencoded"}
        return http_request(self.port, "POST", "/register/dev", body, headers)

    def device_auth(self, client_id: str, username: str, password: str) -> str:
        body = json.dumps({"clientid": client_id, "username": username, "password": password}).encode()
        reply = http_request(self.port, "POST", "/device/auth", body,
                             {"Content-Type": "application/json",
                              "Authorization": f"Bearer {self.broker_token}"})
        assert reply.status == 200, reply.raw
        return reply.json["result"]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: the server should shut down gracefully
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dynreg_binary() -> Path:
    default = REPO_ROOT / ".build" / "debug" / "dynreg"
    binary = Path(os.environ.get("DYNREG_BIN", default))
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"dynreg binary not found at {binary}: run `swift build` in {REPO_ROOT} "
                    f"(or set DYNREG_BIN to the binary)", pytrace=False)
    return binary


def start_server(tmp_path_factory, *extra_args: str, data_dir: Path | None = None,
                 stderr_path: Path | None = None, preexec_fn=None) -> tuple[Server, subprocess.Popen]:
    """`dynreg serve` on a free loopback port with fresh tokens and data (or `data_dir`); stop it with `_stop`."""
    binary = dynreg_binary()
    data_dir = data_dir or tmp_path_factory.mktemp("dynreg-data")
    stderr_path = stderr_path or tmp_path_factory.mktemp("dynreg-log") / "stderr.log"
    token = secrets.token_urlsafe(24)
    broker_token = secrets.token_urlsafe(32)
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [str(binary), "serve", "--host", "127.0.0.1", "--port", "0",
             "--data-dir", str(data_dir), "--no-demo", *extra_args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, preexec_fn=preexec_fn,
            env={**os.environ, "DYNREG_ADMIN_TOKEN": token, "DYNREG_BROKER_TOKEN": broker_token})

    stdout_lines: list[str] = []
    found: dict[str, int] = {}
    done = threading.Event()

    def pump():
        # Keep draining stdout for the whole run so a chatty server never blocks on a full pipe.
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            stdout_lines.append(line)
            match = LISTENING.fullmatch(line.strip())
            if match and not done.is_set():
                found["port"] = int(match.group(1))
                done.set()
        done.set()  # end of stdout: the server exited

    threading.Thread(target=pump, daemon=True).start()
    done.wait(timeout=60)
    if "port" not in found:
        exited = done.is_set()  # stdout reached its end: the server exited
        if exited:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        _stop(proc)
        why = (f"dynreg exited with status {proc.returncode} before printing" if exited else
               "dynreg did not print within 60 s (if it did print, was stdout flushed? "
               "It is a pipe here, not a terminal)")
        pytest.fail(
            f"{why} `dynreg listening on http://127.0.0.1:PORT`.\nstdout:\n"
            + "\n".join(stdout_lines)
            + "\nstderr:\n" + stderr_path.read_text(errors="replace")[-4000:], pytrace=False)
    return Server(found["port"], token, broker_token), proc


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    running, proc = start_server(tmp_path_factory)
    try:
        yield running
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def product(server) -> dict:
    """A key-authentication product with dynamic registration and auto-create on."""
    return server.create_product()


# Response helpers ----------------------------------------------------------------------


def no_escaped_slashes(reply: Reply) -> None:
    # The C SDK's JSON reader does not unescape `\/`, and Base64 payloads contain `/`.
    assert b"\\/" not in reply.raw, reply.raw


def v2_success(reply: Reply) -> dict:
    assert reply.status == 200, reply.raw
    no_escaped_slashes(reply)
    response = reply.json["Response"]
    assert "Error" not in response, response
    assert isinstance(response["Len"], int) and isinstance(response["Payload"], str)
    assert response["RequestId"]
    return response


def v2_error_code(reply: Reply) -> str:
    # Business errors come with HTTP 200: the Python SDK raises on any other status
    # before reading the body, and the Java SDK discards the body.
    assert reply.status == 200, reply.raw
    response = reply.json["Response"]
    assert "Payload" not in response, response
    assert response["RequestId"]
    assert isinstance(response["Error"]["Message"], str)
    return response["Error"]["Code"]


def credential(product: dict, response: dict) -> dict:
    """Decrypt a success payload (v2 `Payload`/`Len` or legacy `payload`/`len`)."""
    plaintext = decrypt_payload(product["productSecret"], response["Payload"], response["Len"])
    assert b"\\/" not in plaintext, plaintext  # the C SDK would keep the backslash
    return json.loads(plaintext)


def psk_of(product: dict, response: dict) -> str:
    payload = credential(product, response)
    assert payload["encryptionType"] == 2, payload
    assert set(payload) == {"encryptionType", "psk"}, payload
    assert len(base64.b64decode(payload["psk"], validate=True)) == 16, payload
    return payload["psk"]


# --------------------------------------------------------------------------------------
# Device endpoints against the running server
# --------------------------------------------------------------------------------------


def test_health(server):
    reply = http_request(server.port, "GET", "/health")
    assert (reply.status, reply.json) == (200, {"status": "ok"})


def test_v2_register_hmacsha256(server, product):
    response = v2_success(server.register_v2(product, new_device_name()))
    psk_of(product, response)


@pytest.mark.parametrize("body_hash", ["sha1", "sha256"])
def test_v2_register_hmacsha1(server, product, body_hash):
    # Tencent's tool hashes the body with SHA-1; the written spec says SHA-256. Both occur.
    reply = server.register_v2(product, new_device_name(), algorithm="hmacsha1", body_hash=body_hash)
    psk_of(product, v2_success(reply))


def test_v2_algorithm_header_is_case_insensitive(server, product):
    reply = server.register_v2(product, new_device_name(), algorithm="HmacSha256")
    psk_of(product, v2_success(reply))


def test_v2_host_header_with_port_signs_bare_host(server, product):
    assert ":" in server.host_header  # the device sent Host: 127.0.0.1:PORT ...
    reply = server.register_v2(product, new_device_name(), sign_host="127.0.0.1")  # ... and signed url.host
    psk_of(product, v2_success(reply))


def test_v2_signing_public_gateway_name(server, product):
    # Some SDKs sign the public gateway name whatever URL they were pointed at.
    reply = server.register_v2(product, new_device_name(), sign_host=PUBLIC_GATEWAY)
    psk_of(product, v2_success(reply))


def test_v2_signing_unlisted_host_fails(server, product):
    reply = server.register_v2(product, new_device_name(), sign_host="iot.example.com")
    assert v2_error_code(reply) == "AuthFailure.SignatureFailure"


def test_v2_reversed_key_order_with_spaces(server, product):
    device = "AA:BB:CC:" + secrets.token_hex(3).upper()  # MAC-style names are common
    body = json.dumps({"DeviceName": device, "ProductId": product["productId"]}).encode()
    assert b", " in body and b": " in body
    psk_of(product, v2_success(server.register_v2(product, device, body=body)))


def test_v2_large_and_small_nonces(server, product):
    for nonce in (2**31 - 1, 1):
        psk_of(product, v2_success(server.register_v2(product, new_device_name(), nonce=nonce)))


def test_v2_wrong_secret(server, product):
    reply = server.register_v2(product, new_device_name(), secret="WrongSecretWrongSecret00")
    assert v2_error_code(reply) == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize("offset", [-3600, 3600])
def test_v2_timestamp_outside_window(server, product, offset):
    reply = server.register_v2(product, new_device_name(), timestamp=int(time.time()) + offset)
    assert v2_error_code(reply) == "AuthFailure.SignatureExpire"


def test_v2_unknown_product(server, product):
    fake = {"productId": "NOSUCH" + secrets.token_hex(2).upper(), "productSecret": product["productSecret"]}
    assert v2_error_code(server.register_v2(fake, new_device_name())) == "ResourceNotFound.ProductNotExist"


@pytest.mark.parametrize("device_name", ["has space", "x" * 49, "", "slash/name", "semi;colon"])
def test_v2_bad_device_name(server, product, device_name):
    reply = server.register_v2(product, device_name)
    assert v2_error_code(reply) == "InvalidParameterValue.DeviceNameInvalid"


def test_v2_longest_device_name(server, product):
    name = ("Az09_-.:@" + secrets.token_hex(24))[:48]
    psk_of(product, v2_success(server.register_v2(product, name)))


@pytest.mark.parametrize("body", [b"not json", b'{"DeviceName":"dev-1"}', b"[]"])
def test_v2_malformed_body(server, product, body):
    reply = server.register_v2(product, "dev-1", body=body)
    assert v2_error_code(reply) == "InvalidParameter"


def test_v2_replayed_nonce(server, product):
    # The same (timestamp, nonce) in another request: here another algorithm. A byte-identical
    # repeat is a retry (test_v2_byte_identical_retry_gets_the_first_answer).
    device, timestamp, nonce = new_device_name(), int(time.time()), new_nonce()
    v2_success(server.register_v2(product, device, timestamp=timestamp, nonce=nonce))
    replay = server.register_v2(product, device, algorithm="hmacsha1", timestamp=timestamp, nonce=nonce)
    assert v2_error_code(replay) == "AuthFailure.NonceReused"


def test_v2_reregister_before_activation_gives_new_psk(server, product):
    device = new_device_name()
    first = psk_of(product, v2_success(server.register_v2(product, device)))
    second = psk_of(product, v2_success(server.register_v2(product, device)))
    assert first != second


# Legacy /register/dev -----------------------------------------------------------------


def test_legacy_register(server, product):
    reply = server.register_legacy(product, new_device_name())
    assert reply.status == 200, reply.raw
    no_escaped_slashes(reply)
    envelope = reply.json
    assert envelope["code"] == 0 and envelope["message"] == "success", envelope
    assert envelope["requestId"]
    psk_of(product, {"Payload": envelope["payload"], "Len": envelope["len"]})


def test_legacy_wrong_secret(server, product):
    reply = server.register_legacy(product, new_device_name(), secret="WrongSecretWrongSecret00")
    assert reply.status == 200, reply.raw
    envelope = reply.json
    # 1010 and this message are what deployed clients have seen.
    assert (envelope["code"], envelope["message"]) == (1010, "Check signature failed"), envelope
    assert envelope["requestId"] and "payload" not in envelope


def test_legacy_unknown_product(server, product):
    reply = server.register_legacy(product, new_device_name(), product_id="NOSUCHPROD")
    assert reply.status == 200, reply.raw
    assert reply.json["code"] == 1003, reply.json


# MQTT broker hook and activation ------------------------------------------------------


def test_mqtt_auth_activates_device(server, product):
    device = new_device_name()
    psk = psk_of(product, v2_success(server.register_v2(product, device)))
    assert server.device_status(product["productId"], device) == "registered"

    client_id, username, password = mqtt_credentials(product["productId"], device, psk)
    wrong = "0" * 64 + ";hmacsha256"
    assert server.device_auth(client_id, username, wrong) == "deny"
    assert server.device_status(product["productId"], device) == "registered"

    assert server.device_auth(client_id, username, password) == "allow"
    assert server.device_status(product["productId"], device) == "activated"

    again = server.register_v2(product, device)
    assert v2_error_code(again) == "FailedOperation.DeviceAlreadyActivated"

    # An operator deleting the device lets it register afresh (auto-create is on).
    assert server.admin("DELETE", f"/products/{product['productId']}/devices/{device}").status == 204
    psk_of(product, v2_success(server.register_v2(product, device)))


def test_mqtt_auth_c_sdk_style(server, product):
    # The embedded C SDK: hmacsha1, appId 21010406 and a huge expiry for devices without a clock.
    device = new_device_name()
    psk = psk_of(product, v2_success(server.register_v2(product, device)))
    creds = mqtt_credentials(product["productId"], device, psk, app_id="21010406",
                             conn_id="5AiF2", expiry=92233720368547758, algorithm="hmacsha1")
    assert server.device_auth(*creds) == "allow"


def test_mqtt_auth_with_superseded_psk_is_denied(server, product):
    device = new_device_name()
    old = psk_of(product, v2_success(server.register_v2(product, device)))
    new = psk_of(product, v2_success(server.register_v2(product, device)))
    assert server.device_auth(*mqtt_credentials(product["productId"], device, old)) == "deny"
    assert server.device_auth(*mqtt_credentials(product["productId"], device, new)) == "allow"


# Product switches (PROTOCOL.md section 3) ----------------------------------------------


def test_dynamic_registration_switch_off(server):
    product = server.create_product()
    patched = server.admin("PATCH", f"/products/{product['productId']}", {"dynamicRegistration": False})
    assert patched.status == 200, patched.raw
    reply = server.register_v2(product, new_device_name())
    assert v2_error_code(reply) == "UnauthorizedOperation.DynamicRegistrationDisabled"


def test_pre_create_mode(server):
    product = server.create_product(autoCreate=False)
    assert v2_error_code(server.register_v2(product, new_device_name())) == "ResourceNotFound.DeviceNotExist"

    device = new_device_name()
    created = server.admin("POST", f"/products/{product['productId']}/devices", {"deviceName": device})
    assert created.status == 201 and created.json["status"] == "created", created.raw
    psk_of(product, v2_success(server.register_v2(product, device)))


def test_device_quota(server):
    product = server.create_product(deviceQuota=1)
    v2_success(server.register_v2(product, new_device_name()))
    assert v2_error_code(server.register_v2(product, new_device_name())) == "LimitExceeded.DeviceQuota"


def test_clockless_devices(server):
    refused = server.create_product()
    assert v2_error_code(server.register_v2(refused, new_device_name(), timestamp=0)) \
        == "AuthFailure.SignatureExpire"
    allowed = server.create_product(allowClocklessDevices=True)
    psk_of(allowed, v2_success(server.register_v2(allowed, new_device_name(), timestamp=0)))


def test_certificate_product(server):
    product = server.create_product(authType="certificate")
    device = new_device_name()
    payload = credential(product, v2_success(server.register_v2(product, device)))
    assert payload["encryptionType"] == 1, payload
    cert = x509.load_pem_x509_certificate(payload["clientCert"].encode())
    key = serialization.load_pem_private_key(payload["clientKey"].encode(), password=None)
    # The key must belong to the certificate, or the device's TLS handshake fails.
    spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    # The product CA signed it, for the client id, for client authentication only.
    ca_reply = server.admin("GET", f"/products/{product['productId']}/ca")
    assert ca_reply.status == 200, ca_reply.raw
    ca = x509.load_pem_x509_certificate(ca_reply.raw)
    cert.verify_directly_issued_by(ca)
    common_names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert [attribute.value for attribute in common_names] == [product["productId"] + device]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.serial_number.bit_length() > 100


def test_certificate_product_legacy_endpoint(server):
    product = server.create_product(authType="certificate")
    reply = server.register_legacy(product, new_device_name())
    no_escaped_slashes(reply)
    assert reply.json["code"] == 0, reply.raw
    plaintext = decrypt_payload(product["productSecret"], reply.json["payload"], reply.json["len"])
    payload = json.loads(plaintext)
    assert payload["encryptionType"] == 1
    assert payload["clientCert"].startswith("-----BEGIN CERTIFICATE-----\n")
    assert payload["clientKey"].startswith("-----BEGIN PRIVATE KEY-----\n")


# What deployed devices do (PROTOCOL.md section 5) ---------------------------------------


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection (True; a reset counts) or `timeout` passes."""
    received = b""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return received, False
        except (ConnectionResetError, BrokenPipeError):
            return received, True
        if not chunk:
            return received, True
        received += chunk


def raw_exchange(port: int, request: bytes, timeout: float) -> tuple[bytes, bool]:
    """Send bytes as an embedded SDK does; read until the server closes or `timeout` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_until_closed(sock, timeout)


def c_sdk_legacy_request(server, body: bytes) -> bytes:
    # The C SDK's request: no Connection header, nothing after the body.
    return (f"POST /register/dev HTTP/1.1\r\nHost: {server.host_header}\r\n"
            "Accept: text/xml,application/json;*/*\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_c_sdk_request_sees_the_end_of_the_answer(server, product):
    # The C SDK reads until the connection closes or 2,000 ms pass: the answer must end first.
    body = server.legacy_body(product, new_device_name())
    started = time.monotonic()
    # Generous for a loaded machine: what matters is that the server closes; the time is printed below.
    received, closed = raw_exchange(server.port, c_sdk_legacy_request(server, body), timeout=10)
    assert closed, f"connection still open after 10 s; got {received!r}"
    head, _, answer = received.partition(b"\r\n\r\n")
    assert b"\r\nContent-Length: " in head and b"chunked" not in head.lower(), head
    assert len(head) + 4 <= 255 and len(answer) <= 255, (len(head), len(answer))
    assert json.loads(answer)["code"] == 0, answer
    print(f"C-SDK-shaped legacy request: answer and close in {(time.monotonic() - started) * 1000:.1f} ms")


def test_keep_alive_when_asked(server, product):
    body = server.legacy_body(product, new_device_name())
    request = c_sdk_legacy_request(server, body).replace(
        b"Accept:", b"Connection: keep-alive\r\nAccept:", 1)
    received, closed = raw_exchange(server.port, request, timeout=1.0)
    assert not closed and b'"code":0' in received, received


def test_v2_byte_identical_retry_gets_the_first_answer(server, product):
    device, timestamp, nonce = new_device_name(), int(time.time()), new_nonce()
    first = v2_success(server.register_v2(product, device, timestamp=timestamp, nonce=nonce))
    again = v2_success(server.register_v2(product, device, timestamp=timestamp, nonce=nonce))
    assert again["Payload"] == first["Payload"] and again["Len"] == first["Len"]
    assert first["State"] == 0 and again["State"] == 0, (first, again)
    events = server.admin("GET", f"/products/{product['productId']}/events?limit=20").json["events"]
    outcomes = [event["outcome"] for event in events if event["deviceName"] == device]
    assert sorted(outcomes) == ["Retry", "Success"], outcomes


def test_legacy_byte_identical_retry_gets_the_first_answer(server, product):
    device, timestamp, nonce = new_device_name(), int(time.time()), new_nonce()
    first = server.register_legacy(product, device, timestamp=timestamp, nonce=nonce).json
    again = server.register_legacy(product, device, timestamp=timestamp, nonce=nonce).json
    assert first["code"] == 0 and again["code"] == 0, (first, again)
    assert again["payload"] == first["payload"]


def test_v2_state(server, product):
    device = new_device_name()
    assert v2_success(server.register_v2(product, device))["State"] == 0
    assert v2_success(server.register_v2(product, device))["State"] == 1


def make_device_cert(ca_key, ca_cert, common_name: str) -> str:
    return pem_of(make_leaf(ca_key, ca_cert, common_name)[1]).decode()


def test_client_cert_from_a_trusted_ca(server):
    ca_key, ca_cert = make_ca("interop operator CA")
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    product = server.create_product(authType="certificate", trustedCaCertificatePems=[ca_pem])
    device = new_device_name()
    pem = make_device_cert(ca_key, ca_cert, product["productId"] + device)
    body = json.dumps({"ProductId": product["productId"], "DeviceName": device,
                       "EncryptionType": 1, "ClientCert": pem}, separators=(",", ":")).encode()
    payload = credential(product, v2_success(server.register_v2(product, device, body=body)))
    assert payload == {"encryptionType": 1, "clientCert": "", "clientKey": ""}, payload
    certificates = server.admin("GET", f"/products/{product['productId']}/devices/{device}/certificates")
    assert certificates.status == 200 and len(certificates.json["certificates"]) == 1, certificates.raw

    # The IoT Hub C SDK's spelling: clientCert, and here the newlines written raw.
    other = new_device_name()
    raw = make_device_cert(ca_key, ca_cert, product["productId"] + other)
    body = (f'{{"ProductId":"{product["productId"]}","DeviceName":"{other}",'
            f'"EncryptionType":1,"clientCert":"{raw}"}}').encode()
    v2_success(server.register_v2(product, other, body=body))

    # A certificate from a CA the product does not trust.
    stranger_key, stranger_cert = make_ca("stranger")
    untrusted = make_device_cert(stranger_key, stranger_cert, product["productId"] + "x")
    body = json.dumps({"ProductId": product["productId"], "DeviceName": "x", "EncryptionType": 1,
                       "ClientCert": untrusted}).encode()
    assert v2_error_code(server.register_v2(product, "x", body=body)) \
        == "InvalidParameterValue.ClientCertInvalid"


# Admin API shape ------------------------------------------------------------------------


def admin_error(reply: Reply, status: int) -> None:
    assert reply.status == status, reply.raw
    error = reply.json["error"]
    assert error["code"] and error["message"], error


def test_admin_requires_token(server):
    admin_error(http_request(server.port, "GET", "/admin/v1/products"), 401)
    admin_error(server.admin("GET", "/products", token="wrong-" + secrets.token_hex(8)), 401)


def test_admin_unknown_product(server):
    admin_error(server.admin("GET", "/products/NOSUCHPROD"), 404)
