"""Search text as shoppers type it: words from the category's vocabulary, shuffled, misspelt.

A query names what the shopper has in mind: usually a facet and a product
noun ("trail shoes"), sometimes only the noun ("sneakers"), sometimes with a
modifier ("waterproof trail shoes"). People type words in any order and make
typos, so the model's hashed word and character n-gram features have to
cope with both, as they must in a real shop.
"""

from __future__ import annotations

import random

from model_export.simulator.catalogue import Catalogue

TYPO_RATE = 0.12  # share of queries with a misspelt word (of four letters or more)
SHUFFLE_RATE = 0.25
MODIFIER_RATE = 0.2

# Neighbouring keys on a QWERTY keyboard: the commonest substitution typos.
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEAR: dict[str, str] = {}
for _row in _ROWS:
    for _i, _ch in enumerate(_row):
        _NEAR[_ch] = _row[max(0, _i - 1):_i] + _row[_i + 1:_i + 2]


def typo(word: str, rng: random.Random) -> str:
    """The word with one typical typing mistake: swap, drop, double or hit a neighbour key."""
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.random()
    if kind < 0.3:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind < 0.55:
        return word[:i] + word[i + 1:]
    if kind < 0.75:
        return word[:i] + word[i] + word[i:]
    near = _NEAR.get(word[i])
    return word[:i] + near[rng.randrange(len(near))] + word[i + 1:] if near else word


def search_text(catalogue: Catalogue, department: int, facet: int | None,
                rng: random.Random, noun: str | None = None) -> str:
    """A query for a facet of a department (``facet`` None: a broad query for the department).

    ``noun`` pins the product noun, e.g. when a shopper searches for an item
    they bought before; otherwise a noun of the department is picked.
    """
    dep = catalogue.departments[department]
    words = [noun or dep.nouns[rng.randrange(len(dep.nouns))]]
    if facet is not None:
        words.insert(0, catalogue.facets[facet][1])
    if rng.random() < MODIFIER_RATE:
        words.insert(rng.randrange(len(words) + 1), dep.modifiers[rng.randrange(
            len(dep.modifiers))])
    if len(words) > 1 and rng.random() < SHUFFLE_RATE:
        rng.shuffle(words)
    text = " ".join(words)
    if rng.random() < TYPO_RATE:
        parts = text.split(" ")
        j = rng.randrange(len(parts))
        parts[j] = typo(parts[j], rng)
        text = " ".join(parts)
    return text
