"""The base of every result record: typed numbers with plain messages, read-only mapping
access, and one error line per invalid document.

A record is a frozen pydantic model (:class:`servewise.config.Frozen`: unknown keys are
refused). Its numbers are checked by small validators that say what they expected in
words ("expected a number >= 0"), so :func:`format_error` can name the file, the field and
the value got: ``result.json: field 'summary.latency_s.p95': expected a number >= 0, got 'x'``.
Non-finite numbers (NaN, infinities) are refused everywhere: servewise never writes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import ConfigDict, PlainValidator, PrivateAttr, StrictBool, StrictStr, ValidationError
from pydantic_core import PydanticCustomError

from servewise.config import Frozen
from servewise.errors import ArtifactError
from servewise.io import write_json

__all__ = [
    "Number",
    "OptNumber",
    "NonNeg",
    "OptNonNeg",
    "Ratio",
    "OptRatio",
    "Count",
    "OptCount",
    "Int",
    "OptInt",
    "Str",
    "OptStr",
    "Bool",
    "OptBool",
    "Record",
    "OpenRecord",
    "ArtifactRecord",
    "format_error",
]


def _number(expected: str, ok: Callable[[float], bool], *, integer: bool, nullable: bool) -> Callable[[Any], Any]:
    message = f"expected {expected}"

    def check(v: Any) -> Any:
        if v is None and nullable:
            return None
        if isinstance(v, np.generic) and not isinstance(v, np.bool_):
            v = v.item()  # numpy scalars become Python numbers (JSON needs them)
        if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not isinstance(v, int)):
            raise PydanticCustomError("number", message)
        if not math.isfinite(v) or not ok(v):
            raise PydanticCustomError("number", message)
        return v

    return check


def _any(v: float) -> bool:
    return True


def _non_negative(v: float) -> bool:
    return v >= 0


def _unit(v: float) -> bool:
    return 0 <= v <= 1


# Ints stay ints where they are ints, so a document dumps back as it was read.
Number = Annotated[float, PlainValidator(_number("a finite number", _any, integer=False, nullable=False))]
OptNumber = Annotated[float | None, PlainValidator(_number("a finite number or null", _any, integer=False, nullable=True))]
NonNeg = Annotated[float, PlainValidator(_number("a number >= 0", _non_negative, integer=False, nullable=False))]
OptNonNeg = Annotated[float | None, PlainValidator(_number("a number >= 0", _non_negative, integer=False, nullable=True))]
Ratio = Annotated[float, PlainValidator(_number("a number in [0, 1]", _unit, integer=False, nullable=False))]
OptRatio = Annotated[float | None, PlainValidator(_number("a number in [0, 1]", _unit, integer=False, nullable=True))]
Count = Annotated[int, PlainValidator(_number("an integer >= 0", _non_negative, integer=True, nullable=False))]
OptCount = Annotated[int | None, PlainValidator(_number("an integer >= 0", _non_negative, integer=True, nullable=True))]
Int = Annotated[int, PlainValidator(_number("an integer", _any, integer=True, nullable=False))]
OptInt = Annotated[int | None, PlainValidator(_number("an integer", _any, integer=True, nullable=True))]
Str = StrictStr
OptStr = StrictStr | None
Bool = StrictBool
OptBool = StrictBool | None


class Record(Frozen, Mapping[str, Any]):
    """A frozen, typed record; read it by attribute.

    It also reads as a read-only mapping of its JSON keys (``summary["latency_s"]["p95"]``,
    ``.get``, ``.items()``): by key, a nested part comes back as its JSON (dicts and
    lists), as when results were dicts; and a record equals a dict holding its JSON
    document. That is for code written when results were dicts; new code uses the
    attributes, which are typed records all the way down.
    """

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True, validate_by_alias=True)

    _keys: ClassVar[dict[str, str]]
    """JSON key -> attribute name, per class."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._keys = {(f.alias or name): name for name, f in cls.model_fields.items()}

    def _extra(self) -> dict[str, Any]:
        return self.__pydantic_extra__ or {}

    def __getitem__(self, key: str) -> Any:
        name = self._keys.get(key)
        if name is not None:
            v = getattr(self, name)
            if isinstance(v, Record | list | dict):  # what the JSON holds there, as the old dicts did
                return self.model_dump(mode="json", include={name})[key]
            return v
        extra = self._extra()
        if key in extra:
            return extra[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # a mapping iterates its keys
        yield from self._keys
        yield from self._extra()

    def __len__(self) -> int:
        return len(self._keys) + len(self._extra())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Record):
            return type(self) is type(other) and self.model_dump() == other.model_dump()
        if isinstance(other, Mapping):
            return self.model_dump(mode="json") == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # records hold lists and dicts


class OpenRecord(Record):
    """A record that keeps keys it does not know (provenance that grows: ``metadata``)."""

    model_config = ConfigDict(extra="allow")


class ArtifactRecord(Record):
    """A top-level artifact: a JSON document with ``schema_version`` and ``kind``."""

    KIND: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1
    WHAT: ClassVar[str]
    """What to call it in messages ("simulation result")."""
    FILE: ClassVar[str]
    """The file a command writes it to in its output folder."""

    _path: Path | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        """The file it was read from (None for a record built in memory)."""
        return self._path

    def to_doc(self) -> dict[str, Any]:
        """The JSON document (what :meth:`write_json` writes)."""
        return self.model_dump(mode="json")

    def write_json(self, path: str | Path) -> Path:
        """Write the document to ``path`` atomically."""
        p = Path(path)
        write_json(p, self.to_doc())
        return p

    @classmethod
    def from_doc(cls, doc: Any, source: str | Path) -> Any:
        """Validate a parsed document; an :class:`ArtifactError` naming ``source`` and the field otherwise."""
        try:
            rec = cls.model_validate(doc)
        except ValidationError as err:
            raise ArtifactError(format_error(err, str(source))) from None
        if isinstance(source, Path):
            rec._path = source
        return rec


# ----------------------------------------------------------------------------- messages


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "." in part or not part:
            out += f"[{part!r}]"
        else:
            out += ("." if out else "") + part
    return out


def _got(v: Any) -> str:
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    text = "null" if v is None else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


_EXPECTED = {
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "dict_type": "expected an object",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
}


def format_error(err: ValidationError, source: str) -> str:
    """One line: ``SOURCE: field 'a.b[2].c': expected ..., got ...`` for the first invalid field."""
    errors = err.errors()
    first = errors[0]
    where = _where(tuple(first["loc"]))
    field = f"field '{where}'" if where else "the document"
    kind = first["type"]
    if kind == "missing":
        text = "missing"
    elif kind == "extra_forbidden":
        text = "not a field of this artifact"
    elif kind == "value_error":
        text = str(first["msg"]).removeprefix("Value error, ")
    else:
        if kind == "literal_error":
            expected = f"expected {first.get('ctx', {}).get('expected', 'one of the listed values')}"
        else:
            msg = str(first["msg"])
            expected = _EXPECTED.get(kind) or (msg[len("Value error, ") :] if msg.startswith("Value error, ") else msg)
        text = f"{expected}, got {_got(first.get('input'))}"
    more = f" [+{len(errors) - 1} more]" if len(errors) > 1 else ""
    return f"{source}: {field}: {text}{more}"
