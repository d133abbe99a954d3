"""``plates.csv`` and the screen file: what was set up in each plate and well.

Hit lists need the protein and the cocktail that grew a crystal, so the demo archive
carries both, made up but plausible (an HWI-like screen of salts, buffers, PEGs).
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from crystal_pipeline.wells import all_wells

PROTEINS = ("lysozyme", "thaumatin", "glucose_isomerase", "proteinase_k", "PfDHFR-TS", "TM1082",
            "SARS2-Mpro", "hsp90_nt", "BRD4-BD1", "endothiapepsin", "insulin", "ferritin")
SALTS = ("none", "sodium chloride", "ammonium sulfate", "magnesium chloride", "lithium sulfate",
         "sodium citrate", "potassium phosphate", "calcium acetate", "zinc acetate")
BUFFERS = (("sodium acetate", 4.6), ("sodium citrate", 5.5), ("MES", 6.0), ("Bis-Tris", 6.5),
           ("HEPES", 7.5), ("Tris", 8.0), ("Bicine", 9.0), ("CHES", 9.5))
PRECIPITANTS = (("PEG 3350", "% w/v"), ("PEG 8000", "% w/v"), ("PEG 400", "% v/v"), ("MPD", "% v/v"),
                ("ammonium sulfate", "M"), ("sodium malonate", "M"), ("2-propanol", "% v/v"))

PLATE_COLUMNS = ("plate_id", "protein", "screen", "barcode", "set_up_on")
SCREEN_COLUMNS = ("well", "cocktail", "pH", "buffer", "salt", "salt_conc_M", "precipitant", "precipitant_conc", "precipitant_unit")


def screen_name(plate_format: int) -> str:
    return f"synthetic_{plate_format}"


def plate_rows(plate_ids: list[str], plate_format: int, seed: int) -> list[dict[str, str]]:
    rng = np.random.default_rng([seed, 0x91A7E])
    start = dt.date(2015, 1, 5)
    return [
        {
            "plate_id": plate_id,
            "protein": PROTEINS[int(rng.integers(len(PROTEINS)))],
            "screen": screen_name(plate_format),
            "barcode": f"{int(rng.integers(10**9, 10**10)):010d}",
            "set_up_on": (start + dt.timedelta(days=3 * i + int(rng.integers(0, 3)))).isoformat(),
        }
        for i, plate_id in enumerate(plate_ids)
    ]


def screen_rows(plate_format: int) -> list[dict[str, str]]:
    """One cocktail per well; fixed per format, so every plate of a format shares it."""
    rng = np.random.default_rng([plate_format, 0x5C4EE])
    rows = []
    for n, well in enumerate(all_wells(plate_format), start=1):
        buffer, ph = BUFFERS[int(rng.integers(len(BUFFERS)))]
        precipitant, unit = PRECIPITANTS[int(rng.integers(len(PRECIPITANTS)))]
        salt = SALTS[int(rng.integers(len(SALTS)))]
        high = 3.0 if unit == "M" else 40.0
        rows.append({
            "well": well.name,
            "cocktail": f"C{n:04d}",
            "pH": f"{ph + rng.normal(0, 0.2):.1f}",
            "buffer": f"0.1 M {buffer}",
            "salt": salt,
            "salt_conc_M": "" if salt == "none" else f"{rng.uniform(0.05, 0.5):.2f}",
            "precipitant": precipitant,
            "precipitant_conc": f"{rng.uniform(0.1, 1.0) * high:.1f}",
            "precipitant_unit": unit,
        })
    return rows
