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
