"""`appliance usage report`: tokens and requests per key, group or model, from the audit log."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("report")
def report(
    start: Annotated[str, typer.Option("--from", help="First day (site time zone) or ISO time.")],
    end: Annotated[str, typer.Option("--to", help="Last day, included, or ISO time (excluded).")],
    by: Annotated[Literal["key", "group", "model"], typer.Option(help="Totals per key, group or model.")] = "key",
    fmt: Annotated[Literal["csv", "json"], typer.Option("--format", help="Output format.")] = "csv",
) -> None:
    """Requests and input, output and reasoning tokens over a period, summed from the audit log's outcome
    records; groups are those of the policy pack in force."""
    from appliance.audit import AuditLog
    from appliance.config import get_settings
    from appliance.policy.pack import PolicySet
    from appliance.usage.periods import site_zone
    from appliance.usage.report import bounds, render, usage_report

    settings = get_settings()
    since, until = bounds(start, end, site_zone(settings.site_timezone))
    with AuditLog.from_settings(settings) as log:
        rows = usage_report(log, PolicySet.from_settings(settings), by, since, until)
    typer.echo(render(rows, fmt, by, since, until), nl=False)
