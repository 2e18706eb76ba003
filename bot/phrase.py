"""A sentence in the bot's own words with names from a database in it, kept apart until it is drawn.

The domain writes a :class:`Phrase` (plain text: a ``str.format`` template and the names to put in it);
:func:`bot.render.common.phrase` draws it as mrkdwn with every name in a code span (escaped there, in
``bot/render/`` only), and :attr:`Phrase.plain` is the same sentence as plain text (a stored outcome's
detail, escaped where it is drawn). A leaf module: it imports nothing of the bot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phrase:
    template: str  # the bot's words; {key} where a name goes (literal braces doubled)
    names: tuple[tuple[str, str], ...] = ()  # (key, the name as the database gave it)

    @classmethod
    def of(cls, template: str, **names: str) -> Phrase:
        return cls(template, tuple(names.items()))

    @classmethod
    def words(cls, text: str) -> Phrase:
        """The bot's own mrkdwn with no name from a database in it (a policy refusal)."""
        return cls(text.replace("{", "{{").replace("}", "}}"))

    @property
    def plain(self) -> str:
        """The sentence as plain text, each name in backticks as typed (escaped where it is drawn)."""
        return self.template.format(**{k: f"`{v}`" for k, v in self.names})

    def __str__(self) -> str:
        # never put a Phrase into a text as it is (its names would be unescaped, or its repr shown):
        # bot.render.common.phrase draws it, .plain is its plain text
        raise TypeError("a Phrase is drawn by bot.render.common.phrase (or read as .plain), never str()")

    def __format__(self, spec: str) -> str:  # f"{phrase}" fails the same way
        return self.__str__()

