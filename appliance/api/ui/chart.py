"""A small bar chart of records, denials and errors per hour (or day), drawn as SVG on the server: no
chart library, no script, and it shows with JavaScript off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape

WIDTH, HEIGHT, PAD = 720, 160, 24
SERIES = (("records", "#5b7fa6"), ("denials", "#c0392b"), ("errors", "#e67e22"))


def window(since: datetime | None, until: datetime | None, now: datetime) -> tuple[datetime, datetime, bool]:
    """The chart's span (the filter's, else the last 24 hours) and whether it is drawn per hour."""
    end = (until or now).astimezone(UTC) if (until or now).tzinfo else (until or now).replace(tzinfo=UTC)
    start = since or end - timedelta(hours=24)
    start = start.astimezone(UTC) if start.tzinfo else start.replace(tzinfo=UTC)
    return start, end, end - start <= timedelta(days=3)


def periods(start: datetime, end: datetime, hourly: bool) -> list[str]:
    """Every period label of the span, as the grouped query names them (`2026-12-01T10` or `2026-12-01`)."""
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    moment = start.replace(minute=0, second=0, microsecond=0)
    if not hourly:
        moment = moment.replace(hour=0)
    labels: list[str] = []
    while moment < end and len(labels) < 400:
        labels.append(moment.strftime("%Y-%m-%dT%H" if hourly else "%Y-%m-%d"))
        moment += step
    return labels


def svg(
    labels: list[str],
    rows: list[tuple],
    series: tuple[tuple[str, str], ...] = SERIES,
    what: str = "records, denials and errors",
) -> str:
    """Bars of each of `series` (name, colour) per label; `rows` are (label, *one count per series)."""
    counts = {row[0]: row[1:] for row in rows}
    values = [counts.get(label, (0,) * len(series)) for label in labels]
    top = max([v[0] for v in values] + [1])
    n = max(len(labels), 1)
    slot = (WIDTH - 2 * PAD) / n
    bar = max(slot / len(series) - 1, 1)
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
            f'height="{HEIGHT}" role="img" aria-label="{what} over time">'
        ),
        (f"<title>{what} per {'hour' if len(labels[0]) > 10 else 'day'} (highest: {top})</title>")
        if labels
        else "<title>no data</title>",
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>',
        f'<text x="{PAD}" y="{PAD - 8}" font-size="11" fill="#444">{top}</text>',
    ]
    for i, (label, value) in enumerate(zip(labels, values)):
        for j, ((name, color), count) in enumerate(zip(series, value)):
            h = (HEIGHT - 2 * PAD) * count / top
            x = PAD + i * slot + j * bar
            parts.append(
                f'<rect x="{x:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{color}"><title>{escape(label)}: {count} {name}</title></rect>'
            )
    if labels:
        parts.append(f'<text x="{PAD}" y="{HEIGHT - 6}" font-size="11" fill="#444">{escape(labels[0])}</text>')
        parts.append(
            f'<text x="{WIDTH - PAD}" y="{HEIGHT - 6}" font-size="11" fill="#444" '
            f'text-anchor="end">{escape(labels[-1])}</text>'
        )
    for k, (name, color) in enumerate(series):
        x = WIDTH - PAD - 80 * len(series) + k * 80
        parts.append(
            f'<rect x="{x}" y="6" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="15" font-size="11" fill="#444">{name}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
