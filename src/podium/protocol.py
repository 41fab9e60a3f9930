"""Every message on the wire, as msgspec Structs: pub/sub between instances and
WebSocket messages to and from clients. Decoders and encoders are built once here.
"""

from __future__ import annotations

import msgspec


class BoardChange(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Published on a board's channel once per applied batch that changed the board.

    `top` is the complete top 10 after the change as [user_id, value, reached_seq];
    `entered`/`left`/`moved` compare it with the top 10 before; `changed` lists every
    user whose value changed. `resync` asks subscribers to re-read the board.
    """

    board: str
    seq: int
    top: list[tuple[int, int, int]] = []
    entered: list[int] = []
    left: list[int] = []
    moved: list[int] = []
    changed: list[int] = []
    resync: bool = False


board_change_decoder = msgspec.json.Decoder(BoardChange)
board_change_encoder = msgspec.json.Encoder()
