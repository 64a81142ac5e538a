"""The few calls of HMA's HTTP API the write-back makes (aiohttp)."""

from __future__ import annotations

from typing import Any

import aiohttp

__all__ = ["HmaClient", "HmaRefused", "HmaUnavailable"]


class HmaUnavailable(Exception):
    """HMA cannot take the call now (down, restarting, index loading, bank missing): retry later."""


class HmaRefused(Exception):
    """HMA refuses the call for good (e.g. 400: not a hash it accepts): retrying cannot help."""


class HmaClient:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.request(method, self.url + path, **kwargs) as response:
                if response.status in (200, 201):
                    return await response.json(content_type=None)
                text = (await response.text())[:200]
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HmaUnavailable(f"{method} {path.split('?')[0]}: {type(exc).__name__}: {exc}") from None
        where = f"{method} {path.split('?')[0]}: HTTP {response.status}"
        if response.status == 400:
            raise HmaRefused(f"{where}: {text}")
        raise HmaUnavailable(f"{where}: {text}")

    async def exact_matches(self, signal_type: str, signal: str) -> list[int]:
        """Content ids (any bank, enabled or not) whose signal is at distance 0."""
        doc = await self._call("GET", "/m/raw_lookup", params={"signal_type": signal_type, "signal": signal,
                                                               "include_distance": "true"})
        return [int(m["bank_content_id"]) for m in doc.get("matches", []) if str(m.get("distance")) in ("0", "-")]

    async def content(self, bank: str, content_id: int) -> dict[str, Any] | None:
        try:
            doc = await self._call("GET", f"/c/bank/{bank}/content/{content_id}",
                                   params={"include_signals": "true", "include_metadata": "false"})
        except HmaUnavailable as exc:
            if "HTTP 404" in str(exc) and "content" in str(exc):
                return None
            raise
        return doc if isinstance(doc, dict) else None

    async def find_in_bank(self, bank: str, signal_type: str, signal: str) -> int | None:
        """The id of content of ``bank`` holding exactly this signal, if HMA's index has it."""
        for content_id in await self.exact_matches(signal_type, signal):
            doc = await self.content(bank, content_id)
            signals = (doc or {}).get("signals") or {}
            if doc and doc.get("bank", {}).get("name") == bank and signals.get(signal_type) == signal:
                return content_id
        return None

    async def add_signal(self, bank: str, signal_type: str, signal: str, note: str) -> int:
        doc = await self._call("POST", f"/c/bank/{bank}/signal", json={signal_type: signal, "note": note[:255]})
        return int(doc["id"])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
