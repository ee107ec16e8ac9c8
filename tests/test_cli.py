"""The ``mapd`` command as a user runs it: real processes, the embedded database, real files."""

from __future__ import annotations

import json
import shutil

import yaml

import pytest

from conftest import REPO, TEST_DATA, TEST_DATABASE, place_real_session, run_mapd

COMMANDS = [[], ["config", "check"], ["rescan"], ["run"], ["retry"], ["logs"], ["status"], ["subject", "add"],
            ["subject", "import"], ["shell"], ["erd"], ["migrate"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "mapd")
def test_every_command_has_help(command):
    result = run_mapd(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: mapd" in result.stdout


def _subcommands(parser, path=()):
    """Every (command words, parser) below ``parser``."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subcommands(sub, (*path, name))


def test_every_subcommand_has_a_one_line_description_and_documents_every_argument():
    import argparse

    from mapd.cli import _build_parser

    commands = dict(_subcommands(_build_parser()))
    assert {" ".join(words) for words in commands} >= {" ".join(c) for c in COMMANDS if c}
    for words, parser in commands.items():
        first = (parser.description or "").split(". ")[0]
        assert first and "\n" not in first and len(first) < 110, words
        for action in parser._actions:
            if action.dest != "help" and not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"mapd {' '.join(words)}: {action.dest} has no help"


def test_every_command_has_a_readme_section():
    from mapd.cli import _build_parser

    readme = (REPO / "README.md").read_text()
    groups = {("config",), ("subject",), ("export",), ("globus",)}  # a word before its commands, no section
    missing = [" ".join(words) for words, _ in _subcommands(_build_parser())
               if words not in groups and f"### `mapd {' '.join(words)}" not in readme]
    assert missing == []


def test_a_command_group_alone_prints_its_own_help():
    result = run_mapd("subject")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: mapd subject [-h] COMMAND")
    assert "add       enter one subject" in result.stderr and "import" in result.stderr


def test_invalid_config_is_a_clear_error_without_traceback(tmp_path):
    config = tmp_path / "mapd.yaml"
    config.write_text("session_user: a\nrig_data_paths: [{rig: R, path: /x, colour: red}]\n")
    result = run_mapd("status", config=config)
    assert result.returncode == 2
    assert str(config) in result.stderr and "rig_data_paths.0.colour: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_quick_start_on_the_bundled_data(tmp_path, db, state_dir):
    # The README's quick start, with its state in a temporary copy.
    config = tmp_path / "config" / "quickstart.yaml"
    config.parent.mkdir()
    shutil.copyfile(REPO / "config" / "quickstart.yaml", config)
    shutil.copytree(TEST_DATA, tmp_path / "test_data")
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "state_dir": str(state_dir), "database": TEST_DATABASE}))

    imported = run_mapd("subject", "import", str(tmp_path / "test_data" / "subjects.csv"), config=config)
    assert imported.returncode == 0, imported.stderr
    assert "1 subject entered, 0 already entered" in imported.stdout

    rescan = run_mapd("rescan", config=config)
    assert rescan.returncode == 0, rescan.stderr
    assert "  ingested                  1  (1 sessions, 11 trials" in rescan.stdout

    again = run_mapd("rescan", config=config)
    assert "  already ingested          1" in again.stdout and again.returncode == 0

    status = run_mapd("status", "--json", config=config)
    report = json.loads(status.stdout)
    assert report["sessions"] == 1 and report["files"]["ingested"] == 1

    shell = run_mapd("shell", "-c", "print(len(experiment.SessionTrial()), len(experiment.ActionEvent()))",
                     config=config)
    assert shell.stdout.split() == ["11", "63"], shell.stderr

    erd = run_mapd("erd", "--out", str(tmp_path / "erd"), config=config)
    assert erd.returncode == 0, erd.stderr
    diagrams = sorted(p.name for p in (tmp_path / "erd").iterdir())
    assert diagrams == ["ccf.mmd", "ephys.mmd", "experiment.mmd", "ingest.mmd", "lab.mmd", "publication.mmd"]
    experiment_erd = (tmp_path / "erd" / "experiment.mmd").read_text()
    assert "experiment_SessionTrial([SessionTrial])" in experiment_erd and "module" not in experiment_erd
    assert f'subgraph {TEST_DATABASE["schema_prefix"]}lab["lab"]' in experiment_erd  # the tables of lab it depends on, grouped apart
    assert "lab_Subject --> experiment_Session" in experiment_erd
    assert all(p.read_text().endswith("\n") for p in (tmp_path / "erd").iterdir())


def test_rescan_exit_status_and_summary_with_a_bad_file(tmp_path, db, write_config, rig_root):
    place_real_session(rig_root)
    bad = rig_root / "dl25" / "tw2" / "Session Data" / "dl25_tw2_20180226_101010.mat"
    bad.write_text("this is not a MAT file\n")
    config = write_config({"RRig": rig_root})
    assert run_mapd("subject", "add", "--subject-id", "407513", "--h2o", "dl25", config=config).returncode == 0

    result = run_mapd("rescan", config=config)
    assert result.returncode == 1
    assert "  ingested                  1" in result.stdout
    assert "  failed                    1" in result.stdout
    assert f"failed: {bad}:" in result.stdout
    assert bad.read_text() == "this is not a MAT file\n"  # never modified

    status = run_mapd("status", config=config)
    assert f"{bad}:" in status.stdout and "failed 1" in status.stdout


def test_user_errors_exit_2(tmp_path, db, write_config, rig_root):
    config = write_config({"RRig": rig_root})
    assert run_mapd("subject", "add", "--subject-id", "1", "--h2o", "dl25", config=config).returncode == 0
    conflict = run_mapd("subject", "add", "--subject-id", "2", "--h2o", "dl25", config=config)
    assert conflict.returncode == 2 and "h2o dl25 already belongs to subject 1" in conflict.stderr
    unknown_rig = run_mapd("rescan", "--rig", "NoSuchRig", config=config)
    assert unknown_rig.returncode == 2 and "no rig named NoSuchRig" in unknown_rig.stderr
    outside = run_mapd("rescan", str(tmp_path), config=config)
    assert outside.returncode == 2 and "not below any rig_data_paths entry" in outside.stderr
    bad_date = run_mapd("rescan", "--since", "25-02-2018", config=config)
    assert bad_date.returncode == 2 and "is not a date like 2018-02-25" in bad_date.stderr
    bad_csv = tmp_path / "subjects.csv"
    bad_csv.write_text("subject_id,h2o,sex\n12,dl7,X\n")
    imported = run_mapd("subject", "import", str(bad_csv), config=config)
    assert imported.returncode == 2 and f"{bad_csv}: row 2: sex" in imported.stderr
    bad_csv.write_text("subject_id,h2o\n12,dl7\n13,dl25\n")  # dl25 is subject 1's
    taken = run_mapd("subject", "import", str(bad_csv), config=config)
    assert taken.returncode == 2
    assert taken.stderr == f"mapd: {bad_csv}: row 3: h2o dl25 already belongs to subject 1\n"
    for result in (conflict, unknown_rig, outside, imported, taken):
        assert "Traceback" not in result.stderr


def test_unreachable_database_exit_3_and_no_password_shown(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text("very-secret-pw-123\n")
    config = tmp_path / "mapd.yaml"
    config.write_text(
        f"state_dir: {tmp_path}/state\nsession_user: a\n"
        f"database: {{backend: postgresql, host: 127.0.0.1, port: 9, user: mapd, password_file: {secret}}}\n"
    )
    result = run_mapd("config", "check", config=config)
    assert result.returncode == 3
    assert "cannot connect to postgresql database mapd@127.0.0.1:9" in result.stderr
    assert "very-secret-pw-123" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_subject_file_rows_that_disagree_name_both_rows(tmp_path):
    from mapd.subjects import SubjectError, read_subject_file

    csv = tmp_path / "subjects.csv"
    csv.write_text("subject_id,h2o\n1,aa0\n1,aa0\n2,aa1\n")
    assert [(row, entry.subject_id) for row, entry in read_subject_file(csv)] == [(2, 1), (3, 1), (4, 2)]
    csv.write_text("subject_id,h2o\n1,aa1\n2,aa1\n")
    with pytest.raises(SubjectError) as error:
        read_subject_file(csv)
    assert str(error.value) == f"{csv}: row 3: h2o aa1 already belongs to subject 1 (row 2)"
    yaml_file = tmp_path / "subjects.yaml"
    yaml_file.write_text("- {subject_id: 1, h2o: aa1}\n- {subject_id: 1, h2o: aa2}\n")
    with pytest.raises(SubjectError) as error:
        read_subject_file(yaml_file)
    assert str(error.value) == f"{yaml_file}: row 2: subject 1 already has h2o aa1 (row 1), not aa2"


def test_status_wording_each_waiting_reason_once_and_never_ingested(capsys):
    from mapd.cli import _print_status
    from mapd.queue.status import FileProblem, RigActivity, StatusReport

    reason = "no subject with water_restriction_number dl9; enter it with `mapd subject add`"
    waiting = [FileProblem(f"id{n}", f"/rigs/dl9/s/dl9_tw_2018050{n}_100000.mat", "RRig", "waiting", reason,
                           "2026-12-01 10:00:00", 1, 90.0) for n in (1, 2)]
    changed = FileProblem("id3", "/rigs/dl7/s/f.mat", "RRig", "changed", "content differs from the ingested file",
                          "2026-12-01 10:00:00", 1, 5.0)
    report = StatusReport(local_daemon=None, paths=[], files={"waiting": 2, "changed": 1},
                          rigs=[RigActivity("RRig", "dl9/s/dl9_tw_20180502_100000.mat", "2026-12-01 10:00:00",
                                            None, None)],
                          oldest_waiting=waiting[0], waiting=waiting, changed=[changed])
    _print_status(report)
    out = capsys.readouterr().out
    assert "last ingest: never" in out and "at never" not in out
    assert out.count(reason) == 1
    assert ("waiting (showing 2 of 2):\n"
            f"  {reason}:\n"
            "    /rigs/dl9/s/dl9_tw_20180501_100000.mat (for 1.5 min)  [id1]\n"
            "    /rigs/dl9/s/dl9_tw_20180502_100000.mat (for 1.5 min)  [id2]\n") in out
    assert "changed after ingest (showing 1 of 1):\n  /rigs/dl7/s/f.mat: content differs from the ingested file" in out
