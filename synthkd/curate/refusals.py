"""How to tell a refusal: phrases with which chat models decline or disclaim."""

from __future__ import annotations

# Matched case-insensitively near the start, since a long answer that merely mentions "I cannot"
# later on is usually fine.
REFUSAL_PATTERNS = [
    r"\bI(?:'m| am) (?:sorry|afraid|unable|not able)\b",
    r"\bI (?:can(?:not|'t)|won't|will not|am unable to) (?:help|assist|provide|comply|do that|fulfil)",
    r"\bas an AI(?: language)? model\b",
    r"\bI'?m just an AI\b",
    r"\bI (?:must|have to) (?:decline|refuse)\b",
]
# How many leading characters of an answer are searched for them.
REFUSAL_WINDOW_CHARS = 200
