"""Exceptions that carry a user-facing, one-line message.

The CLI prints ``xbq <command>: error: <message>`` for these and exits non-zero; anything
else is a bug in xbq and is reported as such.
"""


class XbqError(Exception):
    """Bad input or an impossible request, reported to the user in one line."""


class ProtocolError(XbqError):
    """A peer broke the blkif protocol (bad response id, overflowing producer, ...)."""


class NegotiationError(XbqError):
    """The XenStore handshake ended in an error node instead of Connected."""
