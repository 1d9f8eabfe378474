"""One trial runs once: a lock file in the trial folder, held for the trial's lifetime.

`<trial dir>/.kdx.lock` is created with O_CREAT|O_EXCL (atomic on local disks and on NFSv3+)
and holds the owner's host, pid, start time and a random token. While the trial runs, a daemon
thread touches the file every `heartbeat_s` seconds. Another launch of the same trial finds it and
either waits (`lock.on_busy=wait`, polling every `poll_s`) or stops with "running elsewhere"
(`lock.on_busy=exit`). A lock is stale, and taken over, when its owner is on this host and its pid
is gone, or when its heartbeat is older than `stale_after_s` (an owner on another host that died,
or a pid reused). Limits: the hosts' clocks must agree to well within `stale_after_s`; a process
stopped (SIGSTOP, a frozen node) for longer than `stale_after_s` loses its lock.
"""

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from kdx.errors import KdxError

LOCK_FILE = ".kdx.lock"


class TrialBusy(KdxError):
    """The trial is running in another process (lock.on_busy=exit). Not a failure of the trial:
    nothing is written to its folder."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, owned by another user
        return True
    return True


def read_owner(path: Path) -> dict | None:
    """The lock's content, {} when unreadable (being written, or damaged), None when absent."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {}


def heartbeat_age(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def describe_owner(owner: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, since {started}"


class TrialLock:
    def __init__(self, trial_dir: Path, on_busy: str = "wait", poll_s: float = 10.0, heartbeat_s: float = 30.0,
                 stale_after_s: float = 300.0):
        self.path = Path(trial_dir) / LOCK_FILE
        self.on_busy, self.poll_s = on_busy, poll_s
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- taking and giving back ------------------------------------------------------------------
    def acquire(self) -> None:
        told = False
        while not self._try_create():
            owner = read_owner(self.path)
            if owner is None:
                continue   # released meanwhile: try again at once
            if self.is_stale(owner):
                self._break(owner)
                continue
            where = describe_owner(owner) if owner else "another process"
            if self.on_busy == "exit":
                raise TrialBusy(f"this trial is running elsewhere ({where}); lock {self.path}",
                                "wait for it to finish (a relaunch then skips it), or launch with lock.on_busy=wait; "
                                "if that process is gone, delete the lock file")
            if not told:
                print(f"[kdx] this trial is running elsewhere ({where}); waiting for it "
                      f"(lock {self.path}; lock.on_busy=exit stops instead)", flush=True)
                told = True
            time.sleep(self.poll_s)
        self._thread = threading.Thread(target=self._beat, name="kdx-trial-lock", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        owner = read_owner(self.path)
        if owner and owner.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    # ---- internals --------------------------------------------------------------------------------
    def _try_create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                       "token": self.token}, f)
        return True

    def is_stale(self, owner: dict) -> bool:
        age = heartbeat_age(self.path)
        if age is not None and age > self.stale_after_s:
            return True
        same_host = owner.get("host") == socket.gethostname()
        return same_host and isinstance(owner.get("pid"), int) and not pid_alive(owner["pid"])

    def _break(self, owner: dict) -> None:
        """Takes a stale lock away: rename it to a name of our own (one launcher wins the rename),
        then check that what we took is the stale owner's and not a fresh lock made meanwhile."""
        taken = self.path.with_name(f"{LOCK_FILE}.stale-{self.token}")
        try:
            os.rename(self.path, taken)
        except FileNotFoundError:
            return
        took = read_owner(taken)
        if took and owner and took.get("token") != owner.get("token"):
            try:   # a live lock: put it back (link fails if yet another lock exists)
                os.link(taken, self.path)
            except FileExistsError:
                pass
            taken.unlink(missing_ok=True)
            return
        print(f"[kdx] taking over a stale trial lock ({describe_owner(owner) if owner else 'unreadable'})",
              flush=True)
        taken.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return


def trial_lock(trial_dir: Path, settings) -> TrialLock:
    """The lock for `trial_dir` from the `lock` config group."""
    settings = settings or {}
    return TrialLock(trial_dir, on_busy=settings.get("on_busy", "wait"), poll_s=settings.get("poll_s", 10.0),
                     heartbeat_s=settings.get("heartbeat_s", 30.0),
                     stale_after_s=settings.get("stale_after_s", 300.0))
