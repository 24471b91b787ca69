"""Numbers as a person reads them: floats to 4 significant digits, integers with thousands separators."""
from __future__ import annotations

import math
from numbers import Integral, Real

SIGNIFICANT = 4


def significant(x: float, digits: int = SIGNIFICANT) -> float:
    """`x` rounded to `digits` significant digits (0.835033129 -> 0.835, 1234.5678 -> 1235.0)."""
    if not math.isfinite(x) or x == 0:
        return float(x)
    return round(float(x), digits - 1 - math.floor(math.log10(abs(x))))


def rounded(value):
    """`value` with every float inside (dicts, lists, tuples) rounded to 4 significant digits; numpy
    scalars become Python numbers, booleans and integers stay as they are."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return significant(float(value))
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def cell(value) -> str:
    """A table cell: 1,234,567; 0.8350; 12.35; 1,235 (floats of 1,000 and more lose their decimals)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, Integral):
        return f"{int(value):,}"
    if isinstance(value, Real):
        x = significant(float(value))
        if not math.isfinite(x):
            return str(x)
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.{SIGNIFICANT}g}"
    return str(value)
