"""The few Messages body fields the gateway reads before forwarding, from one msgspec pass.

The body itself is forwarded as received (never re-serialised); this only looks. msgspec decodes into
Structs that name just these fields and skips everything else (messages, tool schemas) without building
objects, so the pass costs microseconds even for a large Claude Code request.
"""

from __future__ import annotations

from typing import Any

import msgspec


class ToolHead(msgspec.Struct):
    """A tool definition's ``type`` and ``max_uses``; ``Any`` so an odd value never fails the pass."""

    type: Any = None
    max_uses: Any = None


class BodyHead(msgspec.Struct):
    model: str | None = None
    max_tokens: int | None = None
    stream: bool | None = None
    speed: str | None = None
    inference_geo: str | None = None
    tools: list[ToolHead] | None = None

    def web_search(self) -> tuple[int, bool]:
        """(sum of the web search tools' ``max_uses``, whether one of them has none).

        Web search tools are the server tools whose ``type`` starts with ``web_search`` (e.g.
        ``web_search_20250305``, ``web_search_20260209``). A ``max_uses`` that is not a positive whole
        number counts as missing (the API would refuse it anyway, at no cost).
        """
        total, unbounded = 0, False
        for tool in self.tools or ():
            if not (isinstance(tool.type, str) and tool.type.startswith("web_search")):
                continue
            uses = tool.max_uses
            if isinstance(uses, float) and uses.is_integer():
                uses = int(uses)
            if isinstance(uses, int) and not isinstance(uses, bool) and uses > 0:
                total += uses
            else:
                unbounded = True
        return total, unbounded


class _PlainHead(msgspec.Struct):
    """Fallback when ``tools`` has an unexpected shape: the rest is still worth reading."""

    model: str | None = None
    max_tokens: int | None = None
    stream: bool | None = None
    speed: str | None = None
    inference_geo: str | None = None


_head_decoder = msgspec.json.Decoder(BodyHead)
_plain_decoder = msgspec.json.Decoder(_PlainHead)


def parse_head(body: bytes) -> BodyHead:
    """Never raises: a malformed body gets an empty head (the upstream answers it with its own 400)."""
    try:
        return _head_decoder.decode(body)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        return BodyHead()
    try:
        p = _plain_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return BodyHead()
    return BodyHead(p.model, p.max_tokens, p.stream, p.speed, p.inference_geo)
