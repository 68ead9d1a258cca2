"""Rendering sbatch scripts: what lands in the script, quoting and injection, StrictUndefined, resources, the DAG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdgat_core.config import KdgatError, Settings, Stage, load_settings, preset
from kdgat_core.slurm import plan_pipeline, prepare_job, render_sbatch
from kdgat_core.slurm.resources import parse_pairs, resolve_resources

KDGAT = str(Path(sys.executable).parent / "kdgat")


def write_settings(folder: Path, text: str = "") -> Settings:
    (folder / "kdgat.toml").write_text(textwrap.dedent(text))
    return load_settings(folder)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A project folder whose kdgat.toml points jobs at an argv recorder instead of the real kdgat."""
    recorder = tmp_path / "record_argv"
    recorder.write_text(
        f"#!{sys.executable}\nimport json, os, sys\nopen(os.environ['ARGV_OUT'], 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    recorder.chmod(0o755)
    return tmp_path


def cluster_toml(project: Path, extra: str = "") -> Settings:
    return write_settings(
        project,
        f"""
        [tracking]
        uri = "db/mlflow.db"
        [cluster]
        kdgat = "{project / "record_argv"}"
        {extra}
    """,
    )


def run_script(script: str, project: Path, env: dict[str, str] | None = None) -> list[str]:
    """Run the rendered script with bash (the #SBATCH lines are comments) and return the argv kdgat received."""
    path = project / "job.sh"
    path.write_text(script)
    out = project / "argv.json"
    proc = subprocess.run(
        ["bash", str(path)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "ARGV_OUT": str(out), **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_script_has_directives_log_paths_tracking_uri_and_the_exact_run_command(project: Path):
    settings = cluster_toml(project)
    cfg = preset("gat,student,tiny", dataset="synthetic")
    job = prepare_job(cfg, {"partition": "debug", "account": "lab1"}, settings, workdir=str(project))
    lines = job.script.splitlines()
    folder = project / "db" / "experimentruns" / "synthetic" / "student_curriculum"
    assert "#SBATCH --job-name=synthetic/student_curriculum" in lines
    assert f"#SBATCH --output={folder}/slurm-%j.out" in lines
    assert f"#SBATCH --error={folder}/slurm-%j.err" in lines
    assert "#SBATCH --partition=debug" in lines and "#SBATCH --account=lab1" in lines
    assert "#SBATCH --time=06:00:00" in lines and "#SBATCH --mem=128G" in lines
    assert "#SBATCH --cpus-per-task=16" in lines and "#SBATCH --gres=gpu:1" in lines
    assert f"export MLFLOW_TRACKING_URI=sqlite:///{project / 'db' / 'mlflow.db'}" in lines
    # the job runs exactly the command that rebuilds this config
    argv = run_script(job.script, project)
    assert argv == cfg.run_command(str(project / "record_argv"))[1:]


def test_hostile_values_stay_inert_text(project: Path):
    settings = cluster_toml(project, 'exports = { NOTE = "a $(touch pwned1) `touch pwned2` ; touch pwned3" }')
    cfg = preset("vgae,teacher", dataset="synthetic")
    hostile = "cpu; rm -rf ~ $(touch pwned4) `touch pwned5`\ntouch pwned6 'q\" \\"
    cfg.train.device = hostile
    script = render_sbatch(cfg, None, settings, workdir=str(project))
    argv = run_script(script, project, env={"HOME": str(project / "home")})
    assert f"train.device={hostile}" in argv
    assert not list(project.glob("pwned*")), "a value in the script was executed"


@pytest.mark.parametrize(
    "field, value",
    [
        ("partition", "debug\n#SBATCH --uid=0"),
        ("account", "lab; rm -rf ~"),
        ("time", "1:00:00 --wrap=id"),
        ("mem", "$(id)"),
        ("qos", "`id`"),
        ("extra", ["--exclusive\n#SBATCH --uid=0"]),
        ("extra", ["--wrap=rm -rf ~"]),
    ],
)
def test_sbatch_values_are_validated(project: Path, field: str, value):
    settings = cluster_toml(project)
    with pytest.raises(KdgatError, match="Refusing"):
        render_sbatch(preset("vgae,teacher", dataset="synthetic"), {field: value}, settings)


def test_a_newline_in_the_run_name_cannot_inject_a_directive(project: Path):
    # a dataset registered in kdgat.toml under a hostile name: the run name (job name) carries it
    settings = cluster_toml(project, '[datasets."evil\\n#SBATCH --uid=0"]\n        description = "x"')
    cfg = preset("vgae,teacher", dataset="evil\n#SBATCH --uid=0")
    with pytest.raises(KdgatError, match="job name"):
        render_sbatch(cfg, None, settings)
    cfg.dataset = "not_registered"
    with pytest.raises(KdgatError, match="Unknown dataset"):
        render_sbatch(cfg, None, settings)


def test_a_missing_template_variable_is_an_error_not_an_empty_string(project: Path):
    own = project / "my_templates"
    own.mkdir()
    (own / "curriculum.sh.j2").write_text(
        '{% extends "base.sh.j2" %}{% block before %}echo {{ job.no_such_thing }}{% endblock %}\n'
    )
    settings = cluster_toml(project, 'templates = "my_templates"')
    with pytest.raises(KdgatError, match="no_such_thing"):
        render_sbatch(preset("gat,teacher", dataset="synthetic"), None, settings)


def test_a_users_template_folder_overrides_one_stage_and_keeps_the_shipped_base(project: Path):
    own = project / "my_templates"
    own.mkdir()
    (own / "fusion.sh.j2").write_text(
        '{% extends "base.sh.j2" %}{% block before %}echo our-own-fusion-setup{% endblock %}\n'
    )
    settings = cluster_toml(project, 'templates = "my_templates"')
    fusion = render_sbatch(preset("dqn,teacher", dataset="synthetic"), None, settings)
    curriculum = render_sbatch(preset("gat,teacher", dataset="synthetic"), None, settings)
    assert "echo our-own-fusion-setup" in fusion and "#SBATCH --job-name=synthetic/teacher_fusion" in fusion
    assert "our-own-fusion-setup" not in curriculum


def test_environment_setup_from_the_cluster_section(project: Path):
    settings = cluster_toml(
        project,
        textwrap.dedent("""\
        modules = ["cuda/12.1", "python/3.11"]
        venv = "/opt/my env"
        exports = { HF_HOME = "/scratch/hf cache" }
    """).replace("\n", "\n        "),
    )
    script = render_sbatch(preset("vgae,teacher", dataset="synthetic"), None, settings)
    assert "module load cuda/12.1\nmodule load python/3.11\n" in script
    assert "source '/opt/my env/bin/activate'" in script
    assert "export HF_HOME='/scratch/hf cache'" in script


def test_bad_export_name_is_refused(project: Path):
    settings = cluster_toml(project, 'exports = { "A;B" = "x" }')
    with pytest.raises(KdgatError, match="environment variable name"):
        render_sbatch(preset("vgae,teacher", dataset="synthetic"), None, settings)


def test_array_job_takes_its_seed_from_the_task_index(project: Path):
    settings = cluster_toml(project)
    cfg = preset("gat,teacher", dataset="synthetic")
    job = prepare_job(cfg, None, settings, array="0-3", workdir=str(project))
    assert "#SBATCH --array=0-3" in job.script
    assert job.output.endswith("slurm-%A_%a.out")
    argv = run_script(job.script, project, env={"SLURM_ARRAY_TASK_ID": "3", "SLURM_CPUS_PER_TASK": "1"})
    assert argv[-2:] == ["-O", "train.seed=3"]
    with pytest.raises(KdgatError, match="array"):
        prepare_job(cfg, None, settings, array="0-3; id")


def test_resource_defaults_per_stage_then_kdgat_toml_then_the_call():
    training = resolve_resources(Stage.CURRICULUM, "teacher")
    evaluation = resolve_resources(Stage.EVALUATION, "student")
    assert (training.time, training.mem, training.cpus, training.gpus) == ("06:00:00", "128G", 16, 1)
    assert (evaluation.time, evaluation.mem, evaluation.cpus, evaluation.gpus) == ("02:00:00", "32G", 8, 1)
    cluster = {
        "resources": {"partition": "gpu", "account": "lab", "curriculum": {"mem": "64G", "student": {"mem": "16G"}}}
    }
    assert resolve_resources("curriculum", "teacher", cluster).mem == "64G"
    student = resolve_resources("curriculum", "student", cluster)
    assert (student.mem, student.partition, student.account) == ("16G", "gpu", "lab")
    assert resolve_resources("fusion", "student", cluster).mem == "128G"
    called = resolve_resources("curriculum", "student", cluster, {"mem": "2G", "gpus": "0"})
    assert (called.mem, called.gres_request) == ("2G", None)
    prep = resolve_resources(
        "preprocess", "teacher", {"resources": {"partition": "gpu", "preprocess": {"partition": "cpu"}}}
    )
    assert (prep.gpus, prep.gres_request, prep.partition, prep.cpus) == (0, None, "cpu", 8)
    with pytest.raises(KdgatError, match="Unknown resource"):
        resolve_resources("curriculum", "student", None, {"memory": "2G"})
    with pytest.raises(KdgatError, match="not a stage"):
        resolve_resources("curriculum", "student", {"resources": {"curiculum": {"mem": "1G"}}})


def test_resource_pairs_split_only_before_another_key():
    assert parse_pairs(["mem=8G,time=10", "partition=gpu,debug", "constraint=a100|h100"]) == {
        "mem": "8G",
        "time": "10",
        "partition": "gpu,debug",
        "constraint": "a100|h100",
    }
    with pytest.raises(KdgatError):
        parse_pairs(["mem"])


def test_pipeline_dag_order_and_edges():
    plan = plan_pipeline("synthetic", ["student", "teacher"], kd=True, variant="tiny")
    names = [p.key for p in plan]
    assert names == [
        "synthetic/preprocess",
        "synthetic/teacher_autoencoder",
        "synthetic/teacher_curriculum",
        "synthetic/teacher_fusion",
        "synthetic/teacher_evaluation",
        "synthetic/student_autoencoder_kd",
        "synthetic/student_curriculum_kd",
        "synthetic/student_fusion_kd",
        "synthetic/student_evaluation_kd",
    ]
    after = {p.key: p.after for p in plan}
    assert after["synthetic/preprocess"] == [] and plan[0].preprocess
    assert after["synthetic/teacher_autoencoder"] == ["synthetic/preprocess"]
    assert after["synthetic/teacher_fusion"] == ["synthetic/teacher_curriculum"]
    assert set(after["synthetic/student_curriculum_kd"]) == {
        "synthetic/student_autoencoder_kd",
        "synthetic/teacher_curriculum",
    }
    # every distilled stage waits for the teacher's same stage: `--teacher auto` finds it when the job starts
    assert after["synthetic/student_evaluation_kd"] == ["synthetic/student_fusion_kd", "synthetic/teacher_evaluation"]
    # every parent comes earlier in submission order
    for i, node in enumerate(plan):
        assert all(names.index(a) < i for a in node.after)
    students = [p.cfg for p in plan if p.cfg.model_size == "student" and not p.preprocess]
    assert all(c.kd.enabled and c.kd.teacher_run_id == "auto" for c in students)
    tiny_epochs = preset("gat,teacher,tiny").train.epochs
    assert tiny_epochs != preset("gat,teacher").train.epochs
    assert all(c.train.epochs == tiny_epochs for c in (p.cfg for p in plan))  # the tiny variant reached every job


def test_pipeline_without_kd_keeps_sizes_independent_and_rejects_nonsense():
    plan = plan_pipeline("synthetic", ["teacher", "student"], kd=False, preprocess=False)
    assert not any(p.cfg.kd.enabled for p in plan)
    assert [p.after for p in plan if p.cfg.stage == "autoencoder"] == [[], []]
    assert plan_pipeline("synthetic", ["student"], stages=["autoencoder", "curriculum"])[2].after == [
        "synthetic/student_autoencoder"
    ]
    # without the autoencoder in it, a pipeline has no preprocessing head (the cache was built before)
    assert [p.key for p in plan_pipeline("synthetic", ["teacher"], stages=["fusion", "evaluation"])] == [
        "synthetic/teacher_fusion",
        "synthetic/teacher_evaluation",
    ]
    with pytest.raises(KdgatError, match="student"):
        plan_pipeline("synthetic", ["teacher"], kd=True)
    with pytest.raises(KdgatError, match="model size"):
        plan_pipeline("synthetic", ["huge"])


def test_dry_run_cli_prints_the_dag_and_every_script(project: Path):
    cluster_toml(project)
    proc = subprocess.run(
        [KDGAT, "submit", "pipeline", "--dataset", "synthetic", "--sizes", "teacher,student", "--kd", "--dry-run"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("#!/bin/bash") == 9
    assert "record_argv graphs synthetic --window 100 --stride 100 --max-messages 0" in proc.stdout
    assert proc.stdout.count("--kd --teacher auto") == 4
    assert "synthetic/student_fusion_kd" in proc.stdout and "(dry run)" in proc.stdout
    assert not (project / "db" / "experimentruns").exists(), "a dry run wrote files"


def test_cli_refuses_bad_input_with_one_sentence(project: Path):
    cluster_toml(project)
    proc = subprocess.run(
        [KDGAT, "submit", "curriculum", "--dataset", "synthetic", "--preset", "vgae,teacher", "--dry-run"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is for the autoencoder stage" in proc.stderr
    proc = subprocess.run(
        [KDGAT, "submit", "curriculum", "--dataset", "synthetic", "-R", "partition=a b", "--dry-run"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Refusing partition" in proc.stderr


def test_importing_the_slurm_layer_loads_no_heavy_modules():
    code = (
        "import sys, kdgat_core.slurm; print([m for m in ('torch', 'torch_geometric', 'mlflow') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
