"""Attribute perturbation: the caption with one attribute flipped, as a hard negative.

Only attributes whose measured tag is known for the segment and whose words occur in the caption can
be flipped: "A deep, low-pitched voice" of a segment tagged pitch=low becomes "A bright, high-pitched
voice" (each word replaced by the word at the same position in another value's list). Which tags
exist is read from the shards, so a tag added to the contract (gender) is used once the lexicon
has words for it.
"""

from __future__ import annotations

import random
import re


def _pattern(words: list[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])({alternatives})(?![\w-])", re.IGNORECASE)


class Perturber:
    def __init__(self, lexicon: dict[str, dict[str, list[str]]], tag_names: tuple[str, ...]) -> None:
        self.lexicon = {name: values for name, values in lexicon.items() if name in tag_names}
        self._patterns = {
            (name, value): _pattern(words)
            for name, values in self.lexicon.items()
            for value, words in values.items()
        }

    def candidates(self, text: str, tags: dict[str, str | None]) -> list[str]:
        """Tags that can be flipped in this caption."""
        return [
            name
            for name, values in self.lexicon.items()
            if tags.get(name) in values and self._patterns[name, tags[name]].search(text)  # type: ignore[index]
        ]

    def perturb(self, text: str, tags: dict[str, str | None], rng: random.Random) -> str | None:
        options = self.candidates(text, tags)
        if not options:
            return None
        name = rng.choice(options)
        values = self.lexicon[name]
        current = tags[name]
        assert current is not None
        target = rng.choice(sorted(v for v in values if v != current))
        source_words, target_words = values[current], values[target]

        def swap(match: re.Match[str]) -> str:
            word = match.group(1)
            index = [w.lower() for w in source_words].index(word.lower())
            replacement = target_words[index % len(target_words)]
            return replacement.capitalize() if word[0].isupper() else replacement

        return self._patterns[name, current].sub(swap, text)
