"""Hypothesis strategies built from msgspec Structs: valid-shaped, mutated, garbage frames.

Used by test_fuzz_ws.py; pure, so they can be reused for any Struct-typed protocol.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from podium.validation import TEXT_PATTERN

HOSTILE: st.SearchStrategy[Any] = st.one_of(
    st.integers(min_value=2**63, max_value=2**80),
    st.integers(min_value=-(2**80), max_value=-1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["", "\x00", "a\x00b", "x" * 60_000, "é" * 300, "\n", "../../etc"]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _text(info: msgspec.inspect.StrType) -> st.SearchStrategy[str]:
    low, high = info.min_length or 0, info.max_length or 200
    if info.pattern is None or info.pattern == TEXT_PATTERN:
        printable = st.characters(exclude_categories=("Cc", "Cs"))
        return st.text(printable, min_size=low, max_size=min(high, 200))
    return st.from_regex(info.pattern).filter(lambda s: low <= len(s) <= high)


def value_of(info: msgspec.inspect.Type, known: list[Any]) -> st.SearchStrategy[Any]:
    """A value that fits `info` (a msgspec type), often one the server knows."""
    if isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    match info:
        case msgspec.inspect.IntType():
            low = info.ge if info.ge is not None else -(2**63)
            high = info.le if info.le is not None else 2**63 - 1
            found = st.integers(min_value=low, max_value=high)
        case msgspec.inspect.StrType():
            found = _text(info)
        case msgspec.inspect.LiteralType():
            found = st.sampled_from(list(info.values))
        case msgspec.inspect.DateType():
            found = st.dates().map(lambda d: d.isoformat())
        case msgspec.inspect.NoneType():
            return st.none()
        case msgspec.inspect.UnionType():
            return st.one_of([value_of(t, known) for t in info.types])
        case _:
            raise AssertionError(f"no strategy for {info}")
    fitting = [k for k in known if _fits(k, info)]
    return st.one_of(st.sampled_from(fitting), found) if fitting else found


def _fits(value: Any, info: msgspec.inspect.Type) -> bool:
    return isinstance(value, str) == isinstance(info, msgspec.inspect.StrType)


def message_of(
    cls: type[msgspec.Struct], known: dict[str, list[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """A valid-shaped message of `cls`: required fields always, optional ones sometimes."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    head = {info.tag_field: info.tag} if info.tag_field else {}
    required = {f.name: value_of(f.type, known.get(f.name, [])) for f in info.fields if f.required}
    optional = {
        f.name: value_of(f.type, known.get(f.name, [])) for f in info.fields if not f.required
    }
    return st.fixed_dictionaries(
        {k: st.just(v) for k, v in head.items()} | required,
        optional={k: v for k, v in optional.items()},
    )


def mutated(base: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid-shaped message with one field hostile, one unknown or one missing."""

    @st.composite
    def mutate(draw: st.DrawFn) -> dict[str, Any]:
        message = dict(draw(base))
        fields = [k for k in message if k != "type"]
        how = draw(st.sampled_from(["hostile", "unknown", "drop"] if fields else ["unknown"]))
        if how == "hostile":
            message[draw(st.sampled_from(fields))] = draw(HOSTILE)
        elif how == "unknown":
            message[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in message))] = 1
        else:
            message.pop(draw(st.sampled_from(fields)))
        return message

    return mutate()


# A frame: ("text", str), ("bytes", binary) or ("raw-text", bytes sent as a text frame).
Frame = tuple[str, Any]
GARBAGE: st.SearchStrategy[Frame] = st.one_of(
    st.binary(max_size=64).map(lambda b: ("bytes", b)),
    st.sampled_from([b"\xff\xfe{", b'{"type": "ping"\xc3}']).map(lambda b: ("raw-text", b)),
    st.integers(min_value=100, max_value=6_000).map(
        lambda n: ("text", '{"a":' * n + "1" + "}" * n)
    ),
    st.integers(min_value=100, max_value=6_000).map(lambda n: ("text", "[" * n + "]" * n)),
    HOSTILE.filter(lambda v: not isinstance(v, str) or len(v) < 1000).map(
        lambda v: ("text", json.dumps(v))
    ),
    st.text(max_size=100).map(lambda t: ("text", t)),
)


def frames_for(
    kinds: tuple[type[msgspec.Struct], ...], known: dict[str, list[Any]]
) -> st.SearchStrategy[list[Frame]]:
    shaped = st.one_of([message_of(k, known) for k in kinds])
    as_text = st.one_of(shaped, mutated(shaped)).map(lambda m: ("text", json.dumps(m)))
    return st.lists(st.one_of(as_text, GARBAGE), min_size=1, max_size=8)


def draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """`count` examples, the same on every run (hypothesis derandomized, no shrinking)."""
    found: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: Any) -> None:
        found.append(example)

    collect()
    return found
