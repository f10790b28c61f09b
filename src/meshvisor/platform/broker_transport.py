"""The Redis transport under the platform's Celery connections: kombu's, with two changes for when Redis goes away
(it restarts) while a worker holds messages.

kombu closes the worker's channel and reopens another; on the closed one, it would put the held messages back in
their queues at close, and acknowledge each held task as it ends, through a connection that is gone: both fail
("'NoneType' object has no attribute ..."), Celery takes that for an unrecoverable error, and the worker stops.
Here a channel never restores at close, and an acknowledgement on a closed channel is dropped. Nothing is lost by
it: the messages of a Redis that restarted are gone anyway, and the platform sends again what the broker forgot
(`dispatch`); a worker that starts resumes what its host left running; a message still held in a broker that did
not restart comes back after its visibility timeout, and the operation's claim lets it run at most once."""

from __future__ import annotations

from kombu.transport import redis as kombu_redis


class QoS(kombu_redis.QoS):
    restore_at_shutdown = False

    def _dropped(self, delivery_tag: str) -> bool:
        """Whether the message came on a channel that closed with its connection (then it is forgotten here)."""
        if self.channel.connection is not None:
            return False
        if self._delivered is not None:
            self._delivered.pop(delivery_tag, None)
        return True

    def ack(self, delivery_tag: str) -> None:
        if self._dropped(delivery_tag):
            return
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self._dropped(delivery_tag):
            return
        super().reject(delivery_tag, requeue=requeue)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


NAME = f"{__name__}:Transport"
