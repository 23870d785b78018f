"""File-name label patterns: `--label-pattern "{label}_{speaker}_{take}"`.

A pattern is literal text with named fields in braces, matched against a file's name without
its extension (`0_george_12.wav` -> label "0", speaker "george", take "12"). Each field matches
one or more characters other than "/", the earlier fields as few as the whole match allows (so
in `{label}_{speaker}` the name `3_mary_ann` gives label "3", speaker "mary_ann"); `{}` matches
without keeping a value. `label` names the class; every other field becomes a per-item field of
the canonical dataset. A file whose name does not match is quarantined (kind `name_mismatch`)
with the pattern in the reason, so a stray file never stops an ingest; a pattern that matches no
file at all leaves nothing to ingest, which is an error naming the pattern.
"""

from __future__ import annotations

import re

from genforge.core.errors import ConfigError

_TOKEN = re.compile(r"\{([^{}]*)\}")
LABEL = "label"


class LabelPattern:
    def __init__(self, text: str):
        self.text = text
        parts: list[str] = []
        names: list[str] = []
        pos = 0
        for m in _TOKEN.finditer(text):
            parts.append(self._literal(text[pos : m.start()]))
            name = m.group(1).strip()
            if not name:
                parts.append(r"[^/]+?")
            elif not name.isidentifier():
                raise ConfigError(
                    f"label_pattern {text!r}: field {{{name}}} is not a name (letters, digits, _)"
                )
            elif name in names:
                raise ConfigError(f"label_pattern {text!r}: field {{{name}}} appears twice")
            else:
                names.append(name)
                parts.append(f"(?P<{name}>[^/]+?)")
            pos = m.end()
        parts.append(self._literal(text[pos:]))
        if not names:
            raise ConfigError(
                f"label_pattern {text!r}: no named field; write fields in braces, e.g. '{{label}}_{{speaker}}_{{take}}'"
            )
        self.fields = names  # in pattern order, `label` included when present
        self.regex = re.compile("".join(parts))

    def _literal(self, piece: str) -> str:
        if "{" in piece or "}" in piece:
            raise ConfigError(f"label_pattern {self.text!r}: unbalanced brace in {piece!r}")
        return re.escape(piece)

    @property
    def item_fields(self) -> list[str]:
        """The fields other than the label, kept per item."""
        return [n for n in self.fields if n != LABEL]

    def match(self, name: str) -> dict[str, str] | None:
        """Field values of file name `name` (its extension ignored), or None when it does not match."""
        dot = name.rfind(".")
        stem = name[:dot] if dot > 0 else name
        m = self.regex.fullmatch(stem)
        return None if m is None else m.groupdict()

    def mismatch(self, name: str) -> str:
        return f"file name {name!r} does not match --label-pattern {self.text!r}"
