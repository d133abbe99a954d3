"""What an imager's file name says: well, drop, and optionally plate and inspection.

The default naming is the archive's own, ``<well>[<sep><drop>]`` with the well as
``A01``, column-first ``01A`` or a row-major number, and the drop separated by ``_``
(canonical), ``-``, ``.`` or ``d`` (``A01_2``, ``A01-2``, ``A01.2``, ``A01d2``); no drop
means drop 1. A lab whose imager names files its own way sets one regular expression
(``CRYSTAL_FILENAME_PATTERN``, read by :class:`crystal_pipeline.layout.DataLayout`
only) over the file name without its extension, with named groups among ``plate``,
``well``, ``drop``, ``inspection`` (``well`` required), or the name of a preset in
:data:`PRESETS`. Every entry point (raw archive ingest, the plate sensor's plate
folders, ``crystal-pipeline label``) parses names through :meth:`FileNaming.parse`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUPS = ("plate", "well", "drop", "inspection")
_WELL = r"(?P<well>[A-Za-z]{1,2}0*\d{1,2}|0*\d{1,2}[A-Za-z]{1,2}|\d{1,6})"

#: Named patterns for common exports. ``well_drop`` is the default. ``plate_well_drop`` reads
#: ``<plate>_<well>_<drop>`` names such as the Diamond (DLS) sample ``97wo_01A_1`` (plate 97wo,
#: well A01 written column-first, drop 1), with any prefix before the plate (``dls_echo_97wo_01A_1``).
PRESETS: dict[str, str] = {
    "well_drop": rf"{_WELL}(?:(?:[_.\-]|[dD])(?P<drop>\d{{1,2}}))?",
    "plate_well_drop": rf"(?:.*_)?(?P<plate>[^_]+)_{_WELL}_(?P<drop>\d{{1,2}})",
}
DEFAULT_PRESET = "well_drop"


class InvalidName(ValueError):
    """A file name the naming cannot read (the file is quarantined with this reason)."""


@dataclass(frozen=True)
class NameParts:
    """What a file name says. ``well`` is the raw text (``01A``, ``13``): the plate's format
    decides what it means (:func:`crystal_pipeline.wells.parse_well`)."""

    well: str
    drop: int = 1
    plate: str | None = None
    inspection: str | None = None


@dataclass(frozen=True)
class FileNaming:
    """A compiled naming: a preset or a lab's own pattern, and the label to cite in errors."""

    pattern: re.Pattern
    label: str

    @classmethod
    def from_setting(cls, setting: str | None) -> "FileNaming":
        """The naming for a setting value: empty -> the default, a preset name, else a pattern.

        Raises ValueError with what is wrong (bad regex, no ``well`` group, an unknown
        group name) so a mistyped setting fails loudly before any file is quarantined.
        """
        setting = (setting or "").strip()
        if not setting:
            setting = DEFAULT_PRESET
        if setting in PRESETS:
            return cls(re.compile(PRESETS[setting]), f"preset {setting}")
        try:
            pattern = re.compile(setting)
        except re.error as error:
            raise ValueError(f"CRYSTAL_FILENAME_PATTERN {setting!r} is not a regular expression ({error}) "
                             f"nor a preset ({', '.join(sorted(PRESETS))})") from None
        groups = set(pattern.groupindex)
        if "well" not in groups:
            raise ValueError(f"CRYSTAL_FILENAME_PATTERN {setting!r} has no named group 'well'")
        unknown = groups - set(GROUPS)
        if unknown:
            raise ValueError(f"CRYSTAL_FILENAME_PATTERN {setting!r} has group(s) {sorted(unknown)}; "
                             f"allowed: {', '.join(GROUPS)}")
        return cls(pattern, f"pattern {setting!r}")

    @property
    def names_plate(self) -> bool:
        return "plate" in self.pattern.groupindex

    def parse(self, stem: str) -> NameParts:
        """The parts of a file name without its extension; InvalidName when it does not match."""
        m = self.pattern.fullmatch(stem.strip())
        if m is None:
            if self.label == f"preset {DEFAULT_PRESET}":  # the words archives were quarantined with before
                raise InvalidName(f"not a well name: {stem!r}")
            raise InvalidName(f"{stem!r} does not match the file naming ({self.label})")
        parts = m.groupdict()
        drop_text = parts.get("drop")
        if drop_text and not (drop_text.isdigit() and int(drop_text) >= 1):
            raise InvalidName(f"{stem!r}: drop {drop_text!r} is not a number from 1")
        return NameParts(well=parts["well"], drop=int(drop_text) if drop_text else 1,
                         plate=parts.get("plate") or None, inspection=parts.get("inspection") or None)


DEFAULT_NAMING = FileNaming.from_setting(None)
