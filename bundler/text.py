"""Text inputs read strictly as UTF-8: a bad byte is named by file, line and byte offset, never a raw decode error."""

from __future__ import annotations

from pathlib import Path

from bundler.errors import NotUtf8Error


def decode_utf8(data: bytes, path: Path | str) -> str:
    """Decode `data` as UTF-8 (a BOM is dropped); raise NotUtf8Error at the first byte that is not."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, data, exc.start) from None


def not_utf8(path: Path | str, data: bytes, offset: int) -> NotUtf8Error:
    """The error for the byte at `offset` of `data` (line counted from 1, offset from the file's start)."""
    return NotUtf8Error(path, data.count(b"\n", 0, offset) + 1, offset, data[offset])


def read_utf8(path: Path) -> str:
    """Read a whole text file as UTF-8."""
    return decode_utf8(path.read_bytes(), path)


def check_utf8_file(path: Path, label: Path | str | None = None, chunk_size: int = 1 << 20) -> None:
    """Stream `path` and raise NotUtf8Error (naming `label`, default the path) at its first invalid byte."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0
    with path.open("rb") as stream:
        while chunk := stream.read(chunk_size):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # The decoder may hold up to 3 bytes of a split character from the previous chunk.
                held = len(exc.object) - len(chunk)
                bad = offset + exc.start - held
                line = lines + chunk.count(b"\n", 0, max(0, exc.start - held)) + 1
                raise NotUtf8Error(label or path, line, bad, exc.object[exc.start]) from None
            lines += chunk.count(b"\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:  # the file ends inside a multi-byte character
            start = offset - len(exc.object) + exc.start
            raise NotUtf8Error(label or path, lines + 1, start, exc.object[exc.start]) from None
