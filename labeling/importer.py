"""`labeling import`: prompts (optionally with existing responses) from JSONL, CSV, Parquet or datasets.

Every row is validated before anything is written; the whole file then goes in one
transaction, so a bad row leaves the database exactly as it was.

Accepted columns (one of the prompt columns is required):
  prompt      a string or a conversation [{"role", "content"}, ...]
  messages    a conversation (TRL's conversational format)
  text / question / instruction   a string
  response + model                one existing response and the model that wrote it
  responses   a list of strings or of {"text"|"content", "model"} objects
  chosen / rejected               TRL preference rows: both become candidates
  split, source, id               stored on the prompt; other columns go to prompt.meta
  reference, grader               RFT rows (align/onpolicy/rft_data.py): kept in prompt.meta like any other
                                  column, never shown to annotators; `align grpo` reads them back
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from labeling.db import get_project, session_scope
from labeling.models import Candidate, Prompt, conversation_digest
from prefloop.data import iter_records
from prefloop.errors import InputError

ROLES = ("system", "user", "assistant")
MAX_MESSAGE_CHARS = 32_000  # ~8k tokens: the context window of the default model
MAX_MESSAGES = 64
PROMPT_COLUMNS = ("prompt", "messages", "text", "question", "instruction")
KNOWN_COLUMNS = set(PROMPT_COLUMNS) | {"response", "model", "responses", "chosen", "rejected", "split", "source",
                                       "id", "round"}


@dataclass
class ParsedRow:
    messages: list[dict]
    responses: list[tuple[str, str]]  # (text, model)
    split: str | None
    source: str
    meta: dict = field(default_factory=dict)
    round: int = 0


@dataclass
class ImportReport:
    rows: int = 0
    prompts_added: int = 0
    prompts_existing: int = 0
    candidates_added: int = 0
    candidates_existing: int = 0

    def __str__(self) -> str:
        return (f"{self.rows} rows: {self.prompts_added} new prompts ({self.prompts_existing} already present), "
                f"{self.candidates_added} new candidates ({self.candidates_existing} already present)")


def import_file(engine: Engine, project_name: str, path: str | Path, fmt: str | None = None,
                default_model: str = "imported") -> ImportReport:
    rows = parse_file(path, fmt, default_model)  # raises before any write
    with session_scope(engine) as session:
        project = get_project(session, project_name)
        return _write(session, project.id, rows)


def parse_file(path: str | Path, fmt: str | None = None, default_model: str = "imported") -> list[ParsedRow]:
    path = Path(path)
    rows = []
    for number, record in iter_records(path, fmt):
        try:
            rows.append(parse_row(record, source=path.name, default_model=default_model))
        except InputError as err:
            raise InputError(f"{path}: row {number}: {err}") from None
    if not rows:
        raise InputError(f"{path}: no rows to import")
    return rows


def parse_row(record: dict, source: str, default_model: str = "imported") -> ParsedRow:
    # Empty cells (CSV) and nulls (Parquet with optional columns) mean "absent".
    record = {k: v for k, v in record.items() if v is not None and v != ""}
    messages = _prompt_messages(record)
    responses = _responses(record, default_model)
    split = record.get("split")
    if split is not None and not isinstance(split, str):
        raise InputError(f"field 'split': expected a string, got {type(split).__name__}")
    meta = {k: v for k, v in record.items() if k not in KNOWN_COLUMNS and _jsonable(v)}
    if record.get("id") is not None:
        meta["id"] = record["id"]
    return ParsedRow(messages, responses, split, str(record.get("source") or source), meta,
                     int(record.get("round") or 0))


def _prompt_messages(record: dict) -> list[dict]:
    column = next((c for c in PROMPT_COLUMNS if record.get(c) not in (None, "")), None)
    if column is None:
        raise InputError(f"missing prompt: need one of the fields {', '.join(PROMPT_COLUMNS)}")
    value = record[column]
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    messages = validate_conversation(value, column)
    if column == "messages" and messages[-1]["role"] == "assistant" and "response" not in record:
        # a full conversation: its last assistant turn is the response, the rest the prompt
        record = {**record, "response": messages[-1]["content"]}
        messages = messages[:-1]
    if messages[-1]["role"] != "user":
        raise InputError(f"field '{column}': the last message must be from the user, got {messages[-1]['role']!r}")
    return messages


def validate_conversation(value, column: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise InputError(f"field '{column}': expected a string or a non-empty list of messages")
    if len(value) > MAX_MESSAGES:
        raise InputError(f"field '{column}': {len(value)} messages, at most {MAX_MESSAGES}")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise InputError(f"field '{column}[{i}]': expected an object with 'role' and 'content'")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise InputError(f"field '{column}[{i}].role': {role!r} is not one of {', '.join(ROLES)}")
        _check_text(content, f"{column}[{i}].content")
        messages.append({"role": role, "content": content})
    return messages


def _responses(record: dict, default_model: str) -> list[tuple[str, str]]:
    model = record.get("model") or default_model
    out = []
    if record.get("response") not in (None, ""):
        out.append((_check_text(record["response"], "response"), str(model)))
    responses = record.get("responses")
    if responses is not None:
        if not isinstance(responses, list):
            raise InputError("field 'responses': expected a list")
        for i, item in enumerate(responses):
            if isinstance(item, dict):
                text = item.get("text", item.get("content"))
                out.append((_check_text(text, f"responses[{i}].text"), str(item.get("model") or model)))
            else:
                out.append((_check_text(item, f"responses[{i}]"), str(model)))
    for column in ("chosen", "rejected"):
        if record.get(column) is not None:
            value = record[column]
            if isinstance(value, list):  # conversational: the assistant turn(s)
                value = validate_conversation(value, column)[-1]["content"]
            out.append((_check_text(value, column), str(model)))
    return out


def _check_text(value, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"field '{name}': expected non-empty text")
    if len(value) > MAX_MESSAGE_CHARS:
        raise InputError(f"field '{name}': {len(value)} characters, at most {MAX_MESSAGE_CHARS}")
    return value


def _jsonable(value) -> bool:
    return isinstance(value, (str, int, float, bool, list, dict)) or value is None


def _write(session: Session, project_id: int, rows: list[ParsedRow]) -> ImportReport:
    report = ImportReport(rows=len(rows))
    for row in rows:
        prompt = find_prompt(session, project_id, row.messages)
        if prompt is None:
            prompt = Prompt(project_id=project_id, messages=row.messages, source=row.source, split=row.split,
                            meta=row.meta or None)
            session.add(prompt)
            session.flush()
            report.prompts_added += 1
        else:
            report.prompts_existing += 1
        for text, model in row.responses:
            if add_candidate(session, prompt.id, text, model, row.round):
                report.candidates_added += 1
            else:
                report.candidates_existing += 1
    return report


def find_prompt(session: Session, project_id: int, messages: list[dict]) -> Prompt | None:
    digest = conversation_digest(messages)
    return session.exec(select(Prompt).where(Prompt.project_id == project_id, Prompt.digest == digest)).first()


def add_candidate(session: Session, prompt_id: int, text: str, model: str, round: int = 0,
                  gen_config: dict | None = None) -> Candidate | None:
    """Add a candidate unless the same text from the same model is already there."""
    exists = session.exec(select(Candidate.id).where(
        Candidate.prompt_id == prompt_id, Candidate.model == model, Candidate.text == text)).first()
    if exists is not None:
        return None
    candidate = Candidate(prompt_id=prompt_id, text=text, model=model, round=round, gen_config=gen_config)
    session.add(candidate)
    session.flush()
    return candidate
