"""What is sent upstream for an answer: the system prompt, then the conversation so far, trimmed to fit.

Trimming keeps the system prompt and the opening turns and drops turns from the middle, in large steps, by a local
token estimate, so that the prompt plus the answer's budget fit the model's context window and the prompt's start
stays the same from one send to the next (Kimi caches prompt prefixes). A single message that alone does not fit is
refused before any upstream call.
"""

from __future__ import annotations

from collections.abc import Iterable

from conversations.kimi.params import rules_for
from conversations.kimi.tokens import estimate_messages_locally, estimate_tokens_locally
from conversations.models import Message
from conversations.services.attachments import prompt as attachment_prompt

DEFAULT_ANSWER_BUDGET = 4096  # tokens kept free for the answer when the conversation sets no max_tokens
DEFAULT_CONTEXT_WINDOW = 131_072  # for models whose window is unknown
TITLE_LENGTH = 60
# Trimming (``_cache_friendly_trim``): the opening turns kept in front of the gap, at most 1/HEAD_SHARE of the budget,
# and the gap's step, 1/TRIM_STEPS of the budget.
HEAD_TURNS = 2
HEAD_SHARE = 8
TRIM_STEPS = 4


class ContextTooLong(Exception):
    def __init__(self, tokens: int, window: int):
        self.tokens = tokens
        self.window = window
        super().__init__(
            f"This message is about {tokens:,} tokens long, more than the model's context window of {window:,} "
            "tokens can hold with room for an answer. Shorten it or pick a model with a larger window."
        )


def title_from(content: str) -> str:
    """The first line of the first user message, trimmed at a word boundary."""
    text = " ".join(content.split())
    if len(text) <= TITLE_LENGTH:
        return text
    cut = text[:TITLE_LENGTH]
    if " " in cut[TITLE_LENGTH // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,.;:") + "…"


def context_window(model: str) -> int:
    return rules_for(model).context_window or DEFAULT_CONTEXT_WINDOW


def answer_budget(max_tokens: int | None) -> int:
    return max_tokens or DEFAULT_ANSWER_BUDGET


def history_token_budget(model: str, max_tokens: int | None) -> int:
    """The most prompt tokens ``build_messages`` keeps for ``model``: whoever reads the history can stop there."""
    window = context_window(model)
    return window - min(answer_budget(max_tokens), window // 4)


def check_fits(content: str, *, model: str, system_prompt: str, max_tokens: int | None) -> None:
    """Refuse one message that can never fit, whatever is trimmed."""
    window = context_window(model)
    needed = estimate_messages_locally([{"role": "user", "content": content}])
    needed += estimate_tokens_locally(system_prompt)
    if needed + min(answer_budget(max_tokens), window // 4) > window:
        raise ContextTooLong(needed, window)


def build_messages(
    history: Iterable[Message],
    *,
    model: str,
    system_prompt: str,
    max_tokens: int | None,
    thinks: bool,
    documents: Iterable[dict] = (),
) -> tuple[list[dict], int]:
    """Upstream messages, oldest first, and the estimated prompt tokens.

    ``documents``: system messages that always go right after the system prompt, never trimmed (a project's files).

    ``history`` is the live thread up to and including the user message being answered. Assistant answers that
    failed with nothing written are left out (they would teach the model an empty reply); partial answers that were
    stopped or interrupted stay, as the user saw them. Reasoning goes back only to thinking models.
    """
    turns: list[dict] = []
    for message in history:
        if message.role == Message.Role.ASSISTANT:
            if not message.content:
                continue
            turn = {"role": "assistant", "content": message.content}
            if thinks and message.reasoning:
                turn["reasoning"] = message.reasoning
            turns.append(turn)
        elif message.role == Message.Role.USER:
            turns.append(attachment_prompt.user_turn(message))  # with its documents and images
    system = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    system += documents
    window = context_window(model)
    budget = history_token_budget(model, max_tokens)
    costs = [attachment_prompt.turn_tokens(turn) for turn in turns]
    fixed = estimate_messages_locally(system)
    kept = _cache_friendly_trim(turns, costs, budget - fixed)
    total = fixed + sum(costs[i] for i in kept)
    if total > budget:
        raise ContextTooLong(total, window)
    return system + attachment_prompt.expand([turns[i] for i in kept]), total


def _cache_friendly_trim(turns: list[dict], costs: list[int], budget: int) -> list[int]:
    """The indexes of the turns to send: all of them if they fit, else the opening turns (the head), a gap, and the
    newest turns. The gap grows in steps of a quarter of the budget, each ending where a user turn starts, so its
    end depends only on older turns: consecutive sends keep an identical prefix (system prompt, head, the turns
    after the gap), which Kimi's prefix cache serves, until the conversation grows by a whole step. Dropping the
    oldest turn on every send would shift the prefix each time and miss the cache every time. The newest turn is
    always kept; when head and newest turn alone do not fit, the head goes too."""
    if sum(costs) <= budget or not turns:
        return list(range(len(turns)))
    last = len(turns) - 1
    head = _head(turns, costs, budget)
    step = max(1, budget // TRIM_STEPS)
    for keep_head in (head, 0):
        fixed = sum(costs[:keep_head])
        dropped, gap_end, steps = 0, keep_head, 1
        while gap_end < last:
            dropped += costs[gap_end]
            gap_end += 1
            if gap_end < last and (dropped < steps * step or turns[gap_end]["role"] != "user"):
                continue
            if fixed + sum(costs[gap_end:]) <= budget:
                return [*range(keep_head), *range(gap_end, len(turns))]
            while dropped >= steps * step:
                steps += 1
    return [last]


def _head(turns: list[dict], costs: list[int], budget: int) -> int:
    """How many opening turns stay in front of the gap: the first question and its answer, when they are small."""
    head = min(HEAD_TURNS, len(turns) - 1)
    while head and turns[head - 1]["role"] != "assistant":
        head -= 1  # the head ends with an answer, so the turns after the gap start with a question
    return head if sum(costs[:head]) <= budget // HEAD_SHARE else 0
