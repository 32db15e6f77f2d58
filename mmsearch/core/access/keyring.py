"""The key file a service reads, reloaded when it changes: rotation without a restart.

:meth:`KeyRing.keys` checks the file's identity (inode, size, mtime: a
Kubernetes Secret volume swaps a symlink, which changes all three) at most
once per ``check_seconds``, and re-reads it when it changed. A file that
fails to parse on reload keeps the keys already loaded (and says why in the
log and in :attr:`KeyRing.last_error`): a half-edited Secret never locks
everybody out. At start a bad or missing file fails fast. ``reloads`` counts
the loads, so a test waits for the next one instead of the clock.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

from mmsearch.core.access.keys import ApiKey, KeyFileError, parse_key_file

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0


def _identity(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


class KeyRing:
    """The keys of ``path`` (None: no keys), re-read when the file changes (see the module doc)."""

    def __init__(self, path: Path | None, *, check_seconds: float = CHECK_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.path, self.check_seconds, self._clock = path, check_seconds, clock
        self.reloads = 0
        self.last_error: str | None = None
        self._keys: dict[str, ApiKey] = {}
        self._identity: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        if path is not None:
            try:
                self._load(_identity(path))
            except OSError as exc:
                raise KeyFileError(f"cannot read the API key file {path} (MMSEARCH_API_KEYS_FILE): "
                                   f"{exc.strerror or exc}") from None
            self._checked = clock()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _load(self, identity: tuple[int, int, int]) -> None:
        self._keys = parse_key_file(Path(self.path).read_text(encoding="utf-8"), str(self.path))
        self._identity = identity
        self.reloads += 1
        self.last_error = None

    def keys(self) -> dict[str, ApiKey]:
        """The current keys, re-read first when the file changed (checked at most once per check_seconds)."""
        if self.path is None:
            return self._keys
        now = self._clock()
        if now - self._checked < self.check_seconds:
            return self._keys
        self._checked = now
        try:
            identity = _identity(self.path)
            if identity != self._identity:
                before = set(self._keys)
                self._load(identity)
                log.info("API keys reloaded", extra={"keys": len(self._keys),
                                                     "added": len(set(self._keys) - before),
                                                     "removed": len(before - set(self._keys))})
        except (OSError, UnicodeDecodeError, KeyFileError) as exc:
            message = f"{exc}" if isinstance(exc, KeyFileError) else f"cannot read {self.path}: {exc}"
            if message != self.last_error:
                log.error("API key file not reloaded; the keys loaded before stay valid",
                          extra={"error": message})
            self.last_error = message
        return self._keys


class SecretFile:
    """One secret in a file (a mounted Secret, e.g. the web service's own key), re-read when the file changes
    (checked at most once per ``check_seconds``); a file that cannot be read on reload keeps the old value."""

    def __init__(self, path: Path, *, what: str, check_seconds: float = CHECK_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.path, self.what, self.check_seconds, self._clock = path, what, check_seconds, clock
        try:
            self._identity = _identity(path)
            self._value = self._read()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read {what} from {path}: {getattr(exc, 'strerror', None) or exc}") from None
        if not self._value:
            raise KeyFileError(f"{path} ({what}) is empty")
        self._checked = clock()

    def _read(self) -> str:
        return Path(self.path).read_text(encoding="utf-8").strip()

    def value(self) -> str:
        now = self._clock()
        if now - self._checked >= self.check_seconds:
            self._checked = now
            try:
                identity = _identity(self.path)
                if identity != self._identity:
                    value = self._read()
                    if value:
                        self._value, self._identity = value, identity
                        log.info(f"{self.what} reloaded")
            except (OSError, UnicodeDecodeError) as exc:
                log.error(f"{self.what} not reloaded; the value loaded before stays in use", extra={"error": str(exc)})
        return self._value
