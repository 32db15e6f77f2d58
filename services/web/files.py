"""``GET /images/<path>``: a local image folder served safely (pure checks + one thin handler).

Decisions (the folder's ``.html``, ``.js`` and ``.git/config`` were once
served as they were, so an HTML + JS pair dropped into the folder ran
same-origin under ``script-src 'self'``):
- Never a dotfile or a file under a dot-folder (``.git/``, ``.env``): 404.
- Only files inside the folder (symlinks are resolved and must stay inside).
- The type comes from the content, never from the name: a file whose first
  bytes are JPEG, PNG, GIF, WebP, BMP, TIFF or AVIF is served inline as that
  image type; anything else (HTML, JS, SVG, text) as
  ``application/octet-stream`` with ``Content-Disposition: attachment``, so
  a browser downloads it and never renders or runs it. ``nosniff`` comes with
  every response (the security headers of :mod:`mmsearch.services.web.app`).
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

SNIFF_BYTES = 16

# (offset, signature) -> content type. SVG is not here on purpose: it can carry scripts.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (4, b"ftypavif", "image/avif"),
)


def image_type(head: bytes) -> str | None:
    """The image content type of a file that starts with ``head``, or None when it is not an image. Pure."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for offset, signature, kind in _SIGNATURES:
        if head[offset:offset + len(signature)] == signature:
            return kind
    return None


def safe_path(root: Path, relative: str) -> Path | None:
    """The file ``relative`` names inside ``root``, or None (a dot-part, outside the folder, not a file)."""
    parts = [p for p in relative.split("/") if p]
    if not parts or any(p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        return None
    try:
        base = root.resolve(strict=True)
        path = base.joinpath(*parts).resolve(strict=True)
        path.relative_to(base)
    except (OSError, ValueError, RuntimeError):
        return None
    return path if path.is_file() else None


def image_handler(root: Path):
    """The ``GET /images/{path:.*}`` handler for the folder ``root``."""

    async def images(request: web.Request) -> web.StreamResponse:
        path = safe_path(root, request.match_info["path"])
        if path is None:
            raise web.HTTPNotFound()
        with path.open("rb") as handle:
            kind = image_type(handle.read(SNIFF_BYTES))
        headers = {"Cache-Control": "public, max-age=3600"}
        if kind is None:
            headers.update({"Content-Type": "application/octet-stream",
                            "Content-Disposition": "attachment"})
        else:
            headers["Content-Type"] = kind
        return web.FileResponse(path, headers=headers)

    return images
