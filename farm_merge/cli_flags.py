"""The command line's words for the library's: a library message names the parameters a
Python caller passes (``replace=True``, ``id_template='{stem}'``); the command line says the
flags that set them (``--replace``, ``--id-template '{stem}'``)."""

from __future__ import annotations

import re

#: The library's parameters that are flags here, as its messages name them.
FLAGGED = ("replace", "keep_copies", "include_active", "overwrite", "id_template", "format", "at", "experiment_id",
           "output")
_NAMES = "|".join(FLAGGED)
_WORDS = (
    (re.compile(rf"\b({_NAMES})=True\b"), lambda m: _flag(m[1])),                      # replace=True
    (re.compile(rf"\b({_NAMES})='([^'\s]*)'(?!:)"), lambda m: f"{_flag(m[1])} {m[2]}"),  # format='csv' as an example
    (re.compile(rf"\b({_NAMES})="), lambda m: f"{_flag(m[1])} "),                      # at='last': the value given
    (re.compile(r"(?<![\w.'\"-])(id_template|experiment_id)(?![\w.'\"])"), lambda m: _flag(m[1])),  # or pass id_template
    (re.compile(r"\bchoose another (output|port)\b"), lambda m: f"choose another {'with ' * (m[1] == 'port')}--{m[1]}"),
)


def _flag(parameter: str) -> str:
    return "--" + parameter.replace("_", "-")


def as_flags(message: str) -> str:
    """A library message in the command line's words: the parameters it names become the
    flags that set them (``replace=True`` is ``--replace``, ``at='x'`` is ``--at 'x'``)."""
    for pattern, word in _WORDS:
        message = pattern.sub(word, message)
    return message
