"""``mapd archive``, ``mapd cleanup`` and ``mapd retrieve``: the archive stage by hand, and the way back.

Registered on the ``mapd`` parser by :func:`add_commands`; each handler
returns an exit status (0 ok, 1 something failed or was kept, 2 usage).
"""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED = 0, 1


def add_commands(commands, date_type) -> None:
    from ..cli import _command  # the mapd parser's own way of making a subcommand

    archive = _command(
        commands, "archive", "archive the raw files of every ingested session now (the service does it by itself)",
        "Stages, transfers and verifies the raw files (archive.files) of every ingested session and probe not yet "
        "archived, with the configured archive.transport. Refused while a `mapd run` is alive on the database. "
        "Exit status 0 when no batch failed.")
    archive.set_defaults(handler=_archive)

    cleanup = _command(
        commands, "cleanup", "delete archived and verified source files whose grace period is over",
        "Deletes each source file that is archived and verified, past cleanup.grace_seconds, unchanged (size, "
        "mtime, sha256 read again) and inside a cleanup.roots entry; every other file stays, with the reason. "
        "Needs cleanup.enabled, except with --dry-run. Refused while a `mapd run` is alive.")
    cleanup.add_argument("--dry-run", action="store_true",
                         help="only list what would go and why each other file stays (works with cleanup off)")
    cleanup.set_defaults(handler=_cleanup)

    retrieve = _command(
        commands, "retrieve", "bring archived raw files back, verified, in the archive layout",
        "Copies archived files of the selected sessions to DIR as {h2o}/{YYYY-MM-DD}/{kind}/{path}, each verified "
        "by sha256. A file already there with the same content is kept; a different one is never overwritten "
        "(the file is reported and the command exits 1).")
    retrieve.add_argument("--to", type=Path, required=True, metavar="DIR", help="where to put the files")
    retrieve.add_argument("--subject-id", type=int, metavar="N", help="only this subject")
    retrieve.add_argument("--h2o", metavar="H2O", help="only this water-restriction number")
    retrieve.add_argument("--since", type=date_type, metavar="YYYY-MM-DD", help="only sessions on or after this date")
    retrieve.add_argument("--until", type=date_type, metavar="YYYY-MM-DD", help="only sessions on or before this date")
    retrieve.add_argument("--kind", choices=("behavior", "ephys_raw", "video"), help="only files of this kind")
    retrieve.set_defaults(handler=_retrieve)
    add_globus_commands(commands, _command)


def _session(args):
    from ..cli import _load, _open

    config = _load(args)
    _open(config)
    return config


def _refuse_beside_service(config) -> None:
    from ..cli import UsageError
    from ..queue.claims import live_daemons

    alive = live_daemons(config.daemon.heartbeat_seconds)
    if alive:
        raise UsageError(f"a `mapd run` is alive on this database ({alive[0]['host']}, pid {alive[0]['pid']}): "
                         "it archives and cleans by itself; see `mapd status`")


def _archive(args) -> int:
    from ..cli import UsageError
    from ..queue.policy import Policy
    from . import stage
    from . import status as archive_status
    from .transport import transport_for

    config = _session(args)
    transport = transport_for(config)
    if transport is None:
        raise UsageError("archive.transport is none: configure a local or globus archive first")
    _refuse_beside_service(config)
    worker = stage.ArchiveStage(config, transport, Policy.from_config(config.daemon))
    plans = stage.unstaged()
    days = sorted({(plan.h2o, plan.session_date) for plan in plans} | set(stage.due_days()),
                  key=lambda day: (day[1], day[0]))
    for h2o, day in days:
        worker.work_on_day(h2o, day, plans)
    summary = archive_status.summary()
    print("archive batches: " + (", ".join(f"{state} {n}" for state, n in summary.batches.items()) or "none"))
    for problem in summary.problems:
        print(f"  {problem}")
    return EXIT_FAILED if summary.batches.get("failed") else EXIT_OK


def _cleanup(args) -> int:
    from ..cli import UsageError, printable
    from . import cleanup
    from .transport import transport_for

    config = _session(args)
    if not args.dry_run:
        if not config.cleanup.enabled:
            raise UsageError("cleanup is off (cleanup.enabled: false); `mapd cleanup --dry-run` shows what would go")
        _refuse_beside_service(config)
    decisions = cleanup.review(config)
    if not args.dry_run:
        decisions = cleanup.clean(config, transport_for(config), decisions)
    verb = "would go" if args.dry_run else "deleted"
    for decision in decisions:
        what = f"{verb}: " if decision.goes else "stays: "
        print(f"{what}{printable(str(decision.path))}: {printable(decision.reason)}")
    going = [d for d in decisions if d.goes]
    per_rig: dict[str, int] = {}
    for decision in going:
        per_rig[decision.rig or "ephys"] = per_rig.get(decision.rig or "ephys", 0) + decision.size
    print(f"{len(going)} file(s) {verb} ({_megabytes(sum(per_rig.values()))}), {len(decisions) - len(going)} stay"
          + "".join(f"; {rig}: {_megabytes(size)}" for rig, size in sorted(per_rig.items())))
    return EXIT_OK


def _retrieve(args) -> int:
    from ..cli import UsageError, printable
    from .retrieve import Selection, retrieve_physical_files, select_files
    from .transport import TransportError

    config = _session(args)
    files = select_files(Selection(args.subject_id, args.h2o, args.since, args.until, args.kind))
    if not files:
        raise UsageError("no archived file matches the selection (see `mapd status` for what is archived)")
    try:
        written = retrieve_physical_files(files, args.to, config)
    except TransportError as error:
        print(f"mapd: {printable(str(error))}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{len(written)} file(s) under {printable(str(args.to))}, each verified by sha256")
    return EXIT_OK


def add_globus_commands(subparsers, make_command) -> None:
    """Register ``mapd globus login`` on the ``mapd`` command's subparsers (``make_command``: cli's ``_command``)."""
    globus = make_command(subparsers, "globus", "the Globus archive transport: sign in",
                          "Commands for archive.transport: globus.")
    commands = globus.add_subparsers(title="globus commands", metavar="COMMAND", dest="globus_command")
    command = make_command(
        commands, "login", "sign in to Globus so the daemon can archive with your account",
        "Uses the native app archive.globus.login_client_id: open the printed link, allow access, paste the code. "
        "The tokens (refreshable, readable by this user only) are stored in state_dir/globus-tokens.json and "
        "used by the daemon. Not needed with a confidential client (archive.globus.client_id and its secret). "
        "Run it again to renew consent (e.g. after adding a collection to archive.globus.data_access_collections).",
    )
    command.set_defaults(handler=_login_command)


def _login_command(args) -> int:
    from ..config import ConfigError, load_config
    from .globus_login import LoginError, login  # globus_sdk only for this command: others start faster

    config = load_config(args.config)
    if config.archive.globus is None:
        raise ConfigError(f"{config.source}: `mapd globus login` needs an archive.globus section")
    try:
        login(config.archive.globus, config.state_dir)
    except LoginError as error:
        print(f"mapd: globus login: {error}", file=sys.stderr)
        return 1
    return 0


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"
