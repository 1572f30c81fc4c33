"""A Processing job run here the way SageMaker runs it in its containers: one local process per instance.

Each instance gets a folder that stands in for its container root (``/opt/ml``):

- every ``ProcessingInput`` is downloaded to its ``LocalPath`` there (a
  ``ShardedByS3Key`` input: the instance's share of the objects, dealt round
  robin in key order; a ``FullyReplicated`` one: all of them); an input with no
  object at all fails the job, as it does in SageMaker;
- ``config/resourceconfig.json`` names the instance (``algo-1``, ...) and the cluster;
- ``ContainerEntrypoint`` + ``ContainerArguments`` run as a process whose working
  folder is the root, with every container path (``/opt/ml/...``) in them mapped
  into the root and ``DEEPFAKE_SAGEMAKER_ROOT`` pointing at it;
- ``python3``/``python`` is this interpreter (the kit's dependencies are installed
  in it), which stands for the kit's image built from this checkout
  (``infra/image/Dockerfile``): the job's ``DEEPFAKE_IMAGE_MANIFEST`` describes it (this
  checkout's requirements lock and the kit files this interpreter imports), so a kit
  entry point decides as in that image, and installs nothing; a step whose code needs
  an install (its bundle was built from another checkout) fails before it starts, since
  pip would install into this environment. A code input that ships the kit
  (``kit/src``) comes first on ``PYTHONPATH``, so the job imports the modules the step
  ships, as the container does;
- the environment is the step's ``Environment`` and the AWS endpoint's settings
  over a minimal base (``PATH``, ``HOME``, locale), not this shell's;
- ``Continuous`` outputs are uploaded as their files are written (a file once
  it stopped changing for a poll) and when the job ends, however it ends;
  ``EndOfJob`` outputs only when every instance succeeded;
- the job fails if any instance exits non-zero, with SageMaker's reason for it
  (``AlgorithmError: See job logs for more information``); its ``ExitMessage`` is
  what the instances wrote to ``/opt/ml/output/message``, concatenated in host
  order and cut to 1 KB, and a message that is not UTF-8 fails the job with a
  ``ClientError``, as SageMaker does;
- each instance is held to its limits (:mod:`pipelines.local.limits`): inputs
  that do not fit ``VolumeSizeInGB`` fail the job before it starts, a job that
  fills its volume, outgrows its instance's memory or runs past
  ``MaxRuntimeInSeconds`` is stopped and fails with the reason; ``TMPDIR``
  points into the instance's folder, so temporary files count against its
  volume; ``job.log`` starts with what each input downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepfake.core import paths
from deepfake.core.errors import PipelineError
from deepfake.core.files import write_json
from deepfake.core.resources import MEMORY_ENV
from pipelines.deepfake.run_step import IMAGE_MANIFEST_ENV
from pipelines.local.limits import POLL_S as LIMITS_POLL_S
from pipelines.local.limits import Limits, disk_usage, memory_usage, process_tree, size_text
from pipelines.local.s3 import S3Object, Storage, join_uri

POLL_S = 1.0                          # seconds between two scans of the Continuous output folders
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "USER")
PYTHONS = ("python", "python3", f"python3.{sys.version_info.minor}")
KIT_SRC = ("kit", "src")              # where a code bundle ships the kit (pipelines/deepfake/bundle.py)
IMAGE_MANIFEST = "image.json"         # this environment as the kit's image, in the job folder
LOG_TAIL_LINES = 15
COMPLETED, JOB_FAILED = "Completed", "Failed"      # ProcessingJobStatus values
EXIT_MESSAGE_BYTES = 1024                          # what SageMaker keeps of the instances' exit messages
ALGORITHM_ERROR = "AlgorithmError: See job logs for more information"   # FailureReason of a non-zero exit


@dataclass
class Instance:
    host: str
    root: Path
    inputs: dict[str, list[str]] = field(default_factory=dict)    # channel -> local names
    downloaded: dict[str, int] = field(default_factory=dict)      # channel -> bytes its objects hold
    exit_code: int | None = None
    raw_message: bytes = b""                                       # what it wrote to output/message

    @property
    def message(self) -> str:
        return self.raw_message.decode("utf-8", errors="replace").strip()
    peak_disk: int = 0                                            # bytes on its volume, at most (sampled)
    peak_memory: int = 0                                          # bytes of its process tree (PSS), at most
    limit: str = ""                                               # why pipeline-local stopped it, if it did

    @property
    def downloaded_bytes(self) -> int:
        return sum(self.downloaded.values())

    @property
    def log(self) -> Path:
        return self.root / "job.log"


@dataclass(frozen=True)
class JobResult:
    status: str                         # COMPLETED | JOB_FAILED
    failure_reason: str
    exit_message: str
    instances: Sequence[Instance]
    seconds: float


def run_job(arguments: Mapping[str, Any], *, folder: Path, storage: Storage, env: Mapping[str, str],
            timeout_s: float | None = None, limits: Limits | None = None) -> JobResult:
    """Run the Processing job ``arguments`` (its expressions evaluated) with instances under ``folder``."""
    started = time.perf_counter()
    cluster = arguments["ProcessingResources"]["ClusterConfig"]
    count = int(cluster["InstanceCount"])
    if count < 1:
        raise PipelineError(f"InstanceCount {count} must be at least 1")
    hosts = [f"algo-{i + 1}" for i in range(count)]
    instances = [Instance(host, folder / host) for host in hosts]
    bounds = _Bounds.of(arguments, limits or Limits(), timeout_s)
    problem = _stage_inputs(arguments, instances, storage, bounds.volume)
    if problem:
        return JobResult(JOB_FAILED, f"ClientError: {problem}", "", instances, time.perf_counter() - started)
    problem = _check_image(arguments, instances, folder / IMAGE_MANIFEST)
    if problem:
        return JobResult(JOB_FAILED, f"ClientError: {problem}", "", instances, time.perf_counter() - started)
    outputs = arguments.get("ProcessingOutputConfig", {}).get("Outputs", [])
    for instance in instances:
        _write_config(instance, hosts, arguments)
        for out in outputs:
            local_path(instance.root, out["S3Output"]["LocalPath"]).mkdir(parents=True, exist_ok=True)
    continuous = _Continuous(storage, [(local_path(i.root, o["S3Output"]["LocalPath"]), o["S3Output"]["S3Uri"])
                                       for i in instances for o in outputs
                                       if o["S3Output"].get("S3UploadMode") == "Continuous"])
    continuous.start()
    try:
        _run_instances(arguments, instances, env, bounds)
    finally:
        continuous.finish()
    seconds = time.perf_counter() - started
    try:
        message = b"".join(i.raw_message for i in instances).decode("utf-8")
    except UnicodeDecodeError as exc:
        return JobResult(JOB_FAILED, f"ClientError: the exit message (/opt/ml/output/message) is not UTF-8 ({exc})",
                         "", instances, seconds)
    message = message.encode("utf-8")[:EXIT_MESSAGE_BYTES].decode("utf-8", errors="ignore")
    if any(i.exit_code != 0 for i in instances):
        limits = [i.limit for i in instances if i.limit]          # a limit pipeline-local enforced: its reason
        return JobResult(JOB_FAILED, f"AlgorithmError: {limits[0]}" if limits else ALGORITHM_ERROR, message,
                         instances, seconds)
    for instance in instances:
        for out in outputs:
            if out["S3Output"].get("S3UploadMode", "EndOfJob") == "EndOfJob":
                storage.upload_tree(local_path(instance.root, out["S3Output"]["LocalPath"]), out["S3Output"]["S3Uri"])
    return JobResult(COMPLETED, "", message, instances, time.perf_counter() - started)


def _stage_inputs(arguments: Mapping[str, Any], instances: list[Instance], storage: Storage,
                  volume: int | None) -> str:
    """Download every input into every instance; returns the problem that stops the job, or ''."""
    plans: list[tuple[Mapping[str, Any], str, list[list[S3Object]]]] = []
    for item in arguments.get("ProcessingInputs", []):
        spec = item["S3Input"]
        name, uri = item["InputName"], spec["S3Uri"]
        objects = storage.list(uri)
        if not objects:
            return f"input {name}: no object under {uri}; check the S3 prefix the step reads"
        sharded = spec.get("S3DataDistributionType") == "ShardedByS3Key"
        plans.append((item, name, [objects[i::len(instances)] if sharded else objects
                                   for i in range(len(instances))]))
    for index, instance in enumerate(instances):
        sizes = {name: sum(o.size for o in shares[index]) for item, name, shares in plans
                 if not item.get("AppManaged")}
        if volume is not None and sum(sizes.values()) > volume:
            parts = ", ".join(f"{name} {size_text(n)}" for name, n in sizes.items())
            return (f"No space left on device: the File-mode inputs of {instance.host} hold "
                    f"{size_text(sum(sizes.values()))} ({parts}), more than its {_volume_text(arguments, volume)}; "
                    "give the step a larger volume, more instances to share a sharded input, or an input "
                    "that holds only what the step reads")
    for item, name, shares in plans:
        spec = item["S3Input"]
        for index, instance in enumerate(instances):
            target = local_path(instance.root, spec["LocalPath"])
            target.mkdir(parents=True, exist_ok=True)
            if item.get("AppManaged"):
                instance.inputs[name] = []
                continue
            instance.inputs[name] = storage.download(spec["S3Uri"], shares[index], target)
            instance.downloaded[name] = sum(o.size for o in shares[index])
    return ""


def _check_image(arguments: Mapping[str, Any], instances: list[Instance], manifest: Path) -> str:
    """Describe this environment as the kit's image; returns why a bundle's entry point would install, or ''."""
    import deepfake
    from pipelines.deepfake.image import lock_path
    from pipelines.deepfake.run_step import image_manifest, install_plan

    write_json(manifest, image_manifest(lock_path(), Path(deepfake.__file__).resolve().parent, deepfake.__version__))
    for instance in instances:
        script = entry_script(command(arguments, instance.root))
        if script is None or not script.parent.joinpath(*KIT_SRC).is_dir():
            continue
        plan = install_plan(script.parent, manifest)
        if plan.requirements or plan.kit:
            return (f"{plan.reason}; pipeline-local runs each job in this Python environment (the image built from "
                    "this checkout) and does not pip-install into it: build the definition from this checkout "
                    "(--module-name)")
    return ""


def entry_script(cmd: Sequence[str]) -> Path | None:
    """The Python script a job's command runs, if it runs one."""
    return next((Path(a) for a in cmd[1:2] if a.endswith(".py") and Path(a).is_file()), None) \
        if cmd and Path(cmd[0]).name in (*PYTHONS, Path(sys.executable).name) else None


def _volume_text(arguments: Mapping[str, Any], volume: int) -> str:
    gb = arguments["ProcessingResources"]["ClusterConfig"].get("VolumeSizeInGB")
    return f"volume of VolumeSizeInGB {gb} ({size_text(volume)} here)"


def _write_config(instance: Instance, hosts: list[str], arguments: Mapping[str, Any]) -> None:
    config = instance.root / "config"
    write_json(config / "resourceconfig.json", {"current_host": instance.host, "hosts": hosts,
                                                "current_instance_type": arguments["ProcessingResources"]
                                                ["ClusterConfig"].get("InstanceType")})
    write_json(config / "processingjobconfig.json", dict(arguments))
    write_json(instance.root / "inputs.json", instance.inputs)
    (instance.root / "tmp").mkdir(exist_ok=True)


def command(arguments: Mapping[str, Any], root: Path) -> list[str]:
    """The job's command line on this machine: container paths mapped into ``root``, python as this one."""
    app = arguments["AppSpecification"]
    cmd = [_local_arg(str(a), root) for a in [*app.get("ContainerEntrypoint", []), *app.get("ContainerArguments", [])]]
    if not cmd:
        raise PipelineError("the step has no ContainerEntrypoint: the image's own entry point cannot run here")
    if Path(cmd[0]).name in PYTHONS:
        cmd[0] = sys.executable
    return cmd


def job_env(arguments: Mapping[str, Any], root: Path, aws_env: Mapping[str, str]) -> dict[str, str]:
    env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
    env.update(aws_env)
    env.update({k: str(v) for k, v in (arguments.get("Environment") or {}).items()})
    env["DEEPFAKE_SAGEMAKER_ROOT"] = str(root)
    env[IMAGE_MANIFEST_ENV] = str(root.parent / IMAGE_MANIFEST)
    env["TMPDIR"] = str(root / "tmp")                   # temporary files count against the volume
    shipped = [str(local_path(root, i["S3Input"]["LocalPath"]).joinpath(*KIT_SRC))
               for i in arguments.get("ProcessingInputs", [])]
    env["PYTHONPATH"] = os.pathsep.join(p for p in shipped if Path(p).is_dir())
    return env


@dataclass(frozen=True)
class _Bounds:
    """One job's limits, in bytes and seconds (None: not enforced)."""

    volume: int | None
    memory: int | None
    runtime_s: float | None
    volume_gb: Any = None

    @classmethod
    def of(cls, arguments: Mapping[str, Any], limits: Limits, timeout_s: float | None) -> _Bounds:
        cluster = arguments["ProcessingResources"]["ClusterConfig"]
        return cls(limits.volume_bytes(cluster.get("VolumeSizeInGB")), limits.memory_bytes(cluster.get("InstanceType")),
                   timeout_s, cluster.get("VolumeSizeInGB"))


def _run_instances(arguments: Mapping[str, Any], instances: list[Instance], aws_env: Mapping[str, str],
                   bounds: _Bounds) -> None:
    running = []
    for instance in instances:
        cmd = command(arguments, instance.root)
        env = job_env(arguments, instance.root, aws_env)
        if bounds.memory is not None:
            env[MEMORY_ENV] = str(bounds.memory)     # the memory the kit sees, as on the instance
        with open(instance.log, "wb") as log:
            log.write(f"$ {shlex.join(cmd)}\n".encode())
            for name, size in instance.downloaded.items():
                log.write(f"downloaded input {name}: {len(instance.inputs.get(name, []))} objects, "
                          f"{size_text(size)}\n".encode())
            log.write(_limits_line(bounds).encode())
            log.flush()
            running.append((instance, subprocess.Popen(
                cmd, cwd=instance.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)))
    deadline = None if bounds.runtime_s is None else time.monotonic() + bounds.runtime_s
    try:
        while any(proc.poll() is None for _i, proc in running):
            for instance, proc in running:
                if proc.poll() is None:
                    stop = _over_limit(instance, proc, bounds, deadline)
                    if stop:
                        instance.limit = stop
                        _write_message(instance, stop)
                        stop_tree(proc, graceful=stop.startswith("stopped"))
            time.sleep(LIMITS_POLL_S)
        for instance, proc in running:
            if proc.returncode == 0 and bounds.volume is not None:        # what it left on the volume at the end
                used = disk_usage(instance.root)
                instance.peak_disk = max(instance.peak_disk, used)
                if used > bounds.volume:
                    proc.returncode = 1
                    instance.limit = _disk_full(used, bounds)
                    _write_message(instance, instance.limit)
    finally:
        for _instance, proc in running:
            if proc.poll() is None:
                stop_group(proc)
    for instance, proc in running:
        instance.exit_code = proc.returncode
        message = instance.root / "output" / "message"
        instance.raw_message = message.read_bytes() if message.is_file() else b""
        with open(instance.log, "ab") as log:
            log.write(f"instance {instance.host}: downloaded {size_text(instance.downloaded_bytes)}, volume "
                      f"peak {size_text(instance.peak_disk)}, memory peak {size_text(instance.peak_memory)}\n".encode())


def _over_limit(instance: Instance, proc: subprocess.Popen[bytes], bounds: _Bounds, deadline: float | None) -> str:
    """Why ``instance`` must stop now, or ''."""
    if deadline is not None and time.monotonic() > deadline:
        return (f"stopped after MaxRuntimeInSeconds {bounds.runtime_s:g}: the job ran past the step's maximum "
                "run time; give the step a longer one, or more instances")
    if bounds.volume is None and bounds.memory is None:
        return ""
    tree = process_tree(proc.pid)
    if bounds.volume is not None:
        used = disk_usage(instance.root, tree)
        instance.peak_disk = max(instance.peak_disk, used)
        if used > bounds.volume:
            return _disk_full(used, bounds)
    if bounds.memory is not None:
        rss = memory_usage(tree)
        instance.peak_memory = max(instance.peak_memory, rss)
        if rss > bounds.memory:
            return (f"OutOfMemory: the job used {size_text(rss)}, more than its instance's {size_text(bounds.memory)} "
                    "of memory, and was killed; use an instance with more memory, or a step setting that holds less")
    return ""


def _disk_full(used: int, bounds: _Bounds) -> str:
    return (f"No space left on device: the job's inputs and what it wrote take {size_text(used)}, more than its "
            f"volume of VolumeSizeInGB {bounds.volume_gb} ({size_text(bounds.volume or 0)} here); give the step "
            "a larger volume, or have it write less")


def _limits_line(bounds: _Bounds) -> str:
    parts = [f"volume {size_text(bounds.volume)}" if bounds.volume is not None else "volume not enforced",
             f"memory {size_text(bounds.memory)}" if bounds.memory is not None else "memory not enforced",
             f"run time {bounds.runtime_s:g} s" if bounds.runtime_s is not None else "no maximum run time"]
    return f"limits: {', '.join(parts)}\n"


def _write_message(instance: Instance, text: str) -> None:
    (instance.root / "output").mkdir(exist_ok=True)
    (instance.root / "output" / "message").write_text(text.rstrip("\n") + "\n")   # one line an instance


def stop_tree(proc: subprocess.Popen[bytes], *, graceful: bool) -> None:
    """Stop an instance and every process it started, the notebook kernel (a session of its own) included:
    SIGTERM first when ``graceful`` (a stopped job), SIGKILL at once otherwise (a full disk, the OOM killer)."""
    tree = process_tree(proc.pid)
    if graceful:
        with contextlib.suppress(ProcessLookupError):
            stop_group(proc)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
    proc.wait()


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a process started in a session of its own, and its children: ``sig``, then SIGKILL after 20 s."""
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class _Continuous(threading.Thread):
    """Uploads files of Continuous outputs once they stop changing, and everything left at the end."""

    def __init__(self, storage: Storage, folders: list[tuple[Path, str]]) -> None:
        super().__init__(daemon=True, name="continuous-upload")
        self.storage = storage
        self.folders = folders
        self.stop = threading.Event()
        self.seen: dict[Path, tuple[int, int]] = {}        # last signature looked at
        self.sent: dict[Path, tuple[int, int]] = {}        # signature uploaded

    def run(self) -> None:
        while not self.stop.wait(POLL_S):
            self.sync(final=False)

    def finish(self) -> None:
        self.stop.set()
        if self.is_alive():
            self.join()
        self.sync(final=True)

    def sync(self, *, final: bool) -> None:
        for folder, uri in self.folders:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                try:
                    stat = path.stat()
                except FileNotFoundError:                  # replaced by an atomic write meanwhile
                    continue
                signature = (stat.st_mtime_ns, stat.st_size)
                if self.sent.get(path) != signature and (final or self.seen.get(path) == signature):
                    self.storage.upload_file(path, join_uri(uri, path.relative_to(folder).as_posix()))
                    self.sent[path] = signature
                self.seen[path] = signature


def local_path(root: Path, container_path: str) -> Path:
    return Path(_local_arg(container_path, root))


def _local_arg(value: str, root: Path) -> str:
    """A container path (``/opt/ml/...``, also after ``--opt=``) as the same path under ``root``."""
    base = str(paths.SAGEMAKER_ROOT)
    head, sep, tail = value.partition("=") if value.startswith("--") else ("", "", value)
    if tail == base or tail.startswith(base + "/"):
        return f"{head}{sep}{root}{tail[len(base):]}"
    return value


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


def job_name(execution_id: str, step: str, arguments: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(repr(sorted(arguments.items())).encode()).hexdigest()[:10]
    return f"pipelines-{execution_id}-{step}-{digest}"[:63]
