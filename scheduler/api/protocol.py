"""uvicorn's HTTP/1.1 protocol with a deadline for each request's head.

uvicorn bounds the wait between two requests of a keep-alive connection (``timeout_keep_alive``) but not the
wait for a request's head: a connection that sends nothing, or a few bytes of a head and then nothing, is
kept open for ever, so idle connections alone can use up the API's file descriptors (measured: 19,900 such
connections all still open after 45 s, then ``/healthz`` unanswered). Here a connection whose next request
head has not arrived whole within ``BROADCAST_HEAD_TIMEOUT_S`` (10 s) of its opening, or of its last answer, is
closed.
The body has its own deadline (``BROADCAST_BODY_TIMEOUT_S``, :mod:`scheduler.api.body_limit`). An answer
that cannot be written, because the client stopped reading (pipelined requests it never reads the answers
of), may stall for three times the head's deadline; then the connection is dropped with what it buffered.
"""

from __future__ import annotations

import asyncio
import functools

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from worker.settings import get_settings


@functools.cache
def _head_timeout_s() -> float:
    """``BROADCAST_HEAD_TIMEOUT_S``, read once per process (uvicorn's worker processes start afresh)."""
    return get_settings().head_timeout_s


class HeadTimedH11Protocol(H11Protocol):
    """:class:`H11Protocol` that closes a connection still waiting for a request head after
    ``BROADCAST_HEAD_TIMEOUT_S`` (the head is in once h11 has left the IDLE state for the peer)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._answered = 0
        self._stalled: asyncio.TimerHandle | None = None
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        self._answered += 1
        super().on_response_complete()
        self._arm_head_deadline()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is not None:
            self._stalled.cancel()
        self._stalled = self.loop.call_later(3 * _head_timeout_s(), self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _write_stalled(self) -> None:
        """The client has read nothing for the whole deadline: drop the connection and its buffered answers."""
        self._stalled = None
        if not self.transport.is_closing():
            self.transport.abort()

    def _arm_head_deadline(self) -> None:
        self.loop.call_later(_head_timeout_s(), self._head_deadline, self._answered)

    def _head_deadline(self, answered: int) -> None:
        """Close the connection if it is still waiting for the head it was waiting for when armed."""
        if answered == self._answered and self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
