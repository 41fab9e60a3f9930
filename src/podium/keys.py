"""Every Redis key Podium uses, built in one place under one prefix."""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str = "podium:") -> None:
        self.prefix = prefix

    def deny_jti(self, jti: str) -> str:
        return f"{self.prefix}deny:jti:{jti}"

    def deny_family(self, family: str) -> str:
        return f"{self.prefix}deny:fam:{family}"

    def deny_user(self, user_id: int) -> str:
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
