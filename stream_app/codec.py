"""The orjson codec, registered with Faust under the name ``orjson``."""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

NAME = "orjson"


class OrjsonCodec(codecs.Codec):
    """JSON through orjson: several times faster than the standard library."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


def register() -> None:
    """Make ``value_serializer="orjson"`` available to every Faust topic."""
    if NAME not in codecs.codecs:
        codecs.register(NAME, OrjsonCodec())
