"""One table of control ranges: the vocabulary's (served by /api/controls), the documentation's and the
clamp the parser applies are the same numbers."""

from __future__ import annotations

import re

from bridge.controls.vocabulary import SPECS, value_range
from bridge.core.interfaces import ControlEvent
from tests.conftest import REPO
from tests.controls.conftest import make_mixer

MANUAL = {"blend/<arkit>": "blend/jawOpen", "flame/expression/<0-99>": "flame/expression/7", "flame/jaw": "flame/jaw",
          "flame/eyes": "flame/eyes", "flame/eyelids": "flame/eyelids", "flame/neck": "flame/neck",
          "flame/head": "flame/head", "flame/translation": "flame/translation", "gaze": "gaze", "head": "head"}


def _number(x: float) -> str:
    return f"{x:g}"


def test_the_documented_ranges_are_the_vocabulary() -> None:
    doc = (REPO / "docs" / "controls.md").read_text(encoding="utf-8")
    for spec in SPECS:
        row = re.search(rf"^\| `{re.escape(spec.pattern)}` \|[^|]*\| (\S+) … (\S+) \|", doc, re.M)
        assert row is not None, f"docs/controls.md has no row for {spec.pattern}"
        assert (row.group(1), row.group(2)) == (_number(spec.lo), _number(spec.hi)), spec.pattern


def test_the_parser_clamps_to_the_documented_ranges() -> None:
    parser = make_mixer().parser
    for spec in SPECS:
        target = MANUAL.get(spec.pattern)
        if target is None:
            continue
        assert value_range(target) == (spec.lo, spec.hi)
        n = len(spec.args)
        high = parser.parse(ControlEvent(target, (99.0,) * n))
        low = parser.parse(ControlEvent(target, (-99.0,) * n))
        assert set(high.values) == {spec.hi} and set(low.values) == {spec.lo}, target  # type: ignore[union-attr]
    assert set(MANUAL) <= {s.pattern for s in SPECS}
