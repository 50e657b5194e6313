"""The report's sample of rows, shown as the format the run wrote: what each row was made from
(every input column) beside what the teacher wrote.

Four views, told apart by the rows' columns (`run_format`): SFT rows (the inputs, then the
response), DPO pairs (the prompt, then chosen and rejected side by side in one table row, each
with its score), dialogues (the messages as a conversation) and tool calls (the tools offered, then
the conversation with each call's arguments pretty-printed and the tools' results). A row the
teacher cut short (`finish_reason` "length": it hit max_tokens) carries a "truncated" badge.

Long texts are clipped, with the whole text behind a `<details>` (no script). Every text is
escaped here: rows hold arbitrary model output.
"""

from __future__ import annotations

import contextlib
import html
import json
from typing import Any

from synthkd.text import clip

SFT, PREFERENCE, DIALOGUE, TOOL_CALLS = "sft", "preference", "dialogue", "tool_calls"
FORMAT_NAMES = {
    SFT: "SFT rows (inputs -> response)",
    PREFERENCE: "DPO pairs (prompt -> chosen | rejected)",
    DIALOGUE: "dialogues (multi-turn messages)",
    TOOL_CALLS: "tool-call conversations",
}
TRUNCATED = "length"  # the finish_reason of an answer that hit max_tokens

SHOWN_CHARS = 600  # a text longer than this is clipped, the whole of it behind a <details>
WHOLE_CHARS = 20_000  # even the whole text stops here: data.jsonl has every character

# Columns that are bookkeeping, not content.
META_COLUMNS = frozenset({"id", "provenance", "teacher_prompt", "finish_reason", "sample"})
# What the teacher wrote: shown as the row's output by each view.
OUTPUT_COLUMNS = frozenset({"response", "messages", "prompt", "chosen", "rejected", "tools"})
# What a step added beside the answer (a judge's verdict, a rationale, a check's result): shown
# after the output, smaller. Everything else a row has is what it was made from: its inputs.
DERIVED_COLUMNS = frozenset(
    """score justification aspect_scores chosen_score rejected_score winner verdicts rationale answer
    agreement evidence evidence_start evidence_end tests label tools_called critique revision revised
    parsed turns parent_id operation round topic_path doc_id chunk_id expression recomputed""".split()  # noqa: SIM905 (a word list reads better)
)
# Inputs in this order first (the others follow in the row's own order).
INPUT_ORDER = ("system", "instruction", "input", "context", "document", "title", "question", "request")


# ---- what a row holds ----------------------------------------------------------------------------


def is_truncated(row: dict[str, Any]) -> bool:
    return row.get("finish_reason") == TRUNCATED


def _messages(value: Any) -> list[dict[str, Any]]:
    return [m for m in value if isinstance(m, dict)] if isinstance(value, list) else []


def run_format(rows: list[dict[str, Any]]) -> str:
    """The format the run's rows are in, read from their columns: pairs have chosen and rejected;
    tool calls have a `tools` column or a message with tool_calls; dialogues more than one user
    turn; anything else is shown as SFT rows."""
    columns = {column for row in rows for column in row}
    if {"chosen", "rejected"} <= columns:
        return PREFERENCE
    turns = [_messages(row.get("messages")) for row in rows]
    if "tools" in columns or any(m.get("tool_calls") for messages in turns for m in messages):
        return TOOL_CALLS
    if any(sum(m.get("role") == "user" for m in messages) > 1 for messages in turns):
        return DIALOGUE
    return SFT


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def input_columns(row: dict[str, Any]) -> list[str]:
    """The columns a row was made from (with a value): the known ones in INPUT_ORDER, then the
    load step's own, in the row's order."""
    others = [
        c
        for c in row
        if c not in META_COLUMNS
        and c not in OUTPUT_COLUMNS
        and c not in DERIVED_COLUMNS
        and not c.startswith("kd_")
    ]
    ordered = [c for c in INPUT_ORDER if c in others] + [c for c in others if c not in INPUT_ORDER]
    return [c for c in ordered if not _is_empty(row[c])]


def derived_columns(row: dict[str, Any]) -> list[str]:
    return [c for c in row if c in DERIVED_COLUMNS and not _is_empty(row[c]) and not c.endswith("score")]


# ---- pieces of HTML ------------------------------------------------------------------------------


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _as_text(value: Any) -> tuple[str, bool]:
    """(text, is it code): strings as they are, anything else (and JSON text) pretty-printed."""
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value), False  # tools_called, labels: a short list
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
            try:
                return json.dumps(json.loads(stripped), indent=2, ensure_ascii=False), True
            except ValueError:
                pass
        return value, False
    return json.dumps(value, indent=2, ensure_ascii=False, default=str), True


def text_block(value: Any) -> str:
    """A text (or a value as JSON), clipped to SHOWN_CHARS with the whole of it one click away."""
    text, code = _as_text(value)
    kind = "text code" if code else "text"
    if len(text) <= SHOWN_CHARS:
        return f'<div class="{kind}">{escape(text)}</div>'
    whole = clip(text, WHOLE_CHARS)
    more = f"show all {len(text):,} characters" + (" (first 20,000)" if whole != text else "")
    # The clipped text is the summary; opened, CSS hides it and the whole text shows in its place.
    return (
        f'<details class="long"><summary><div class="{kind} clipped">{escape(clip(text, SHOWN_CHARS))}'
        f'</div><span class="more">{escape(more)}</span></summary>'
        f'<div class="{kind}">{escape(whole)}</div></details>'
    )


def field(name: str, value: Any) -> str:
    return f'<div class="field"><div class="name">{escape(name)}</div>{text_block(value)}</div>'


def _fields(row: dict[str, Any], columns: list[str], skip_texts: set[str] = frozenset()) -> str:
    return "".join(
        field(c, row[c]) for c in columns if not (isinstance(row[c], str) and row[c] in skip_texts)
    )


def _score_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _row_head(row: dict[str, Any], score_column: str | None = "score") -> str:
    """The row's id, its score and a badge if the teacher's answer was cut short."""
    parts = [f'<div class="row-id">{escape(row.get("id", ""))}</div>']
    if score_column and isinstance(row.get(score_column), int | float):
        parts.append(f'<div class="score">{escape(score_column)} {_score_text(row[score_column])}</div>')
    if is_truncated(row):
        parts.append(
            '<span class="badge truncated" title="finish_reason: length (the answer hit max_tokens)">'
            "truncated</span>"
        )
    return "".join(parts)


def _call(call: dict[str, Any]) -> str:
    """One tool call: the function's name and its arguments, pretty-printed."""
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # not JSON: shown as the text it is
            arguments = json.loads(arguments)
    shown = json.dumps(arguments, indent=2, ensure_ascii=False, default=str)
    return (
        f'<div class="call"><span class="fn">{escape(function.get("name", "?"))}</span>'
        f'<pre class="args">{escape(shown)}</pre></div>'
    )


def conversation(messages: list[dict[str, Any]]) -> str:
    """Messages as a conversation: a turn per message, its role beside it, calls and results shown."""
    turns = []
    for message in messages:
        role = str(message.get("role", "?"))
        name = message.get("name") if role == "tool" else None
        label = escape(role) + (f' <span class="fn">{escape(name)}</span>' if name else "")
        body = "" if _is_empty(message.get("content")) else text_block(message["content"])
        body += "".join(_call(c) for c in message.get("tool_calls") or [] if isinstance(c, dict))
        body = body or "<i>empty</i>"
        turns.append(f'<div class="turn {escape(role)}"><div class="role">{label}</div>{body}</div>')
    return f'<div class="conversation">{"".join(turns)}</div>'


def tools_offered(value: Any) -> str:
    """The tools a row offered: each name and description, its parameters behind a <details>."""
    tools = json.loads(value) if isinstance(value, str) else value
    if not isinstance(tools, list):
        return field("tools", value)
    items = []
    for tool in tools:
        function = tool.get("function", tool) if isinstance(tool, dict) else {}
        parameters = json.dumps(function.get("parameters", {}), indent=2, ensure_ascii=False)
        items.append(
            f'<li><span class="fn">{escape(function.get("name", "?"))}</span> '
            f"{escape(function.get('description', ''))}"
            f'<details><summary>parameters</summary><pre class="args">{escape(parameters)}</pre>'
            "</details></li>"
        )
    listed = "".join(items)
    return f'<div class="field"><div class="name">tools offered</div><ul class="tools">{listed}</ul></div>'


def _derived(row: dict[str, Any]) -> str:
    columns = derived_columns(row)
    return f'<div class="derived">{_fields(row, columns)}</div>' if columns else ""


# ---- the views -----------------------------------------------------------------------------------


def _last_assistant(messages: list[dict[str, Any]]) -> Any:
    answers = [m.get("content") for m in messages if m.get("role") == "assistant"]
    return answers[-1] if answers else None


def _sft_row(row: dict[str, Any]) -> list[str]:
    columns = input_columns(row)
    messages = _messages(row.get("messages"))
    inputs = _fields(row, columns)
    if not inputs:  # rows loaded as conversations: the messages before the answer are the input
        inputs = conversation([m for m in messages if m.get("role") != "assistant"])
    elif "system" not in columns:  # a system prompt only the messages hold is an input too
        inputs = (
            "".join(field("system", m["content"]) for m in messages if m.get("role") == "system") + inputs
        )
    response = row.get("response")
    if response is None:
        response = _last_assistant(_messages(row.get("messages")))
    return [_row_head(row), inputs, (text_block(response) if response is not None else "") + _derived(row)]


def _turns_or_text(value: Any) -> str:
    """A pair's prompt or answer: messages (TRL's conversational format) as a conversation, a plain
    string (its standard format, as a loaded DPO set may be) as text."""
    if isinstance(value, str):
        return text_block(value)
    return conversation(_messages(value))


def _pair_row(row: dict[str, Any]) -> list[str]:
    prompt = _messages(row.get("prompt"))
    shown = {m.get("content") for m in prompt if isinstance(m.get("content"), str)}
    inputs = _turns_or_text(row.get("prompt")) + _fields(row, input_columns(row), shown)

    def side(column: str) -> str:
        score = row.get(f"{column}_score")
        head = f'<div class="score">{column} score {_score_text(score)}</div>' if score is not None else ""
        return head + _turns_or_text(row.get(column))

    return [_row_head(row, None), inputs + _derived(row), side("chosen"), side("rejected")]


def _conversation_row(row: dict[str, Any]) -> list[str]:
    return [_row_head(row), _fields(row, input_columns(row)), conversation(_messages(row.get("messages")))]


def _tool_row(row: dict[str, Any]) -> list[str]:
    offered = tools_offered(row["tools"]) if not _is_empty(row.get("tools")) else ""
    inputs = _fields(row, input_columns(row)) + offered
    return [_row_head(row), inputs, conversation(_messages(row.get("messages"))) + _derived(row)]


VIEWS = {
    SFT: (["row", "inputs", "response"], _sft_row),
    PREFERENCE: (["row", "prompt", "chosen", "rejected"], _pair_row),
    DIALOGUE: (["row", "inputs", "conversation"], _conversation_row),
    TOOL_CALLS: (["row", "request and tools offered", "conversation (calls, results, answer)"], _tool_row),
}


def samples_table(rows: list[dict[str, Any]], fmt: str) -> str:
    """The sampled rows as a table in `fmt`'s view: one table row per dataset row."""
    headers, view = VIEWS[fmt]
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="sample{" truncated" if is_truncated(row) else ""}" id="sample-{i}">'
        + "".join(f"<td>{cell}</td>" for cell in view(row))
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f'<table class="samples {fmt}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


SAMPLE_STYLE = """
table.samples td { white-space: normal; }
table.samples td:first-child { width: 9em; }
table.samples.preference td:nth-child(3) { background: #f3faf6; }
table.samples.preference td:nth-child(4) { background: #fdf4ef; }
.field { margin: 0 0 6px; } .field .name, .turn .role { font-size: 11px; color: #666; font-weight: 600;
  text-transform: uppercase; letter-spacing: .03em; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
.code, pre.args { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap;
  margin: 2px 0; }
details.long > summary { list-style: none; cursor: pointer; }
details.long > summary .more { color: #0645ad; font-size: 12px; text-decoration: underline; }
details.long[open] > summary .clipped { display: none; }
.conversation { display: flex; flex-direction: column; gap: 6px; }
.turn { border-left: 3px solid #bbb; padding: 2px 8px; }
.turn.system { border-color: #8a8a8a; background: #f6f6f6; } .turn.user { border-color: #0072B2; }
.turn.assistant { border-color: #009E73; } .turn.tool { border-color: #E69F00; background: #fffaf0; }
.call { margin: 4px 0; } .fn { font-family: ui-monospace, monospace; font-weight: 600; text-transform: none; }
ul.tools { margin: 2px 0; padding-left: 18px; }
.derived { margin-top: 8px; font-size: 12px; color: #333; border-top: 1px dashed #ddd; padding-top: 4px; }
.row-id { font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
.score { font-size: 12px; color: #333; margin: 2px 0; }
.badge { display: inline-block; font-size: 11px; font-weight: 700; padding: 1px 6px; border-radius: 8px; }
.badge.truncated { background: #D55E00; color: #fff; }
tr.sample.truncated td:first-child { border-left: 4px solid #D55E00; }
"""
