"""Every Redis key and channel Podium uses, built in one place under one prefix.

The Lua scripts build no key of their own: they get the kinds below from `Keys.layout`
(boards/scripts.py passes it as an argument), so a key's shape lives here only.
"""

from __future__ import annotations

# The kinds of a board's keys, after the prefix (live) or a rebuild's aside prefix.
ZSET = "b:"
MEMBERS = "m:"
SEQ = "seq:"
CHANNEL = "ch:"
# A rebuild's boards aside live under "{prefix}r:{gen}:"; the set of their ids under
# "{prefix}r:{gen}:boards".
ASIDE = "r:{gen}:"
ASIDE_BOARDS = "boards"


class Keys:
    def __init__(self, prefix: str = "podium:") -> None:
        self.prefix = prefix

    def deny_jti(self, jti: str) -> str:
        return f"{self.prefix}deny:jti:{jti}"

    def deny_family(self, family: str) -> str:
        return f"{self.prefix}deny:fam:{family}"

    def deny_user(self, user_id: int | str) -> str:
        """Set while a voided user's access tokens may still be in circulation."""
        return f"{self.prefix}deny:user:{user_id}"

    def rate(self, bucket: str, who: str) -> str:
        return f"{self.prefix}rl:{bucket}:{who}"

    @property
    def revocations(self) -> str:
        """Pub/sub channel announcing revocations: a family id, `user:<id>` or `service:<name>`."""
        return f"{self.prefix}revocations"

    @property
    def names(self) -> str:
        """Hash user id -> username: the display-name cache."""
        return f"{self.prefix}names"

    @property
    def renames(self) -> str:
        """Pub/sub channel announcing a changed display name (protocol.NameChange)."""
        return f"{self.prefix}renames"

    # --- boards (see docs/design.md) ---------------------------------------------------

    def zset(self, board: str) -> str:
        """The board's sorted set: members ranked by (zscore, member)."""
        return f"{self.prefix}{ZSET}{board}"

    def members(self, board: str) -> str:
        """Hash user id -> "member|last_seq" (or "|last_seq", a tombstone)."""
        return f"{self.prefix}{MEMBERS}{board}"

    def seq(self, board: str) -> str:
        """The board's change counter, INCRed by every published change."""
        return f"{self.prefix}{SEQ}{board}"

    def channel(self, board: str) -> str:
        """Pub/sub channel of the board's changes (protocol.BoardChange)."""
        return f"{self.prefix}{CHANNEL}{board}"

    def board_of_channel(self, channel: bytes | str) -> str:
        text = channel.decode() if isinstance(channel, bytes) else channel
        return text.removeprefix(f"{self.prefix}{CHANNEL}")

    @property
    def epoch(self) -> str:
        """Set by a rebuild's swap: its absence means the index is lost or incomplete."""
        return f"{self.prefix}epoch"

    @property
    def rebuild_lock(self) -> str:
        """The rebuild lease: one rebuild at a time across instances; its value, the
        generation, names the boards aside that every apply also writes meanwhile."""
        return f"{self.prefix}rebuild-lock"

    @property
    def rebuild_aside(self) -> str:
        """The generation whose boards aside may be left over (the rebuild died)."""
        return f"{self.prefix}rebuild-aside"

    def aside(self, gen: str) -> Keys:
        """The keys of rebuild `gen`'s boards aside: the board kinds under a sub-prefix."""
        return Keys(self.prefix + ASIDE.format(gen=gen))

    @property
    def aside_boards(self) -> str:
        """On an `aside(gen)` Keys: the set of the board ids that rebuild built aside."""
        return f"{self.prefix}{ASIDE_BOARDS}"

    def layout(self) -> dict[str, str]:
        """What the Lua scripts build keys from: the prefix, the fixed keys, the kinds."""
        return {
            "prefix": self.prefix,
            "epoch": self.epoch,
            "lock": self.rebuild_lock,
            "rebuild_aside": self.rebuild_aside,
            "aside": self.prefix + ASIDE,
            "boards": ASIDE_BOARDS,
            "zset": ZSET,
            "members": MEMBERS,
            "seq": SEQ,
            "channel": CHANNEL,
        }

    def patterns(self) -> list[str]:
        """A glob of every key and channel built here (tests match Redis against it)."""
        aside = self.aside("*")
        return [
            self.deny_jti("*"),
            self.deny_family("*"),
            self.deny_user("*"),
            self.rate("*", "*"),
            self.revocations,
            self.names,
            self.renames,
            self.epoch,
            self.rebuild_lock,
            self.rebuild_aside,
            aside.aside_boards,
            self.zset("*"),
            self.members("*"),
            self.seq("*"),
            self.channel("*"),
            aside.zset("*"),
            aside.members("*"),
        ]
