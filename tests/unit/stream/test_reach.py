"""Reaching the broker: bootstrap parsing, the TCP check's reasons, the back-off."""

from __future__ import annotations

import socket

import pytest

from detector.errors import BrokerUnavailableError, ConfigError
from detector.stream.reach import Backoff, check_reachable, parse_bootstrap


def test_bootstrap_servers_parse_or_name_the_setting() -> None:
    assert parse_bootstrap("a:9092, [::1]:9093") == [("a", 9092), ("::1", 9093)]
    with pytest.raises(ConfigError, match="DETECTOR_KAFKA__BOOTSTRAP_SERVERS"):
        parse_bootstrap(None)
    with pytest.raises(ConfigError, match=r"'a:x' is not HOST:PORT"):
        parse_bootstrap("a:x")
    with pytest.raises(ConfigError, match=r"'a:0' is not HOST:PORT"):
        parse_bootstrap("a:0")


def test_reachable_when_one_server_listens() -> None:
    # Given one closed port and one listening socket
    with socket.socket() as closed, socket.socket() as listening:
        closed.bind(("127.0.0.1", 0))
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        servers = f"127.0.0.1:{closed.getsockname()[1]},127.0.0.1:{listening.getsockname()[1]}"
        # When checked, Then it returns: one reachable server is enough
        check_reachable(servers, timeout_s=2.0)


def test_unreachable_says_which_and_why() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(BrokerUnavailableError) as info:
            check_reachable(f"127.0.0.1:{port}", timeout_s=2.0)
        assert str(info.value) == f"broker 127.0.0.1:{port} unreachable (connection refused)"
        with pytest.raises(BrokerUnavailableError) as info:
            check_reachable(f"127.0.0.1:{port},no-such-host.invalid:9092", timeout_s=2.0)
        assert str(info.value) == (
            f"brokers 127.0.0.1:{port}, no-such-host.invalid:9092 unreachable "
            f"(127.0.0.1:{port} connection refused; no-such-host.invalid:9092 host not found)"
        )


def test_backoff_doubles_to_its_cap_and_restarts() -> None:
    b = Backoff(start_s=0.5, max_s=4.0)
    assert [b.next_delay_s() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.failures == 6
    b.reset()
    assert b.next_delay_s() == 0.5 and b.failures == 1
