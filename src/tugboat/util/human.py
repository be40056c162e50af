"""Human-readable sizes and durations as docker prints them (go-units). No imports: the CLI loads
this on every ``tug ps``/``tug images``; engine, images and cluster code may use it too."""

from __future__ import annotations


def human_size(n: float) -> str:
    """docker's units.HumanSizeWithPrecision(n, 3): decimal units, 3 significant digits."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    n = float(n)
    while n >= 1000 and i < len(units) - 1:
        n /= 1000.0
        i += 1
    s = f"{n:.3g}"
    if "e" in s:
        s = f"{n:.0f}"
    return s + units[i]


def human_duration(seconds: float) -> str:
    """docker's units.HumanDuration: ``Less than a second``, ``2 seconds``, ``About a minute`` …"""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"
