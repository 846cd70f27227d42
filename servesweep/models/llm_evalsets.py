"""Eval sets for a real LLM (SmolLM2-135M-Instruct), offline: natural text that ships with Python,
and short-answer questions in the model's chat format.

    python -m servesweep.models.llm_evalsets --out scenarios/evalsets

**Perplexity: the documentation topics of `pydoc_data`.** A real LLM's perplexity means most on
prose, and the standard library's help topics (the language reference's sections, as
`help("assert")` shows them) are prose written by people, present offline on every machine. The
passages are fixed slices: per topic, in name order, its first prose paragraphs (no indented code or
grammar blocks, no headings, no signatures), whole, up to `chars` characters. The file written is
committed and pinned by its sha256 in the gate specs, so a Python whose topics differ cannot change
a measurement; each row names its topic and the Python version it was cut from.

**Exact match: short answers.** Each task is one question in SmolLM2's chat format (ChatML with its
default system prompt) with the start of the answer written out ("The capital of France is"), so
the greedy continuation is the answer word itself (" Paris"); the gate spec stops decoding at the
first `.`, `,` or newline and compares what came before, whitespace aside. Three families of 60
(all items of each, none picked by whether the model gets it right): capitals, opposites, plurals;
the families tried and left out are named below. Hand-written lists: no data set is downloaded.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

HEADING_RULE = re.compile(r"^[*=\-~^\"]{3,}$")


def _wordy(text: str) -> bool:
    """Mostly letters and spaces: sentences, not signatures such as `object.__add__(self, other)`."""
    return sum(c.isalpha() or c == " " for c in text) >= 0.9 * len(text)


def prose_paragraphs(text: str) -> list[str]:
    """Paragraphs of running text: not indented (code, grammar, tables), not a heading, not a list item."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if len(lines) >= 2 and HEADING_RULE.match(lines[-1].strip()):
            continue  # a heading and its underline
        if any(not line or line[0].isspace() or HEADING_RULE.match(line.strip()) for line in lines):
            continue
        joined = " ".join(line.strip() for line in lines)
        if len(joined) >= 80 and joined.endswith(".") and _wordy(joined) and not joined.startswith(("*", "-", "Note:")):
            paragraphs.append(joined)
    return paragraphs


def perplexity_passages(chars: int = 1200, min_chars: int = 400) -> list[dict[str, str]]:
    """One passage per topic with enough prose: its first paragraphs, whole, up to `chars` characters."""
    from pydoc_data.topics import topics

    python = platform.python_version()
    rows = []
    for name in sorted(topics):
        text = ""
        for paragraph in prose_paragraphs(topics[name]):
            candidate = f"{text}\n\n{paragraph}" if text else paragraph
            if len(candidate) > chars:
                break
            text = candidate
        if len(text) >= min_chars:
            rows.append({"id": f"pydoc_data.topics[{name!r}] (Python {python})", "text": text})
    return rows


SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin", "Japan": "Tokyo", "China": "Beijing",
    "Russia": "Moscow", "Egypt": "Cairo", "Greece": "Athens", "Portugal": "Lisbon", "Austria": "Vienna",
    "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Poland": "Warsaw", "Hungary": "Budapest", "Belgium": "Brussels", "the Netherlands": "Amsterdam",
    "Canada": "Ottawa", "Mexico": "Mexico City", "Argentina": "Buenos Aires", "Peru": "Lima", "Chile": "Santiago",
    "Kenya": "Nairobi", "Thailand": "Bangkok", "South Korea": "Seoul", "India": "New Delhi", "Turkey": "Ankara",
    "Iran": "Tehran", "Iraq": "Baghdad", "Cuba": "Havana", "Australia": "Canberra", "the United Kingdom": "London",
    "Switzerland": "Bern", "the Czech Republic": "Prague", "Vietnam": "Hanoi", "Indonesia": "Jakarta",
    "the Philippines": "Manila", "Venezuela": "Caracas", "Nigeria": "Abuja", "Ghana": "Accra", "Ethiopia": "Addis Ababa",
    "Morocco": "Rabat", "Saudi Arabia": "Riyadh", "Pakistan": "Islamabad", "Bangladesh": "Dhaka",
    "Afghanistan": "Kabul", "Syria": "Damascus", "Lebanon": "Beirut", "Romania": "Bucharest", "Bulgaria": "Sofia",
    "Serbia": "Belgrade", "Croatia": "Zagreb", "Iceland": "Reykjavik", "Malaysia": "Kuala Lumpur",
    "New Zealand": "Wellington", "Nepal": "Kathmandu", "Qatar": "Doha",
}
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad", "day": "night", "black": "white",
    "open": "closed", "hard": "soft", "high": "low", "early": "late", "strong": "weak", "wet": "dry",
    "full": "empty", "long": "short", "left": "right", "thick": "thin", "win": "lose", "push": "pull",
    "buy": "sell", "first": "last", "true": "false", "yes": "no", "top": "bottom", "love": "hate",
    "clean": "dirty", "near": "far", "inside": "outside", "before": "after", "north": "south", "east": "west",
    "cheap": "expensive", "alive": "dead", "question": "answer", "entrance": "exit", "always": "never",
    "accept": "reject", "arrive": "depart", "increase": "decrease", "maximum": "minimum", "young": "old",
    "smooth": "rough", "deep": "shallow", "wide": "narrow", "friend": "enemy", "remember": "forget", "tall": "short",
    "success": "failure", "war": "peace", "summer": "winter", "positive": "negative", "visible": "invisible",
    "possible": "impossible", "legal": "illegal", "agree": "disagree", "honest": "dishonest", "sunrise": "sunset",
    "major": "minor", "victory": "defeat", "import": "export",
}
PLURALS = {
    "cat": "cats", "dog": "dogs", "box": "boxes", "child": "children", "mouse": "mice", "man": "men",
    "woman": "women", "foot": "feet", "tooth": "teeth", "city": "cities", "baby": "babies", "knife": "knives",
    "leaf": "leaves", "bus": "buses", "church": "churches", "apple": "apples", "house": "houses", "car": "cars",
    "book": "books", "person": "people", "goose": "geese", "wolf": "wolves", "story": "stories", "dish": "dishes",
    "horse": "horses", "tree": "trees", "bird": "birds", "party": "parties", "glass": "glasses", "key": "keys",
    "toy": "toys", "hero": "heroes", "potato": "potatoes", "wife": "wives", "fox": "foxes", "ox": "oxen",
    "sheep": "sheep", "fish": "fish", "day": "days", "star": "stars", "cherry": "cherries", "lady": "ladies",
    "half": "halves", "loaf": "loaves", "life": "lives", "tomato": "tomatoes", "watch": "watches", "brush": "brushes",
    "dress": "dresses", "class": "classes", "boy": "boys", "monkey": "monkeys", "pen": "pens", "table": "tables",
    "chair": "chairs", "window": "windows", "door": "doors", "flower": "flowers", "girl": "girls", "deer": "deer",
}
# Tried and left out (SmolLM2-135M-Instruct at fp32, transformers, this prompt form): past tenses
# (2 of 40 right: it explains instead of answering), the next day or month (4 of 19), the next
# letter (1 of 25), number words in digits (11 of 21, many near misses: "11" for one): a family the
# model mostly gets wrong, or gets right by a hair, adds nothing but flips to a gate.


def chat_prompt(question: str, answer_start: str) -> str:
    """SmolLM2's chat template applied to one user turn, with the assistant's answer begun."""
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n{answer_start}")


def _families() -> dict[str, list[tuple[str, str, str]]]:
    """family -> [(question, answer start, answer)]"""
    return {
        "capital": [(f"What is the capital of {c}?", f"The capital of {c} is", a) for c, a in CAPITALS.items()],
        "opposite": [(f"What is the opposite of {w}?", f"The opposite of {w} is", a) for w, a in OPPOSITES.items()],
        "plural": [(f"What is the plural of {w}?", f"The plural of {w} is", a) for w, a in PLURALS.items()],
    }


def exact_match_tasks() -> list[dict[str, str]]:
    return [{"id": f"{family}:{i}", "prompt": chat_prompt(question, start), "answer": answer}
            for family, items in _families().items() for i, (question, start, answer) in enumerate(items)]


def main() -> None:
    import argparse

    from servesweep.models.stdlib_corpus import write_jsonl

    parser = argparse.ArgumentParser(description="write the real-LLM eval sets (pydoc prose, short answers)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for name, rows in [("pydoc-topics-perplexity.jsonl", perplexity_passages()),
                       ("instruct-short-answers.jsonl", exact_match_tasks())]:
        print(f"{args.out / name}: {len(rows)} rows, sha256 {write_jsonl(args.out / name, rows)}")


if __name__ == "__main__":
    main()
