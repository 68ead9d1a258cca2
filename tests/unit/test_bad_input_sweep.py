"""Every `kdgat` command against a table of bad inputs: one line on stderr starting `kdgat:`, exit 2, no traceback,
and not one byte changed in the folder it ran in (the tracking DB, outputs that exist, kdgat.toml, data folders).

The commands run in this process through `kdgat_core.cli.main` (tests/unit/cli_inprocess.py): the whole table takes
seconds, not the minutes a process per case would.
"""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from tests.unit.cli_inprocess import assert_one_sentence, digest, run_kdgat

DB = "mlflow.db"
# {db}: the tracking DB; {out}: an output file that exists; {file}: a plain file where a folder is needed;
# {data}: a data root with a synthetic dataset; {dir}: a folder; {fifo}: a special file. Every case must fail before it writes anything.
CASES: list[list[str]] = [
    ["version", "--bogus"],
    ["leaderboard", "-u", "{db}", "--format", "xml"],
    ["leaderboard", "-u", "{db}", "--top", "abc"],
    ["leaderboard", "-u", "{db}", "--top", "0"],
    ["leaderboard", "-u", "{db}", "--top", "99999999999999999999"],
    ["leaderboard", "-u", "{db}", "--metric", "nope"],
    ["leaderboard", "-u", "{db}", "--stage", "nope"],
    ["leaderboard", "-u", "{db}", "-o", "{db}"],
    ["leaderboard", "-u", "{db}", "-o", "{out}"],
    ["leaderboard", "-u", "{dir}/missing.db"],
    ["leaderboard", "-u", "{out}"],
    ["compare", "-u", "{db}"],
    ["compare", "-u", "{db}", "no-such-run", "hcrl_sa/teacher_curriculum"],
    ["diff", "-u", "{db}", "no-such-run", "other"],
    ["sweep", "-u", "{db}"],
    ["sweep", "-u", "{db}", "--param", "nope"],
    ["dataset", "-u", "{db}", "nope"],
    ["dataset", "-u", "{db}", "hcrl_sa", "-m", "nope"],
    ["lineage", "-u", "{db}", "-m", "nope"],
    ["lineage", "-u", "{db}", "no-such-run"],
    ["runs", "-u", "{db}", "--limit", "-1"],
    ["runs", "-u", "{db}", "--limit", "99999999999999999999"],
    ["runs", "-u", "{db}", "--status", "nope"],
    ["runs", "-u", "{db}", "-f", "csv", "-o", "{db}"],
    ["runs", "-u", "{db}", "-f", "csv", "-o", "{db}-wal"],
    ["runs", "-u", "{db}", "-o", "{dir}", "--force"],
    ["query", "-u", "{db}", "SELEC 1"],
    ["query", "-u", "{db}", "SELECT 1", "-o", "{out}"],
    ["backup", "-u", "{db}", "{dir}", "--force"],
    ["backup", "-u", "{db}", "{out}"],
    ["backup", "-u", "{db}", "{db}", "--force"],
    ["backup", "-u", "{db}", "{fifo}", "--force"],
    ["backup", "-u", "{file}", "{dir}/copy.db"],
    ["doctor", "-u", "{db}", "-o", "{db}"],
    ["doctor", "-u", "{db}", "-o", "{out}"],
    ["doctor", "-u", "{db}", "--format", "xml"],
    ["ingest", "nope", "--raw", "{dir}"],
    ["ingest", "synthetic", "--raw", "{dir}/missing"],
    ["ingest", "synthetic", "--raw", "{data}", "--format", "bogus"],
    ["ingest", "synthetic", "--raw", "{data}", "--label", "5"],
    ["ingest", "synthetic", "--raw", "{data}", "--out", "{file}/root"],
    ["datasets", "--format", "bogus"],
    ["datasets", "nope", "--data-root", "{data}"],
    ["datasets", "--data-root", "{data}", "-o", "{out}"],
    ["graphs", "nope"],
    ["graphs", "synthetic", "--window", "0", "--data-root", "{data}"],
    ["graphs", "synthetic", "--val-fraction", "2", "--data-root", "{data}"],
    ["graphs", "synthetic", "--window", "abc"],
    ["graphs", "synthetic", "--data-root", "{data}", "--cache-dir", "{file}/cache"],
    ["synth", "{dir}/s", "--name", "../../evil"],
    ["synth", "{dir}/s", "--scale", "nan"],
    ["synth", "{dir}/s", "--scale", "-1"],
    ["synth", "{file}/s"],
    ["synth", "{dir}/s", "--format", "bogus"],
    ["run", "nope", "-p", "vgae,teacher", "-d", "synthetic"],
    ["run", "autoencoder", "-p", "nope", "-d", "synthetic"],
    ["run", "autoencoder", "-p", "vgae,teacher", "-d", "nope"],
    ["run", "autoencoder", "-p", "vgae,teacher,tiny", "-d", "synthetic", "-u", "{db}", "-O", "train.epochs=0"],
    ["run", "autoencoder", "-p", "vgae,teacher,tiny", "-d", "synthetic", "-u", "{db}", "-O", "train.lr=nan"],
    ["run", "autoencoder", "-p", "vgae,teacher,tiny", "-d", "synthetic", "-u", "{db}", "-O", "nonsense=1"],
    ["run", "autoencoder", "-p", "vgae,teacher,tiny", "-d", "synthetic", "-u", "{db}", "--data-root", "{dir}/none"],
    ["run", "autoencoder", "-p", "vgae,teacher,tiny", "-d", "synthetic", "--data-root", "{data}", "-u", "{dir}"],
    ["config-keys", "--preset", "nope"],
    ["submit", "autoencoder", "-d", "hcrl_sa", "-n", "--array", "5-1"],
    ["submit", "autoencoder", "-d", "hcrl_sa", "-n", "--after", "abc"],
    ["submit", "autoencoder", "-d", "hcrl_sa", "-n", "--executor", "bogus"],
    ["submit", "nope", "-d", "hcrl_sa", "-n"],
    ["jobs", "--limit", "-1"],
    ["jobs", "--format", "xml"],
    ["logs", "abc;rm"],
    ["cancel", "-y", "abc"],
    ["reconcile", "-n", "-u", "{dir}/missing.db"],
    ["reconcile", "-n", "-u", "{empty}"],
    ["reconcile", "-n", "-u", "{dir}"],
    ["reconcile", "-n", "-u", "{db}", "--format", "xml"],
    ["efficiency", "-u", "{db}", "--since", "yesterday"],
    ["efficiency", "-u", "{db}", "--format", "xml"],
    ["failures", "-u", "{db}", "--since", "3 weeks"],
    ["failures", "-u", "{db}", "-o", "{db}"],
    ["resubmit", "-u", "{db}"],
    ["resubmit", "-u", "{db}", "--failed", "--cause", "nope"],
    ["resubmit", "-u", "{db}", "--failed", "--stage", "nope"],
    ["resubmit", "-u", "{db}", "no-such-run", "-n"],
    ["watch", "--once", "--interval", "abc"],
]
# A kdgat.toml that is not UTF-8, then one that does not fit the schema: every command that reads it says so
TOML_COMMANDS = [["doctor"], ["runs"], ["datasets"], ["submit", "autoencoder", "-d", "hcrl_sa", "-n"], ["jobs"]]
BAD_TOMLS = [b'[tracking]\nuri = "\xff.db"\n', b"[tracking]\nuri = 5\n", b"[nope]\n"]


@pytest.fixture
def workdir(tmp_path, fixture_db):
    from kdgat_core.data.synthetic import write_dataset

    work = tmp_path / "work"
    (work / "dir").mkdir(parents=True)
    shutil.copyfile(fixture_db[0], work / DB)
    (work / "out.csv").write_text("someone's results\n")
    (work / "file").write_text("a file where a folder should be\n")
    (work / "empty.db").write_bytes(b"")
    os.mkfifo(work / "device")  # stands in for a device node such as /dev/full (never touch a real one in a test)
    write_dataset(work / "data", scale=0.02)
    return work


def fill(args: list[str], work) -> list[str]:
    values = {
        "db": work / DB,
        "out": work / "out.csv",
        "file": work / "file",
        "data": work / "data",
        "dir": work / "dir",
        "empty": work / "empty.db",
        "fifo": work / "device",
    }
    return [a.format(**values) for a in args]


def test_every_command_refuses_bad_input_in_one_sentence_and_writes_nothing(capsys, tmp_path, workdir):
    env = {"KDGAT_CACHE_DIR": str(tmp_path / "cache"), "SLURM_CONF": str(tmp_path / "no-slurm.conf")}
    before = digest(workdir)
    failures = []
    for case in CASES:
        args = fill(case, workdir)
        try:
            res = run_kdgat(capsys, args, cwd=workdir, env=env)
        except Exception as exc:  # escaped main(): a traceback for the user
            failures.append(f"kdgat {' '.join(case)}: raised {type(exc).__name__}: {str(exc)[:200]}")
            before = digest(workdir)
            continue
        try:
            assert_one_sentence(res)
            assert digest(workdir) == before, "files changed"
        except AssertionError as exc:
            failures.append(f"kdgat {' '.join(case)}: {str(exc).splitlines()[0]} | {res.err.strip()[:300]}")
            before = digest(workdir)
    assert stat.S_ISFIFO(os.stat(workdir / "device").st_mode)
    assert not failures, f"{len(failures)} of {len(CASES)} cases:\n" + "\n".join(failures)


@pytest.mark.parametrize("content", BAD_TOMLS, ids=["not-utf8", "uri-5", "unknown-section"])
def test_a_bad_kdgat_toml_is_one_sentence_everywhere(capsys, tmp_path, content):
    (tmp_path / "kdgat.toml").write_bytes(content)
    before = digest(tmp_path)
    for args in TOML_COMMANDS:
        res = run_kdgat(capsys, args, cwd=tmp_path, env={"KDGAT_CACHE_DIR": str(tmp_path / "cache")})
        assert_one_sentence(res, "kdgat.toml")
        assert digest(tmp_path) == before
