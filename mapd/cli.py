"""The ``mapd`` command line.

Exit status: 0 success; 1 the command ran but something failed (a file
failed to ingest, a check did not pass); 2 a usage or configuration error;
3 the database cannot be started or reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path

from . import __version__
from .config import ConfigError, MapdConfig, load_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3


class UsageError(Exception):
    """A user error in the command's arguments or input."""


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        # `mapd` or `mapd subject` alone: the help of what was typed.
        getattr(args, "help_parser", parser).print_help(sys.stderr)
        return EXIT_USAGE
    from .database import DatabaseError
    from .transient import describe, is_transient_database_error

    try:
        code = args.handler(args)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except _usage_errors() as error:
        print(f"mapd: {printable(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseError as error:
        print(f"mapd: {printable(str(error))}", file=sys.stderr)
        return EXIT_DATABASE
    except KeyboardInterrupt:
        print("mapd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `mapd status | head`: the reader has all it wanted. Quiet, and no
        # second error when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as error:
        if not is_transient_database_error(error):
            raise  # a bug: its traceback is what a report needs
        print(f"mapd: the database cannot do the work now: {describe(error)}", file=sys.stderr)
        return EXIT_DATABASE


# Errors that are the user's to fix (exit 2), by module. Looked up only when an
# error is being handled, among the modules the command loaded (an error class
# cannot be raised before its module is imported): so a light command such as
# `status --check`, a HEALTHCHECK run every 30 s, never imports DataJoint.
_USAGE_ERRORS = (("mapd.find.scan", "DiscoveryError"), ("mapd.subjects", "SubjectError"),
                 ("mapd.erd", "DiagramError"))


def _usage_errors() -> tuple[type[BaseException], ...]:
    loaded = [getattr(sys.modules[module], name) for module, name in _USAGE_ERRORS if module in sys.modules]
    return (ConfigError, UsageError, *loaded)


def printable(text: str) -> str:
    """Text safe to print on one line: control characters (a newline in a file name) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mapd",
        description="Ingest MAP behavior and ephys files into the MAP DataJoint pipeline.",
        epilog="Configuration: --config FILE, else $MAPD_CONFIG, else ./mapd.yaml, else /etc/mapd/mapd.yaml. "
        "Exit status: 0 ok, 1 something failed, 2 usage or configuration error, 3 database unavailable "
        "(or of another schema version: see mapd migrate).",
    )
    parser.add_argument("--config", metavar="FILE", help="configuration file (YAML)")
    parser.add_argument("--version", action="version", version=f"mapd {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    config = _command(commands, "config", "configuration commands")
    config_commands = config.add_subparsers(title="config commands", metavar="COMMAND")
    check = _command(config_commands, "check", "validate the configuration, check the data paths and connect "
                     "to the database", "Exit status 0 when all is usable, 1 when a data path is not, "
                     "2 for an invalid configuration, 3 when the database cannot be reached.")
    check.set_defaults(handler=_config_check)

    rescan = _command(commands, "rescan", "find and ingest every behavior session not yet ingested (manual backfill)",
                      "Searches rig_data_paths; a full rescan (no --rig, no PATH) also takes the probe folders "
                      "under ephys_data_paths. Files modified less than daemon.settle_seconds ago are waited "
                      "for (up to 6 settle intervals, at least a minute), then ingested. "
                      "Exit status 0 only when no file failed and every data path could be read.")
    rescan.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                        help="only files below these paths (each inside a rig data path)")
    rescan.add_argument("--rig", action="append", default=[], metavar="NAME", help="only this rig (repeatable)")
    rescan.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="only sessions on or after this date")
    rescan.add_argument("--workers", type=int, metavar="N", help="parsing processes (default: ingest.workers)")
    rescan.add_argument("--no-wait", action="store_true",
                        help="do not wait for files still being written: leave them pending for a later run")
    rescan.set_defaults(handler=_rescan)

    run = _command(commands, "run", "the service: watch the data paths and ingest new files as they complete",
                   "Each complete file under rig_data_paths and ephys_data_paths is ingested exactly once. "
                   "SIGTERM/SIGINT: finish or roll back the ingest in progress and exit. SIGHUP or an edit of the "
                   "configuration file: reload it (an invalid edit is refused and logged). Speaks the systemd "
                   "notify protocol when started by systemd (Type=notify); serves Prometheus metrics when "
                   "metrics.listen is set.")
    run.set_defaults(handler=_run)

    retry = _command(commands, "retry", "queue failed files again (all, or one by id or path)")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every failed file, archive batch and export")
    which.add_argument("item", nargs="?", metavar="ITEM",
                       help="a file id (in brackets in mapd status), a file path, or a path below its data path")
    retry.set_defaults(handler=_retry)

    migrate = _command(
        commands, "migrate", "bring a database made by an older mapd to this mapd's table definitions",
        "A mapd refuses a database whose tables are of another schema version (exit status 3, naming both). "
        "After upgrading mapd, stop every `mapd run` on the database (it is refused while one is alive) and run "
        "this once: it applies each step from the database's version to this mapd's and records the new version. "
        "A step interrupted half-way is run again by the next `mapd migrate`. Exit status 0 when the database is "
        "at this mapd's version, 1 when a step failed.")
    migrate.add_argument("--dry-run", action="store_true", help="only list the steps it would apply")
    migrate.set_defaults(handler=_migrate)

    logs_command = _command(commands, "logs", "show the log file (logging.file) in readable form")
    logs_command.add_argument("-f", "--follow", action="store_true", help="keep showing new lines, like tail -F")
    logs_command.add_argument("-n", "--lines", type=int, default=50, metavar="N",
                              help="how many of the last lines to show first (default 50; 0 for all)")
    logs_command.set_defaults(handler=_logs)

    status = _command(commands, "status", "the daemons, data path health, files per state, and waiting and "
                      "failed files with reasons",
                      "Exit status 0, or 3 when the database cannot be reached (what this host knows is shown "
                      "all the same). With --check: 0 when this host's daemon is alive and all its data paths "
                      "are usable, else 1, with one line saying why (for a container's HEALTHCHECK).")
    shape = status.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="machine-readable output")
    shape.add_argument("--check", action="store_true",
                       help="only: is this host's daemon alive with all its data paths usable? (exit 0 or 1; "
                       "reads state_dir/daemon.json, not the database)")
    status.set_defaults(handler=_status)

    subject = _command(commands, "subject", "enter subjects and their water-restriction numbers")
    subject_commands = subject.add_subparsers(title="subject commands", metavar="COMMAND")
    add = _command(subject_commands, "add", "enter one subject",
                   "Entering it again changes nothing; files waiting for it are queued at once.")
    add.add_argument("--subject-id", type=int, required=True, help="institution animal id, e.g. 407513")
    add.add_argument("--h2o", required=True, help="water-restriction number used in file names, e.g. dl25")
    add.add_argument("--sex", choices=("M", "F", "Unknown"), default="Unknown", help="default: Unknown")
    add.add_argument("--dob", type=_date, metavar="YYYY-MM-DD", help="date of birth (default: unknown)")
    add.add_argument("--username", help="person responsible for the animal (lab.Person), entered if missing")
    add.set_defaults(handler=_subject_add)
    imp = _command(subject_commands, "import", "enter subjects from a CSV or YAML file",
                   "CSV: a header row subject_id,h2o,sex,dob (water_restriction_number and date_of_birth are "
                   "accepted too); YAML: a list of such mappings. All or none are entered; errors name the row.")
    imp.add_argument("file", type=Path, metavar="FILE", help="a .csv or .yaml/.yml file")
    imp.set_defaults(handler=_subject_import)

    export = _command(commands, "export", "write ingested sessions in other formats")
    export_commands = export.add_subparsers(title="export commands", metavar="FORMAT")
    nwb = _command(export_commands, "nwb",
                   "one NWB file per session (DANDI layout: sub-ID/sub-ID_ses-DATE_behavior[+ecephys].nwb)",
                   "Written with pynwb under a temporary name, then renamed. A session that cannot be exported "
                   "is reported and stops no other (exit status 1).")
    _add_export_arguments(nwb)
    nwb.add_argument("--overwrite", action="store_true", help="replace NWB files that exist (default: keep them)")
    nwb.set_defaults(handler=_export_nwb)

    report = _command(commands, "report",
                      "figures per session (performance, licks, units, raster + PSTH) and an index.html")
    _add_export_arguments(report)
    report.set_defaults(handler=_report)

    shell = _command(commands, "shell", "Python with dj and the MAP schema modules connected",
                     "Also opens a database of another schema version than this mapd's (with a note), to look at it "
                     "before `mapd migrate`.")
    shell.add_argument("-c", dest="code", metavar="CODE", help="run CODE and exit, like python -c")
    shell.set_defaults(handler=_shell)

    erd = _command(commands, "erd", "write one entity-relationship diagram per schema",
                   "Each diagram shows the schema's tables and, grouped apart, the tables of other schemas "
                   "they depend on.")
    erd.add_argument("--out", type=Path, default=Path("erd"), metavar="DIR", help="output directory (default: erd)")
    erd.add_argument("--format", choices=("mermaid", "svg", "png"), default="mermaid",
                     help="mermaid (default; no extra software) or svg/png (need Graphviz)")
    erd.set_defaults(handler=_erd)

    from .archive.commands import add_commands as add_archive_commands

    add_archive_commands(commands, _date)
    return parser


def _command(commands, name: str, summary: str, details: str = "") -> argparse.ArgumentParser:
    """A subcommand whose --help starts with its one-line summary; typed alone, a group shows its own help."""
    command = commands.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {details}"
                                  .strip())
    command.set_defaults(help_parser=command)
    return command


def _add_export_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write below")
    command.add_argument("--subject-id", type=int, metavar="N", help="only this subject's sessions")
    command.add_argument("--h2o", metavar="H2O", help="only the sessions of this water-restriction number")
    command.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="only sessions on or after this date")
    command.add_argument("--until", type=_date, metavar="YYYY-MM-DD", help="only sessions on or before this date")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2018-02-25") from None


def _load(args, log_stream=None, *, logging: bool = True) -> MapdConfig:
    config = load_config(args.config)
    if logging:
        from . import logs

        logs.configure(config.logging, log_stream)
    return config


def _open(config: MapdConfig):
    from .runtime import open_database

    return open_database(config)


def _config_check(args) -> int:
    from .find.health import check_all
    from .find.watch import filesystem_type, resolve_mode

    config = _load(args)
    print(f"configuration: {config.source}: valid")
    watch = {entry.path: entry.watch for entry in [*config.rig_data_paths, *config.ephys_data_paths]}
    problems = 0
    for check in check_all(config):
        path = check.data_path.path
        if not check.ok:
            print(f"{check.data_path.label}: {printable(check.problem)}", file=sys.stderr)
            problems += 1
            continue
        print(f"{check.data_path.label}: {printable(str(path))}: readable; watched by "
              f"{resolve_mode(watch[path], path)} ({filesystem_type(path) or 'unknown'} file system, "
              f"watch: {watch[path]})")
    db = _open(config)
    params = db.params
    print(f"database: {config.database.backend}: connected as {params.user} to {params.host}:{params.port}, "
          f"schemas {config.database.schema_prefix}*")
    if problems:
        print(f"{_count(problems, 'data path')} not usable", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _rescan(args) -> int:
    from .rescan import CATEGORIES, rescan
    from .find.scan import ScanScope

    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    config = _load(args)
    _open(config)
    scope = ScanScope(rigs=frozenset(args.rig), since=args.since, paths=tuple(args.paths))
    settle = config.daemon.settle_seconds

    def show_wait(files: int, seconds: float) -> None:
        print(f"rescan: waiting {seconds:.1f} s for {_count(files, 'file')} still being written to settle "
              f"(unchanged for daemon.settle_seconds, {settle:g} s)", file=sys.stderr, flush=True)

    with _Progress() as progress:
        summary = rescan(config, scope, workers=args.workers, on_progress=progress.update, wait=not args.no_wait,
                         on_wait=show_wait)
    for check in summary.unusable_paths:
        print(f"warning: {check.data_path.label}: {printable(check.problem)}: its files were not scanned",
              file=sys.stderr)
    print(f"rescan: {sum(summary.files.values())} files in {summary.seconds:.1f} s")
    for category in CATEGORIES:
        extra = ""
        if category == "ingested" and summary.sessions:
            extra = f"  ({summary.sessions} sessions, {summary.trials} trials, {summary.rows} rows)"
        print(f"  {category:<20} {summary.files[category]:>6}{extra}")
    _print_outcomes(summary.problems)
    if summary.probes:
        print(f"probes: {sum(summary.probes.values())} folders")
        for category, count in sorted(summary.probes.items()):
            print(f"  {category:<20} {count:>6}")
        _print_outcomes(summary.probe_problems)
    for problem in summary.scan_problems:
        print(f"  not scanned: {printable(str(problem.path))}: {printable(problem.reason)}")
    return EXIT_OK if summary.ok else EXIT_FAILED


def _print_outcomes(outcomes) -> None:
    """Files not ingested, with their reasons: a reason that several files share is shown once, above them."""
    for (state, reason), paths in _by_reason(((o.state.value, o.reason), str(o.file.path)) for o in outcomes).items():
        if len(paths) == 1:
            print(f"  {state}: {printable(paths[0])}: {printable(reason)}")
            continue
        print(f"  {state}: {printable(reason)}:")
        for path in paths:
            print(f"    {printable(path)}")


def _by_reason(pairs) -> dict:
    """[(reason, item)] -> {reason: [items]}, in the order the reasons first come."""
    grouped: dict = {}
    for reason, item in pairs:
        grouped.setdefault(reason, []).append(item)
    return grouped


class _Progress:
    """A progress bar on a terminal; nothing otherwise (log lines report each session)."""

    def __init__(self) -> None:
        self._bar = None

    def __enter__(self) -> "_Progress":
        return self

    def update(self, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="session", desc="ingest", file=sys.stderr)
        self._bar.n = done
        self._bar.refresh()

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()


def _run(args) -> int:
    from .daemon import Daemon

    # The service's output is its log: to stdout, which journald records.
    config = _load(args, sys.stdout)
    return Daemon(config).run()


def _retry(args) -> int:
    from .queue.files import requeue_failed
    from .queue.status import find_files

    config = _load(args)
    _open(config)
    if args.all:
        from .archive.stage import requeue_failed_batches
        from .export_handler import requeue_failed_exports

        count = requeue_failed()
        batches = requeue_failed_batches()
        if batches:
            print(f"{batches} failed archive batch(es) queued again")
        exports = requeue_failed_exports()
        if exports:
            print(f"{_count(exports, 'failed export')} queued again")
    else:
        ids = find_files(args.item, state="failed")
        if not ids:
            raise UsageError(f"no failed file matches {args.item!r} (see `mapd status`)")
        count = requeue_failed(ids)
    print(f"{_count(count, 'failed file')} queued again")
    return EXIT_OK


def _migrate(args) -> int:
    from . import schemas
    from .queue.claims import live_daemons
    from .runtime import check_schema_version, open_database
    from .schemas.migrations import MigrationError, steps_from

    config = _load(args)
    db = open_database(config, any_schema_version=True)
    found = db.schema_version
    if found > schemas.SCHEMA_VERSION:
        check_schema_version(found, db.made_by)  # this mapd is the older one: says so
    steps = steps_from(found)
    if not steps:
        print(f"the database is at schema version {found}, this mapd's: nothing to do")
        return EXIT_OK
    alive = live_daemons(config.daemon.heartbeat_seconds)
    if alive and not args.dry_run:
        raise UsageError(f"a `mapd run` is alive on this database ({alive[0]['host']}, pid {alive[0]['pid']}): "
                         "stop every daemon on the database first (see `mapd status`)")
    for step in steps:
        if args.dry_run:
            print(f"would migrate to schema version {step.version}: {step.summary}")
            continue
        try:
            step.apply()
        except MigrationError as error:
            print(f"mapd: schema version {step.version} not reached: {printable(str(error))}", file=sys.stderr)
            return EXIT_FAILED
        schemas.set_version(step.version, __version__)
        print(f"migrated to schema version {step.version}: {step.summary}")
    return EXIT_OK


def _logs(args) -> int:
    from .logview import LogViewError, show

    config = _load(args)
    if config.logging.file is None:
        raise UsageError("no log file: set logging.file in the configuration (the service also logs to journald: "
                         "journalctl -u mapd)")
    try:
        show(config.logging.file, sys.stdout, follow=args.follow, lines=args.lines or None)
    except LogViewError as error:
        raise UsageError(str(error)) from None
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _status(args) -> int:
    if args.check:
        return _status_check(args)
    from . import liveness
    from .database import DatabaseError
    from .find.health import check_all
    from .queue.status import collect, local_report
    from .transient import describe, is_transient_database_error

    config = _load(args)
    local, checks = liveness.read(config.state_dir), check_all(config)
    try:
        _open(config)
        report = collect(config.daemon.heartbeat_seconds, local, checks)
    except Exception as error:  # what this host knows is still worth showing
        if not (isinstance(error, DatabaseError) or is_transient_database_error(error)):
            raise
        report = local_report(local, checks, database=str(error) if isinstance(error, DatabaseError)
                              else describe(error))
    archive = _archive_summary(report)
    if args.json:
        print(json.dumps({**report.as_dict(), "archive": archive.as_dict() if archive else None}, indent=2))
    else:
        _print_status(report)
        if archive:
            _print_archive_status(archive)
    return EXIT_OK if report.database == "ok" else EXIT_DATABASE


def _status_check(args) -> int:
    """A container's HEALTHCHECK, run every 30 s: answered from state_dir/daemon.json alone (no database)."""
    from . import liveness

    config = _load(args, logging=False)  # it logs nothing: structlog need not even be imported
    healthy, why = liveness.health_check(liveness.read(config.state_dir), config.state_dir)
    print(f"{'healthy' if healthy else 'unhealthy'}: {printable(why)}")
    return EXIT_OK if healthy else EXIT_FAILED


def _print_status(report) -> None:
    local = report.local_daemon
    if local and local["alive"]:
        print(f"daemon here: alive (pid {local['pid']}) since {local['started']}, heartbeat "
              f"{local['heartbeat_age_seconds']:.0f} s ago: {printable(local['activity'])}")
        if local["database"] != "ok":
            print(f"  waiting for the database: {printable(local['database'])}")
    elif local:
        print(f"daemon here: not running (pid {local['pid']} is gone; last heartbeat {local['heartbeat']})")
    for daemon in report.daemons:
        print(f"daemon: alive on {daemon.host} (pid {daemon.pid}) since {daemon.started}, "
              f"heartbeat {daemon.heartbeat}: {printable(daemon.activity)}")
    if not local and not report.daemons:
        print("daemon: none running" + (" (no recent heartbeat)" if report.database == "ok" else " on this host"))
    for path in report.paths:
        label = f"rig {path.rig}" if path.rig else "ephys"
        since = f" since {path.since}" if path.since and path.health != "ok" else ""
        detail = f": {printable(path.problem)}" if path.problem else ""
        print(f"{label}: {printable(path.path)}: {path.health}{since}{detail}")
        if path.scan_problem_count:
            print(f"  {path.scan_problem_count} entries not usable at the last scan:")
            for problem in path.scan_problems:
                print(f"    {printable(problem['path'])}: {printable(problem['reason'])}")
    if report.database != "ok":
        print(f"database: unavailable: {printable(report.database)}")
        return
    print(f"sessions ingested: {report.sessions}")
    print("files: " + ", ".join(f"{state} {count}" for state, count in report.files.items()))
    if any(report.probes.values()):
        print("probes: " + ", ".join(f"{state} {count}" for state, count in report.probes.items() if count))
    for rig in report.rigs:
        last = (f"{printable(rig.last_ingested_file)} at {rig.last_ingest_time}" if rig.last_ingest_time
                else "never")
        print(f"rig {rig.rig}: last file seen: {printable(rig.last_file_seen or '-')} at {rig.last_seen_time}; "
              f"last ingest: {last}")
    if report.oldest_waiting:
        oldest = report.oldest_waiting
        print(f"oldest waiting: {printable(oldest.path)} for {_age(oldest.age_seconds)}")
    for title, problems in (("waiting", report.waiting), ("failed", report.failed), ("skipped", report.skipped),
                            ("ignored", report.ignored), ("changed after ingest", report.changed)):
        if problems:
            total = report.files.get(problems[0].state, 0) + report.probes.get(problems[0].state, 0)
            print(f"{title} (showing {len(problems)} of {total}):")
            for reason, group in _by_reason((problem.reason, problem) for problem in problems).items():
                if len(group) > 1:
                    print(f"  {printable(reason)}:")
                for problem in group:
                    age = f" (for {_age(problem.age_seconds)})" if problem.state == "waiting" else ""
                    what = f"    {printable(problem.path)}" if len(group) > 1 else \
                        f"  {printable(problem.path)}: {printable(reason)}"
                    print(f"{what}{age}  [{problem.file_id}]")
    for target, states in report.exports.items():
        print(f"exports {target}: " + ", ".join(f"{state} {count}" for state, count in sorted(states.items())))
    if report.export_failures:
        total = sum(states.get("failed", 0) for states in report.exports.values())
        print(f"exports failed (showing {len(report.export_failures)} of {total}):")
        for failure in report.export_failures:
            print(f"  {failure.target} {printable(failure.session)} (subject {failure.subject_id}) at {failure.time}: "
                  f"{printable(failure.reason)}")


def _archive_summary(report):
    if report.database != "ok":
        return None
    from .archive.status import summary

    return summary()


def _print_archive_status(archive) -> None:
    if not archive.batches:
        return
    print("archive batches: " + ", ".join(f"{state} {count}" for state, count in sorted(archive.batches.items()))
          + "; files: " + ", ".join(f"{state} {count}" for state, count in sorted(archive.files.items()))
          + f"; {archive.archived_bytes / 1e6:,.1f} MB archived")
    if archive.freed_bytes:
        print("freed by cleanup: " + ", ".join(f"{rig} {size / 1e6:,.1f} MB"
                                               for rig, size in sorted(archive.freed_bytes.items())))
    for problem in archive.problems:
        print(f"  archive {printable(problem)}")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _subject_add(args) -> int:
    from pydantic import ValidationError

    from .subjects import SubjectEntry, add_subjects

    try:
        entry = SubjectEntry(subject_id=args.subject_id, h2o=args.h2o, sex=args.sex, dob=args.dob,
                             username=args.username)
    except ValidationError as error:
        problem = error.errors()[0]
        raise UsageError(f"--{str(problem['loc'][0]).replace('_', '-')}: {problem['msg']}") from None
    config = _load(args)
    _open(config)
    added = add_subjects([entry])
    print(f"subject {entry.subject_id} ({entry.h2o}): {'entered' if added else 'already entered'}")
    _hint_waiting([entry.h2o])
    return EXIT_OK


def _subject_import(args) -> int:
    from .subjects import SubjectError, add_subjects, read_subject_file

    rows = read_subject_file(args.file)
    entries = [entry for _, entry in rows]
    config = _load(args)
    _open(config)
    try:
        added = add_subjects(entries, [number for number, _ in rows])
    except SubjectError as error:
        raise SubjectError(f"{args.file}: {error}") from None
    print(f"{args.file}: {_count(len(added), 'subject')} entered, {len(entries) - len(added)} already entered")
    _hint_waiting([entry.h2o for entry in entries])
    return EXIT_OK


def _count(n: int, noun: str) -> str:
    """'1 subject', '2 subjects'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _hint_waiting(h2os: list[str]) -> None:
    from .queue.files import pending_count

    queued = pending_count(h2os)
    if queued:
        whose = "this subject" if len(set(h2os)) == 1 else "these subjects"
        them = "it" if queued == 1 else "them"
        print(f"{_count(queued, 'file')} of {whose} queued: a running `mapd run` ingests {them} now, "
              "or run `mapd rescan`")


def _export_nwb(args) -> int:
    return _export(args, "nwb", overwrite=args.overwrite)


def _report(args) -> int:
    return _export(args, "reports", overwrite=True)


def _export(args, target: str, overwrite: bool) -> int:
    """Export each selected session; one session's failure is reported and the others go on."""
    from .export.batch import export_session
    from .export.session import SessionSelection, select_sessions

    config = _load(args)
    _open(config)
    selection = SessionSelection(args.subject_id, args.h2o, args.since, args.until)
    keys = select_sessions(selection)
    if not keys:
        raise UsageError("no ingested session matches the selection")
    states = {"written": 0, "exists": 0, "failed": 0}
    for key in keys:
        outcome = export_session(key, target, args.out, config.timezone, overwrite=overwrite)
        where = outcome.path if outcome.path else outcome.reason
        print(f"{printable(outcome.label)}: {outcome.state}: {printable(str(where))}")
        states[outcome.state] += 1
    print(f"{len(keys)} sessions: " + ", ".join(f"{state} {count}" for state, count in states.items()))
    return EXIT_FAILED if states["failed"] else EXIT_OK


def _shell(args) -> int:
    import code

    import datajoint as dj

    from . import schemas
    from .runtime import open_database

    config = _load(args)
    found = open_database(config, any_schema_version=True).schema_version  # also to look at one before migrating
    if found != schemas.SCHEMA_VERSION:
        print(f"mapd: note: the database's tables are of schema version {found}, this mapd's are of "
              f"{schemas.SCHEMA_VERSION} (see `mapd migrate`)", file=sys.stderr)
    namespace = {"dj": dj, **schemas.MODULES}
    if args.code is not None:
        try:
            exec(compile(args.code, "<mapd shell -c>", "exec"), namespace)
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else EXIT_FAILED
        except Exception:
            import traceback

            traceback.print_exc()  # the user's own code: its traceback is what they need
            return EXIT_FAILED
        return EXIT_OK
    banner = "map shell.\n\nschema modules:\n\n" + "\n".join(f"  - {name}" for name in schemas.MODULES)
    code.interact(banner=banner, local=namespace, exitmsg="")
    return EXIT_OK


def _erd(args) -> int:
    from .erd import write_diagrams

    config = _load(args)
    _open(config)
    for path in write_diagrams(args.out, args.format):
        print(path)
    return EXIT_OK
