"""The rules of the request policy, one by one: which Host values name the daemon, which origins are its own
or allowed, which media types a state-changing request needs. The whole middleware is replayed against a
running daemon in tests/security."""

from __future__ import annotations

import pytest

from bridge.http.policy import HostRule, PolicySettings, expected_media_type, normalise_origin, split_host

PORT = 8080


@pytest.mark.parametrize(("value", "parsed"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("LocalHost:8080", ("localhost", 8080)), ("[::1]:8080", ("::1", 8080)),
    ("[::1]", ("::1", None)), ("example.com.", ("example.com", None)), ("::1", ("::1", None)),
    ("a:b", None), ("a:0", None), ("a:99999", None), ("", None), ("a b", None), ("[::1", None), ("[::1]x", None),
    ("user@host", None), ("host/path", None),
])
def test_split_host(value: str, parsed: tuple[str, int | None] | None) -> None:
    assert split_host(value) == parsed


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080", "[::1]:8080", "127.0.0.2:8080",
                                  "app.localhost:8080", "[::ffff:127.0.0.1]:8080", "localhost.:8080"])
def test_loopback_names_with_the_served_port_are_accepted(host: str) -> None:
    assert HostRule.of("127.0.0.1", []).accepts(host, PORT)


@pytest.mark.parametrize("host", ["attacker.example:8080", "attacker.example", "127.0.0.1.nip.io:8080",
                                  "localhost.attacker.example:8080", "127.0.0.1:8081", "localhost", "192.168.1.20:8080",
                                  "0x7f000001:8080", "2130706433:8080", "", "127.0.0.1:8080:8080"])
def test_other_names_are_refused_on_loopback(host: str) -> None:
    assert not HostRule.of("127.0.0.1", []).accepts(host, PORT)


def test_bound_address_wildcard_and_allowed_hosts() -> None:
    lan = HostRule.of("192.168.1.20", [])
    assert lan.accepts("192.168.1.20:8080", PORT) and not lan.accepts("192.168.1.21:8080", PORT)
    wide = HostRule.of("0.0.0.0", [])
    assert wide.accepts("192.168.1.20:8080", PORT) and wide.accepts("[fe80::1]:8080", PORT)
    assert not wide.accepts("studio.lan:8080", PORT)
    allowed = HostRule.of("0.0.0.0", ["studio.lan", "tunnel.example:9999"])
    assert allowed.accepts("studio.lan:8080", PORT) and allowed.accepts("studio.lan:1234", PORT)
    assert allowed.accepts("tunnel.example:9999", PORT) and not allowed.accepts("tunnel.example:8080", PORT)
    with pytest.raises(ValueError, match="allowed_hosts"):
        HostRule.of("127.0.0.1", ["bad host"])


def test_origins() -> None:
    assert normalise_origin("HTTPS://Player.Example:443") == "https://player.example"
    assert normalise_origin("http://[::1]:8080") == "http://[::1]:8080"
    for opaque in ("null", "file://", "data:text/html,x", "http://a.example/path", "chrome-extension://abc", ""):
        assert normalise_origin(opaque) is None
    settings = PolicySettings(HostRule.of("127.0.0.1", []), frozenset({"https://player.example"}))
    for ok in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "https://player.example"):
        assert settings.origin_allowed(ok, PORT), ok
    for bad in ("http://attacker.example", "https://127.0.0.1:8080", "http://127.0.0.1:8081", "null",
                "https://player.example:444", "http://player.example"):
        assert not settings.origin_allowed(bad, PORT), bad


def test_media_types() -> None:
    assert expected_media_type("POST", "/whep") == "application/sdp"
    assert expected_media_type("PATCH", "/whep/abc") == "application/trickle-ice-sdpfrag"
    assert expected_media_type("POST", "/api/control") == "application/json"
    assert expected_media_type("POST", "/api/webrtc/offer") == "application/json"
