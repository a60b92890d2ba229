"""``carla.command`` server answers: the double's ``Response`` (the real one cannot be built)."""

from __future__ import annotations


class Response:
    """What ``Client.apply_batch_sync`` returns per command (carla.command.Response)."""

    def __init__(self, actor_id: int, error: str) -> None:
        self._actor_id = actor_id
        self._error = error

    @property
    def actor_id(self) -> int:
        # As CARLA's binding: 0 when the command failed.
        return 0 if self._error else self._actor_id

    @property
    def error(self) -> str:
        return self._error
