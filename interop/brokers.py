"""Real MQTT brokers for the interop suite: throwaway RabbitMQ and Mosquitto, and an MQTT client.

Nothing here is a stand-in: each helper starts the broker that Debian ships (`rabbitmq-server`
3.10, `mosquitto` 2.0) on free loopback ports, with its own data, log and configuration files
under the directory it is given, and stops exactly the processes it started. The system
services are never touched. `.ci/run` installs both packages and paho-mqtt.

    rabbit = start_rabbitmq(tmp / "rabbitmq", f"http://broker:{token}@127.0.0.1:{dynreg_port}")
    try:
        with mqtt_connect(rabbit.mqtt_port, client_id, username=u, password=p) as client:
            assert client.connack.ok, client.connack
            ...
    finally:
        rabbit.stop()

Both broker objects are context managers too (`with start_mosquitto(...) as mosq:`).
RabbitMQ takes 10-14 s to start: start it once per session (a session-scoped fixture).

Every wait is bounded. A broker that does not come up raises `BrokerStartError` with the tail
of its log, after its processes have been stopped.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import queue
import secrets
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # not /usr/sbin's: that one switches user
EPMD = "epmd"
MOSQUITTO = "mosquitto"

RABBITMQ_START_TIMEOUT = 60.0
MOSQUITTO_START_TIMEOUT = 10.0
STOP_TIMEOUT = 20.0


# Broker name -> seconds until it accepted MQTT connections, for the run's summary (conftest.py).
START_TIMES: dict[str, float] = {}


class BrokerStartError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------
# Processes and ports
# --------------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, limit: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError as error:
        return f"({path}: {error})"


def _stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM,
                  timeout: float = STOP_TIMEOUT) -> None:
    """Signal one process we started, then kill its own process group if it lingers.

    Each process is started with start_new_session=True, so its process group holds only it
    and its own children (erl's helpers), nothing else on the machine.
    """
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    # Children left in the group after the leader exited (none expected): end them too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------------------
# RabbitMQ with the MQTT plugin and the HTTP auth backend
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _starting(broker, console_path: Path):
    """The broker's console log while it starts; a start that fails stops what it started."""
    console = open(console_path, "ab")
    try:
        yield console
    except BaseException:
        broker.stop()
        raise
    finally:
        console.close()  # the children hold their own descriptors


class _Stoppable:
    """`with start_…(…) as broker:` stops the broker at the end."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class RabbitMQ(_Stoppable):
    base: Path
    nodename: str
    mqtt_port: int
    amqp_port: int
    epmd_port: int
    dist_port: int
    mqtts_port: int | None = None  # with `tls_cafile`: MQTT over TLS, certificate login
    server_ca_pem_path: Path | None = None  # with `tls_cafile`: what TLS clients must trust
    start_seconds: float = 0.0
    _node: subprocess.Popen | None = field(default=None, repr=False)
    _epmd: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.base / "log" / f"{self.nodename}.log"

    def log_tail(self, limit: int = 6000) -> str:
        return (tail(self.log_path, limit) + "\n--- stdout/stderr ---\n"
                + tail(self.base / "console.log", limit // 2))

    def stop(self) -> None:
        """Stop the node (the start script turns SIGTERM into a clean stop), then its epmd."""
        _stop_process(self._node)
        self._node = None
        _stop_process(self._epmd, timeout=5)
        self._epmd = None



def _rabbitmq_config(auth_base_url: str, amqp_port: int, mqtt_port: int, log_level: str,
                     tls: tuple[int, Path, Path, Path] | None) -> str:
    base = auth_base_url.rstrip("/")
    lines = [
        f"listeners.tcp.default = 127.0.0.1:{amqp_port}",
        f"mqtt.listeners.tcp.default = 127.0.0.1:{mqtt_port}",
        "mqtt.allow_anonymous = false",
        "mqtt.vhost = /",
        "mqtt.exchange = amq.topic",
        "auth_backends.1 = http",
        "auth_http.http_method = post",
        f"auth_http.user_path = {base}/rabbitmq/user",
        f"auth_http.vhost_path = {base}/rabbitmq/vhost",
        f"auth_http.resource_path = {base}/rabbitmq/resource",
        f"auth_http.topic_path = {base}/rabbitmq/topic",
        "log.console = false",
        "log.file.level = " + log_level,
    ]
    if tls is not None:
        lines += [
            f"mqtt.listeners.ssl.default = 127.0.0.1:{tls[0]}",
            # The username is the client certificate's CN; user_path gets no password field.
            "mqtt.ssl_cert_login = true",
            "ssl_cert_login_from = common_name",
        ]
    return "\n".join(lines) + "\n"


def _erlang_string(value) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rabbitmq_advanced_config(tls: tuple[int, Path, Path, Path] | None,
                              crl_dir: Path | None) -> str:
    # A ':' in an MQTT username is a vhost separator unless this is set (MAC-address names).
    terms = ["{rabbitmq_mqtt, [{ignore_colons_in_username, true}]}"]
    if tls is not None:
        # All of ssl_options here: a list in advanced.config replaces the whole
        # `ssl_options.*` list from rabbitmq.conf (the listener then fails with no_cert).
        _, cafile, certfile, keyfile = tls
        options = [f"{{cacertfile, {_erlang_string(cafile)}}}",
                   f"{{certfile, {_erlang_string(certfile)}}}",
                   f"{{keyfile, {_erlang_string(keyfile)}}}",
                   "{verify, verify_peer}", "{fail_if_no_peer_cert, true}"]
        if crl_dir is not None:
            # Erlang's ssl reads CRLs from an OpenSSL hash directory (<issuer hash>.r0, as
            # `openssl rehash` names them) at each handshake: no restart, no signal.
            options += ["{crl_check, peer}",
                        "{crl_cache, {ssl_crl_hash_dir, {internal, [{dir, "
                        + _erlang_string(crl_dir) + "}]}}}"]
        terms.insert(0, "{rabbit, [{ssl_options, [" + ", ".join(options) + "]}]}")
    return "[" + ",\n ".join(terms) + "].\n"


def start_rabbitmq(tmpdir, auth_base_url: str, *, timeout: float = RABBITMQ_START_TIMEOUT,
                   log_level: str = "info", tls_cafile=None, tls_crl_dir=None) -> RabbitMQ:
    """A throwaway RabbitMQ node whose MQTT logins are checked by `auth_base_url`/rabbitmq/*.

    `auth_base_url` is like `http://broker:TOKEN@127.0.0.1:PORT`: RabbitMQ sends the URL's
    credentials as HTTP Basic with every request. `log_level="debug"` makes the node log each
    auth request's URL (with credentials): fine for a throwaway node, not for production.

    With `tls_cafile` the node also has an MQTT-over-TLS listener (`.mqtts_port`) that requires
    a client certificate from a CA in that file and logs the client in as the certificate's CN.
    `tls_crl_dir` is then an OpenSSL hash directory of CRLs, checked at each handshake.
    """
    base = Path(tmpdir).resolve()
    for sub in ("mnesia", "log", "home"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    amqp_port, mqtt_port, epmd_port, dist_port, mqtts_port = free_ports(5)
    nodename = f"dynreg{secrets.token_hex(4)}@localhost"
    broker = RabbitMQ(base, nodename, mqtt_port, amqp_port, epmd_port, dist_port)
    tls = None
    if tls_cafile is not None:
        server_ca, certfile, keyfile = make_server_certificate(base)
        tls = (mqtts_port, Path(tls_cafile).resolve(), certfile, keyfile)
        broker.mqtts_port, broker.server_ca_pem_path = mqtts_port, server_ca

    config = base / "rabbitmq.conf"
    config.write_text(_rabbitmq_config(auth_base_url, amqp_port, mqtt_port, log_level, tls))
    config.chmod(0o600)  # it holds the broker token
    advanced = base / "advanced.config"
    advanced.write_text(_rabbitmq_advanced_config(
        tls, Path(tls_crl_dir).resolve() if tls_crl_dir is not None else None))
    plugins = base / "enabled_plugins"
    plugins.write_text("[rabbitmq_mqtt,rabbitmq_auth_backend_http].\n")
    env_file = base / "rabbitmq-env.conf"  # empty: keeps /etc/rabbitmq/rabbitmq-env.conf out
    env_file.write_text("")

    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": str(base / "home"),  # the Erlang cookie goes here, not in root's home
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "RABBITMQ_CONF_ENV_FILE": str(env_file),
        "RABBITMQ_NODENAME": nodename,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_CONFIG_FILE": str(config),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(advanced),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
        # Erlang distribution on loopback only.
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    started = time.monotonic()
    with _starting(broker, base / "console.log") as console:
        # Our own epmd first, so that the node does not spawn a detached one of its own.
        broker._epmd = subprocess.Popen(
            [EPMD, "-port", str(epmd_port), "-address", "127.0.0.1"],
            env=env, stdin=subprocess.DEVNULL, stdout=console, stderr=console,
            start_new_session=True)
        deadline = time.monotonic() + 10
        while not port_accepts(epmd_port, timeout=0.2):
            if broker._epmd.poll() is not None or time.monotonic() > deadline:
                raise BrokerStartError(f"epmd on port {epmd_port} did not start:\n"
                                       + tail(base / "console.log"))
            time.sleep(0.05)

        broker._node = subprocess.Popen(
            [RABBITMQ_SERVER], env=env, cwd=base, stdin=subprocess.DEVNULL,
            stdout=console, stderr=console, start_new_session=True)
        deadline = started + timeout
        while not (port_accepts(mqtt_port, timeout=0.5)
                   and (tls is None or port_accepts(mqtts_port, timeout=0.5))):
            if broker._node.poll() is not None:
                raise BrokerStartError(
                    f"RabbitMQ exited with status {broker._node.returncode} before its MQTT "
                    f"port {mqtt_port} accepted connections.\n{broker.log_tail()}")
            if time.monotonic() > deadline:
                raise BrokerStartError(
                    f"RabbitMQ's MQTT port {mqtt_port} did not accept connections within "
                    f"{timeout:.0f} s.\n{broker.log_tail()}")
            time.sleep(0.2)
    broker.start_seconds = time.monotonic() - started
    return broker


# --------------------------------------------------------------------------------------
# Mosquitto with TLS client certificates
# --------------------------------------------------------------------------------------


@dataclass
class Mosquitto(_Stoppable):
    base: Path
    port: int
    server_ca_pem_path: Path
    config_path: Path
    start_seconds: float = 0.0
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self._proc is not None, "mosquitto is not running"
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self.base / "mosquitto.log"

    def log_tail(self, limit: int = 6000) -> str:
        return tail(self.log_path, limit)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def hup(self, timeout: float = 5.0, *, allow_crl_error: bool = False) -> str:
        """SIGHUP: Mosquitto rereads its configuration, CA and CRL files. Returns the new log.

        Waits (bounded) until the log shows the reload, so a handshake made after this call
        sees the new files. Open connections are not affected. Mosquitto 2.0.11 logs
        "Reloading config." and then rebuilds its TLS contexts in the same thread before it
        accepts another connection.

        If Mosquitto could not load the CRL file, it now accepts revoked certificates (it fails
        open): that raises, unless `allow_crl_error`.
        """
        offset = self.log_path.stat().st_size
        os.kill(self.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while "Reloading config" not in self._log_since(offset):
            if not self.running():
                raise RuntimeError("mosquitto exited on SIGHUP:\n" + self.log_tail())
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto logged no reload within {timeout} s:\n"
                                   + self.log_tail())
            time.sleep(0.02)
        time.sleep(0.1)  # let the lines the reload writes reach the file
        written = self._log_since(offset)
        if "Unable to load certificate revocation file" in written and not allow_crl_error:
            raise RuntimeError("mosquitto could not load its CRL on SIGHUP and now accepts "
                               "revoked certificates:\n" + written)
        return written

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        _stop_process(self._proc, timeout=10)
        self._proc = None



def _mosquitto_config(port: int, cafile: Path, crlfile: Path, certfile: Path, keyfile: Path,
                      log: Path) -> str:
    lines = [
        "per_listener_settings false",
        "persistence false",
        # No acl_file and no password_file: any client whose certificate verified may use any
        # topic. The certificate's CN becomes the username, so the client is not anonymous.
        "allow_anonymous false",
        f"log_dest file {log}",
        "log_type all",
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        f"listener {port} 127.0.0.1",
        "protocol mqtt",
        f"cafile {cafile}",
        f"certfile {certfile}",
        f"keyfile {keyfile}",
        f"crlfile {crlfile}",
        "require_certificate true",
        "use_identity_as_username true",
    ]
    if os.geteuid() == 0:
        # As root Mosquitto would switch to the `mosquitto` user, which cannot read files that
        # root wrote under pytest's 0700 temporary directories (it rereads them on SIGHUP).
        lines.insert(0, "user root")
    return "\n".join(lines) + "\n"


def start_mosquitto(tmpdir, cafile, crlfile, *,
                    timeout: float = MOSQUITTO_START_TIMEOUT) -> Mosquitto:
    """Mosquitto with one TLS listener on a free loopback port that requires a client certificate.

    `cafile` holds the CA(s) that sign client certificates, `crlfile` one CRL per CA in it.
    Mosquitto 2.0.11 reads the CRL at start and on SIGHUP only, and fails open when the file is
    missing or empty at that moment: replace it by writing a temporary file and renaming it.
    The server's own certificate comes from a separate throwaway CA: trust
    `server_ca_pem_path`. Its names are `localhost` and `127.0.0.1`.
    """
    base = Path(tmpdir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    cafile, crlfile = Path(cafile).resolve(), Path(crlfile).resolve()
    server_ca, certfile, keyfile = make_server_certificate(base)
    (port,) = free_ports(1)
    log = base / "mosquitto.log"
    log.touch()
    config = base / "mosquitto.conf"
    config.write_text(_mosquitto_config(port, cafile, crlfile, certfile, keyfile, log))
    broker = Mosquitto(base, port, server_ca, config)

    started = time.monotonic()
    with _starting(broker, base / "console.log") as console:
        broker._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)], cwd=base, stdin=subprocess.DEVNULL,
            stdout=console, stderr=console, start_new_session=True)
        deadline = started + timeout
        while not port_accepts(port, timeout=0.2):
            if broker._proc.poll() is not None or time.monotonic() > deadline:
                why = (f"exited with status {broker._proc.returncode}"
                       if broker._proc.poll() is not None else f"no listener after {timeout} s")
                raise BrokerStartError(f"mosquitto {why}:\n{broker.log_tail()}\n"
                                       + tail(base / "console.log"))
            time.sleep(0.02)
    broker.start_seconds = time.monotonic() - started
    return broker


# --------------------------------------------------------------------------------------
# Certificates (cryptography), for the broker's own TLS identity and for tests
# --------------------------------------------------------------------------------------


def _x509():
    # Imported lazily so that `import brokers` costs nothing where only RabbitMQ is used.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    return x509, hashes, serialization, ec


def pem_of(obj) -> bytes:
    x509, _, serialization, _ = _x509()
    if isinstance(obj, (x509.Certificate, x509.CertificateRevocationList)):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_atomically(path, data: bytes | str, mode: int = 0o644) -> Path:
    """Write a temporary file beside `path`, then rename it over `path` (never empty or partial)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    temporary.write_bytes(data.encode() if isinstance(data, str) else data)
    temporary.chmod(mode)
    os.replace(temporary, path)
    return path


def make_ca(common_name: str, days: int = 30):
    """A self-signed P-256 CA: (key, certificate)."""
    x509, hashes, _, ec = _x509()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca_key, ca_cert, common_name: str, *, client: bool = True, days: int = 30,
              dns_names=(), ip_addresses=()):
    """A P-256 leaf signed by the CA: (key, certificate), for client or server authentication."""
    x509, hashes, _, ec = _x509()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = x509.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.ExtendedKeyUsageOID.SERVER_AUTH
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    names = ([x509.DNSName(n) for n in dns_names]
             + [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses])
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_crl(ca_key, ca_cert, revoked_serials=(), *, days: int = 7):
    """A CRL from the CA revoking the given serial numbers (an empty list is a valid CRL)."""
    x509, hashes, _, _ = _x509()
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now - datetime.timedelta(minutes=5))
               .next_update(now + datetime.timedelta(days=days)))
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    return builder.sign(ca_key, hashes.SHA256())


def make_server_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway server CA and a `localhost`/`127.0.0.1` certificate: (ca, cert, key) paths."""
    ca_key, ca_cert = make_ca("dynreg interop broker server CA")
    key, cert = make_leaf(ca_key, ca_cert, "localhost", client=False,
                          dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    ca_path = write_atomically(directory / "server-ca.pem", pem_of(ca_cert))
    cert_path = write_atomically(directory / "server-cert.pem", pem_of(cert))
    key_path = write_atomically(directory / "server-key.pem", pem_of(key), mode=0o600)
    return ca_path, cert_path, key_path


# --------------------------------------------------------------------------------------
# A small MQTT client on paho-mqtt 2.x, every wait bounded
# --------------------------------------------------------------------------------------


@dataclass
class Connack:
    ok: bool
    reason_code: int | None  # paho's (MQTT 5 style) reason code value; None if no CONNACK came
    reason: str  # e.g. "Success", "Not authorized", or why no CONNACK came

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class Suback:
    ok: bool  # a SUBACK came and granted every filter
    granted: list[int]  # reason code values (0, 1, 2 granted QoS; >= 128 failure)
    disconnected: bool  # the broker closed the connection instead (RabbitMQ does on a refusal)


class MqttClient:
    """One MQTT connection, driven by its own network thread; it never reconnects.

    Either username/password (RabbitMQ) or TLS with `ca`, `certfile`, `keyfile` (Mosquitto).
    """

    def __init__(self, port: int, client_id: str, *, host: str = "127.0.0.1",
                 username: str | None = None, password: str | None = None,
                 ca: str | os.PathLike | None = None, certfile: str | os.PathLike | None = None,
                 keyfile: str | os.PathLike | None = None, mqtt5: bool = False,
                 keepalive: int = 30, clean_session: bool = True):
        import paho.mqtt.client as mqtt  # installed by .ci/run

        self._mqtt = mqtt
        self.host, self.port, self.client_id = host, port, client_id
        protocol = mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311
        kwargs = {} if mqtt5 else {"clean_session": clean_session}
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=protocol, **kwargs)
        self._keepalive = keepalive
        self._client.connect_timeout = 10.0
        if username is not None:
            self._client.username_pw_set(username, password)
        if ca is not None or certfile is not None:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                                 cafile=str(ca) if ca else None)
            if certfile is not None:
                context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
            self._client.tls_set_context(context)

        self.connack: Connack | None = None
        self.disconnect_reason: str | None = None
        self.messages: "queue.Queue[Message]" = queue.Queue()
        self._connected = threading.Event()  # CONNACK received, or the attempt is over
        self._closed = threading.Event()  # the connection is gone
        self._stop = threading.Event()
        self._acks: dict[int, threading.Event] = {}
        self._subacks: dict[int, list[int]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe

    # Callbacks (network thread) ------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = Connack(not reason_code.is_failure, reason_code.value, str(reason_code))
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_reason = str(reason_code)
        self._closed.set()
        self._connected.set()

    def _on_message(self, client, userdata, message):
        self.messages.put(Message(message.topic, bytes(message.payload), message.qos,
                                  bool(message.retain)))

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._lock:
            self._acks.setdefault(mid, threading.Event()).set()

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        with self._lock:
            self._subacks[mid] = [code.value for code in reason_code_list]
            self._acks.setdefault(mid, threading.Event()).set()

    def _run(self):
        try:
            while not self._stop.is_set():
                if self._client.loop(timeout=0.05) != self._mqtt.MQTT_ERR_SUCCESS:
                    break
        except Exception as error:  # a TLS alert or reset while reading
            self.disconnect_reason = self.disconnect_reason or f"{type(error).__name__}: {error}"
        finally:
            self._closed.set()
            self._connected.set()

    # API -----------------------------------------------------------------------------

    def connect(self, timeout: float = 15.0) -> Connack:
        """Connect and wait for CONNACK. Never raises for a refusal: look at the result."""
        try:
            # TCP connect and (for TLS) the client's side of the handshake, bounded by
            # connect_timeout. With TLS 1.3 a rejected client certificate shows up only later,
            # as an alert on the first read: then no CONNACK comes and the result says so.
            self._client.connect(self.host, self.port, keepalive=self._keepalive)
        except (OSError, ssl.SSLError) as error:
            self.connack = Connack(False, None, f"no CONNACK: {type(error).__name__}: {error}")
            self._closed.set()
            return self.connack
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}",
                                        daemon=True)
        self._thread.start()
        if not self._connected.wait(timeout):
            self.connack = Connack(False, None, f"no CONNACK within {timeout} s")
        elif self.connack is None:
            self.connack = Connack(False, None, "no CONNACK: connection closed ("
                                   + (self.disconnect_reason or "unknown") + ")")
        return self.connack

    @property
    def is_connected(self) -> bool:
        return bool(self.connack) and not self._closed.is_set()

    def _wait_ack(self, mid: int, timeout: float) -> bool:
        with self._lock:
            event = self._acks.setdefault(mid, threading.Event())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if event.wait(0.05):
                return True
            if self._closed.is_set():
                return event.is_set()
        return False

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 10.0) -> Suback:
        result, mid = self._client.subscribe(topic, qos)
        if result != self._mqtt.MQTT_ERR_SUCCESS:
            return Suback(False, [], True)
        if not self._wait_ack(mid, timeout):
            return Suback(False, [], self._closed.is_set())
        with self._lock:
            granted = self._subacks.get(mid, [])
        return Suback(bool(granted) and all(code < 128 for code in granted), granted,
                      self._closed.is_set())

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False,
                timeout: float = 10.0) -> bool:
        """Publish; True once PUBACK came (QoS 1) or the packet was written (QoS 0).

        RabbitMQ answers a refused PUBLISH by closing the connection: check
        `wait_closed()` after a QoS 0 publish that should be refused.
        """
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            return False
        return self._wait_ack(info.mid, timeout) and not (qos == 0 and self._closed.is_set())

    def receive(self, timeout: float = 5.0) -> Message | None:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True if the broker closed the connection within `timeout`."""
        return self._closed.wait(timeout)

    def close(self) -> None:
        if not self._closed.is_set():
            try:
                self._client.disconnect()
            except Exception:
                pass
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._client.socket() and self._client.socket().close()
        except Exception:
            pass
        self._closed.set()

    def __enter__(self) -> "MqttClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def mqtt_connect(port: int, client_id: str, *, timeout: float = 15.0, **options) -> MqttClient:
    """Connect and return the client with `.connack` set (use it as a context manager)."""
    client = MqttClient(port, client_id, **options)
    client.connect(timeout)
    return client


def can_connect(port: int, client_id: str, *, timeout: float = 15.0, **options) -> Connack:
    """Connect, note the CONNACK, disconnect."""
    with mqtt_connect(port, client_id, timeout=timeout, **options) as client:
        return client.connack
