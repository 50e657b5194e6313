"""`topics`: a domain dataset from a prompt alone, by way of a topic tree.

For a user without seed data: from `domain: "cardiology for general practitioners"` the teacher
proposes `breadth` subtopics, level by level, `depth` levels deep; a subtopic that is
ROUGE-L-close to one already in the tree is dropped. For each leaf it then writes `per_topic`
varied instructions, also dropped when near-duplicate. Every row keeps its topic path.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Literal

from pydantic import Field

from synthkd.cache import ResponseCache
from synthkd.steps.base import (
    CheckContext,
    Columns,
    Row,
    StepContext,
    StepPlan,
    StepResult,
    TeacherStep,
    estimate_plan,
    prompt_tokens,
)
from synthkd.steps.parsing import ask_parsed, failure_of, parse_numbered_list, reask_prompt_field
from synthkd.teachers.base import ChatRequest


class TopicsStep(TeacherStep):
    """Topic tree from a domain prompt, then instructions for every leaf topic."""

    step: Literal["topics"] = "topics"
    taxonomy: ClassVar[str] = "curation"  # data synthesised from meta-information (a topic tree)
    domain: str = Field(min_length=3, description="what the dataset is about, in a phrase")
    breadth: int = Field(5, ge=1, description="subtopics asked for per topic")
    depth: int = Field(2, ge=1, description="levels of the tree below the domain")
    per_topic: int = Field(5, ge=1, description="instructions asked for per leaf topic")
    similarity_threshold: float = Field(
        0.7, gt=0, le=1, description="ROUGE-L F1 at which two items are duplicates"
    )
    subtopics_prompt: str = Field(
        "prompts/topics/subtopics.jinja", description="Jinja template asking for a topic's subtopics"
    )
    instructions_prompt: str = Field(
        "prompts/topics/instructions.jinja",
        description="Jinja template asking for instructions on one leaf topic",
    )
    reask_prompt: str = reask_prompt_field()

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        added = {"id", "instruction", "topic", "topic_path"}
        return None if columns is None else columns | added

    def _ask(self, template: str, **values: object) -> ChatRequest:
        return self.chat(self.template(template).render({"domain": self.domain, **values}))

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """Only the first level's request is known (and looked up in the cache): the later levels
        ask about the topics its answer lists. The estimate assumes every answer lists `breadth`
        new topics, a full tree: breadth^k subtopic requests at level k, then one instructions
        request per leaf (breadth^depth). Near-duplicates only make it fewer; at most each request
        is re-asked once. Rows stand for `per_topic` instructions a leaf."""
        paths = [self._example_path(level) for level in range(self.depth + 1)]
        subtopics = [
            self._ask("subtopics_prompt", path=paths[k], breadth=self.breadth) for k in range(self.depth)
        ]
        leaf = self._ask("instructions_prompt", path=paths[-1], topic=paths[-1][-1], count=self.per_topic)
        per_level = [self.breadth**level for level in range(self.depth)]
        leaves = self.breadth**self.depth
        total = sum(per_level) + leaves
        plan = estimate_plan(self.teacher_config, total, subtopics[:1], cache, requests_max=2 * total)
        tokens = sum(n * prompt_tokens(r) for n, r in zip(per_level, subtopics, strict=True))
        plan = replace(
            plan,
            prompt_tokens=tokens + leaves * prompt_tokens(leaf),
            sample_prompts=[list(subtopics[0].messages), list(leaf.messages)],
            rounds=self.depth + 1,  # each level waits for the one above it, the leaves for the last
        )
        return list(rows) + self._example_rows(leaves, paths[-1]), plan

    def _example_path(self, length: int) -> list[str]:
        """A topic path standing for the ones the teacher will write."""
        return [f"[a level-{level} subtopic written by topics]" for level in range(1, length + 1)]

    def _example_rows(self, leaves: int, path: list[str]) -> list[Row]:
        """Rows standing for the instructions the leaves will get, marked as not written yet."""
        return [
            {
                "id": f"topic-{leaf:04d}-{number}",
                "instruction": f"[request {number + 1} about leaf topic {leaf + 1}, written by topics]",
                "topic": path[-1],
                "topic_path": path,
            }
            for leaf in range(leaves)
            for number in range(self.per_topic)
        ]

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        from synthkd.curate.rouge import RougeLPool  # numpy, imported when used: faster starts

        result = StepResult(list(rows))
        reask = self.template("reask_prompt")
        seen_topics = RougeLPool([self.domain])
        level: list[list[str]] = [[]]  # topic paths below the domain
        for _ in range(self.depth):
            requests = [self._ask("subtopics_prompt", path=path, breadth=self.breadth) for path in level]
            answers = await ask_parsed(ctx.dispatcher, requests, parse_numbered_list, reask)
            next_level = []
            for path, answer in zip(level, answers, strict=True):
                if not answer.ok:
                    result.failures.append(failure_of(None, answer, row_id=" > ".join(path) or self.domain))
                    continue
                for topic in answer.value[: self.breadth]:
                    if seen_topics.is_near_duplicate(topic, self.similarity_threshold):
                        result.dropped["duplicate_topic"] += 1
                        continue
                    seen_topics.add(topic)
                    next_level.append([*path, topic])
            level = next_level
        ctx.progress.set_total(len(level) * self.per_topic)
        requests = [
            self._ask("instructions_prompt", path=path, topic=path[-1], count=self.per_topic)
            for path in level
        ]
        answers = await ask_parsed(ctx.dispatcher, requests, parse_numbered_list, reask)
        seen_instructions = RougeLPool()
        for leaf, (path, answer) in enumerate(zip(level, answers, strict=True)):
            if not answer.ok:
                result.failures.append(failure_of(None, answer, row_id=" > ".join(path)))
                continue
            for number, instruction in enumerate(answer.value[: self.per_topic]):
                ctx.progress.advance()
                if seen_instructions.is_near_duplicate(instruction, self.similarity_threshold):
                    result.dropped["duplicate_instruction"] += 1
                    continue
                seen_instructions.add(instruction)
                result.rows.append(
                    {
                        "id": f"topic-{leaf:04d}-{number}",
                        "instruction": instruction,
                        "topic": path[-1],
                        "topic_path": path,
                    }
                )
        return result
