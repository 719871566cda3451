"""``ccledger``: the root command, shared options, and the refresh-then-report flow."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from ccledger.bootstrap import App
    from ccledger.sources.transcript_files import RefreshStats

app = typer.Typer(
    name="ccledger",
    help="See and control what Claude Code costs: a priced ledger of every request, reports, a gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


class _State:
    db: str | None = None
    paths: list[Path] = []  # noqa: RUF012 - a per-process singleton
    verbose: bool = False
    refresh: bool = True


state = _State()


@app.callback()
def _root(
    db: Annotated[Optional[str], typer.Option("--db", help="Store URL (sqlite:///… or postgresql://…); env CCLEDGER_DB.")] = None,  # noqa: E501, UP045
    path: Annotated[Optional[list[Path]], typer.Option("--path", help="Another folder of Claude Code transcripts (repeatable).")] = None,  # noqa: E501, UP045
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List skipped lines (file:line) and unreadable files.")] = False,  # noqa: E501
    no_refresh: Annotated[bool, typer.Option("--no-refresh", help="Report from the ledger without reading new transcript lines.")] = False,  # noqa: E501
) -> None:
    state.db = db
    state.paths = list(path or [])
    state.verbose = verbose
    state.refresh = not no_refresh


def make_app() -> App:
    from ccledger.bootstrap import bootstrap
    from ccledger.core.pricing import PriceBookError
    from ccledger.settings import Settings

    settings = Settings()
    if state.db:
        settings.db = state.db
    settings.extra_paths = list(state.paths)
    try:
        return bootstrap(settings)
    except PriceBookError as exc:
        err_console().print(f"[red]error:[/red] price book: {exc}")
        raise typer.Exit(2) from None


def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def refresh_ledger(app_: App) -> RefreshStats | None:
    """Read new transcript lines into the ledger (unless ``--no-refresh``; then ``--verbose`` still lists
    the lines skipped so far)."""
    if not state.refresh:
        if state.verbose:
            from ccledger.cli.flow import list_skipped_lines

            list_skipped_lines(app_, None, err_console())
        return None
    from ccledger.cli.flow import refresh_ledger as run_refresh

    return run_refresh(app_, err_console(), verbose=state.verbose)


# --- reports -------------------------------------------------------------------------------------------

SinceOpt = Annotated[Optional[str], typer.Option("--since", help="First day (YYYY-MM-DD or YYYYMMDD), inclusive.")]  # noqa: E501, UP045
UntilOpt = Annotated[Optional[str], typer.Option("--until", help="Last day (YYYY-MM-DD or YYYYMMDD), inclusive.")]  # noqa: E501, UP045
TzOpt = Annotated[Optional[str], typer.Option("--tz", help="IANA time zone for day boundaries (default: local).")]  # noqa: E501, UP045
ProjectOpt = Annotated[Optional[str], typer.Option("--project", help="Only projects whose path contains this.")]  # noqa: E501, UP045
BreakdownOpt = Annotated[bool, typer.Option("--breakdown", "-b", help="One row per model in each period.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON (see README).")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="CSV, one row per period (and model with --breakdown).")]


def _parse_day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    from ccledger.cli.flow import parse_day

    try:
        return parse_day(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD or YYYYMMDD)", param_hint=name) from None  # noqa: E501


def _options(since, until, tz, project, breakdown, as_json, as_csv):  # type: ignore[no-untyped-def]
    from ccledger.cli.reports import ReportOptions

    if as_json and as_csv:
        raise typer.BadParameter("choose one of --json and --csv")
    if tz:
        from ccledger.core.periods import get_zone

        try:
            get_zone(tz)
        except Exception:
            raise typer.BadParameter(f"unknown time zone {tz!r}", param_hint="--tz") from None
    first, last = _parse_day(since, "--since"), _parse_day(until, "--until")
    if first and last and first > last:
        raise typer.BadParameter(f"--since {first} is after --until {last}")
    return ReportOptions(
        since=first, until=last, tz=tz, project=project, breakdown=breakdown, json=as_json, csv=as_csv,
    )


def _console() -> Console:
    from rich.console import Console

    return Console()


def _period_command(period: str):  # type: ignore[no-untyped-def]
    def command(
        since: SinceOpt = None, until: UntilOpt = None, tz: TzOpt = None, project: ProjectOpt = None,
        breakdown: BreakdownOpt = False, as_json: JsonOpt = False, as_csv: CsvOpt = False,
    ) -> None:
        from ccledger.cli.reports import run_period_report

        opts = _options(since, until, tz, project, breakdown, as_json, as_csv)
        a = make_app()
        refresh_ledger(a)
        run_period_report(a, period, opts, _console())  # type: ignore[arg-type]

    command.__doc__ = f"Cost and tokens per {'day' if period == 'daily' else period[:-2]}."
    return command


app.command("daily")(_period_command("daily"))
app.command("weekly")(_period_command("weekly"))
app.command("monthly")(_period_command("monthly"))


@app.command("session")
def session_cmd(
    since: SinceOpt = None, until: UntilOpt = None, tz: TzOpt = None, project: ProjectOpt = None,
    breakdown: BreakdownOpt = False, as_json: JsonOpt = False, as_csv: CsvOpt = False,
) -> None:
    """Cost and tokens per Claude Code session (subagents folded into their parent)."""
    from ccledger.cli.reports import run_session_report

    opts = _options(since, until, tz, project, breakdown, as_json, as_csv)
    a = make_app()
    refresh_ledger(a)
    run_session_report(a, opts, _console())


@app.command("blocks")
def blocks_cmd(
    since: SinceOpt = None, until: UntilOpt = None, tz: TzOpt = None, project: ProjectOpt = None,
    breakdown: BreakdownOpt = False, as_json: JsonOpt = False, as_csv: CsvOpt = False,
    active: Annotated[bool, typer.Option("--active", help="Only the active block, with burn rate and projection.")] = False,  # noqa: E501
    token_limit: Annotated[Optional[int], typer.Option("--token-limit", min=1, help="Show the share of this many tokens used per block.")] = None,  # noqa: E501, UP045
) -> None:
    """The 5-hour usage windows subscribers are limited by: active block, burn rate, projected cost."""
    from ccledger.cli.reports import run_blocks_report

    opts = _options(since, until, tz, project, breakdown, as_json, as_csv)
    a = make_app()
    refresh_ledger(a)
    run_blocks_report(a, opts, _console(), active=active, token_limit=token_limit)


@app.command("cost")
def cost_cmd(
    session: Annotated[Optional[str], typer.Argument(help="Session id or prefix (default: the latest).")] = None,  # noqa: E501, UP045
) -> None:
    """The `/cost` block Claude Code prints, for any session."""
    from ccledger.cli.reports import run_cost

    a = make_app()
    refresh_ledger(a)
    run_cost(a, session, _console())


@app.command("refresh")
def refresh_cmd() -> None:
    """Read new transcript lines into the ledger without printing a report."""
    a = make_app()
    stats = refresh_ledger(a)
    if stats is not None:
        err_console().print(
            f"read {stats.bytes_read:,} bytes from {stats.files_read} of {stats.files_seen} file(s); "
            f"{stats.records:,} request line(s) kept; ledger holds {a.ledger.count():,} request(s)",
            soft_wrap=True,
        )


# --- price book ------------------------------------------------------------------------------------------


@app.command("prices")
def prices_cmd(
    as_json: JsonOpt = False,
    model: Annotated[Optional[str], typer.Argument(help="Show how one model id resolves.")] = None,  # noqa: UP045
) -> None:
    """List the price book (USD per million tokens), or resolve one model id.

    Override or add models and a contract multiplier in ~/.config/ccledger/prices.toml (same format as the
    shipped book; `multiplier = "0.85"`), or point CCLEDGER_PRICE_FILES at other files. Then run
    `ccledger reprice`.
    """
    from ccledger.cli.prices import print_prices

    a = make_app()
    print_prices(a, _console(), as_json=as_json, model=model)


@app.command("reprice")
def reprice_cmd() -> None:
    """Recompute every stored cost from raw token counts (after editing a price file)."""
    a = make_app()
    seen, changed = a.ledger.reprice(a.book)
    err_console().print(f"repriced {seen:,} record(s); {changed:,} changed")


def _register_optional() -> None:
    """Sub-commands from other modules: gateway and identity/limit administration."""
    from ccledger.cli import admin, gateway_cmd

    app.command("gateway")(gateway_cmd.gateway)
    app.add_typer(admin.users_app, name="users")
    app.add_typer(admin.groups_app, name="groups")
    app.add_typer(admin.keys_app, name="keys")
    app.add_typer(admin.limits_app, name="limits")


try:
    _register_optional()
except ImportError as _exc:  # pragma: no cover - only while a module is being written
    print(f"ccledger: optional commands unavailable: {_exc}", file=sys.stderr)


def run() -> None:
    app()
