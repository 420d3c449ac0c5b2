"""Request framing for the front (edge_app/httpframe.py): where a request ends, found from
bytes as they arrive, whatever the split; oversize refused before the body is read."""

from __future__ import annotations

import pytest

from edge_app.httpframe import (MAX_HEAD_BYTES, BadChunk, BodyTooLarge, ChunkScanner,
                                HeadTooLarge, scan_head)

HEAD = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def _frame(raw: bytes, limit: int = 1 << 20, step: int = 1) -> int | None:
    """Feed `raw` `step` bytes at a time, as a socket might deliver it; the request's end."""
    buf, head, chunks = bytearray(), None, None
    for i in range(0, len(raw), step):
        buf += raw[i:i + step]
        if head is None:
            head = scan_head(buf)
            if head is None:
                continue
            if head.chunked:
                chunks = ChunkScanner(head.end, limit)
        if chunks is not None:
            end = chunks.feed(buf)
        else:
            end = head.end + (head.length or 0)
            end = end if len(buf) >= end else None
        if end is not None:
            return end
    return None


@pytest.mark.parametrize("step", [1, 3, 7, 4096])
def test_content_length_and_chunked_bodies_end_where_they_end(step):
    body = b'{"prompt": "The"}'
    raw = HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body
    assert _frame(raw + b"GET /next", step=step) == len(raw)  # pipelined bytes stay out
    chunked = (HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"5;ext=1\r\nhello\r\n"
               b"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n")
    assert _frame(chunked + b"GET /next", step=step) == len(chunked)
    assert _frame(chunked[:-1], step=step) is None  # incomplete: wait for more


def test_heads_without_bodies_and_malformed_framing():
    get = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    head = scan_head(get)
    assert (head.end, head.length, head.chunked, head.malformed) == (len(get), None, False, False)
    assert scan_head(get[:-2]) is None
    for bad in (b"Content-Length: 3\r\nContent-Length: 4\r\n", b"Content-Length: -1\r\n",
                b"Transfer-Encoding: gzip\r\n",
                b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"):
        assert scan_head(HEAD + bad + b"\r\n").malformed, bad  # gunicorn refuses these
    expect = scan_head(HEAD + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert expect.expect_continue and expect.length == 2


def test_oversize_is_refused_before_the_body_arrives():
    with pytest.raises(HeadTooLarge):
        scan_head(HEAD + b"X-Filler: " + b"a" * MAX_HEAD_BYTES)
    scanner = ChunkScanner(0, limit=10)
    with pytest.raises(BodyTooLarge):  # the size line alone says it: no data needed
        scanner.feed(b"8\r\n12345678\r\n3\r\n")
    with pytest.raises(BadChunk):
        ChunkScanner(0, 100).feed(b"zz\r\n")
    with pytest.raises(BadChunk):
        ChunkScanner(0, 100).feed(b"2\r\nabXY")  # data not followed by CRLF
