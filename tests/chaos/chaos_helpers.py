"""The chaos soak's driver: the training CLI started, killed and restarted, a moto S3 server that can
be frozen, a staging disk that can be filled (see test_chaos_soak.py for the soak itself).

Run as a script, `python chaos_helpers.py SPEC.json` plays the whole soak described by the spec and
writes its report (JSON) to spec["report"]; the test starts it inside `unshare -rm` with the S3
staging folder on a small tmpfs mounted there, so that the disk can be filled without touching the
machine's. The driver never imports jax: it only watches the runs' logs, metrics.jsonl, the staging
folder and the bucket.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

_CHECKPOINT_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoint")
if _CHECKPOINT_TESTS not in sys.path:  # run as a script
    sys.path.insert(0, _CHECKPOINT_TESTS)

from ckpt_helpers import REPO, S3_ENV, cli_command, cli_env, free_port, make_bucket  # noqa: E402

DEMO_CONFIG = os.path.join(REPO, "configs", "demo.py")
BUCKET = "chaos"
PREFIX = "run"
TOTAL_STEPS = 200
EVERY = 10
POLL_S = 0.01

SAVING = re.compile(r"saving checkpoint of step (\d+) to")
COMPLETE = re.compile(r"checkpoint of step (\d+) complete at")
NOT_SAVED = re.compile(r"the checkpoint of step (\d+) was NOT saved")
RESUMING = re.compile(r"auto_resume: resuming from the \S+ of step (\d+)")
FROM_SCRATCH = "no checkpoint to resume from"
DOWNLOADED = re.compile(r"downloaded \d+ files of")
DISK_FULL = re.compile(r"No space left on device|disk is full", re.IGNORECASE)


def demo_sets(train_folder: str, total_steps: int = TOTAL_STEPS) -> list[str]:
    """The demo model (configs/demo.py) on a bin/meta corpus, with a step of a few tens of ms on CPU."""
    return [
        f"data.train_folder={train_folder}",
        "data.valid_folder=None",
        "data.valid_every=0",
        "data.tokenizer_path=None",
        "data.seq_len=64",
        "data.micro_bsz=1",
        "data.micro_num=1",
        f"data.total_steps={total_steps}",
        f"lr_scheduler.total_steps={total_steps}",
    ]


def s3_sets(staging: str) -> list[str]:
    """Asynchronous checkpoints every EVERY steps to the soak's bucket, staged in `staging`."""
    return [
        f"ckpt.save_ckpt_folder=boto3:s3://{BUCKET}/{PREFIX}",
        f"ckpt.checkpoint_every={EVERY}",
        "ckpt.async_upload=True",
        f"ckpt.async_upload_tmp_folder={staging}",
        "ckpt.keep_last_n=3",
    ]


class SoakError(RuntimeError):
    """The soak could not go on (a run ended or stalled where it should not have)."""


# -- the S3 server ----------------------------------------------------------------------------------
class S3Server:
    """`python -m moto.server` as a process of its own on 127.0.0.1: SIGSTOP freezes it (the port still
    accepts connections, nothing answers), SIGCONT brings it back with its buckets intact."""

    def __init__(self, log_path: str):
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.paused = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.port = free_port()
        log = open(self.log_path, "w")  # noqa: SIM115 - the server writes to it until stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SoakError(f"the moto server exited at start ({self.proc.returncode})")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.1)
        raise SoakError(f"the moto server did not answer within {timeout:.0f} s")

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.paused:
            self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Bucket:
    """The driver's own view of the soak's bucket."""

    def __init__(self, endpoint: str, marker: str):
        import boto3
        import botocore.config

        self.marker = marker
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=S3_ENV["AWS_REGION"],
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            config=botocore.config.Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3}),
        )

    def keys(self, step: int | None = None) -> list[str]:
        prefix = f"{PREFIX}/{step}/" if step is not None else f"{PREFIX}/"
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            out.extend(obj["Key"][len(prefix) :] for obj in page.get("Contents", []))
        return out

    def checkpoints(self) -> dict[str, list[int]]:
        """Steps in the bucket: complete (with the marker) and half-written (without)."""
        by_step: dict[int, set[str]] = {}
        for key in self.keys():
            head = key.split("/", 1)
            if head[0].isdigit():
                by_step.setdefault(int(head[0]), set()).add(head[1] if len(head) > 1 else "")
        return {
            "complete": sorted(s for s, names in by_step.items() if self.marker in names),
            "half_written": sorted(s for s, names in by_step.items() if self.marker not in names),
        }

    def download(self, step: int, target: str) -> int:
        keys = self.keys(step)
        for rel in keys:
            path = os.path.join(target, *rel.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.client.download_file(BUCKET, f"{PREFIX}/{step}/{rel}", path)
        return len(keys)


# -- the disk ---------------------------------------------------------------------------------------
class DiskFill:
    """One big file that takes every free byte of the file system holding `folder`, and keeps taking
    whatever is freed there (a finished upload deletes its staged copy) until released."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, "chaos_fill.bin")
        self._fd: int | None = None
        self._holding = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.folder).free

    def _top_up(self) -> None:
        chunk = b"\0" * (1 << 20)
        while True:
            try:
                self.written += os.write(self._fd, chunk)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return
                chunk = chunk[: len(chunk) // 2]

    def fill(self) -> int:
        """Write until ENOSPC, then keep the disk full from a thread until free(); returns the bytes written."""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._top_up()
        self._holding.set()
        self._thread = threading.Thread(target=self._hold, name="disk-fill", daemon=True)
        self._thread.start()
        return self.written

    def _hold(self) -> None:
        while self._holding.is_set():
            self._top_up()
            time.sleep(0.002)

    def free(self) -> None:
        self._holding.clear()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        os.remove(self.path)

    @property
    def filled(self) -> bool:
        return self._fd is not None


# -- the training runs ------------------------------------------------------------------------------
@dataclasses.dataclass
class Attempt:
    """One process of the CLI, from its start to its end."""

    number: int
    proc: subprocess.Popen
    log_path: str
    started: float
    log_offset: int = 0
    log_rest: str = ""
    lines: list = dataclasses.field(default_factory=list)
    resumed_from: int | None = None  # 0: from scratch; None: not logged (yet)
    downloaded: bool = False
    first_step_at: float | None = None
    last_step: int = 0  # steps done, as the checkpoints count them (a metrics record's "step" + 1)
    saving: dict = dataclasses.field(default_factory=dict)  # step -> time its "saving" line was seen
    complete: dict = dataclasses.field(default_factory=dict)
    not_saved: set = dataclasses.field(default_factory=set)
    exit_code: int | None = None
    ended_by: str = ""
    end_step: int | None = None
    in_flight: str = ""
    notes: list = dataclasses.field(default_factory=list)

    @property
    def restart_s(self) -> float | None:
        return None if self.first_step_at is None else self.first_step_at - self.started

    def _error_index(self) -> int | None:
        return next((i for i, line in enumerate(self.lines) if line.startswith("error: ")), None)

    def error_text(self) -> str:
        """The message the CLI printed as "error: <message>" (one line, one paragraph), else ""."""
        i = self._error_index()
        return self.lines[i][len("error: ") :].strip() if i is not None else ""

    def summary(self) -> dict:
        i = self._error_index()
        before = self.lines if i is None else self.lines[:i]
        after = [] if i is None else [line for line in self.lines[i + 1 :] if line.strip()]
        return {
            "attempt": self.number,
            "resumed_from": self.resumed_from,
            "restart_s": self.restart_s,
            "ended_by": self.ended_by,
            "end_step": self.end_step,
            "in_flight": self.in_flight,
            "exit_code": self.exit_code,
            "saves_started": sorted(self.saving),
            "saves_complete": sorted(self.complete),
            "saves_not_saved": sorted(self.not_saved),
            "error": self.error_text(),
            # a traceback of the run itself (not the lines other threads may print after its message)
            "traceback": any(line.startswith("Traceback") for line in before),
            "after_error": after[:6],
            "after_error_lines": len(after),
            "warnings": [line for line in self.lines if " WARNING " in line or " ERROR " in line][:40],
            "notes": self.notes,
            "log": self.log_path,
        }


class TrainerDriver:
    """Starts, watches, kills and restarts `python -m internevo_jax.train` on one run folder."""

    def __init__(self, run_dir, sets, env, logs_dir, staged_root: str | None = None, bucket=None):
        self.run_dir = str(run_dir)
        self.sets = list(sets)
        self.env = env
        self.logs_dir = str(logs_dir)
        self.staged_root = staged_root  # where orbax writes the S3 checkpoints before their upload
        self.bucket: Bucket | None = bucket
        self.attempts: list[Attempt] = []
        self._metrics_offset = 0
        self._metrics_rest = ""

    @property
    def current(self) -> Attempt:
        return self.attempts[-1]

    def start(self) -> Attempt:
        number = len(self.attempts) + 1
        log_path = os.path.join(self.logs_dir, f"attempt{number:02d}.log")
        log = open(log_path, "w")  # noqa: SIM115 - the run writes to it; closed below once inherited
        started = time.monotonic()
        proc = subprocess.Popen(
            cli_command(DEMO_CONFIG, self.run_dir, self.sets),
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.poll_metrics()  # whatever the last run wrote belongs to it
        self.attempts.append(Attempt(number, proc, log_path, started))
        return self.current

    # -- watching --------------------------------------------------------------------------------
    def poll(self) -> None:
        self.poll_log()
        self.poll_metrics()
        if self.attempts and self.current.exit_code is None and self.current.proc.poll() is not None:
            self.poll_log()
            self.poll_metrics()
            self.current.exit_code = self.current.proc.returncode

    def poll_log(self) -> None:
        if not self.attempts:
            return
        a = self.current
        with open(a.log_path, "rb") as f:
            f.seek(a.log_offset)
            data = f.read()
        if not data:
            return
        a.log_offset += len(data)
        text = a.log_rest + data.decode("utf-8", "replace")
        *lines, a.log_rest = text.split("\n")
        now = time.monotonic()
        for line in lines:
            a.lines.append(line)
            if m := SAVING.search(line):
                a.saving.setdefault(int(m.group(1)), now)
            elif m := COMPLETE.search(line):
                a.complete.setdefault(int(m.group(1)), now)
            elif m := NOT_SAVED.search(line):
                a.not_saved.add(int(m.group(1)))
            elif m := RESUMING.search(line):
                a.resumed_from = int(m.group(1))
            elif FROM_SCRATCH in line:
                a.resumed_from = 0
            elif DOWNLOADED.search(line):
                a.downloaded = True

    def poll_metrics(self) -> None:
        path = os.path.join(self.run_dir, "metrics.jsonl")
        if not os.path.exists(path):
            return
        with open(path, "rb") as f:
            f.seek(self._metrics_offset)
            data = f.read()
        if not data:
            return
        self._metrics_offset += len(data)
        text = self._metrics_rest + data.decode("utf-8", "replace")
        *lines, self._metrics_rest = text.split("\n")
        if not self.attempts:
            return
        a = self.current
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                a.notes.append(f"unparsable metrics line: {line[:120]!r}")
                continue
            if "loss" not in record:
                continue
            if a.first_step_at is None:
                a.first_step_at = time.monotonic()
            a.last_step = max(a.last_step, int(record["step"]) + 1)

    def alive(self) -> bool:
        self.poll()
        return self.current.exit_code is None

    def wait_for(self, condition, what: str, timeout: float = 300.0) -> None:
        """Poll until condition() holds; SoakError when the run ends or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if condition():
                return
            a = self.current
            if a.exit_code is not None:
                raise SoakError(
                    f"attempt {a.number} ended with exit code {a.exit_code} at step {a.last_step} while "
                    f"waiting for {what}; log {a.log_path}: {' | '.join(a.lines[-6:])}"
                )
            if time.monotonic() > deadline:
                raise SoakError(
                    f"attempt {a.number} did not reach {what} within {timeout:.0f} s (at step {a.last_step})"
                )
            time.sleep(POLL_S)

    def wait_exit(self, timeout: float = 300.0) -> int:
        a = self.current
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise SoakError(
                    f"attempt {a.number} did not end within {timeout:.0f} s (at step {a.last_step})"
                )
            time.sleep(POLL_S)
        a.end_step = a.last_step
        a.ended_by = a.ended_by or f"exit {a.exit_code}"
        return a.exit_code

    # -- what is in flight -----------------------------------------------------------------------
    def pending_save(self) -> int | None:
        a = self.current
        pending = [s for s in a.saving if s not in a.complete and s not in a.not_saved]
        return max(pending) if pending else None

    def staged_state(self, step: int) -> str:
        """ "written" when orbax has finished the staged copy of `step` (renamed it into place),
        "writing" while only its temporary folder exists, "" when neither exists."""
        if self.staged_root is None or not os.path.isdir(self.staged_root):
            return ""
        names = os.listdir(self.staged_root)
        if str(step) in names:
            return "written"
        if any(n.startswith(f"{step}.") for n in names):
            return "writing"
        return ""

    def in_flight(self) -> tuple[str, str]:
        """(phase, description) of what the current run is doing; phase is one of start-up,
        restore, save, upload, cleanup (pruning and deleting the staged copy after the upload),
        training."""
        a = self.current
        if a.first_step_at is None:
            if a.resumed_from:
                where = "reading" if a.downloaded else "download"
                return "restore", f"restore of step {a.resumed_from} ({where})"
            return "start-up", "start-up (no step yet)"
        step = self.pending_save()
        if step is None:
            done = max(a.complete) if a.complete else None
            if done is not None and self.staged_state(done) == "written":
                return "cleanup", f"clean-up after the save of step {done} (its staged copy not yet deleted)"
            return "training", "training (no save in flight)"
        staged = self.staged_state(step)
        if staged == "written":
            return "upload", f"upload of step {step} (staged copy written)"
        if staged == "writing":
            return "save", f"save of step {step} (orbax writing the staged copy)"
        return "save", f"save of step {step}"

    # -- faults ----------------------------------------------------------------------------------
    def kill(self, fault: str) -> dict:
        """SIGKILL the current run now; returns what the kill hit."""
        a = self.current
        self.poll()
        phase, what = self.in_flight()
        if a.exit_code is not None:
            raise SoakError(f"attempt {a.number} had already ended ({a.exit_code}) when {fault} was due")
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=60)
        self.poll()
        a.ended_by = fault
        a.end_step = a.last_step
        step = self.pending_save()
        if phase == "upload" and self.bucket is not None and step is not None:
            keys = self.bucket.keys(step)
            marker = self.bucket.marker in keys
            what += f", {len(keys)} files in the bucket{' and its marker' if marker else ', no marker'}"
        a.in_flight = what
        return {"fault": fault, "attempt": a.number, "step": a.last_step, "phase": phase, "in_flight": what}


# -- the soak ---------------------------------------------------------------------------------------
def soak_plan(seed: int) -> list[dict]:
    """The faults in the order they land; trigger steps and durations drawn from `seed`."""
    rng = random.Random(seed)
    return [
        {"fault": "kill", "at_step": rng.randint(12, 28)},
        {"fault": "kill_in_save", "checkpoint": rng.choice([40, 50])},
        {"fault": "s3_outage", "checkpoint": rng.choice([70, 80]), "seconds": round(rng.uniform(4, 8), 1)},
        {"fault": "kill_in_upload", "checkpoint": rng.choice([110, 120])},
        {"fault": "disk_full", "at_step": rng.randint(133, 137)},
        {"fault": "kill", "at_step": rng.randint(158, 178)},
        {"fault": "kill_in_restore", "delay_s": round(rng.uniform(0.0, 0.4), 2)},
    ]


class Soak:
    """Plays `soak_plan` on one training run; see test_chaos_soak.py."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.out = spec["out_dir"]
        os.makedirs(os.path.join(self.out, "logs"), exist_ok=True)
        self.s3 = S3Server(os.path.join(self.out, "logs", "moto.log"))
        self.disk = DiskFill(spec["staging"]) if spec.get("disk_fault") else None
        self.events: list[dict] = []
        self.driver: TrainerDriver | None = None

    def run(self) -> dict:
        report = {"plan": soak_plan(self.spec["seed"]), "events": self.events, "error": None}
        started = time.monotonic()
        try:
            self.s3.start()
            make_bucket(self.s3.endpoint, BUCKET)
            bucket = Bucket(self.s3.endpoint, self.spec["marker"])
            env = cli_env({**S3_ENV, "AWS_ENDPOINT_URL": self.s3.endpoint}, cache_dir=self.spec["jax_cache"])
            for key in ("AWS_ENDPOINT_URL_S3", "S3_ENDPOINT", "AWS_PROFILE"):
                env.pop(key, None)
            staged_root = os.path.join(self.spec["staging"], "internevo_jax", BUCKET, PREFIX)
            self.driver = TrainerDriver(
                self.spec["run_dir"],
                demo_sets(self.spec["train_folder"]) + s3_sets(self.spec["staging"]),
                env,
                os.path.join(self.out, "logs"),
                staged_root=staged_root,
                bucket=bucket,
            )
            self.driver.start()
            for fault in report["plan"]:
                getattr(self, fault["fault"])(**{k: v for k, v in fault.items() if k != "fault"})
            code = self.driver.wait_exit(timeout=300)
            self.events.append({"fault": "end", "attempt": self.driver.current.number, "exit_code": code})
            report["bucket"] = bucket.checkpoints()
            final = os.path.join(self.out, "final_s3", str(TOTAL_STEPS))
            if TOTAL_STEPS in report["bucket"]["complete"]:
                report["final_files"] = bucket.download(TOTAL_STEPS, final)
                report["final_checkpoint"] = final
        except SoakError as err:
            report["error"] = str(err)
        finally:
            if self.driver is not None and self.driver.attempts:
                a = self.driver.current
                if a.proc.poll() is None:
                    a.proc.kill()
                    a.proc.wait(timeout=60)
                    a.ended_by = a.ended_by or "killed at the end of the soak"
                self.driver.poll()
                report["attempts"] = [x.summary() for x in self.driver.attempts]
            if self.disk is not None and self.disk.filled:
                self.disk.free()
            report["staging_left"] = _listing(self.spec["staging"])
            self.s3.stop()
            report["wall_s"] = time.monotonic() - started
        return report

    # -- the faults, one method each (named as in soak_plan) ---------------------------------------
    def _restart(self) -> None:
        self.driver.start()

    def kill(self, at_step: int) -> None:
        d = self.driver
        d.wait_for(lambda: d.current.last_step >= at_step, f"step {at_step}")
        self.events.append(d.kill(f"kill at step {at_step}"))
        self._restart()

    def kill_in_save(self, checkpoint: int, tries: int = 4) -> None:
        """Kill right after the "saving ... of step N" line, while orbax writes the staged copy."""
        d = self.driver
        for step in range(checkpoint, checkpoint + tries * EVERY, EVERY):
            d.wait_for(lambda s=step: s in d.current.saving, f"the save of step {step}")
            event = d.kill(f"kill in the save of step {step}")
            self.events.append(event)
            self._restart()
            if event["phase"] == "save":
                return
        raise SoakError(f"no kill landed in a save (tried the saves of steps {checkpoint}..{step})")

    def kill_in_upload(self, checkpoint: int, tries: int = 4) -> None:
        """Kill once the staged copy of step N is written and its first files are in the bucket."""
        d = self.driver
        for step in range(checkpoint, checkpoint + tries * EVERY, EVERY):
            d.wait_for(lambda s=step: s in d.current.saving, f"the save of step {step}")
            d.wait_for(
                lambda s=step: s in d.current.complete or d.staged_state(s) == "written",
                f"the staged copy of step {step}",
            )
            d.wait_for(
                lambda s=step: s in d.current.complete or s in d.current.not_saved or d.bucket.keys(s),
                f"the upload of step {step}",
            )
            if step in d.current.complete or step in d.current.not_saved:
                self.events.append({"fault": f"upload of step {step} finished before the kill", "attempt": 0})
                continue
            event = d.kill(f"kill in the upload of step {step}")
            self.events.append(event)
            self._restart()
            if event["phase"] == "upload":
                return
        raise SoakError(f"no kill landed in an upload (tried the uploads of steps {checkpoint}..{step})")

    def s3_outage(self, checkpoint: int, seconds: float) -> None:
        """Freeze the S3 server as the save of step N starts; thaw it `seconds` later."""
        d = self.driver
        d.wait_for(lambda: checkpoint in d.current.saving, f"the save of step {checkpoint}")
        a = d.current
        before = a.last_step
        self.s3.pause()
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < seconds:
                if not d.alive():
                    raise SoakError(
                        f"attempt {a.number} ended ({a.exit_code}) during the S3 outage: "
                        f"{' | '.join(a.lines[-6:])}"
                    )
                time.sleep(POLL_S)
        finally:
            self.s3.resume()
        during = a.last_step
        d.wait_for(
            lambda: checkpoint in a.complete or checkpoint in a.not_saved,
            f"the end of the upload of step {checkpoint} after the outage",
            timeout=240,
        )
        self.events.append(
            {
                "fault": f"S3 server stopped for {seconds:.1f} s",
                "attempt": a.number,
                "step": before,
                "phase": "upload",
                "in_flight": f"upload of step {checkpoint}",
                "outcome": (
                    f"steps {before}->{during} trained during the outage; the checkpoint of step {checkpoint} "
                    + ("completed" if checkpoint in a.complete else "was reported NOT saved")
                ),
            }
        )

    def disk_full(self, at_step: int, timeout: float = 180.0) -> None:
        """Fill the staging disk at step N and keep it full: the next save meets ENOSPC. Free it once
        the run has ended (exit 2 with its message is the expected end) or, if it goes on, 30 s
        after it reported the full disk."""
        if self.disk is None:
            self.events.append({"fault": "disk full: skipped (no private tmpfs)", "attempt": 0})
            return
        d = self.driver
        d.wait_for(lambda: d.current.last_step >= at_step, f"step {at_step}")
        a = d.current
        filled_at, fill_time = a.last_step, time.monotonic()
        written = self.disk.fill()
        deadline = time.monotonic() + timeout
        while d.alive() and not any(DISK_FULL.search(line) for line in a.lines):
            if time.monotonic() > deadline:
                self.disk.free()
                raise SoakError(
                    f"attempt {a.number} neither failed nor reported the full disk within {timeout:.0f} s "
                    f"of filling it at step {filled_at} (now at step {a.last_step})"
                )
            time.sleep(POLL_S)
        reported_at = a.last_step
        deadline = time.monotonic() + 30
        while d.alive() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        self.disk.free()
        hit = sorted(s for s, t in a.saving.items() if t >= fill_time) or sorted(a.saving)[-1:]
        event = {
            "fault": f"disk full from step {filled_at} ({written >> 20} MiB written)",
            "attempt": a.number,
            "step": a.last_step,
            "phase": "save",
            "in_flight": f"save of step {hit[0]}" if hit else "no save",
        }
        if a.exit_code is not None:
            a.ended_by, a.end_step, a.in_flight = "disk full", a.last_step, event["in_flight"]
            event["exit_code"] = a.exit_code
            last = a.error_text() or next((x for x in reversed(a.lines) if x.strip()), "")
            event["outcome"] = f"exit {a.exit_code}: {last[:300]}"
            self.events.append(event)
            self._restart()
        else:
            event["outcome"] = (
                f"reported the full disk at step {reported_at} and was still training 30 s later"
            )
            self.events.append(event)

    def kill_in_restore(self, delay_s: float) -> None:
        """Kill the (just restarted) run `delay_s` after it logs the checkpoint it resumes from."""
        d = self.driver
        a = d.current
        if a.first_step_at is not None:
            raise SoakError(f"attempt {a.number} was already training when its restore was to be killed")
        d.wait_for(lambda: a.resumed_from is not None, "the resume line")
        time.sleep(delay_s)
        self.events.append(d.kill(f"kill {delay_s:.2f} s into the restore"))
        self._restart()


def _listing(folder: str) -> list[str]:
    """Files left under `folder`, with their sizes (what the soak leaves in the staging folder)."""
    out = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            out.append(f"{os.path.relpath(path, folder)} ({size} B)")
    return sorted(out)[:200]


def main(argv: list[str]) -> int:
    with open(argv[1]) as f:
        spec = json.load(f)
    report = Soak(spec).run()
    with open(spec["report"] + ".tmp", "w") as f:
        json.dump(report, f, indent=1, default=str)
    os.replace(spec["report"] + ".tmp", spec["report"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
