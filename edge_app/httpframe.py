"""Where an HTTP/1.x request ends, found incrementally in the bytes received so far.

The front (edge_app/front.py) uses this to know when a request is complete, before any thread
runs it, and to refuse an oversized body (413, chunked or not) before reading it. It frames
requests only: gunicorn's parser still parses each one. What this cannot frame (two
Content-Lengths, Transfer-Encoding beside Content-Length, a bad chunk line) is handed over as
far as it was read, with the connection marked to close, so gunicorn's parser refuses it with a
400 and no byte of it is taken for the next request.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024  # request line + headers; gunicorn's finer limits apply after
MAX_CHUNK_LINE = 1024  # a chunk-size line with its extensions
MAX_TRAILER_BYTES = 8 * 1024


class HeadTooLarge(Exception):
    """The request line and headers exceed MAX_HEAD_BYTES (431)."""


class BodyTooLarge(Exception):
    """The body (declared, or chunked as it arrives) exceeds the limit (413)."""


@dataclass(frozen=True)
class Head:
    end: int  # offset just past the blank line that ends the headers
    length: int | None  # Content-Length, when the body has one
    chunked: bool
    expect_continue: bool  # the client waits for "100 Continue" before sending its body
    malformed: bool  # framing gunicorn will refuse: hand over the head, then close


def scan_head(buf: bytes | bytearray) -> Head | None:
    """The framing of the request at the start of `buf`, or None while its head is incomplete.
    Raises HeadTooLarge."""
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
    if end < 0:
        if len(buf) > MAX_HEAD_BYTES:
            raise HeadTooLarge(f"request line and headers exceed {MAX_HEAD_BYTES} bytes")
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    lengths, codings, expect = [], [], False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            codings += [c.strip() for c in value.split(b",")]
        elif name == b"expect" and value == b"100-continue":
            expect = lines[0].endswith(b"HTTP/1.1")
    chunked = bool(codings) and codings[-1] == b"chunked"
    malformed = bool(codings) and (bool(lengths) or not chunked)
    length = None
    if lengths and not malformed:
        if len(set(lengths)) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
            malformed = True
        else:
            length = int(lengths[0])
    return Head(end + 4, length, chunked and not malformed, expect, malformed)


class BadChunk(Exception):
    """A chunked body that gunicorn's parser will refuse."""


class ChunkScanner:
    """Follows a chunked body as bytes arrive, keeping its place between calls (each byte is
    looked at once); counts the decoded size against `limit`."""

    SIZE, DATA, DATA_END, TRAILER = range(4)

    def __init__(self, start: int, limit: int):
        self.pos, self.limit = start, limit
        self.state, self.left, self.total, self.trailer = self.SIZE, 0, 0, 0

    def feed(self, buf: bytes | bytearray) -> int | None:
        """The offset just past the body once it is complete, else None. Raises BodyTooLarge
        or BadChunk."""
        while True:
            if self.state == self.SIZE:
                line = self._line(buf, MAX_CHUNK_LINE)
                if line is None:
                    return None
                digits = line.split(b";", 1)[0].strip()
                if not digits or len(digits) > 16 or any(c not in b"0123456789abcdefABCDEF"
                                                         for c in digits):
                    raise BadChunk(f"invalid chunk size line {line[:40]!r}")
                self.left = int(digits, 16)
                self.total += self.left
                if self.total > self.limit:
                    raise BodyTooLarge(f"chunked body exceeds {self.limit} bytes")
                self.state = self.DATA if self.left else self.TRAILER
            elif self.state == self.DATA:
                take = min(self.left, len(buf) - self.pos)
                self.pos += take
                self.left -= take
                if self.left:
                    return None
                self.state = self.DATA_END
            elif self.state == self.DATA_END:
                if len(buf) - self.pos < 2:
                    return None
                if buf[self.pos:self.pos + 2] != b"\r\n":
                    raise BadChunk("chunk data not followed by CRLF")
                self.pos += 2
                self.state = self.SIZE
            else:  # trailer fields, then the blank line that ends the body
                line = self._line(buf, MAX_TRAILER_BYTES - self.trailer)
                if line is None:
                    return None
                self.trailer += len(line) + 2
                if not line:
                    return self.pos

    def _line(self, buf: bytes | bytearray, limit: int) -> bytes | None:
        end = buf.find(b"\r\n", self.pos)
        if end < 0:
            if len(buf) - self.pos > limit:
                raise BadChunk(f"chunk line longer than {limit} bytes")
            return None
        if end - self.pos > limit:
            raise BadChunk(f"chunk line longer than {limit} bytes")
        line = bytes(buf[self.pos:end])
        self.pos = end + 2
        return line
