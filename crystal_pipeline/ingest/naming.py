"""What an imager's file name says: well, drop, and optionally plate and inspection.

The default naming is the archive's own, ``<well>[<sep><drop>]`` with the well as
``A01``, column-first ``01A`` or a row-major number, and the drop separated by ``_``
(canonical), ``-``, ``.`` or ``d`` (``A01_2``, ``A01-2``, ``A01.2``, ``A01d2``); no drop
means drop 1. A lab whose imager names files its own way sets one regular expression
(``CRYSTAL_FILENAME_PATTERN``, read by :class:`crystal_pipeline.layout.DataLayout`
only) over the file name without its extension, with named groups among ``plate``,
``well``, ``drop``, ``inspection``, ``imaging`` (``well`` required), or the name of a preset in
:data:`PRESETS`. ``imaging`` says which light took the picture: ``uv`` (or ``UV``) for a UV
picture, ``vis``/``visible`` or an empty group for white light; the presets read the archive's
own ``<well>[_<drop>].uv`` (a UV picture beside its visible ``<well>[_<drop>]``). Every entry point (raw archive ingest, the plate sensor's plate
folders, ``crystal-pipeline label``) parses names through :meth:`FileNaming.parse`.

A plate id or an inspection becomes a folder name under ``reports/plates/`` and half of
a partition key ``<plate>@<inspection>``, so every one, whether it comes from a folder
name or from the pattern's groups, passes :func:`check_name_part` first: no path
separator, no ``.`` or ``..``, no ``@``, no control character, at most
:data:`MAX_NAME_LENGTH` characters. A bad one is an :class:`InvalidName` with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUPS = ("plate", "well", "drop", "inspection", "imaging")
_WELL = r"(?P<well>[A-Za-z]{1,2}0*\d{1,2}|0*\d{1,2}[A-Za-z]{1,2}|\d{1,6})"
#: The archive's UV suffix after the well and drop (``A01_2.uv.png``): the file's imaging mode.
_IMAGING = r"(?:\.(?P<imaging>[uU][vV]))?"

#: Imaging modes of ``images.imaging``: white light (every archive has it) and UV fluorescence.
VISIBLE, UV = "visible", "uv"
IMAGING_MODES = (VISIBLE, UV)
_IMAGING_WORDS = {"": VISIBLE, "vis": VISIBLE, "visible": VISIBLE, "uv": UV}

#: Named patterns for common exports. ``well_drop`` is the default. ``plate_well_drop`` reads
#: ``<plate>_<well>_<drop>`` names such as the Diamond (DLS) sample ``97wo_01A_1`` (plate 97wo,
#: well A01 written column-first, drop 1), with any prefix before the plate (``dls_echo_97wo_01A_1``).
PRESETS: dict[str, str] = {
    "well_drop": rf"{_WELL}(?:(?:[_.\-]|[dD])(?P<drop>\d{{1,2}}))?{_IMAGING}",
    "plate_well_drop": rf"(?:.*_)?(?P<plate>[^_]+)_{_WELL}_(?P<drop>\d{{1,2}}){_IMAGING}",
}
DEFAULT_PRESET = "well_drop"


class InvalidName(ValueError):
    """A file name the naming cannot read (the file is quarantined with this reason)."""


class RefusedName(InvalidName):
    """A plate id or inspection that must never become a folder or a key (``..``, ``x@y``)."""


#: The longest plate id or inspection accepted (a folder name and half a partition key).
MAX_NAME_LENGTH = 96
#: Separates the plate id from the inspection in a partition key (``P0001@day3``).
KEY_SEPARATOR = "@"


def name_part_problem(kind: str, value: str) -> str | None:
    """Why ``value`` cannot be a ``kind`` (``plate id``, ``inspection``), or None when it can.

    Checked wherever a name enters from outside (folder names, pattern groups): a
    name that is a path step (``..``), holds a path separator, the key separator or a
    control character, or is unbounded would let a report leave its folder or make
    a partition key ambiguous.
    """
    if not value or not value.strip():
        return f"empty {kind}"
    if len(value) > MAX_NAME_LENGTH:
        return f"{kind} {value[:20]!r}... is {len(value)} characters long (at most {MAX_NAME_LENGTH})"
    if value in (".", ".."):
        return f"{kind} {value!r} is a path step"
    if "/" in value or "\\" in value:
        return f"{kind} {value!r} holds a path separator"
    if KEY_SEPARATOR in value:
        return f"{kind} {value!r} holds {KEY_SEPARATOR!r}, the separator of <plate>{KEY_SEPARATOR}<inspection> keys"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"{kind} {value!r} holds a control character"
    return None


def check_name_part(kind: str, value: str) -> str:
    """``value`` when :func:`name_part_problem` finds nothing, else InvalidName with the reason."""
    problem = name_part_problem(kind, value)
    if problem:
        raise RefusedName(problem)
    return value


@dataclass(frozen=True)
class NameParts:
    """What a file name says. ``well`` is the raw text (``01A``, ``13``): the plate's format
    decides what it means (:func:`crystal_pipeline.wells.parse_well`)."""

    well: str
    drop: int = 1
    plate: str | None = None
    inspection: str | None = None
    imaging: str = VISIBLE


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
        plate, inspection = parts.get("plate") or None, parts.get("inspection") or None
        try:
            if plate is not None:
                check_name_part("plate id", plate)
            if inspection is not None:
                check_name_part("inspection", inspection)
        except RefusedName as error:
            raise RefusedName(f"{stem!r}: {error}") from None
        imaging = _IMAGING_WORDS.get((parts.get("imaging") or "").strip().lower())
        if imaging is None:
            raise InvalidName(f"{stem!r}: imaging {parts['imaging']!r} is none of uv, vis, visible")
        return NameParts(well=parts["well"], drop=int(drop_text) if drop_text else 1,
                         plate=plate, inspection=inspection, imaging=imaging)


DEFAULT_NAMING = FileNaming.from_setting(None)
