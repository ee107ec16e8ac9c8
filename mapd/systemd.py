"""The systemd notify protocol (``sd_notify``), written with the standard library.

systemd passes a datagram socket in ``NOTIFY_SOCKET``; the service reports its
state by sending newline-separated ``KEY=value`` assignments to it (see
sd_notify(3)). mapd also runs outside systemd (from a shell, in tests): then
``NOTIFY_SOCKET`` is unset and every method here does nothing.

Typical use in a daemon's main loop::

    with Notifier.from_environment() as notifier:
        notifier.ready("watching 3 rigs")
        while running:
            do_some_work()
            notifier.maybe_ping_watchdog()
        notifier.stopping()
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping
from types import TracebackType

__all__ = ["Notifier"]

log = logging.getLogger("mapd.systemd")

# Never let a stuck service manager (full socket queue) block the daemon for long:
# a lost status message is harmless, a hung ingest loop is not.
_SEND_TIMEOUT_SECONDS = 5.0

_ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Reports the service's state to systemd; a no-op when not run by systemd."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        """``address`` as in ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket).

        ``watchdog_usec`` is the watchdog timeout that applies to this process
        (``WATCHDOG_USEC``, already checked against ``WATCHDOG_PID``), or None.
        """
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._last_ping: float | None = None
        self._warned = False
        self._socket: socket.socket | None = None
        if self._address is not None:
            self._socket = self._open_socket(self._address)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ, *, unset: bool = False) -> Notifier:
        """Build from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        ``unset=True`` removes these variables from ``env`` (like sd_notify's
        ``unset_environment``) so that child processes, e.g. parser workers or
        the embedded PostgreSQL, do not talk to systemd in mapd's name.
        """
        address = env.get("NOTIFY_SOCKET") or None
        watchdog_usec = _watchdog_usec(env)
        if unset and isinstance(env, MutableMapping):
            for name in _ENVIRONMENT:
                env.pop(name, None)
        return cls(address, watchdog_usec)

    # -- state ---------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to talk to."""
        return self._socket is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half the timeout, as sd_watchdog_enabled(3) advises), or None."""
        if not self.enabled or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    # -- messages ------------------------------------------------------------

    def ready(self, status: str | None = None) -> None:
        """Start-up is complete (Type=notify units become active only now)."""
        self._send("READY=1", status)

    def status(self, text: str) -> None:
        """A one-line status shown by ``systemctl status``."""
        self._send(None, text)

    def stopping(self, status: str | None = None) -> None:
        """Shutdown has begun."""
        self._send("STOPPING=1", status)

    def reloading(self, status: str | None = None) -> None:
        """A configuration reload has begun; follow with :meth:`reloaded`.

        systemd >= 253 (Type=notify-reload) requires MONOTONIC_USEC, the
        CLOCK_MONOTONIC time of the message, to match it with the reload request.
        """
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}", status)

    def reloaded(self, status: str | None = None) -> None:
        """The reload is complete: READY=1 again ends systemd's "reloading" state."""
        self._send("READY=1", status)

    # -- watchdog ------------------------------------------------------------

    def watchdog(self) -> None:
        """Ping the watchdog now (WATCHDOG=1), if this process has one.

        Without a watchdog for this process (no ``WATCHDOG_USEC``, or
        ``WATCHDOG_PID`` names another process) nothing is sent: the ping would
        be meaningless, or reset another process's watchdog.
        """
        if self.watchdog_interval is None:
            return
        self._last_ping = time.monotonic()
        self._send("WATCHDOG=1")

    def watchdog_due(self) -> bool:
        """True when a watchdog ping is due (none sent yet, or one interval has passed)."""
        interval = self.watchdog_interval
        if interval is None:
            return False
        return self._last_ping is None or time.monotonic() - self._last_ping >= interval

    def maybe_ping_watchdog(self) -> bool:
        """Ping the watchdog if due; cheap enough to call on every loop iteration. True if it pinged."""
        if not self.watchdog_due():
            return False
        self.watchdog()
        return True

    # -- socket --------------------------------------------------------------

    def close(self) -> None:
        """Close the socket; later calls are no-ops."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Notifier(address={_printable(self._address)!r}, watchdog_interval={self.watchdog_interval})"

    def _open_socket(self, address: str) -> socket.socket | None:
        if not address.startswith(("/", "\0")):
            # e.g. systemd >= 254's "vsock:" addresses, or a relative path
            log.warning("unsupported NOTIFY_SOCKET %r: not notifying systemd", address)
            return None
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except OSError as error:
            self._warn(error)
            return None
        sock.settimeout(_SEND_TIMEOUT_SECONDS)
        return sock

    def _send(self, assignments: str | None, status: str | None = None) -> None:
        if self._socket is None or self._address is None:
            return
        lines = [assignments] if assignments else []
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        if not lines:
            return
        try:
            # Unconnected sendto: the address is resolved on every send, so a
            # notify socket re-created by the service manager is found again.
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as error:
            self._warn(error)
        else:
            self._warned = False  # warn again if the socket is lost again later

    def _warn(self, error: OSError) -> None:
        # Once per outage: a daemon pinging every 30 s must not flood its own log.
        if self._warned:
            log.debug("systemd notify socket %s still unreachable: %s", _printable(self._address), error)
            return
        self._warned = True
        log.warning("cannot notify systemd via %s: %s", _printable(self._address), error)


def _socket_address(address: str) -> str:
    # '@' marks Linux's abstract namespace, whose names begin with a NUL byte.
    return "\0" + address[1:] if address.startswith("@") else address


def _printable(address: str | None) -> str:
    return "@" + address[1:] if address and address.startswith("\0") else str(address)


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """WATCHDOG_USEC if the watchdog applies to this process (WATCHDOG_PID unset or ours)."""
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None  # inherited from the process systemd watches, not for us
        except ValueError:
            return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _one_line(text: str) -> str:
    # A newline would start a new assignment in the datagram.
    return " ".join(text.splitlines())
