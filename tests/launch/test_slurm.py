"""slurm/train.sh and slurm/sweep.sh on a real Slurm cluster: two emulated nodes on this machine.

    .venv/bin/pytest tests/launch/test_slurm.py -q        # as root; installs slurm + munge with apt if missing

tests/slurm_cluster.sh starts munged, slurmctld and two slurmd (n1, n2) from a temp folder and the
fixture stops them by PID. Jobs run in CPU mode (CHECKBOX_DIST_CPU=1, gloo) with 2 processes per node
(CHECKBOX_DIST_PROCS_PER_NODE=2), timm's `test_resnet` at 32 px and a global batch of 32: two `accelerate
launch` (machine ranks 0 and 1) form one world of 4. One job runs uninterrupted on both nodes; a second
one, submitted alongside with `--nodes=1-2 --ntasks=2 --spread-job`, gets USR1 after its first epoch
exactly as `#SBATCH --signal=B:USR1@120` would send it, checkpoints and requeues itself. Node n2 is then drained (as a
cluster loses a node), so the requeued job starts on n1 alone: world size 2, the accumulation re-derived
(1 -> 2), the epoch position kept in images. Its final weights must equal the uninterrupted job's within the
launch-invariance tolerance (1e-5, tests/train/test_launch_invariance.py). `scontrol requeue` holds a job
~2 min (BeginTime) before it may start again; the test lifts that with `scontrol update StartTime=now`
(which a real cluster does not need) as soon as no node can refuse the restart (release_requeued). A third
job, on one node with --cpus-per-task=2, checks the CPUs its ranks may run on (the cluster binds tasks to
cores, TaskPlugin=task/affinity) and gets SIGTERM on every step, as preemption with a GraceTime sends it: it
saves `last`, requeues itself and resumes. About 3 min on an idle 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

# the fixtures wait for whole Slurm jobs, one of them started twice
pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(1200)]

# Exact gradient sums (train.exact_gradient_sum): a job requeued onto another shape ends bit-identical to the
# uninterrupted one. With float32 sums the shapes part by rounding, which this tiny BatchNorm net on flat synthetic
# images can amplify to 1e-3 on some processors (docs/LAUNCH.md, "Tolerance, measured").
TINY = {
    "data": {"root": "", "synth_n": 200, "synth_seed": 0, "image_size": 32, "batch_size": 8, "eval_batch_size": 16,
             "num_workers": 0, "augment": {"translate": 0.05, "scale": [0.9, 1.1], "brightness": 0.2,
                                           "contrast": 0.2, "invert": 0.2}},
    "model": {"name": "test_resnet"},
    "optim": {"name": "adamw", "lr": 0.002, "weight_decay": 0.05},
    "schedule": {"name": "constant"},
    "train": {"global_batch_size": 32, "epochs": 3, "early_stopping_patience": 0, "log_every_steps": 1,
              "progress": False, "label_smoothing": 0.1, "exact_gradient_sum": True},
    "tracking": {"backends": []},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("a Slurm test cluster needs root (the daemons run as root, munged as user munge)")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("the Slurm tests need 2 CPUs (2 processes per node, a job with --cpus-per-task=2)")
    folder = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(["bash", str(REPO / "tests" / "slurm_cluster.sh"), "start", str(folder / "cluster")],
                           capture_output=True, text=True, timeout=600)
    if start.returncode == 4 and not shutil.which("slurmctld"):
        pytest.skip(f"Slurm is not installed and apt-get could not install it: {start.stderr.strip()}")
    assert start.returncode == 0, f"cluster start failed:\n{start.stdout}\n{start.stderr}"
    env = dict(os.environ, SLURM_CONF=str(folder / "cluster" / "slurm.conf"), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1", CHECKBOX_DIST_CPU="1", CHECKBOX_DIST_PROCS_PER_NODE="2")
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env['PATH']}"
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(dict(TINY, data=dict(TINY["data"], cache_dir=str(folder / "cache")))))
    try:
        yield {"env": env, "dir": folder, "config": config}
    finally:
        subprocess.run(["bash", str(REPO / "tests" / "slurm_cluster.sh"), "stop", str(folder / "cluster")],
                       timeout=120)


def sbatch(cluster, *args: str) -> str:
    proc = subprocess.run(["sbatch", "--parsable", "--gpus-per-node=0", "--cpus-per-task=1", *args],
                          capture_output=True, text=True, env=cluster["env"], cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def job_info(cluster, job: str) -> list[dict]:
    """One dict per job (array tasks are separate jobs) from `scontrol show job -o`."""
    proc = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True,
                          env=cluster["env"], timeout=30)
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in proc.stdout.splitlines() if line.strip()]


def wait_for(cluster, job: str, states: set[str], timeout: float = 600) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = job_info(cluster, job)
        if info and all(j.get("JobState") in states for j in info):
            return info
        if any(j.get("JobState") in {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"} - states
               for j in info):
            break
        time.sleep(0.5)
    logs = "\n".join(p.read_text()[-4000:] for p in cluster["dir"].glob("*.out"))
    raise AssertionError(f"job {job} did not reach {states}: {info}\n{logs}")


def out_file(cluster, job: str) -> str:
    return (cluster["dir"] / f"checkbox-dist-{job}.out").read_text()


def scontrol(cluster, *args: str) -> None:
    subprocess.run(["scontrol", *args], env=cluster["env"], check=True, timeout=30)


def release_requeued(cluster, job: str, nodes: str, restarts: int = 1, timeout: float = 60) -> None:
    """Lift the hold `scontrol requeue` puts on `job` (`scontrol update StartTime=now`) once no node of its last
    start (`nodes`, that start's NodeList) can refuse the next one.

    A node refuses a batch launch whose credential was created (whole seconds) no later than the moment the node
    revoked the job's credentials on its termination (slurmd's cred_revoked: ctime <= revoked); slurmctld then
    logs "Killing non-startable batch JobId=N: Job credential revoked" and the job fails. The ~2 min hold exists
    for this. So this waits until every such node has logged "credential for job N revoked" `restarts` times
    (tests/slurm_cluster.sh runs slurmd with SlurmdDebug=debug) and the clock has moved into a later second than
    the one it saw the last of them in: the credential of the next start is then newer than every revocation."""
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True,
                           env=cluster["env"], check=True, timeout=30).stdout.split()
    logs = [cluster["dir"] / "cluster" / "log" / f"slurmd-{host}.log" for host in hosts]
    line = f"credential for job {job} revoked"
    deadline = time.monotonic() + timeout
    while not (hosts and all(log.is_file() and log.read_text().count(line) >= restarts for log in logs)):
        assert time.monotonic() < deadline, (
            f"after {timeout:.0f} s, not every node of {nodes} has logged {line!r} {restarts} time(s):\n"
            + "\n".join(f"{log.name}: {log.read_text().count(line) if log.is_file() else 'missing'}" for log in logs))
        time.sleep(0.1)
    revoked_by = int(time.time())
    while int(time.time()) <= revoked_by:
        time.sleep(0.02)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=cluster["env"], timeout=30)


@pytest.fixture(scope="module")
def train_jobs(cluster) -> dict:
    """Two identical 2-node jobs at once: A runs through; B (--nodes=1-2 --ntasks=2 --spread-job: starts on both
    nodes) is preempted after its first epoch and requeued while node n2 is drained, so it continues on n1 alone
    (once A has finished there: B's two tasks need both of n1's CPUs)."""
    runs = {name: cluster["dir"] / f"run_{name}" for name in ("a", "b")}
    # B as slurm/train.sh suggests for an elastic job: 2 tasks on 1 or 2 nodes, spread over as many as are free (a
    # bare --nodes=1-2 starts on one node at once). train.sh starts one launcher per node of the allocation.
    nodes = {"a": ["--nodes=2"], "b": ["--nodes=1-2", "--ntasks=2", "--spread-job"]}
    jobs = {name: sbatch(cluster, *nodes[name], f"--output={cluster['dir']}/%x-%j.out",
                         "slurm/train.sh", "--config", str(cluster["config"]), f"train.output_dir={runs[name]}")
            for name in runs}
    metrics = runs["b"] / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (metrics.is_file() and '"kind": "epoch"' in metrics.read_text()):
        assert time.monotonic() < deadline and job_info(cluster, jobs["b"])[0]["JobState"] in ("PENDING", "RUNNING")
        time.sleep(0.2)
    first_nodes = job_info(cluster, jobs["b"])[0]["NodeList"]  # of the first start, which the requeue ends
    # What `#SBATCH --signal=B:USR1@120` does 120 s before the time limit: USR1 to the batch shell.
    subprocess.run(["scancel", "--signal=USR1", "--batch", jobs["b"]], env=cluster["env"], check=True, timeout=30)
    deadline = time.monotonic() + 600
    while int(job_info(cluster, jobs["b"])[0].get("Restarts", "0")) < 1:
        assert time.monotonic() < deadline, out_file(cluster, jobs["b"])[-4000:]
        time.sleep(0.5)
    # Under load the record can still say FAILED (the first run's end) for a moment after Restarts moves:
    # wait until the requeue has made it PENDING, else StartTime=now does not apply and the job waits ~2 min.
    while job_info(cluster, jobs["b"])[0]["JobState"] not in ("PENDING", "RUNNING", "COMPLETING", "COMPLETED"):
        assert time.monotonic() < deadline, out_file(cluster, jobs["b"])[-4000:]
        time.sleep(0.5)
    # The cluster loses a node while B waits: it may start on fewer nodes (--nodes=1-2). Job A keeps running there.
    scontrol(cluster, "update", "NodeName=n2", "State=DRAIN", "Reason=test-requeue-onto-fewer-nodes")
    release_requeued(cluster, jobs["b"], first_nodes)
    try:
        info = {name: wait_for(cluster, job, {"COMPLETED"})[0] for name, job in jobs.items()}
    finally:
        scontrol(cluster, "update", "NodeName=n2", "State=RESUME")
    return {"jobs": jobs, "runs": runs, "info": info}


def test_train_sh_trains_on_two_nodes_as_one_world(cluster, train_jobs):
    job, run = train_jobs["jobs"]["a"], train_jobs["runs"]["a"]
    assert train_jobs["info"]["a"]["NodeList"] == "n[1-2]" and train_jobs["info"]["a"]["ExitCode"] == "0:0"
    log = out_file(cluster, job)
    assert re.search(r"2 node\(s\) n\[1-2\] x 2 = 4 processes, main 127\.0\.0\.1:\d+", log), log[-3000:]
    # Two processes per node, so world size 4 means node 1's launcher joined node 0's rendezvous with
    # machine rank 1 (with rank 0 on both, the rendezvous would not form).
    assert "MULTI_CPU on cpu:0 | world size 4" in log
    assert "batch: 32 global (train.global_batch_size) = 8/process x 4 processes x 1 accumulation (derived)" in log
    assert "training finished with exit code 0" in log
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_checkpoint"].endswith("checkpoints/best")
    for name in ("best", "last"):
        assert (run / "checkpoints" / name / "meta.json").is_file()
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in line]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == list(range(1, 4))
    assert not (run / "STOP").exists()


def test_preempted_job_requeued_onto_one_node_ends_with_the_same_weights(cluster, train_jobs):
    import torch

    job, run = train_jobs["jobs"]["b"], train_jobs["runs"]["b"]
    log = out_file(cluster, job)
    assert "got SIGUSR1" in log
    assert re.search(r"stop request: saved \S+/checkpoints/last at epoch \d+ batch \d+", log), log[-4000:]
    assert "requeueing job" in log
    assert re.search(r"start 1 \(SLURM_RESTART_COUNT=0\): 2 node\(s\) n\[1-2\] x 2 = 4 processes", log), log[-4000:]
    assert re.search(r"start 2 \(SLURM_RESTART_COUNT=1\): 1 node\(s\) n1 x 2 = 2 processes", log), log[-4000:]
    assert "resume: world size 4 -> 2: accumulation 2, micro-batch 8, global batch 32" in log
    assert re.search(r"resumed from \S+/checkpoints/last: epoch \d+, batch \d+ of 10 \(image \d+ of the epoch\)", log)
    assert log.rstrip().endswith("training finished with exit code 0")
    assert train_jobs["info"]["b"]["Restarts"] == "1" and train_jobs["info"]["b"]["NodeList"] == "n1"
    buffers = ("running_mean", "running_var", "num_batches_tracked")  # process 0's: docs/LAUNCH.md
    resumed = torch.load(run / "checkpoints" / "last" / "train_state.pt", weights_only=True)
    straight = torch.load(train_jobs["runs"]["a"] / "checkpoints" / "last" / "train_state.pt", weights_only=True)
    assert resumed["loop"]["global_step"] == straight["loop"]["global_step"] == 15
    weights, reference = resumed["raw_model"], straight["raw_model"]
    assert weights.keys() == reference.keys()
    diff = max((weights[k] - reference[k]).abs().max().item() for k in weights if not k.endswith(buffers))
    assert diff == 0.0, diff


def test_sweep_sh_runs_one_trial_per_array_task(cluster):
    out = cluster["dir"] / "sweep"
    out.mkdir()
    trials = out / "trials.txt"
    trials.write_text("optim.lr=0.001 train.epochs=1\noptim.lr=0.003 train.epochs=2 data.background=\"#000000\"\n")
    job = sbatch(cluster, "--array=0-1", f"--output={cluster['dir']}/%x-%A_%a.out", "slurm/sweep.sh",
                 str(trials), str(out), "--config", str(cluster["config"]))
    info = wait_for(cluster, job, {"COMPLETED"})
    assert len(info) == 2
    expected = [(0.001, 1, "#ffffff"), (0.003, 2, "#000000")]
    for i, (lr, epochs, background) in enumerate(expected):
        config = yaml.safe_load((out / f"trial_{i}" / "config.yaml").read_text())
        assert (config["optim"]["lr"], config["train"]["epochs"], config["data"]["background"]) == \
            (lr, epochs, background)
        assert (out / f"trial_{i}" / "summary.json").is_file()
        assert "world size 1" in (out / f"trial_{i}" / "log.txt").read_text()


def step_affinities(job: str, run: Path) -> list[int]:
    """CPUs each training process of `job` may run on (os.sched_getaffinity of the live processes: what the
    ranks and their loaders get inside the srun step), found by the run folder on their command lines."""
    cpus = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
            if (b"train.py" in argv and f"train.output_dir={run}".encode() in argv
                    and f"SLURM_JOB_ID={job}".encode() in environ and any(e.startswith(b"RANK=") for e in environ)):
                cpus.append(len(os.sched_getaffinity(int(proc.name))))
        except (OSError, ValueError):  # not a pid, or it ended meanwhile
            continue
    return cpus


@pytest.fixture(scope="module")
def term_job(cluster) -> dict:
    """One node, --cpus-per-task=2 (this machine's two cores), 2 processes: the CPUs its ranks see, then SIGTERM to
    every step of the job as preemption sends it at the start of GraceTime (slurmctld's job_signal(SIGTERM) with no
    flags: all steps, not the batch shell). Returns whether and how it came back."""
    run = cluster["dir"] / "run_term"
    job = sbatch(cluster, "--nodes=1", "--cpus-per-task=2", f"--output={cluster['dir']}/%x-%j.out",
                 "slurm/train.sh", "--config", str(cluster["config"]), f"train.output_dir={run}")
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (metrics.is_file() and '"kind": "epoch"' in metrics.read_text()):
        assert time.monotonic() < deadline and job_info(cluster, job)[0]["JobState"] in ("PENDING", "RUNNING")
        time.sleep(0.2)
    cpus = step_affinities(job, run)
    first_nodes = job_info(cluster, job)[0]["NodeList"]
    subprocess.run(["scancel", "--signal=TERM", job], env=cluster["env"], check=True, timeout=30)
    # Either requeued (Restarts 1, PENDING again) or ended for good (the defect: FAILED, never requeued).
    while True:
        info = job_info(cluster, job)[0]
        if int(info.get("Restarts", "0")) >= 1 and info["JobState"] in ("PENDING", "RUNNING", "COMPLETED"):
            break
        if info["JobState"] in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL") and info.get("Restarts") == "0":
            return {"job": job, "run": run, "cpus": cpus, "info": info}
        assert time.monotonic() < deadline, out_file(cluster, job)[-4000:]
        time.sleep(0.5)
    release_requeued(cluster, job, first_nodes)
    return {"job": job, "run": run, "cpus": cpus, "info": wait_for(cluster, job, {"COMPLETED"})[0]}


def test_train_sh_gives_each_node_launcher_the_jobs_cpus(cluster, term_job):
    # srun (Slurm >= 22.05) does not take sbatch's --cpus-per-task: without passing it on, the one launcher task
    # per node, its 2 ranks and their loaders are bound to one core (the test cluster binds tasks to cores).
    assert term_job["cpus"] and set(term_job["cpus"]) == {2}, term_job["cpus"]


def test_sigterm_to_every_step_saves_last_and_requeues(cluster, term_job):
    log = out_file(cluster, term_job["job"])
    assert re.search(r"SIGTERM: saved \S+/checkpoints/last at epoch \d+ batch \d+", log), log[-4000:]
    assert term_job["info"]["Restarts"] == "1", (term_job["info"], log[-4000:])
    assert "requeueing job" in log
    assert re.search(r"resumed from \S+/checkpoints/last: epoch \d+, batch \d+ of \d+", log), log[-4000:]
    assert log.rstrip().endswith("training finished with exit code 0")
    epochs = [json.loads(line) for line in (term_job["run"] / "metrics.jsonl").read_text().splitlines()
              if '"kind": "epoch"' in line]
    assert sorted({r["epoch"] for r in epochs}) == [1, 2, 3]
