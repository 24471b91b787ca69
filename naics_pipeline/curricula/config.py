"""Curriculum YAML files (the guide's format), their validation, and the stage plan."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PLAN_FILE = "stages.yaml"
# A stage's `text` mapping makes it a text-alignment stage (naics_pipeline.training.text_alignment).
TEXT_KEYS = {"encoder": str, "hidden_dim": int, "temperature": float, "weight": float, "hard_weight": float,
             "encoder_learning_rate": float, "max_tokens": int, "move_codes": bool}
TEXT_ENCODERS = ("auto", "frozen", "finetune")
KEYS = {"name", "description", "positive_levels", "positive_distance_min", "positive_distance_max",
        "max_positives", "difficulty_buckets", "bucket_percentages", "k_negatives", "mix"}
REQUIRED = {"name", "positive_levels", "difficulty_buckets", "bucket_percentages", "k_negatives"}
# How bucket_percentages is read. per_pair (the guide's): each pair splits its K negatives by the
# shares, a bucket short of candidates falls back to easier levels. global: the shares hold over the
# epoch's negatives, pairs being drawn by the buckets they can supply (see curricula/mix_plan.py).
MIX_MODES = ("per_pair", "global")


class CurriculumError(ValueError):
    """An invalid curriculum or plan; the message names the file and field."""


@dataclass(frozen=True)
class Curriculum:
    name: str
    positive_levels: tuple[int, ...]
    difficulty_buckets: tuple[int, ...]
    bucket_percentages: dict[int, float]
    k_negatives: int
    positive_distance_min: float | None = None
    positive_distance_max: float | None = None
    max_positives: int | None = None
    mix: str = "per_pair"
    description: str = ""
    path: Path | None = field(default=None, compare=False)

    def allocation(self) -> dict[int, int]:
        """K split across buckets by bucket_percentages, largest remainder (ties: harder bucket first)."""
        exact = {h: self.bucket_percentages[h] * self.k_negatives for h in self.difficulty_buckets}
        alloc = {h: math.floor(v + 1e-9) for h, v in exact.items()}
        left = self.k_negatives - sum(alloc.values())
        for h in sorted(exact, key=lambda h: (-(exact[h] - alloc[h]), -h))[:left]:
            alloc[h] += 1
        return alloc

    def to_dict(self) -> dict:
        return {"name": self.name, "positive_levels": list(self.positive_levels),
                "positive_distance_min": self.positive_distance_min,
                "positive_distance_max": self.positive_distance_max, "max_positives": self.max_positives,
                "difficulty_buckets": list(self.difficulty_buckets),
                "bucket_percentages": {int(k): v for k, v in self.bucket_percentages.items()},
                "k_negatives": self.k_negatives, "mix": self.mix}


@dataclass(frozen=True)
class Stage:
    name: str            # stage_1, stage_2, ...
    curriculum: Curriculum
    epochs: int
    text: dict | None = None   # a text-alignment stage: its settings (TEXT_KEYS), {} for the defaults


def _fail(path, field_name, msg):
    raise CurriculumError(f"{path}: field '{field_name}': {msg}")


def _number_or_null(path, key, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        _fail(path, key, f"must be a number or null, got {value!r}")
    return None if value is None else float(value)


def parse_curriculum(data, path: Path | str = "<curriculum>") -> Curriculum:
    if not isinstance(data, dict):
        raise CurriculumError(f"{path}: expected a mapping of curriculum fields, got {type(data).__name__}")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        _fail(path, unknown[0], f"unknown key (allowed: {', '.join(sorted(KEYS))})")
    for key in sorted(REQUIRED - set(data)):
        _fail(path, key, "is required")
    name = data["name"]
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        _fail(path, "name", f"must be letters, digits and underscores, got {name!r}")
    levels = data["positive_levels"]
    if not isinstance(levels, list) or not levels or any(not isinstance(v, int) or not 2 <= v <= 6 for v in levels):
        _fail(path, "positive_levels", f"must be a non-empty list of levels 2..6, got {levels!r}")
    buckets = data["difficulty_buckets"]
    if not isinstance(buckets, list) or not buckets or len(set(buckets)) != len(buckets):
        _fail(path, "difficulty_buckets", f"must be a non-empty list without repeats, got {buckets!r}")
    for b in buckets:
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 8:
            _fail(path, "difficulty_buckets", f"bucket {b!r} is outside hardness 1..8")
    pct = data["bucket_percentages"]
    if not isinstance(pct, dict):
        _fail(path, "bucket_percentages", "must be a mapping bucket -> share")
    pct = {int(k) if str(k).isdigit() else k: v for k, v in pct.items()}
    if set(pct) != set(buckets):
        _fail(path, "bucket_percentages",
              f"keys {sorted(pct, key=str)} differ from difficulty_buckets {sorted(buckets)}")
    for b, v in pct.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            _fail(path, "bucket_percentages", f"share for bucket {b} must be a number >= 0, got {v!r}")
    total = sum(pct.values())
    if abs(total - 1.0) > 1e-6:
        _fail(path, "bucket_percentages", f"shares sum to {total:.6f}, not 1")
    k = data["k_negatives"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        _fail(path, "k_negatives", f"must be an integer >= 1, got {k!r}")
    dmin = _number_or_null(path, "positive_distance_min", data.get("positive_distance_min"))
    dmax = _number_or_null(path, "positive_distance_max", data.get("positive_distance_max"))
    if dmin is not None and dmax is not None and dmin > dmax:
        _fail(path, "positive_distance_min", f"{dmin} is greater than positive_distance_max {dmax}")
    maxp = data.get("max_positives")
    if maxp is not None and (isinstance(maxp, bool) or not isinstance(maxp, int) or maxp < 1):
        _fail(path, "max_positives", f"must be an integer >= 1 or null, got {maxp!r}")
    mix = data.get("mix", "per_pair")
    if mix not in MIX_MODES:
        _fail(path, "mix", f"must be one of {', '.join(MIX_MODES)}, got {mix!r}")
    return Curriculum(name=name, positive_levels=tuple(sorted(levels)), difficulty_buckets=tuple(sorted(buckets)),
                      bucket_percentages={b: float(pct[b]) for b in sorted(buckets)}, k_negatives=k,
                      positive_distance_min=dmin, positive_distance_max=dmax, max_positives=maxp,
                      mix=mix, description=str(data.get("description", "")), path=Path(path))


def load_curriculum(path: Path) -> Curriculum:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise CurriculumError(f"{path}: not valid YAML: {exc}") from exc
    return parse_curriculum(data, path)


def curriculum_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*.y*ml") if p.name != PLAN_FILE)


def load_curricula(folder: Path) -> dict[str, Curriculum]:
    out: dict[str, Curriculum] = {}
    for path in curriculum_files(folder):
        c = load_curriculum(path)
        if c.name in out:
            raise CurriculumError(f"{path}: field 'name': duplicate curriculum name {c.name!r} "
                                  f"(also in {out[c.name].path})")
        out[c.name] = c
    return out


def load_plan(folder: Path, curricula: dict[str, Curriculum] | None = None) -> list[Stage]:
    folder = Path(folder)
    curricula = load_curricula(folder) if curricula is None else curricula
    path = folder / PLAN_FILE
    if not path.is_file():  # default: every curriculum in file order, one stage each
        return [Stage(f"stage_{i}", c, 5) for i, c in enumerate(curricula.values(), start=1)]
    data = yaml.safe_load(path.read_text()) or {}
    entries = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise CurriculumError(f"{path}: field 'stages': must be a non-empty list")
    stages = []
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or set(entry) - {"curriculum", "epochs", "text"}:
            raise CurriculumError(f"{path}: field 'stages[{i - 1}]': expected keys curriculum, epochs, text")
        name = entry.get("curriculum")
        if name not in curricula:
            raise CurriculumError(f"{path}: field 'stages[{i - 1}].curriculum': unknown curriculum {name!r}")
        epochs = entry.get("epochs", 5)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise CurriculumError(f"{path}: field 'stages[{i - 1}].epochs': must be an integer >= 1")
        text = _text_settings(path, f"stages[{i - 1}].text", entry["text"]) if "text" in entry else None
        stages.append(Stage(f"stage_{i}", curricula[name], epochs, text))
    return stages


def _text_settings(path: Path, where: str, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CurriculumError(f"{path}: field '{where}': must be a mapping of {', '.join(sorted(TEXT_KEYS))}")
    for key, v in value.items():
        kind = TEXT_KEYS.get(key)
        if kind is None:
            allowed = ", ".join(sorted(TEXT_KEYS))
            raise CurriculumError(f"{path}: field '{where}.{key}': unknown key (allowed: {allowed})")
        wrong = not isinstance(v, bool) if kind is bool else (
            isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else kind))
        if wrong:
            raise CurriculumError(f"{path}: field '{where}.{key}': must be {kind.__name__}, got {v!r}")
    if value.get("encoder", "auto") not in TEXT_ENCODERS:
        raise CurriculumError(f"{path}: field '{where}.encoder': must be one of {', '.join(TEXT_ENCODERS)}")
    return dict(value)


def plan_warnings(stages: list[Stage]) -> list[str]:
    """The guide's anti-patterns: exclusions in the first stage, equal weights across buckets."""
    out = []
    if stages and 8 in stages[0].curriculum.difficulty_buckets:
        out.append(f"{stages[0].curriculum.name}: hardness 8 (exclusions) in the first stage; the guide "
                   "advises the final stage only")
    for s in stages:
        out += [w for w in curriculum_warnings(s.curriculum)]
    return out


def curriculum_warnings(c: Curriculum) -> list[str]:
    shares = list(c.bucket_percentages.values())
    if len(shares) > 2 and max(shares) - min(shares) < 0.02:
        return [f"{c.name}: equal weights across buckets {list(c.difficulty_buckets)}; the guide calls this an "
                "anti-pattern (it forces rare hard negatives)"]
    return []
