"""Real brokers in the loop: RabbitMQ checks every login and topic with dynreg's hooks, and
Mosquitto checks dynreg-issued client certificates against the CA and CRL files that
`dynreg serve --crl-dir` keeps.

Devices register with the `dynreg` command line, as an operator trying a device would, and then
connect with paho-mqtt. Both brokers are Debian's packages, started by `brokers.py` on free
loopback ports with their own files (see interop/README.md). `.ci/run` installs them.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

import brokers
from test_interop import (
    Server,
    _stop,
    dynreg_binary,
    mqtt_credentials,
    new_device_name,
    start_server,
    v2_error_code,
    http_request,
)

# --------------------------------------------------------------------------------------
# One dynreg server for both brokers, writing its CRL directory and telling Mosquitto
# --------------------------------------------------------------------------------------


class BrokerSetup:
    def __init__(self, server: Server, base: Path):
        self.server = server
        self.base = base
        self.crl_dir = base / "crl"
        self.pid_file = base / "mosquitto.pid"  # written once Mosquitto runs
        self.command_log = base / "crl-updated.log"  # one line per --crl-updated-command run

    def cli(self, *args: str, secret: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "DYNREG_ADMIN_TOKEN": self.server.admin_token,
               "DYNREG_SERVER": f"http://127.0.0.1:{self.server.port}"}
        if secret is not None:
            env["DYNREG_PRODUCT_SECRET"] = secret
        done = subprocess.run([str(dynreg_binary()), *args], env=env, capture_output=True,
                              text=True, timeout=60)
        if check:
            assert done.returncode == 0, f"dynreg {' '.join(args)}: {done.stderr}{done.stdout}"
        return done

    def register(self, product: dict, device_name: str) -> dict:
        """`dynreg register --json`, as an operator trying a device would."""
        done = self.cli("register", "--url", f"http://127.0.0.1:{self.server.port}",
                        "--product-id", product["productId"], "--device-name", device_name,
                        "--json", secret=product["productSecret"])
        return json.loads(done.stdout)

    def command_runs(self) -> int:
        try:
            return len(self.command_log.read_text().splitlines())
        except FileNotFoundError:
            return 0


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("brokers")
    pid_file, command_log = base / "mosquitto.pid", base / "crl-updated.log"
    # What docs/brokers.md tells a Mosquitto operator to run; it also notes each run for the tests.
    command = (f"echo run >> {shlex.quote(str(command_log))}; "
               f"if [ -s {shlex.quote(str(pid_file))} ]; then "
               f"kill -HUP \"$(cat {shlex.quote(str(pid_file))})\"; fi")
    running, proc = start_server(tmp_path_factory, "--crl-dir", str(base / "crl"),
                                 "--crl-updated-command", command)
    try:
        yield BrokerSetup(running, base)
    finally:
        _stop(proc)


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------
# RabbitMQ: rabbitmq_mqtt with rabbitmq_auth_backend_http pointed at dynreg
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rabbitmq(setup, certificate_products):
    server = setup.server
    # RabbitMQ sends the URL's credentials as HTTP Basic: the broker token is the password.
    # Its TLS listener trusts the certificate products' CAs and logs a device in by its CN.
    broker = brokers.start_rabbitmq(setup.base / "rabbitmq",
                                    f"http://broker:{server.broker_token}@127.0.0.1:{server.port}",
                                    tls_cafile=setup.crl_dir / "ca-bundle.pem")
    brokers.START_TIMES["RabbitMQ"] = broker.start_seconds
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def key_product(setup) -> dict:
    return setup.server.create_product()


@pytest.fixture(scope="session")
def backend_product(setup, key_product) -> dict:
    """A product for a back-end service: its devices may command every device of key_product and
    read what they report. Tencent's default topics plus two rules, through the admin API."""
    p = key_product["productId"]
    return setup.server.create_product(topicRules={"includeDefaults": True, "rules": [
        {"topic": f"$thing/down/property/{p}/+", "access": "publish"},
        {"topic": f"$thing/up/property/{p}/+", "access": "subscribe"},
    ]})


def rabbit_login(rabbitmq, product: dict, device_name: str, psk: str, *, password: str | None = None):
    client_id, username, derived = mqtt_credentials(product["productId"], device_name, psk)
    return brokers.mqtt_connect(rabbitmq.mqtt_port, client_id, username=username,
                                password=derived if password is None else password)


def cli_credentials(setup, product: dict, device_name: str, psk: str) -> dict:
    done = setup.cli("mqtt-credentials", "--product-id", product["productId"],
                     "--device-name", device_name, "--psk", psk, "--json")
    return json.loads(done.stdout)


def test_rabbitmq_key_device_logs_in_and_keeps_to_its_topics(setup, rabbitmq, key_product,
                                                               backend_product):
    server = setup.server
    p, d = key_product["productId"], new_device_name()
    psk = setup.register(key_product, d)["psk"]
    assert server.device_status(p, d) == "registered"

    # The back-end service: a device of its own product.
    service_name = new_device_name()
    service_psk = setup.register(backend_product, service_name)["psk"]

    credentials = cli_credentials(setup, key_product, d, psk)
    with brokers.mqtt_connect(rabbitmq.mqtt_port, credentials["clientId"],
                              username=credentials["username"],
                              password=credentials["password"]) as device, \
            rabbit_login(rabbitmq, backend_product, service_name, service_psk) as service:
        assert device.connack.ok, (device.connack, rabbitmq.log_tail())
        assert service.connack.ok, (service.connack, rabbitmq.log_tail())
        assert server.device_status(p, d) == "activated"

        down, up = f"$thing/down/property/{p}/{d}", f"$thing/up/property/{p}/{d}"
        assert device.subscribe(down).ok
        assert service.subscribe(f"$thing/up/property/{p}/+").ok

        assert service.publish(down, b'{"method":"control","params":{"on":1}}')
        message = device.receive(timeout=10)
        assert message is not None and message.topic == down, message
        assert message.payload == b'{"method":"control","params":{"on":1}}'

        assert device.publish(up, b'{"method":"report","params":{"on":1}}')
        message = service.receive(timeout=10)
        assert message is not None and message.topic == up, message
        assert device.is_connected

    # Activated: the device's next registration is refused.
    assert v2_error_code(server.register_v2(key_product, d)) == "FailedOperation.DeviceAlreadyActivated"


def test_rabbitmq_refuses_another_devices_topics(setup, rabbitmq, key_product):
    server = setup.server
    p, d, other = key_product["productId"], new_device_name(), new_device_name()
    psk = setup.register(key_product, d)["psk"]
    setup.register(key_product, other)

    with rabbit_login(rabbitmq, key_product, d, psk) as device:
        assert device.connack.ok, device.connack
        # RabbitMQ closes the connection on a refused PUBLISH; QoS 1 gets no PUBACK.
        assert not device.publish(f"$thing/up/property/{p}/{other}", b"{}")
        assert device.wait_closed(10)

    with rabbit_login(rabbitmq, key_product, d, psk) as device:
        assert device.connack.ok, device.connack
        refused = device.subscribe(f"$thing/down/property/{p}/{other}")
        assert not refused.ok, refused
    with rabbit_login(rabbitmq, key_product, d, psk) as device:
        # A wildcard that also matches other devices' topics is refused as a whole.
        assert not device.subscribe(f"$thing/down/property/{p}/+").ok
    with rabbit_login(rabbitmq, key_product, d, psk) as device:
        assert device.connack.ok and device.subscribe(f"{p}/{d}/data").ok  # its own: fine
    assert server.device_status(p, other) == "registered"  # nothing happened to the other one


def test_rabbitmq_refuses_a_wrong_password(setup, rabbitmq, key_product):
    server = setup.server
    p, d = key_product["productId"], new_device_name()
    psk = setup.register(key_product, d)["psk"]
    _, _, password = mqtt_credentials(p, d, psk)
    wrong = ("0" if password[0] != "0" else "1") + password[1:]
    with rabbit_login(rabbitmq, key_product, d, psk, password=wrong) as device:
        assert not device.connack.ok, device.connack
    # Another device's psk is wrong too.
    other_psk = setup.register(key_product, new_device_name())["psk"]
    with rabbit_login(rabbitmq, key_product, d, other_psk) as device:
        assert not device.connack.ok, device.connack
    assert server.device_status(p, d) == "registered"  # not activated by a refused login
    with rabbit_login(rabbitmq, key_product, d, psk) as device:
        assert device.connack.ok, device.connack


def test_rabbitmq_certificate_device_logs_in_by_its_certificate(setup, rabbitmq,
                                                                certificate_products, tmp_path):
    server = setup.server
    product = certificate_products["p256"]
    p, d = product["productId"], new_device_name()
    files = issue(setup, product, d, "p256", tmp_path)
    with brokers.mqtt_connect(rabbitmq.mqtts_port, p + d, ca=rabbitmq.server_ca_pem_path,
                              certfile=files.cert, keyfile=files.key) as device:
        assert device.connack.ok, (device.connack, rabbitmq.log_tail())
        assert device.subscribe(f"$thing/down/property/{p}/{d}").ok
        assert device.publish(f"$thing/up/property/{p}/{d}", b"{}")
    assert server.device_status(p, d) == "activated"

    # This listener checks no CRL: dynreg refuses a device whose certificates are all revoked.
    listed = json.loads(setup.cli("device", "certificates", p, d, "--json").stdout)
    for certificate in listed["certificates"]:
        setup.cli("device", "revoke-certificate", p, certificate["serial"])
    with brokers.mqtt_connect(rabbitmq.mqtts_port, p + d, ca=rabbitmq.server_ca_pem_path,
                              certfile=files.cert, keyfile=files.key) as device:
        assert not device.connack.ok, device.connack


def test_hook_refuses_an_unauthenticated_fingerprint(setup):
    """Anyone may know a certificate: without the broker token it proves nothing."""
    server = setup.server
    product = server.create_product(authType="certificate")
    d = new_device_name()
    issued = setup.register(product, d)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    cert = x509.load_pem_x509_certificate(issued["clientCert"].encode())
    body = json.dumps({"clientid": product["productId"] + d,
                       "fingerprint": cert.fingerprint(hashes.SHA256()).hex()}).encode()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        reply = http_request(server.port, "POST", "/device/auth", body,
                             {"Content-Type": "application/json", **headers})
        assert reply.status == 401, reply.raw
    assert server.device_status(product["productId"], d) == "registered"


# --------------------------------------------------------------------------------------
# Mosquitto: TLS client certificates against dynreg's CA bundle and CRL bundle
# --------------------------------------------------------------------------------------


KEY_TYPES = {"p256": "id-ecPublicKey", "rsa2048": "rsaEncryption"}


@pytest.fixture(scope="session")
def certificate_products(setup) -> dict[str, dict]:
    products = {key_type: setup.server.create_product(authType="certificate", deviceKeyType=key_type)
                for key_type in KEY_TYPES}
    # Each creation rewrites the CRL directory; Mosquitto exits on a CRL bundle without them all.
    wait_until(lambda: all((setup.crl_dir / f"{p['productId']}.crl.pem").exists()
                           for p in products.values())
               and (setup.crl_dir / "crl-bundle.pem").read_text().count("BEGIN X509 CRL") >= 2,
               10, "the CRL directory")
    return products


@pytest.fixture(scope="session")
def mosquitto(setup, certificate_products):
    broker = brokers.start_mosquitto(setup.base / "mosquitto", setup.crl_dir / "ca-bundle.pem",
                                     setup.crl_dir / "crl-bundle.pem")
    brokers.START_TIMES["Mosquitto"] = broker.start_seconds
    setup.pid_file.write_text(f"{broker.pid}\n")
    try:
        yield broker
    finally:
        setup.pid_file.unlink(missing_ok=True)
        broker.stop()


class DeviceFiles:
    def __init__(self, directory: Path, issued: dict):
        directory.mkdir(parents=True, exist_ok=True)
        self.cert = directory / "client.crt"
        self.key = directory / "client.key"
        self.cert.write_text(issued["clientCert"])
        self.key.write_text(issued["clientKey"])
        self.key.chmod(0o600)


def openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"
    return done.stdout


def issue(setup, product: dict, device_name: str, key_type: str, directory: Path) -> DeviceFiles:
    issued = setup.register(product, device_name)
    assert issued["encryptionType"] == 1, issued
    files = DeviceFiles(directory, issued)
    ca = setup.crl_dir / f"{product['productId']}.ca.pem"
    assert openssl("verify", "-CAfile", str(ca), str(files.cert)).strip().endswith(": OK")
    text = openssl("x509", "-in", str(files.cert), "-noout", "-text")
    assert KEY_TYPES[key_type] in text, text
    if key_type == "rsa2048":
        assert "Public-Key: (2048 bit)" in text, text
    else:
        assert "prime256v1" in text, text
    # The key is the certificate's.
    assert (openssl("pkey", "-in", str(files.key), "-pubout")
            == openssl("x509", "-in", str(files.cert), "-noout", "-pubkey"))
    return files


def connects(mosquitto, client_id: str, files: DeviceFiles) -> brokers.Connack:
    return brokers.can_connect(mosquitto.port, client_id, ca=mosquitto.server_ca_pem_path,
                               certfile=files.cert, keyfile=files.key)


def wait_for_reload(setup, mosquitto, runs_before: int, log_offset: int) -> None:
    """Until dynreg ran --crl-updated-command again and Mosquitto logged the reload it caused."""
    wait_until(lambda: setup.command_runs() > runs_before, 15, "--crl-updated-command")
    wait_until(lambda: "Reloading config" in mosquitto._log_since(log_offset), 10,
               "Mosquitto's reload\n" + mosquitto.log_tail())
    time.sleep(0.3)  # the reload rebuilds the TLS context before the next accept
    assert "Unable to load certificate revocation file" not in mosquitto._log_since(log_offset)


def mark(setup, mosquitto) -> tuple[int, int]:
    return setup.command_runs(), mosquitto.log_path.stat().st_size


@pytest.mark.parametrize("key_type", list(KEY_TYPES))
def test_mosquitto_revoked_certificate_is_refused(setup, mosquitto, certificate_products, key_type,
                                                  tmp_path):
    product = certificate_products[key_type]
    p, d = product["productId"], new_device_name()
    first = issue(setup, product, d, key_type, tmp_path / "first")
    connack = connects(mosquitto, p + d, first)
    assert connack.ok, (connack, mosquitto.log_tail())

    listed = json.loads(setup.cli("device", "certificates", p, d, "--json").stdout)
    (serial,) = [c["serial"] for c in listed["certificates"] if c["status"] == "valid"]
    before = mark(setup, mosquitto)
    setup.cli("device", "revoke-certificate", p, serial)
    wait_for_reload(setup, mosquitto, *before)
    assert not connects(mosquitto, p + d, first).ok, "a revoked certificate still connects"

    # Registering again issues a new certificate, which connects.
    second = issue(setup, product, d, key_type, tmp_path / "second")
    connack = connects(mosquitto, p + d, second)
    assert connack.ok, (connack, mosquitto.log_tail())
    assert not connects(mosquitto, p + d, first).ok


@pytest.mark.parametrize("key_type", list(KEY_TYPES))
def test_mosquitto_reregistration_revokes_the_previous_certificate(setup, mosquitto,
                                                                   certificate_products, key_type,
                                                                   tmp_path):
    product = certificate_products[key_type]
    p, d = product["productId"], new_device_name()
    first = issue(setup, product, d, key_type, tmp_path / "first")
    assert connects(mosquitto, p + d, first).ok

    before = mark(setup, mosquitto)
    second = issue(setup, product, d, key_type, tmp_path / "second")
    wait_for_reload(setup, mosquitto, *before)
    assert not connects(mosquitto, p + d, first).ok, "the superseded certificate still connects"
    connack = connects(mosquitto, p + d, second)
    assert connack.ok, (connack, mosquitto.log_tail())


def test_mosquitto_trusts_a_product_created_while_it_runs(setup, mosquitto, tmp_path):
    """A new certificate product reaches the CA bundle, and Mosquitto after the command's SIGHUP."""
    before = mark(setup, mosquitto)
    product = setup.server.create_product(authType="certificate")
    wait_for_reload(setup, mosquitto, *before)
    d = new_device_name()
    files = issue(setup, product, d, "p256", tmp_path)
    connack = connects(mosquitto, product["productId"] + d, files)
    assert connack.ok, (connack, mosquitto.log_tail())
