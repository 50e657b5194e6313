"""`tool_calls`: function-calling conversations from a user's tool schemas, calls validated.

From a tools file (a JSON list of OpenAI-style function schemas) the teacher writes, for every
conversation: the user's request (or it comes from `request_column`), the assistant's tool calls
as JSON, results the tools could plausibly return, and the final answer. Every call is validated
against its tool's schema (known function, JSON-schema-valid arguments, no parameter the schema
does not list); an invalid set of calls is re-asked with the validation error, then recorded as a
failure (`invalid_tool_call`). With `max_rounds` above 1, after each round's results the teacher
is asked for further calls (those that need the results, e.g. an identifier one returned) until it
replies with none or the rounds run out; the simulated results stay consistent with earlier ones.

Rows get `messages` in the format TRL's SFTTrainer and transformers' chat templates take:

    {"role": "user", "content": ...}
    {"role": "assistant", "content": "",
     "tool_calls": [{"id": "call_0_0", "type": "function", "function": {"name": ..., "arguments": {...}}}]}
    {"role": "tool", "tool_call_id": "call_0_0", "name": ..., "content": "<the result as JSON>"}
    {"role": "assistant", "content": <the final answer>}

(an assistant turn with `tool_calls` and its `tool` turns for each round of calls),
and `tools`: the schemas as a JSON string (SFTTrainer loads it and passes the list to the chat
template; as text, one tool's parameters do not become every tool's in Arrow), plus `request`,
`response` (the final answer) and `tools_called`.

In the written dataset (`synthkd.output.to_dataset`) `messages` is a list of structs: a key a turn
lacks is None there. `arguments` is a dict here, as chat templates render it (Qwen2.5's and
Llama 3.1's `tojson` would quote a string again); it is stored as JSON text typed `datasets.Json`,
which `datasets` and TRL read back as this dict, and pandas or pyarrow as OpenAI's JSON string.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr

from synthkd.cache import ResponseCache
from synthkd.errors import RecipeError
from synthkd.shipped import not_found
from synthkd.steps.base import (
    SAMPLE_PROMPTS_SHOWN,
    CheckContext,
    Columns,
    Row,
    StepContext,
    StepPlan,
    StepResult,
    TeacherStep,
    exact_plan,
    prompt_tokens,
    require_columns,
)
from synthkd.steps.parsing import (
    Parsed,
    ParseError,
    ask_parsed,
    failure_of,
    reask_prompt_field,
    strip_code_fence,
)
from synthkd.teachers.base import ChatRequest, Completion, max_completion_tokens

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
EMPTY_PARAMETERS = {"type": "object", "properties": {}}
ADDED_COLUMNS = {"request", "messages", "tools", "response", "tools_called"}


def load_tools(path: Path) -> list[dict[str, Any]]:
    """The tools of a JSON file, each as {"type": "function", "function": {name, description, parameters}}.

    Accepts OpenAI's form or bare {name, description, parameters} objects, as a list or under a
    "tools" key. Raises ValueError saying what is wrong.
    """
    import jsonschema  # only tool recipes need it; every run's start is faster without

    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "tools" in data:
        data = data["tools"]
    if not isinstance(data, list) or not data:
        raise ValueError("expected a non-empty JSON list of function schemas")
    tools, names = [], set()
    for index, item in enumerate(data):
        where = f"tool {index + 1}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object")
        function = item.get("function") if item.get("type") == "function" else item
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError(f'{where}: expected {{"type": "function", "function": {{"name": ...}}}}')
        name = function["name"]
        if not _NAME.match(name):
            raise ValueError(f"{where}: the name {name!r} must be 1-64 letters, digits, _ . or -")
        if name in names:
            raise ValueError(f"{where}: a second tool named {name!r}")
        names.add(name)
        parameters = function.get("parameters") or EMPTY_PARAMETERS
        try:
            jsonschema.Draft202012Validator.check_schema(parameters)
        except jsonschema.SchemaError as exc:
            raise ValueError(
                f"{where} ({name}): parameters are not a valid JSON schema: {exc.message}"
            ) from None
        if parameters.get("type", "object") != "object":
            raise ValueError(f"{where} ({name}): parameters must be a JSON schema of type object")
        normalised = {"name": name, "description": function.get("description", ""), "parameters": parameters}
        tools.append({"type": "function", "function": normalised})
    return tools


def calls_parser(tools: list[dict[str, Any]]) -> Any:
    """A parser of the teacher's JSON calls: [{"name", "arguments"}], each valid for its tool."""
    import jsonschema

    functions = {tool["function"]["name"]: tool["function"] for tool in tools}
    validators = {
        name: jsonschema.Draft202012Validator(function["parameters"]) for name, function in functions.items()
    }
    listed = ", ".join(functions)

    def parse(text: str) -> list[dict[str, Any]]:
        try:
            value = json.loads(strip_code_fence(text))
        except json.JSONDecodeError as exc:
            raise ParseError(f"not JSON ({exc.msg}); reply with only a JSON array of calls") from None
        if isinstance(value, dict):
            value = value["tool_calls"] if isinstance(value.get("tool_calls"), list) else [value]
        if not isinstance(value, list):
            raise ParseError("expected a JSON array of calls")
        calls = []
        for number, call in enumerate(value, 1):
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                call = call["function"]  # OpenAI's {"type": "function", "function": {...}}
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise ParseError(f'call {number} is not an object with a "name"')
            name, arguments = call["name"], call.get("arguments", {})
            if name not in functions:
                raise ParseError(f"call {number}: unknown function {name!r}; the tools are: {listed}")
            if isinstance(arguments, str):  # the wire format sends arguments as a JSON string
                try:
                    arguments = json.loads(arguments)
                except json.JSONDecodeError:
                    raise ParseError(f"call {number} ({name}): arguments are not a JSON object") from None
            if not isinstance(arguments, dict):
                raise ParseError(f"call {number} ({name}): arguments must be a JSON object")
            problem = _argument_problem(functions[name]["parameters"], validators[name], arguments)
            if problem:
                raise ParseError(f"call {number} ({name}): {problem}")
            calls.append({"name": name, "arguments": arguments})
        return calls

    return parse


def _argument_problem(schema: dict[str, Any], validator: Any, arguments: dict[str, Any]) -> str | None:
    """Why `arguments` do not fit `schema`, or None. Parameters the schema does not list are
    refused unless it allows additionalProperties (models invent parameters)."""
    import jsonschema

    error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path)
        return f"{error.message}" + (f" (argument {where})" if where else "")
    known = schema.get("properties") or {}
    if schema.get("additionalProperties") is not True and "patternProperties" not in schema:
        unknown = sorted(set(arguments) - set(known))
        if unknown:
            return (
                f"unknown parameter(s) {', '.join(unknown)}; the parameters are: {', '.join(known) or 'none'}"
            )
    return None


def results_parser(count: int) -> Any:
    """A parser of `count` simulated results: a JSON array, one entry per call."""

    def parse(text: str) -> list[Any]:
        try:
            value = json.loads(strip_code_fence(text))
        except json.JSONDecodeError as exc:
            raise ParseError(f"not JSON ({exc.msg}); reply with only a JSON array of results") from None
        if count == 1 and not isinstance(value, list):
            value = [value]
        if not isinstance(value, list) or len(value) != count:
            raise ParseError(f"expected a JSON array of exactly {count} result(s), one per call")
        return value

    return parse


def parse_text(text: str) -> str:
    stripped = text.strip()
    if not stripped:
        raise ParseError("the answer is empty")
    return stripped


def written_request(text: str) -> str:
    """A request the teacher wrote, as a conversation starts with it; a ParseError if empty."""
    return parse_text(text).strip('"').strip()


def _same_request_key(request: str) -> str:
    """What two written requests that are the same request share (case and spacing aside)."""
    return " ".join(request.lower().split())


def result_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _call_key(call: dict[str, Any]) -> str:
    return json.dumps([call["name"], call["arguments"]], sort_keys=True, ensure_ascii=False)


@dataclass
class _Conversation:
    """One conversation being written: its request, the rounds of calls made so far with their
    results, and the calls waiting for results."""

    index: int  # its place among the step's requests, so rows keep that order
    row: Row
    request: str
    rounds: list[tuple[list[dict[str, Any]], list[str]]] = field(default_factory=list)  # (calls, results)
    pending: list[dict[str, Any]] = field(default_factory=list)

    def new_calls(self, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`calls` less those already made (same function, same arguments) and repeats among them:
        a conversation where the assistant makes the same call again teaches a student to loop."""
        made = {_call_key(call) for calls_made, _ in self.rounds for call in calls_made}
        fresh = []
        for call in calls:
            if _call_key(call) not in made:
                made.add(_call_key(call))
                fresh.append(call)
        return fresh

    def history(self) -> list[dict[str, str]]:
        """Every call so far with its result, as the prompts list them."""
        return [
            {
                "name": call["name"],
                "arguments_json": json.dumps(call["arguments"], ensure_ascii=False),
                "result": out,
            }
            for calls, outputs in self.rounds
            for call, out in zip(calls, outputs, strict=True)
        ]


class ToolCallsStep(TeacherStep):
    """Conversations with validated tool calls, simulated results and a final answer."""

    step: Literal["tool_calls"] = "tool_calls"
    taxonomy: ClassVar[str] = "curation"  # function-calling conversations synthesised from tool schemas
    tools: str = Field(description="JSON file of OpenAI-style function schemas (relative to the recipe)")
    request_column: str | None = Field(None, description="user requests from this column (one per row)")
    num_requests: int = Field(10, ge=1, description="requests the teacher writes when request_column is null")
    system: str | None = Field(None, description="system message starting each conversation")
    reask: int = Field(1, ge=0, description="times invalid calls (or unparseable JSON) are asked again")
    max_rounds: int = Field(
        1,
        ge=1,
        le=10,
        description="rounds of calls: after each round's results the teacher may call again (calls that "
        "need those results) or stop; 1 = one round (several calls may go together)",
    )
    request_prompt: str = Field(
        "prompts/tool_calls/request.jinja",
        description="Jinja template asking for a user request one tool serves (without request_column)",
    )
    calls_prompt: str = Field(
        "prompts/tool_calls/calls.jinja",
        description="Jinja template asking for the first round's calls as JSON",
    )
    next_calls_prompt: str = Field(
        "prompts/tool_calls/next_calls.jinja",
        description="Jinja template asking, after a round's results, for more calls or none (max_rounds > 1)",
    )
    results_prompt: str = Field(
        "prompts/tool_calls/results.jinja",
        description="Jinja template asking for the calls' simulated results",
    )
    answer_prompt: str = Field(
        "prompts/tool_calls/answer.jinja",
        description="Jinja template asking for the final answer from the results",
    )
    reask_prompt: str = reask_prompt_field()

    _tools: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    def template_keys(self) -> list[str]:
        """The prompts this recipe's options use: request_prompt only when the teacher writes the
        requests, next_calls_prompt only with more than one round."""
        keys = ["calls_prompt", "results_prompt", "answer_prompt", "reask_prompt"]
        if not self.request_column:
            keys.insert(0, "request_prompt")
        if self.max_rounds > 1:
            keys.append("next_calls_prompt")
        return keys

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        source = self.local_file(self.tools, ctx, "tools")
        if source is None or not source.is_file():
            raise RecipeError(not_found("tools file", self.tools, ctx.recipe_dir), where=ctx.at("tools"))
        try:
            self._tools = load_tools(source)
        except (OSError, ValueError) as exc:
            raise RecipeError(f"{source}: {exc}", where=ctx.at("tools")) from None
        if self.request_column:
            require_columns({self.request_column}, columns, ctx, "request_column", "tool_calls")
        return None if columns is None else columns | ADDED_COLUMNS

    def template_sources(self) -> dict[str, str]:
        return super().template_sources() | {self.tools: json.dumps(self._tools, sort_keys=True)}

    def _ask(self, key: str, sample: int = 0, **values: Any) -> ChatRequest:
        content = self.template(key).render({"tools_json": json.dumps(self._tools, indent=1), **values})
        return self.chat(content, sample=sample)

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """The requests the teacher writes (`num_requests`, unless `request_column` gives them)
        are known, and so is each conversation's first ask for calls where its request is known
        (given, or written and cached): those are looked up in the cache. The rest depend on the
        answers. The estimate assumes every conversation calls tools once and then needs no more:
        its calls, their results, (with `max_rounds` above 1) the ask for more calls, and the
        answer. At most, every conversation calls in every round and each request is re-asked
        `reask` times. Rows stand for one conversation a request, its answer not written yet."""
        teacher = self.teacher_config
        writing = [] if self.request_column else self._writing_requests()
        writing_plan, written = exact_plan(teacher, writing, cache)
        sources = self._planned_sources(rows, written)
        first = [self._calls_request(text, [], 1) for _, text in sources if text is not None]
        calls_plan, _ = exact_plan(teacher, first, cache)
        examples = self._example_requests()
        # After the first calls: their results, (with later rounds) the ask for more, the answer.
        later = ["results_prompt", "next_calls_prompt", "answer_prompt"]
        if self.max_rounds == 1:
            later.remove("next_calls_prompt")
        conversations = len(sources)
        requests = len(writing) + conversations * (1 + len(later))
        tokens = (
            writing_plan.prompt_tokens
            + calls_plan.prompt_tokens
            + (conversations - len(first)) * prompt_tokens(examples["calls_prompt"])
            + conversations * sum(prompt_tokens(examples[key]) for key in later)
        )
        most = (len(writing) + conversations * (2 * self.max_rounds + 1)) * (1 + self.reask)
        shown = [*writing[:1], *(first[:1] or [examples["calls_prompt"]]), *(examples[key] for key in later)]
        plan = StepPlan(
            requests=requests,
            cached=writing_plan.cached + calls_plan.cached,
            prompt_tokens=tokens,
            max_completion_tokens=requests * max_completion_tokens(teacher.params),
            sample_prompts=[list(request.messages) for request in shown[:SAMPLE_PROMPTS_SHOWN]],
            count="estimate",
            requests_max=most if most != requests else None,
            rounds=(1 if writing else 0) + 1 + len(later),  # each waits for the answers before it
        )
        planned = [
            self._row(_Conversation(i, row, text or self._unwritten(row)), "")
            for i, (row, text) in enumerate(sources)
        ]
        return (list(rows) if not self.request_column else []) + planned, plan

    def _planned_sources(
        self, rows: list[Row], written: list[Completion | None]
    ) -> list[tuple[Row, str | None]]:
        """The conversations a run would start, each with its request, None where the teacher has
        not written it yet (assumed kept: distinct and parseable after a re-ask)."""
        if self.request_column:
            return list(self._column_requests(rows))  # the column holds every request: all known
        sources: list[tuple[Row, str | None]] = []
        seen = set()
        for number, answer in enumerate(written):
            row = {"id": f"tool-{number:04d}"}
            try:
                text = written_request(answer.text) if answer is not None else None
            except ParseError:  # re-asked in a run: its text is not known yet
                text = None
            if text is not None:
                key = _same_request_key(text)
                if key in seen:
                    continue  # a repeat, dropped as the run drops it
                seen.add(key)
            sources.append((row, text))
        return sources

    def _example_requests(self) -> dict[str, ChatRequest]:
        """A request of each kind a conversation sends, about a placeholder request and call, to
        estimate the prompts not known before the answers."""
        request = "[a user request written by tool_calls]"
        call = {"name": self._tools[0]["function"]["name"], "arguments": {}}
        history = [{"name": call["name"], "arguments_json": "{}", "result": "[a simulated result]"}]
        examples = {
            "calls_prompt": self._calls_request(request, [], 1),
            "results_prompt": self._ask(
                "results_prompt", request=request, calls_json=json.dumps([call]), history=[]
            ),
            "answer_prompt": self._ask("answer_prompt", request=request, calls=history),
        }
        if self.max_rounds > 1:  # its template is loaded only then
            examples["next_calls_prompt"] = self._calls_request(request, history, 2)
        return examples

    @staticmethod
    def _unwritten(row: Row) -> str:
        return f"[request {row['id']} written by tool_calls]"

    def _column_requests(self, rows: list[Row]) -> list[tuple[Row, str]]:
        """The rows whose `request_column` holds a request, with it (stripped)."""
        sources = [(row, str(row.get(self.request_column) or "").strip()) for row in rows]
        return [(row, request) for row, request in sources if request]

    def _writing_requests(self) -> list[ChatRequest]:
        """The asks for `num_requests` user requests, each centred on a tool in turn."""
        return [
            self._ask(
                "request_prompt",
                sample=number,
                tool=self._tools[number % len(self._tools)]["function"],
                number=number + 1,
            )
            for number in range(self.num_requests)
        ]

    def _calls_request(self, request: str, history: list[dict[str, str]], round_number: int) -> ChatRequest:
        """The ask for a conversation's calls in a round: the first, or whether more are needed."""
        key = "calls_prompt" if round_number == 1 else "next_calls_prompt"
        return self._ask(key, request=request, history=history, more_rounds=round_number < self.max_rounds)

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        result = StepResult(list(rows) if not self.request_column else [])
        if self.request_column:
            sources = self._column_requests(rows)
            if len(sources) < len(rows):
                result.dropped["empty_request"] += len(rows) - len(sources)
        else:
            sources = await self._write_requests(ctx, result)
        conversations = [_Conversation(index, row, request) for index, (row, request) in enumerate(sources)]
        # The bar counts requests: first calls, their results and the answer for every conversation,
        # two more per conversation that goes on to a later round; a conversation that stops early
        # advances it by the requests it will not make.
        expected_requests = len(conversations) * 3
        ctx.progress.set_total(expected_requests)
        result.details["repeated_calls_dropped"] = 0

        calling, finished = await self._next_calls(conversations, 1, ctx, result)
        for round_number in range(1, self.max_rounds + 1):
            if round_number > 1:
                if not calling:
                    break
                expected_requests += 2 * len(calling)  # this round's calls and their results
                ctx.progress.set_total(expected_requests)
                calling, done = await self._next_calls(calling, round_number, ctx, result)
                finished += done
            calling = await self._simulate(calling, ctx, result)
        finished += calling  # the last round's results are in: no more rounds to call in
        finished.sort(key=lambda conversation: conversation.index)
        await self._answer(finished, ctx, result)
        return result

    async def _next_calls(
        self, conversations: list[_Conversation], round_number: int, ctx: StepContext, result: StepResult
    ) -> tuple[list[_Conversation], list[_Conversation]]:
        """Ask each conversation's next calls: (those that made calls, those that need no more).
        In the first round a conversation that calls nothing is dropped (`no_tool_call`)."""
        answers = await ask_parsed(
            ctx.dispatcher,
            [self._calls_request(c.request, c.history(), round_number) for c in conversations],
            calls_parser(self._tools),
            self.template("reask_prompt"),
            reask=self.reask,
            progress=ctx.progress,
        )
        calling, done = [], []
        for conversation, answer in zip(conversations, answers, strict=True):
            new_calls = conversation.new_calls(answer.value) if answer.ok else []
            if answer.ok:
                result.details["repeated_calls_dropped"] += len(answer.value) - len(new_calls)
            if not answer.ok:
                self._fail(result, conversation.row, answer, "invalid_tool_call")
                ctx.progress.advance(2)  # no results, no answer
            elif new_calls:
                conversation.pending = new_calls
                calling.append(conversation)
            elif round_number == 1:
                result.dropped["no_tool_call"] += 1
                ctx.progress.advance(2)
            else:  # nothing more to call (or only calls already made): on to the answer
                done.append(conversation)
                ctx.progress.advance(1)  # no results this round
        return calling, done

    async def _simulate(
        self, conversations: list[_Conversation], ctx: StepContext, result: StepResult
    ) -> list[_Conversation]:
        """The results of each conversation's pending calls, consistent with earlier rounds' results."""
        answers = await ask_parsed(
            ctx.dispatcher,
            [
                self._ask(
                    "results_prompt",
                    request=c.request,
                    calls_json=json.dumps(c.pending, ensure_ascii=False),
                    history=c.history(),
                )
                for c in conversations
            ],
            [results_parser(len(c.pending)) for c in conversations],
            self.template("reask_prompt"),
            reask=self.reask,
            progress=ctx.progress,
        )
        simulated = []
        for conversation, answer in zip(conversations, answers, strict=True):
            if answer.ok:
                conversation.rounds.append((conversation.pending, [result_text(v) for v in answer.value]))
                conversation.pending = []
                simulated.append(conversation)
            else:
                self._fail(result, conversation.row, answer, "unparseable_results")
                ctx.progress.advance(1)  # no answer
        return simulated

    async def _answer(self, conversations: list[_Conversation], ctx: StepContext, result: StepResult) -> None:
        """The final answer of each conversation from all its results; rows for those answered."""
        answers = await ask_parsed(
            ctx.dispatcher,
            [self._ask("answer_prompt", request=c.request, calls=c.history()) for c in conversations],
            parse_text,
            self.template("reask_prompt"),
            reask=self.reask,
            progress=ctx.progress,
        )
        usage: Counter[str] = Counter()
        rounds: Counter[int] = Counter()
        for conversation, answer in zip(conversations, answers, strict=True):
            if not answer.ok:
                self._fail(result, conversation.row, answer, "unparseable_answer")
                continue
            usage.update(call["name"] for calls, _ in conversation.rounds for call in calls)
            rounds[len(conversation.rounds)] += 1
            result.rows.append(self._row(conversation, answer.value))
        result.details |= {
            "conversations": sum(rounds.values()),
            "conversations_by_rounds": {str(count): rounds[count] for count in sorted(rounds)},
            "calls_by_tool": {
                tool["function"]["name"]: usage[tool["function"]["name"]] for tool in self._tools
            },
        }

    async def _write_requests(self, ctx: StepContext, result: StepResult) -> list[tuple[Row, str]]:
        """`num_requests` user requests, each centred on a tool in turn; exact repeats dropped."""
        answers = await ask_parsed(
            ctx.dispatcher,
            self._writing_requests(),
            written_request,
            self.template("reask_prompt"),
            reask=self.reask,
        )
        sources, seen = [], set()
        for number, answer in enumerate(answers):
            row = {"id": f"tool-{number:04d}"}
            if not answer.ok:
                self._fail(result, row, answer, answer.reason)
                continue
            request = answer.value
            key = _same_request_key(request)
            if key in seen:
                result.dropped["duplicate_request"] += 1
                continue
            seen.add(key)
            sources.append((row, request))
        return sources

    def _row(self, conversation: _Conversation, final: str) -> Row:
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": conversation.request})
        for round_index, (calls, outputs) in enumerate(conversation.rounds):
            # Each call has an id its result answers to, and the calling turn an (empty) content:
            # the OpenAI message format, which chat templates such as SmolLM2's require.
            ids = [f"call_{round_index}_{index}" for index in range(len(calls))]
            messages.append(
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": call["name"], "arguments": call["arguments"]},
                        }
                        for call_id, call in zip(ids, calls, strict=True)
                    ],
                }
            )
            messages += [
                {"role": "tool", "tool_call_id": call_id, "name": call["name"], "content": output}
                for call_id, call, output in zip(ids, calls, outputs, strict=True)
            ]
        messages.append({"role": "assistant", "content": final})
        return {
            **conversation.row,
            "request": conversation.request,
            "messages": messages,
            "tools": json.dumps(self._tools, ensure_ascii=False),
            "response": final,
            "tools_called": [call["name"] for calls, _ in conversation.rounds for call in calls],
        }

    def _fail(self, result: StepResult, row: Row, parsed: Parsed, reason: str) -> None:
        result.failures.append(failure_of(row, parsed, reason=reason))
