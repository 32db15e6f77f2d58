"""The live experiment config: a file watched by content, swapped in only when it parses and activates.

:class:`ConfigStore` polls the file's *content* (so a Kubernetes ConfigMap
update, which swaps a symlink, is seen like any edit). A changed file is
parsed, validated and then activated (dependencies checked by the caller's
``activate``); only then does it replace the current config, by one
reference swap: requests in flight keep the config they started with. A
bad file is logged and counted, and the previous config keeps serving.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Generic, TypeVar

from mmsearch.services.serving.config.experiments import ConfigError, Experiments, parse_config

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class ConfigStore(Generic[T]):
    """Holds the active config and swaps in a new one only when it parses and activates.

    ``activate`` turns validated :class:`Experiments` into whatever the service
    serves from (``T``), checking dependencies; it raises to refuse.
    """

    path: Path
    activate: Callable[[Experiments], Awaitable[T]]
    poll_seconds: float = 1.0
    on_result: Callable[[str], None] = lambda result: None
    current: T | None = None
    digest: str = ""        # of the active config
    last_error: str = ""
    activating: bool = False  # a config is being activated (it may hold encoders no active config holds yet)
    _failed_digest: str = field(default="", repr=False)
    _parse_failed: bool = field(default=False, repr=False)

    async def check(self) -> bool:
        """Load the file if it changed (or retry a refused activation); True when a new config went live."""
        try:
            data = await asyncio.to_thread(Path(self.path).read_bytes)
        except OSError as exc:
            self._fail("", f"cannot read the experiment config {self.path}: {exc.strerror or exc}", parse=True)
            return False
        digest = hashlib.sha256(data).hexdigest()
        if digest == self.digest and self.current is not None:
            # The file is (again) the active config: a refusal of some other content is over.
            self.last_error, self._failed_digest, self._parse_failed = "", "", False
            return False
        if digest == self._failed_digest and self._parse_failed:
            return False  # the same broken file: nothing new to try
        try:
            experiments = parse_config(data, str(self.path))
        except ConfigError as exc:
            self._fail(digest, str(exc), parse=True)
            return False
        self.activating = True
        try:
            active = await self.activate(experiments)
        except Exception as exc:  # dependency down or model/index mismatch: retried next poll
            self._fail(digest, f"{self.path}: cannot activate: {exc}", parse=False)
            return False
        finally:
            self.activating = False
        self.current, self.digest, self.last_error = active, digest, ""
        self._failed_digest, self._parse_failed = "", False
        self.on_result("loaded")
        log.info("experiment config active", extra={"path": str(self.path), "digest": digest[:12]})
        return True

    def replace(self, old: T, new: T) -> bool:
        """Swap ``new`` in for ``old`` if ``old`` is still current (a route move); False after a reload."""
        if self.current is not old:
            return False
        self.current = new
        return True

    def _fail(self, digest: str, message: str, parse: bool) -> None:
        if message != self.last_error:
            state = "keeping the previous config" if self.current is not None else "no config active yet"
            log.error("experiment config refused (%s): %s", state, message)
        self.last_error, self._failed_digest, self._parse_failed = message, digest, parse
        self.on_result("refused")

    async def run(self) -> None:
        """Poll forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.check()
            except Exception:  # never let the watcher die
                log.exception("experiment config check failed")
