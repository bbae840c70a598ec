"""Capacity from measured cost: sessions fit the compute at three quarters of each unit, never fewer than the
running ones (and one)."""

from __future__ import annotations

from bridge.runtime.sessions import Load, capacity_from, valid_name


def test_capacity_follows_the_measured_cost() -> None:
    assert capacity_from(Load(render_s=0.02, face_s=0.01), workers=1) == 25  # 3 % busy each: 0.75 / 0.03
    assert capacity_from(Load(render_s=0.4, face_s=0.0), workers=2) == 3
    assert capacity_from(Load(render_s=1.2, face_s=0.3), workers=1) == 1  # late already: still the one
    assert capacity_from(Load(render_s=0.0, face_s=0.0), workers=1) == 751  # never a division by 0
    # Two running sessions that cost more than the default one leave room for fewer than it alone would.
    assert capacity_from(Load(render_s=0.1, face_s=0.0), workers=1, spent=0.5, running=2) == 4
    assert capacity_from(Load(render_s=0.1, face_s=0.0), workers=1, spent=0.9, running=2) == 2  # no room left


def test_session_names_never_shadow_control_words() -> None:
    assert valid_name("stage") and valid_name("0123456789abcdef01234567")
    for bad in ("blend", "preset", "hold", "blink", "state", "get", "ping", "Stage", "", "a/b", "x" * 65, "-a"):
        assert not valid_name(bad), bad
