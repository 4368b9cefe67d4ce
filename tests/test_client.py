"""The server API client against the real Centrifugo, and against servers that misbehave."""

import os
import resource
import socket
import threading
import time
import warnings

import pytest

from instant_signals import client
from instant_signals.exceptions import CentrifugoError
from support.processes import CountingProxy


def test_publish_broadcast_and_batch_replies(centrifugo):
    assert set(client.publish("public", {"a": 1})) == {"offset", "epoch"}  # history is on
    replies = client.broadcast(["public", "$users", "$nowhere:1"], {"b": 2})
    assert [client.reply_error(r) is None for r in replies] == [True, True, False]
    assert client.reply_error(replies[2]).code == 102
    replies = client.batch([
        '{"publish":{"channel":"public","data":{"c":3}}}',
        '{"publish":{"channel":"$nowhere:2","data":{}}}',
        '{"broadcast":{"channels":["public"],"data":{"d":4}}}',
    ])
    assert len(replies) == 3
    assert client.reply_error(replies[0]) is None
    assert client.reply_error(replies[1]).code == 102
    assert "broadcast" in replies[2]


@pytest.fixture
def counted(centrifugo, settings):
    """Django talks to Centrifugo through a counting proxy: requests and TCP connections."""
    proxy = CountingProxy(centrifugo.port)
    settings.CENTRIFUGO_API_URL = f"http://127.0.0.1:{proxy.port}/api"
    client.close_session()
    yield proxy
    client.close_session()
    proxy.close()


def test_one_pooled_keep_alive_connection(counted):
    for n in range(30):
        client.publish("public", {"n": n})
    threads = [threading.Thread(target=client.publish, args=("public", {})) for _ in range(4)]
    for thread in threads:
        thread.start()
        thread.join()  # one after another: the pooled connection is shared by threads
    assert (counted.requests, counted.connections) == (34, 1)


def test_high_file_descriptors_keep_the_connection(counted):
    """Regression: select() on a socket whose fd is >= 1024 raised, was read as "closed", and
    a busy process reconnected on every call."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    filler = [socket.socket() for _ in range(1100)]
    try:
        client.close_session()
        for n in range(20):
            client.publish("public", {"n": n})
        assert max(s.fileno() for s in filler) >= 1024
        assert (counted.requests, counted.connections) == (20, 1)
    finally:
        for sock in filler:
            sock.close()


def test_a_forked_child_opens_its_own_connection(counted):
    client.publish("public", {"from": "parent"})
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads (this test session has
        # client threads); a child that only publishes and exits is what a pre-forking server
        # does, which is the point.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: publish with a fresh pool, never the parent's socket
        try:
            client.publish("public", {"from": "child"})
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    client.publish("public", {"from": "parent again"})
    assert (counted.requests, counted.connections) == (3, 2)


def test_connection_closed_by_the_server_is_replaced(centrifugo):
    client.close_session()
    client.publish("public", {})
    centrifugo.stop()
    centrifugo.start()  # the idle keep-alive socket is now dead
    assert set(client.publish("public", {"after": "restart"})) == {"offset", "epoch"}


def test_env_proxy_is_honoured(centrifugo, monkeypatch, settings):
    proxy = CountingProxy(centrifugo.port)
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "")
        # A host nobody can resolve: only a request through the proxy (which forwards every
        # request to Centrifugo) can succeed.
        settings.CENTRIFUGO_API_URL = "http://centrifugo.invalid:8427/api"
        client.close_session()
        assert set(client.publish("public", {})) == {"offset", "epoch"}
        assert proxy.requests == 1
        monkeypatch.setenv("NO_PROXY", "centrifugo.invalid")  # bypassed: nobody can resolve it
        client.close_session()
        with pytest.raises(CentrifugoError, match="cannot reach Centrifugo"):
            client.publish("public", {})
    finally:
        client.close_session()
        proxy.close()


@pytest.fixture
def silent_server():
    """A loopback server that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted = []
    stop = threading.Event()

    def serve():
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    sock.close()


def test_read_timeout_is_a_retryable_error(settings, silent_server):
    settings.CENTRIFUGO_API_URL = silent_server
    settings.INSTANT_SIGNALS = {"TIMEOUT": (0.5, 0.3)}
    client.close_session()
    started = time.monotonic()
    with pytest.raises(CentrifugoError) as raised:
        client.publish("public", {})
    assert raised.value.retryable and "did not answer" in str(raised.value)
    assert time.monotonic() - started < 0.3 + 0.5 + 1.0  # bounded by the configured timeouts


def test_non_json_payload_refused_before_the_network(settings):
    settings.CENTRIFUGO_API_URL = "http://127.0.0.1:9/api"
    with pytest.raises(CentrifugoError) as raised:
        client.publish("public", {"x": object()})
    assert raised.value.code == 107 and not raised.value.retryable
