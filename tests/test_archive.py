"""Archive and cleanup with the local transport, on real files, a real database and real processes.

A session (behavior file) and its probe (sorting output plus raw SpikeGLX
files) are ingested by ``mapd rescan``; ``mapd archive``, ``mapd cleanup``
and ``mapd retrieve`` run as the commands; ``mapd run`` does it all by itself.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path

import pytest
import yaml

import bpodgen
import ephysgen
from conftest import TEST_DATABASE, mapd_here, run_mapd
from mapd.archive.local import PARTIAL_SUFFIX
from mapd.failpoints import FAILPOINT_ENV
from mapd.schemas import ingest, publication
from mapd.subjects import SubjectEntry, add_subjects
from test_daemon import FAST, daemons, wait_for  # noqa: F401

H2O, SUBJECT = "dl7", 7007
START = datetime(2018, 5, 2, 10, 0, 0)
DAY = START.date()
RAW_NAMES = ("dl7_2018-05-02_1_g0_t0.imec.ap.bin", "dl7_2018-05-02_1_g0_t0.imec.ap.meta")  # the .meta: ephysgen's


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def site(db, tmp_path, state_dir):
    """Rig and ephys trees with one ingested session and probe (with raw files), and a config writer."""
    rig, ephys_root, archive = tmp_path / "rigs" / "RRig", tmp_path / "ephys", tmp_path / "archive"
    rig.mkdir(parents=True)
    archive.mkdir()
    add_subjects([SubjectEntry(subject_id=SUBJECT, h2o=H2O)])
    behavior = bpodgen.write_session(bpodgen.session_path(rig, H2O, "tw", START), h2o=H2O, start=START,
                                     n_trials=20, seed=1)
    probe = ephysgen.write_probe(ephys_root, h2o=H2O, session_date=DAY, layout="dashed", n_spikes=3000, n_units=4,
                                 behavior=ephysgen.behavior_bitcodes(behavior.path))
    raw = [probe.folder / name for name in RAW_NAMES]
    raw[0].write_bytes(os.urandom(3_000_000))
    assert raw[1].is_file()

    def write_config(cleanup: dict | None = None, daemon: dict | None = None, **archive_settings) -> Path:
        body = {"state_dir": str(state_dir), "database": TEST_DATABASE, "session_user": "daveliu",
                "rig_data_paths": [{"rig": "RRig", "path": str(rig), "watch": "poll", "poll_interval": 0.3}],
                "ephys_data_paths": [{"path": str(ephys_root), "watch": "poll", "poll_interval": 0.3}],
                "ingest": {"min_behavior_file_bytes": 0},
                "daemon": {**FAST, **(daemon or {})},
                "archive": {"transport": "local", "local": {"path": str(archive)}, "poll_seconds": 0.2,
                            **archive_settings},
                "cleanup": cleanup or {}}
        path = tmp_path / "mapd.yaml"
        path.write_text(yaml.safe_dump(body))
        return path

    return dict(rig=rig, ephys=ephys_root, archive=archive, behavior=behavior.path, probe=probe, raw=raw,
                write_config=write_config, tmp=tmp_path)


def ingest_all(config: Path) -> None:
    result = run_mapd("rescan", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(ingest.EphysIngest()) == 1


def archived_path(site, source: Path, kind: str, root: Path) -> Path:
    return site["archive"] / H2O / DAY.isoformat() / kind / source.relative_to(root)


def archive_listing(site) -> list[str]:
    return sorted(str(p.relative_to(site["archive"])) for p in site["archive"].rglob("*") if p.is_file())


def test_archive_cleanup_and_retrieve_by_command(site):
    config = site["write_config"]()
    ingest_all(config)
    result = mapd_here("archive", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "archived 2" in result.stdout
    copies = {source: archived_path(site, source, "behavior", site["rig"]) for source in [site["behavior"]]}
    copies |= {source: archived_path(site, source, "ephys_raw", site["ephys"]) for source in site["raw"]}
    for source, copy in copies.items():
        assert copy.read_bytes() == source.read_bytes()
    assert len(archive_listing(site)) == 3  # no temporary file left, nothing else copied
    # publication says where every raw file is, with its checksum
    files = publication.DataSet.PhysicalFile.to_dicts()
    assert {f["file_subpath"] for f in files} == {str(c.relative_to(site["archive"])) for c in copies.values()}
    assert {f["file_sha256"] for f in files} == {sha256(s) for s in copies}
    assert {f["file_type"] for f in files} == {"behavior-bpod", "ap-30kHz", "ap-30kHz-meta"}
    assert len(publication.ArchivedSession()) == 1 and len(publication.ArchivedSession.BehaviorData()) == 1
    assert len(publication.ArchivedRawEphys()) == 1
    status = mapd_here("status", "--json", config=config)
    assert status.returncode == 0
    archive = yaml.safe_load(status.stdout)["archive"]
    assert archive["batches"] == {"archived": 2} and archive["files"] == {"archived": 3}

    # cleanup off: the dry run lists every file as staying, with the reason
    dry = mapd_here("cleanup", "--dry-run", config=config)
    assert dry.returncode == 0 and dry.stdout.count("stays: ") == 3 and "would go: " not in dry.stdout
    refused = mapd_here("cleanup", config=config)
    assert refused.returncode == 2 and "cleanup is off" in refused.stderr

    config = site["write_config"](cleanup={"enabled": True, "grace_seconds": 0,
                                           "roots": [str(site["rig"]), str(site["ephys"])]})
    dry = mapd_here("cleanup", "--dry-run", config=config)
    assert dry.stdout.count("would go: ") == 3, dry.stdout
    assert all(source.exists() for source in copies)  # a dry run deletes nothing
    done = mapd_here("cleanup", config=config)
    assert done.returncode == 0 and done.stdout.count("deleted: ") == 3, done.stdout + done.stderr
    assert not any(source.exists() for source in copies)
    assert site["probe"].folder.is_dir()  # the sorting output stays: only archived files go
    status = yaml.safe_load(mapd_here("status", "--json", config=config).stdout)
    assert status["archive"]["freed_bytes"] == {"RRig": site_size(copies, "behavior"),
                                                "ephys": site_size(copies, "ephys_raw")}

    # mapd deleted them itself: not re-queued, not reported changed or missing
    again = run_mapd("rescan", config=config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(ingest.SourceFile.to_arrays("state")) == {"ingested"}

    # retrieval gives identical bytes, and never overwrites a different file
    out = site["tmp"] / "retrieved"
    got = mapd_here("retrieve", "--to", str(out), "--h2o", H2O, config=config)
    assert got.returncode == 0, got.stdout + got.stderr
    for copy in copies.values():
        back = out / copy.relative_to(site["archive"])
        assert back.read_bytes() == copy.read_bytes()
    only_behavior = mapd_here("retrieve", "--to", str(site["tmp"] / "b"), "--kind", "behavior", config=config)
    assert "1 file(s)" in only_behavior.stdout
    meta = out / next(c for c in copies.values() if c.name.endswith(".meta")).relative_to(site["archive"])
    meta.write_text("someone's edit\n")
    clash = mapd_here("retrieve", "--to", str(out), config=config)
    assert clash.returncode == 1 and "not overwritten" in clash.stderr and str(meta) in clash.stderr
    assert meta.read_text() == "someone's edit\n"


def site_size(copies: dict[Path, Path], kind: str) -> int:
    return sum(copy.stat().st_size for copy in copies.values() if f"/{kind}/" in str(copy))


def test_the_table_method_retrieves_like_the_seed(site):
    config = site["write_config"]()
    ingest_all(config)
    assert mapd_here("archive", config=config).returncode == 0
    out = site["tmp"] / "by-method"
    paths = (publication.ArchivedRawEphys() & {"subject_id": SUBJECT}).retrieve(to=out)
    assert sorted(p.name for p in paths) == sorted(RAW_NAMES)
    assert all(p.read_bytes() == s.read_bytes() for p, s in zip(sorted(paths), sorted(site["raw"])))


def test_a_different_file_in_the_archive_is_never_overwritten(site):
    config = site["write_config"]()
    ingest_all(config)
    squatter = archived_path(site, site["behavior"], "behavior", site["rig"])
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"not the session")
    result = mapd_here("archive", config=config)
    assert result.returncode == 1
    assert "a different file is already there; not overwritten" in result.stdout
    assert squatter.read_bytes() == b"not the session"
    batches = dict(zip(*ingest.ArchiveBatch.to_arrays("part", "state")))
    assert batches == {"behavior": "failed", "probe 1": "archived"}  # one batch's trouble stops no other


STEPS = ("archive:staged", "archive:submission-id-stored", "archive:submitted-unrecorded", "archive:submitted",
         "archive:verified-unrecorded")


def test_killed_between_every_pair_of_steps_nothing_lost_nothing_twice(site):
    config = site["write_config"]()
    ingest_all(config)
    for step in STEPS:  # each run is killed at the next step of the same batches
        killed = run_mapd("archive", config=config, env={FAILPOINT_ENV: step})
        assert killed.returncode == -9, (step, killed.stdout, killed.stderr)
        assert not list(site["archive"].rglob(f"*{PARTIAL_SUFFIX}"))
    done = run_mapd("archive", config=config)
    assert done.returncode == 0 and "archived 2" in done.stdout, done.stdout + done.stderr
    assert len(archive_listing(site)) == 3  # one copy of each
    assert len(publication.DataSet.PhysicalFile()) == 3
    submission_ids = ingest.ArchiveBatch.to_arrays("submission_id")
    assert all(submission_ids) and len(set(submission_ids)) == 2

    config = site["write_config"](cleanup={"enabled": True, "grace_seconds": 0, "roots": [str(site["tmp"])]})
    for step in ("cleanup:checked", "cleanup:deleted-unrecorded"):
        killed = run_mapd("cleanup", config=config, env={FAILPOINT_ENV: step})
        assert killed.returncode == -9
    assert sum(1 for s in [site["behavior"], *site["raw"]] if not s.exists()) == 1  # killed just after one deletion
    done = run_mapd("cleanup", config=config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(ingest.ArchiveFile.to_arrays("state")) == {"cleaned"}
    assert not any(s.exists() for s in [site["behavior"], *site["raw"]])


def test_cleanup_keeps_every_file_a_rule_does_not_let_go(site):
    outside = site["tmp"] / "elsewhere"
    outside.mkdir()
    config = site["write_config"]()
    ingest_all(config)
    assert mapd_here("archive", config=config).returncode == 0
    behavior, (bin_file, meta) = site["behavior"], site["raw"]
    rules = {"enabled": True, "grace_seconds": 3600, "roots": [str(site["rig"]), str(site["ephys"])]}
    kept = mapd_here("cleanup", config=site["write_config"](cleanup=rules))
    assert kept.stdout.count("stays: ") == 3 and "grace period: may go after" in kept.stdout
    # grace over; one file changed, one with its content changed behind an old mtime, one escaping by a symlink
    rules["grace_seconds"] = 0
    stat = behavior.stat()
    data = bytearray(behavior.read_bytes())
    data[-1] ^= 0xFF
    behavior.write_bytes(bytes(data))
    os.utime(behavior, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: only the checksum knows
    meta.write_text(meta.read_text() + "\n")  # size changed
    moved = outside / bin_file.name
    bin_file.rename(moved)
    bin_file.symlink_to(moved)
    result = mapd_here("cleanup", config=site["write_config"](cleanup=rules))
    assert result.returncode == 0
    assert "changed since it was archived (sha256 read again)" in result.stdout
    assert "changed since it was archived (size or mtime)" in result.stdout
    assert f"outside every cleanup.roots entry (real path {moved})" in result.stdout
    assert behavior.exists() and meta.exists() and moved.exists() and bin_file.is_symlink()


def test_cleanup_keeps_files_whose_archive_copy_is_gone_or_unverified(site):
    config = site["write_config"]()
    ingest_all(config)
    rules = {"enabled": True, "grace_seconds": 0, "roots": [str(site["tmp"] / "rigs" / ".." / "ephys")]}
    assert mapd_here("archive", config=config).returncode == 0
    ingest.ArchiveBatch.update1(dict((ingest.ArchiveBatch & {"part": "behavior"}).keys()[0], state="pending"))
    for key in (ingest.ArchiveFile & (ingest.ArchiveBatch & {"part": "behavior"}).proj()).keys():
        ingest.ArchiveFile.update1(dict(key, state="pending", verified_time=None))  # as if never verified
    archived_path(site, site["raw"][0], "ephys_raw", site["ephys"]).unlink()  # someone removed the archive's copy
    result = mapd_here("cleanup", config=site["write_config"](cleanup=rules))
    assert "not archived yet (batch pending)" in result.stdout
    assert result.stdout.count("the archive's copy cannot be confirmed") == 2
    assert site["behavior"].exists() and all(raw.exists() for raw in site["raw"])


def test_the_daemon_archives_and_cleans_after_the_grace_period(site, daemons):
    config = site["write_config"](cleanup={"enabled": True, "grace_seconds": 2, "roots": [str(site["tmp"])]})
    daemon = daemons(config)
    wait_for(lambda: set(ingest.ArchiveFile.to_arrays("state")) == {"archived"} and len(ingest.ArchiveFile()) == 3,
             what="archived", daemon=daemon, timeout=60)
    assert all(source.exists() for source in [site["behavior"], *site["raw"]])  # the grace period is running
    wait_for(lambda: set(ingest.ArchiveFile.to_arrays("state")) == {"cleaned"}, what="cleaned", daemon=daemon,
             timeout=60)
    assert not any(source.exists() for source in [site["behavior"], *site["raw"]])
    status = mapd_here("status", config=config)
    assert "freed by cleanup: RRig" in status.stdout
    # What it deleted is never taken for a change: the probe folder, smaller now, is looked at again (by the
    # watcher, or by the full scan of a restart when stopped first) and found ingested, nothing else.
    daemon.stop()
    again = daemons(config)
    wait_for(lambda: again.logged("scan complete") and set(ingest.SourceFile.to_arrays("state")) == {"ingested"},
             what="a full scan", daemon=again)
    assert not again.logged("file failed") and not again.logged("probe folder changed after ingest; not ingested again")
    assert not again.logged("session ingested") and not again.logged("probe ingested")
    assert again.stop() == 0
    out = site["tmp"] / "back"
    assert mapd_here("retrieve", "--to", str(out), config=config).returncode == 0
    assert len([p for p in out.rglob("*") if p.is_file()]) == 3


class Crash(BaseException):
    """The process dies here (in-process stand-in for kill -9: nothing after it runs)."""


class FakeGlobus:
    """Globus's Transfer API, as mocked HTTP: a task per new submission id, 'Duplicate' for a used one."""

    def __init__(self, api, root: str) -> None:
        import json
        import re
        import uuid

        from bench.globus_calls import DESTINATION, TRANSFER

        self.tasks: dict[str, list[dict]] = {}  # submission id -> the items of its task
        self.submits: list[str] = []  # submission id of every submit request
        api.add_callback("GET", f"{TRANSFER}/submission_id",
                         callback=lambda request: (200, {}, json.dumps({"value": str(uuid.uuid4())})))

        def submit(request):
            document = json.loads(request.body)
            self.submits.append(document["submission_id"])
            code = "Duplicate" if document["submission_id"] in self.tasks else "Accepted"
            self.tasks.setdefault(document["submission_id"], document["DATA"])
            return 202, {}, json.dumps({"code": code, "task_id": document["submission_id"]})

        def task(request):
            task_id = request.path_url.split("/")[3]
            if request.path_url.split("?")[0].endswith("/successful_transfers"):
                done = [{"destination_path": i["destination_path"]} for i in self.tasks[task_id]]
                return 200, {}, json.dumps({"DATA": done, "next_marker": None})
            return 200, {}, json.dumps({"task_id": task_id, "status": "SUCCEEDED", "faults": 0,
                                        "verify_checksum": True, "files_skipped": 0})

        def listing(request):
            from urllib.parse import parse_qs, urlparse

            directory = parse_qs(urlparse(request.url).query)["path"][0].rstrip("/")
            entries = [{"name": i["destination_path"].rsplit("/", 1)[1], "type": "file", "size": self.sizes[
                i["destination_path"]]} for items in self.tasks.values() for i in items
                       if i["destination_path"].rsplit("/", 1)[0] == directory]
            return 200, {}, json.dumps({"DATA": entries})

        api.add_callback("POST", f"{TRANSFER}/transfer", callback=submit)
        api.add_callback("GET", re.compile(f"{TRANSFER}/task/.*"), callback=task)
        api.add_callback("GET", re.compile(f"{TRANSFER}/operation/endpoint/{DESTINATION}/ls.*"), callback=listing)
        self.sizes: dict[str, int] = {}


def test_globus_stage_killed_at_every_step_makes_one_task_per_batch(site, monkeypatch):
    import responses
    from globus_sdk.transport import RetryConfig

    from bench.globus_calls import DESTINATION, SOURCE, write_tokens
    from mapd.archive import stage
    from mapd.archive.globus import GlobusTransport
    from mapd.config import GlobusArchiveConfig, load_config
    from mapd.queue.policy import Policy

    config = load_config(site["write_config"]())
    ingest_all(site["write_config"]())
    state = site["tmp"] / "globus-state"
    state.mkdir()
    write_tokens(state)
    globus = GlobusArchiveConfig(source_endpoint=SOURCE, source_paths={site["tmp"]: "/rigs"},
                                 destination_endpoint=DESTINATION, destination_path="/map/raw",
                                 login_client_id="0a7e0000-0000-4000-8000-000000000006")

    def crash_at(name):
        def reached(point):
            if point == name:
                raise Crash(point)
        monkeypatch.setattr(stage.failpoints, "reached", reached)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        fake = FakeGlobus(api, "/map/raw")

        def run(step: str | None) -> None:
            crash_at(step)
            transport = GlobusTransport(globus, state, retry_config=RetryConfig(max_retries=0))
            worker = stage.ArchiveStage(config, transport, Policy.from_config(config.daemon))
            for row in ingest.ArchiveFile.to_dicts():  # what Globus would find at the destination
                fake.sizes[f"/map/raw/{row['destination']}"] = row["file_size"]
            plans = stage.unstaged()
            try:
                for h2o, day in sorted({(p.h2o, p.session_date) for p in plans} | set(stage.due_days())):
                    worker.work_on_day(h2o, day, plans)
            except Crash:
                return
            assert step is None, f"never reached {step}"

        for step in STEPS:
            run(step)
        run(None)
    assert set(ingest.ArchiveBatch.to_arrays("state")) == {"archived"}
    assert len(fake.tasks) == 2  # one transfer task per batch, however often it was submitted
    assert len(fake.submits) > 2 and set(fake.submits) == set(fake.tasks)  # resubmits reused the stored id
    assert len(publication.DataSet.PhysicalFile()) == 3
    sources = {i["source_path"] for items in fake.tasks.values() for i in items}
    assert f"/rigs/{site['behavior'].relative_to(site['tmp'])}" in sources


def test_a_path_that_escapes_its_root_by_dot_dot_stays(site):
    from mapd.archive import cleanup
    from mapd.config import load_config

    config = site["write_config"]()
    ingest_all(config)
    assert mapd_here("archive", config=config).returncode == 0
    rules = {"enabled": True, "grace_seconds": 0, "roots": [str(site["ephys"])]}
    # The behavior file as a path that starts with the root but leaves it: ephys/../rigs/RRig/...
    key = (ingest.ArchiveFile & {"kind": "behavior"}).keys()[0]
    ingest.ArchiveFile.update1(dict(key, data_root=str(site["ephys"] / ".." / "rigs" / "RRig")))
    decisions = {d.path.name: d for d in cleanup.review(load_config(site["write_config"](cleanup=rules)))}
    behavior = decisions[site["behavior"].name]
    assert not behavior.goes and behavior.reason.startswith("outside every cleanup.roots entry (real path")
    assert all(d.goes for name, d in decisions.items() if name != site["behavior"].name)


def test_a_long_copy_keeps_the_heartbeat_going(tmp_path):
    from mapd.archive.local import CHUNK_BYTES, LocalTransport
    from mapd.archive.transport import ArchiveItem, Batch

    source = tmp_path / "big.imec.ap.bin"
    source.write_bytes(os.urandom(5 * CHUNK_BYTES))
    (tmp_path / "archive").mkdir()
    beats = []
    transport = LocalTransport(tmp_path / "archive", keepalive=lambda: beats.append(1))
    item = ArchiveItem(source, "dl7/2018-05-02/ephys_raw/big.imec.ap.bin", source.stat().st_size, sha256(source))
    transport.submit(Batch("b", "b", (item,), "s"))
    assert len(beats) >= 10  # every chunk read from the source and read back from the disk
    assert (tmp_path / "archive" / item.destination).read_bytes() == source.read_bytes()
