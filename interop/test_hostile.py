"""A hostile network against a real `dynreg serve`, written from issue 17 ("a public listener that holds against
a hostile network"): slow and idle connections, a full listener, oversized heads, ambiguous requests, admin
bodies with typos, control characters, and token guessing.

The server here runs with short limits (`--request-timeout 2 --idle-timeout 3 --max-connections 40`), so the
tests wait seconds, not minutes. Every wait is a bound on when the server must have acted, never a measurement.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import re
import resource
import socket
import subprocess
import time
from pathlib import Path

import pytest

from test_interop import (
    _stop,
    http_request,
    new_device_name,
    new_nonce,
    read_until_closed,
    start_server,
    v2_error_code,
    v2_signature,
    v2_string_to_sign,
)

REQUEST_TIMEOUT = 2
IDLE_TIMEOUT = 3
MAX_CONNECTIONS = 40


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    running, proc = start_server(
        tmp_path_factory, "--request-timeout", str(REQUEST_TIMEOUT), "--idle-timeout", str(IDLE_TIMEOUT),
        "--max-connections", str(MAX_CONNECTIONS))
    try:
        yield running
    finally:
        _stop(proc)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed the connection within `seconds`, and what it sent; closes the socket."""
    try:
        received, closed = read_until_closed(sock, seconds)
        return closed, received
    finally:
        sock.close()


def test_slowloris_head_is_cut(hostile):
    sock = connect(hostile.port)
    sock.sendall(b"POST /device/register HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    for _ in range(3):  # a byte now and then keeps nothing alive
        time.sleep(0.5)
        try:
            sock.sendall(b"a")
        except OSError:
            break
    closed, _ = closed_within(sock, REQUEST_TIMEOUT + 8)
    assert closed, "a head trickling in was still open well after the request timeout"


def test_body_that_never_finishes_is_cut(hostile):
    sock = connect(hostile.port)
    sock.sendall(b"POST /device/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{\"Pr")
    closed, _ = closed_within(sock, REQUEST_TIMEOUT + 8)
    assert closed


def test_silent_and_idle_connections_are_closed(hostile):
    silent = connect(hostile.port)
    assert closed_within(silent, REQUEST_TIMEOUT + 8)[0], "a connection that never spoke stayed open"
    idle = connect(hostile.port)
    idle.sendall(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n")
    closed, received = closed_within(idle, IDLE_TIMEOUT + 8)
    assert received.startswith(b"HTTP/1.1 200"), received
    assert closed, "a kept-alive connection outlived the idle timeout"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_descriptor_limit_never_spins_and_registrations_go_on(tmp_path_factory):
    # The usual soft limit under systemd, as soft and hard limit: the server cannot raise it.
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    running, proc = start_server(tmp_path_factory, "--request-timeout", "30", "--idle-timeout", "60",
                                 preexec_fn=limit)
    held = []
    try:
        product = running.create_product()
        for _ in range(1100):  # more idle connections than descriptors
            try:
                held.append(connect(running.port))
            except OSError:
                break
        time.sleep(0.5)
        before = cpu_seconds(proc.pid)
        time.sleep(3)
        spent = cpu_seconds(proc.pid) - before
        # An accept loop failing with EMFILE spun a whole core: 3 s of CPU in 3 s.
        assert spent < 1.0, f"the idle server used {spent:.2f} s of CPU in 3 s with {len(held)} connections held"
        reply = running.register_v2(product, new_device_name())
        assert "Error" not in reply.json["Response"], reply.raw
    finally:
        for sock in held:
            sock.close()
        _stop(proc)


def test_full_listener_evicts_the_longest_waiting_and_serves(hostile):
    held = []
    for _ in range(MAX_CONNECTIONS):
        held.append(connect(hostile.port))
        held[-1].sendall(b"GET /hea")  # a head that never ends
    try:
        time.sleep(0.3)
        # A device arriving at a full listener is served: the oldest silent connection makes room.
        reply = http_request(hostile.port, "GET", "/livez")
        assert reply.status == 200
        closed, _ = closed_within(held.pop(0), 5)
        assert closed, "the longest-waiting connection was not evicted"
    finally:
        for sock in held:
            sock.close()


def test_oversized_head_is_refused(hostile):
    sock = connect(hostile.port)
    filler = b"a" * (20 * 1024)
    try:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: a\r\nX-Filler: " + filler + b"\r\n\r\n")
    except OSError:
        pass
    closed, received = closed_within(sock, 10)
    assert closed and not received.startswith(b"HTTP/1.1 200"), received[:200]


def test_two_host_headers_are_refused(hostile):
    product = hostile.create_product()
    body = json.dumps({"ProductId": product["productId"], "DeviceName": new_device_name()}).encode()
    sock = connect(hostile.port)
    sock.sendall(b"POST /device/register HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: gateway.example\r\n"
                 b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                 + body)
    _, received = closed_within(sock, 10)
    head, _, answer = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(answer)["Response"]["Error"]["Code"] == "InvalidParameter", answer


def test_http10_closes_after_the_answer(hostile):
    sock = connect(hostile.port)
    sock.sendall(b"GET /livez HTTP/1.0\r\n\r\n")
    closed, received = closed_within(sock, 5)
    assert b" 200 " in received.split(b"\r\n", 1)[0] and closed, received


def test_oversized_body_is_not_drained(hostile):
    sock = connect(hostile.port)
    sock.sendall(b"POST /device/register HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n"
                 b"Content-Length: 100000000\r\n\r\n" + b"a" * 8192)
    closed, received = closed_within(sock, 10)
    assert b"InvalidParameter" in received and closed, received[:300]


def test_admin_body_typos_and_repeated_keys_are_refused(hostile):
    for body, field in ((b'{"name":"p","autocreate":false}', "autocreate"),
                        (b'{"name":"p","name":"q"}', "name")):
        reply = http_request(hostile.port, "POST", "/admin/v1/products", body,
                             {"Authorization": f"Bearer {hostile.admin_token}",
                              "Content-Type": "application/json"})
        assert reply.status == 400, reply.raw
        error = reply.json["error"]
        assert error["code"] == "InvalidBody" and field in error["message"], error


def test_product_names_with_control_characters_are_refused(hostile):
    reply = hostile.admin("POST", "/products", {"name": "evil\x1b]0;title\x07"})
    assert reply.status == 400 and reply.json["error"]["code"] == "InvalidName", reply.raw


def test_guessing_the_admin_token_locks_the_address(tmp_path_factory):
    # A server of its own: the lock holds for a minute for every request from 127.0.0.1.
    running, proc = start_server(tmp_path_factory)
    try:
        statuses = [running.admin("GET", "/products", token="guess-" + str(n)).status for n in range(10)]
        assert statuses == [401] * 9 + [429], statuses
        locked = running.admin("GET", "/products")
        assert locked.status == 429 and locked.json["error"]["code"] == "TooManyFailures", locked.raw
    finally:
        _stop(proc)


# Audit writes bounded in bytes ---------------------------------------------------------------


def store_bytes(data_dir: Path) -> int:
    return sum(path.stat().st_size for path in data_dir.glob("dynreg.sqlite*"))


def refused_requests(server, product: dict):
    """Endless refused registrations of every shape a client without the product secret can send."""
    now = int(time.time())
    accents = "a" + "\u0301" * 980  # one Character, about 2 KB

    def signed(product_id: str, device_name: str, secret: str) -> tuple[str, bytes, dict]:
        body = json.dumps({"ProductId": product_id, "DeviceName": device_name}).encode()
        nonce = new_nonce()
        text = v2_string_to_sign("127.0.0.1", "hmacsha256", now, nonce, body, "sha256")
        return "/device/register", body, {
            "X-TC-Algorithm": "hmacsha256", "X-TC-Timestamp": str(now), "X-TC-Nonce": str(nonce),
            "X-TC-Signature": v2_signature(secret, text, "hmacsha256")}

    shapes = [
        lambda: ("/device/register", b'{"Product', {}),
        lambda: signed("ZZZZZZZZZZ", new_device_name(), "no-secret"),
        lambda: signed(product["productId"], accents, "no-secret"),
        lambda: signed(product["productId"], new_device_name(), "no-secret"),
        lambda: ("/register/dev", json.dumps({"productId": "ZZZZZZZZZZ", "deviceName": accents, "nonce": 1,
                                              "timestamp": now, "signature": "x" * 40}).encode(), {}),
        lambda: ("/register/dev", b"\xff\xfe" * 100, {}),
    ]
    while True:
        for shape in shapes:
            yield shape()


def test_unauthenticated_refusals_are_counted_not_stored(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("dynreg-refusals")
    # Without the rate limit and the lockout, every shape reaches its own refusal rather than RequestLimitExceeded.
    running, proc = start_server(tmp_path_factory, "--address-rate-limit", "0", "--lockout-failures", "0",
                                 data_dir=data_dir)
    try:
        product = running.create_product()
        # Warm up: the WAL exists and has seen a commit.
        assert "Error" not in running.register_v2(product, new_device_name()).json["Response"]
        time.sleep(1)
        before = store_bytes(data_dir)
        count = 2000
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
        codes = set()
        try:
            requests = refused_requests(running, product)
            for _ in range(count):
                path, body, headers = next(requests)
                conn.request("POST", path, body=body, headers={
                    "Host": running.host_header, "Connection": "keep-alive",
                    "Content-Type": "application/json", **headers})
                reply = conn.getresponse()
                answer = json.loads(reply.read())
                assert reply.status == 200
                codes.add(answer["Response"]["Error"]["Code"] if "Response" in answer else answer["code"])
        finally:
            conn.close()
        assert len(codes) >= 4, codes  # junk, unknown products, bad names and wrong signatures alike
        time.sleep(6)  # past the tally's next write
        grown = store_bytes(data_dir) - before
        assert grown <= 512 * count, f"{count} refused requests grew the store by {grown} bytes"
        print(f"\n{count} refused requests grew the store by {grown} bytes ({grown / count:.1f} B each)")

        # Every one is counted, in rows of a minute each, and none became an event of the product.
        listed = running.admin("GET", "/refusals?limit=1000")
        assert listed.status == 200, listed.raw
        rows = listed.json["refusals"]
        assert sum(row["count"] for row in rows) == count, rows
        assert {row["productId"] for row in rows} <= {"", product["productId"]}
        assert all(len(row["remoteAddress"]) < 64 for row in rows)
        events = running.admin("GET", f"/products/{product['productId']}/events?limit=1000").json["events"]
        assert [event["outcome"] for event in events] == ["Success", "Admin.ProductCreated"], events
    finally:
        _stop(proc)


# A full disk ---------------------------------------------------------------------------------


def fill(directory: Path) -> Path:
    """A file that takes every free byte of the filesystem under `directory`."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 20, 4096, 1):
            chunk = b"\0" * size
            while True:
                try:
                    out.write(chunk)
                except OSError as error:
                    assert error.errno == errno.ENOSPC, error
                    break
    return filler


def _health_becomes(port: int, status: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if http_request(port, "GET", "/health").status == status:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root (CI runs as root)")
def test_full_disk_makes_health_503_and_recovers(tmp_path_factory):
    mount_point = tmp_path_factory.mktemp("dynreg-small-disk")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], check=True)
    log = tmp_path_factory.mktemp("dynreg-full-log") / "stderr.log"
    try:
        data_dir = mount_point / "data"
        running, proc = start_server(tmp_path_factory, data_dir=data_dir, stderr_path=log)
        try:
            product = running.create_product()
            assert "Error" not in running.register_v2(product, new_device_name()).json["Response"]
            filler = fill(mount_point)
            failures = [v2_error_code(running.register_v2(product, new_device_name())) for _ in range(30)]
            assert set(failures) == {"InternalError"}, failures
            # /health answers from a background check of the store, twice a second: it turns within a few seconds.
            assert _health_becomes(running.port, 503)
            # A failure on every request, and one line a minute says so.
            lines = [line for line in log.read_text(errors="replace").splitlines()
                     if re.search("failed in the store|could not record", line)]
            assert 1 <= len(lines) <= 2, lines

            filler.unlink()
            assert _health_becomes(running.port, 200)
            assert "Error" not in running.register_v2(product, new_device_name()).json["Response"]
        finally:
            _stop(proc)
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
