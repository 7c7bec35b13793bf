"""Versioned checklists for the LLM verifier, and the verdict model an LLM answers one with.

A checklist file (configs/checklists/<id>-v<version>.yaml) holds a system prompt and items, each a
failure condition phrased as a yes/no question: a caption passes an item when the answer is "no".
Verdicts record the checklist's `version_id` and `content_hash`, so a changed file is told apart even
when someone forgot to bump its version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, create_model, model_validator

from annotate.base import StrictConfig
from annotate.llm_engine import text_hash

# xgrammar lets raw control characters (a tab, a newline) into JSON strings, which pydantic's strict
# JSON parser rejects; a plain-text pattern keeps every constrained sample parseable.
REASON_PATTERN = r"^[A-Za-z0-9 ,.'-]{0,120}$"
OVERALL_FIELD = "passed"  # the verdict's overall field, so no item may take that id


class ChecklistError(ValueError):
    """A checklist file that cannot be used; the message is one line naming the file."""


class ChecklistItem(StrictConfig):
    # Item ids become field names of the verdict model: identifiers that shadow nothing in BaseModel.
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    question: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _usable_as_field(self) -> ChecklistItem:
        if self.id == OVERALL_FIELD or hasattr(BaseModel, self.id):
            raise ValueError(f"item id {self.id!r} is reserved (it names a field of the verdict model)")
        return self


class Checklist(StrictConfig):
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    version: Annotated[int, Field(ge=1)]
    instructions: Annotated[str, Field(min_length=1)] = Field(description="The verifier's system prompt.")
    items: Annotated[list[ChecklistItem], Field(min_length=1)]
    _source: str | None = PrivateAttr(default=None)  # the file's text, when loaded from one

    @model_validator(mode="after")
    def _unique_item_ids(self) -> Checklist:
        ids = [item.id for item in self.items]
        duplicates = sorted({item_id for item_id in ids if ids.count(item_id) > 1})
        if duplicates:
            raise ValueError(f"duplicate item ids: {', '.join(duplicates)}")
        return self

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(item.id for item in self.items)

    @property
    def version_id(self) -> str:
        return f"{self.id}/{self.version}"

    @property
    def content_hash(self) -> str:
        """Hash of the file's text; a checklist built in code hashes its JSON instead."""
        return text_hash(self._source if self._source is not None else self.model_dump_json())


def load_checklist(path: Path | str) -> Checklist:
    """The checklist in a YAML file, or a ChecklistError of one line naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ChecklistError(f"checklist {path}: cannot read it ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ChecklistError(f"checklist {path}: not valid YAML{where}") from None
    try:
        checklist = Checklist.model_validate(data)
    except ValidationError as error:
        raise ChecklistError(f"checklist {path}: {_one_line(error)}") from None
    checklist._source = text
    return checklist


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "top level"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return " ".join(f"{key}: {first['msg']}{more}".split())


class ItemVerdict(BaseModel):
    """The LLM's answer to one item. The reason comes first, so that the decision is generated after it."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(pattern=REASON_PATTERN)
    failed: bool


def verdict_model(checklist: Checklist) -> type[BaseModel]:
    """The model of the JSON an LLM answers `checklist` with: one ItemVerdict per item, in checklist
    order, then the overall `passed`. Its `model_json_schema()` constrains the LLM's output."""
    fields: dict[str, Any] = {
        item.id: (ItemVerdict, Field(description=item.question)) for item in checklist.items
    }
    fields[OVERALL_FIELD] = (bool, Field(description="True only if no item failed."))
    name = f"{checklist.id.replace('-', '_').title().replace('_', '')}V{checklist.version}Verdict"
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)
