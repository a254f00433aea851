"""``multipart/related`` bodies (RFC 2387, what STOW-RS / WADO-RS send): split and build.

Pure Python. Parts are split on the boundary of the request's ``Content-Type``; each part's headers are
returned lower-cased. Used for ``multipart/related; type="application/dicom"`` requests and responses.
"""

from __future__ import annotations

import uuid


class MultipartError(ValueError):
    """A malformed multipart body (HTTP 400)."""


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``'multipart/related; type="application/dicom"; boundary=x'`` → ``("multipart/related", {...})``."""
    if not content_type:
        return "", {}
    head, *params = [p.strip() for p in _split_params(content_type)]
    out = {}
    for p in params:
        if "=" in p:
            k, v = p.split("=", 1)
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] == '"':
                v = v[1:-1]
            out[k.strip().lower()] = v
    return head.lower(), out


def _split_params(value: str) -> list[str]:
    """Split on ``;`` outside double quotes."""
    parts, cur, quoted = [], [], False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def split(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body: ``[(headers, payload)]``.

    Raises:
        MultipartError: no boundary, no parts, or a part without its header block.
    """
    _, params = media_type(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise MultipartError("multipart body without a boundary parameter in its Content-Type")
    delim = b"--" + boundary.encode("latin-1")
    start = body.find(delim)
    if start < 0:
        raise MultipartError("multipart body without its boundary")
    parts = []
    pos = start + len(delim)
    while True:
        if body[pos:pos + 2] == b"--":  # close delimiter
            break
        nl = body.find(b"\r\n", pos)
        if nl < 0:
            raise MultipartError("truncated multipart body (no part after a boundary)")
        pos = nl + 2
        end = body.find(b"\r\n" + delim, pos)
        if end < 0:
            raise MultipartError("truncated multipart body (no closing boundary)")
        chunk = body[pos:end]
        sep = chunk.find(b"\r\n\r\n")
        if chunk.startswith(b"\r\n"):
            head, payload = b"", chunk[2:]
        elif sep >= 0:
            head, payload = chunk[:sep], chunk[sep + 4:]
        else:
            raise MultipartError("multipart part without a header block")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        parts.append((headers, payload))
        pos = end + 2 + len(delim)
    if not parts:
        raise MultipartError("multipart body without parts")
    return parts


def build(payloads: list[bytes], part_type: str = "application/dicom") -> tuple[bytes, str]:
    """(body, Content-Type) of a ``multipart/related; type=part_type`` message."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for p in payloads:
        out += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode("latin-1")
        out += p
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode("latin-1")
    return bytes(out), f'multipart/related; type="{part_type}"; boundary={boundary}'
