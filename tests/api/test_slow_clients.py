"""Slow clients on a real server: a body that never finishes arriving is cut off at --body-timeout with
a 408, and an idle keep-alive connection is closed; neither holds the server."""
import socket
import time

import httpx
import pytest

from helpers import CURATE, tiny_server

pytestmark = [pytest.mark.slow, pytest.mark.network_local]


@pytest.fixture(scope="module")
def server(tiny_index, tmp_path_factory):
    srv = tiny_server(tiny_index(20, seed=61), tmp_path_factory.mktemp("slow"), "--body-timeout", "2",
                      "--header-timeout", "2")
    yield srv
    srv.stop()


def read_all(sock: socket.socket, limit: float) -> bytes:
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except socket.timeout:
        pass
    return data


def test_a_body_shorter_than_its_content_length_is_cut_off(server):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /curate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + CURATE.encode() +
                     b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"params\": ")
        reply = read_all(sock, 10)
    assert reply.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 8, reply[:200]
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_idle_connections_are_closed(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.monotonic()
        reply = read_all(sock, 15)  # returns when the server closes the idle connection
        assert reply.startswith(b"HTTP/1.1 200") and time.monotonic() - t0 < 12


def test_a_connection_that_never_sends_a_request_is_closed(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        t0 = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # headers dribbled, never finished
        reply = read_all(sock, 20)  # returns when the server closes it
        assert time.monotonic() - t0 < 8, reply


def healthz_seconds(server) -> float:
    t0 = time.monotonic()
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
    return time.monotonic() - t0


def test_an_oversized_header_is_refused_as_it_arrives(server):
    """Megabytes of one header value, no key needed: answered 431 once the cap is passed, without
    waiting for the rest; another client's /healthz stays fast meanwhile."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent, reply = 0, b""
        sock.settimeout(0.05)
        try:
            while sent < (64 << 20) and not reply:
                sock.sendall(b"a" * 65536)
                sent += 65536
                try:
                    reply = sock.recv(4096)
                except socket.timeout:
                    pass
                if sent % (4 << 20) == 0:
                    assert healthz_seconds(server) < 1.0
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server after its answer
    assert sent < (1 << 20), sent  # cut off near the 16 KB cap, not after 64 MB
    assert reply.startswith(b"HTTP/1.1 431") or reply == b"", reply[:100]
    assert healthz_seconds(server) < 1.0


def test_a_body_sent_a_byte_at_a_time_is_cut_off_by_a_deadline(server):
    """Each byte within --body-timeout (2 s here) is not enough: the whole body has a deadline too."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /curate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + CURATE.encode() +
                     b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        sock.settimeout(0.1)
        reply = b""
        for _ in range(80):  # a byte every 0.1 s: 8 s of trickle
            try:
                sock.sendall(b" ")
                reply += sock.recv(4096)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if reply:
                break
        assert healthz_seconds(server) < 1.0
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert time.monotonic() - t0 < 5.0


def test_a_client_gone_mid_upload_is_no_error(tiny_index, tmp_path):
    srv = tiny_server(tiny_index(20, seed=61), tmp_path)
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", srv.port)) as sock:
                sock.sendall(b"POST /curate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + CURATE.encode() +
                             b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
                             b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n" +
                             b"x" * 5000)
                time.sleep(0.3)
        time.sleep(1.0)
        assert healthz_seconds(srv) < 1.0
    finally:
        srv.stop()
    log = srv.proc.stderr.read().decode()
    assert "Exception in ASGI application" not in log and "Traceback" not in log, log[-3000:]
