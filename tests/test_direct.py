"""The pre-built broadcast frame is byte for byte what websockets itself would send."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from podium.realtime.direct import text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_text_frame_matches_websockets(size: int) -> None:
    text = ("é" * size)[:size] if size % 2 else "x" * size
    expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    assert text_frame(text) == expected
