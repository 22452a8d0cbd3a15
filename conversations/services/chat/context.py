"""What is sent upstream for an answer: the system prompt, then the conversation so far, trimmed to fit.

Trimming drops the oldest turns first, by a local token estimate, so that the prompt plus the answer's budget fit
the model's context window. A single message that alone does not fit is refused before any upstream call.
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


def check_fits(content: str, *, model: str, system_prompt: str, max_tokens: int | None) -> None:
    """Refuse one message that can never fit, whatever is trimmed."""
    window = context_window(model)
    needed = estimate_messages_locally([{"role": "user", "content": content}])
    needed += estimate_tokens_locally(system_prompt)
    if needed + min(answer_budget(max_tokens), window // 4) > window:
        raise ContextTooLong(needed, window)


def build_messages(
    history: Iterable[Message], *, model: str, system_prompt: str, max_tokens: int | None, thinks: bool
) -> tuple[list[dict], int]:
    """Upstream messages, oldest first, and the estimated prompt tokens.

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
    window = context_window(model)
    budget = window - min(answer_budget(max_tokens), window // 4)
    costs = [attachment_prompt.turn_tokens(turn) for turn in turns]
    total = estimate_messages_locally(system) + sum(costs)
    start = 0
    # Keep the newest message always; drop whole oldest turns until the estimate fits.
    while total > budget and start < len(turns) - 1:
        total -= costs[start]
        start += 1
    if total > budget:
        raise ContextTooLong(total, window)
    kept = turns[start:]
    # A conversation must not open with an assistant turn once trimmed.
    while len(kept) > 1 and kept[0]["role"] == "assistant":
        total -= costs[len(turns) - len(kept)]
        kept = kept[1:]
    return system + attachment_prompt.expand(kept), total
