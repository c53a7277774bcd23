"""Everything the server must not lose: metadata in SQLite (WAL), file contents on disk.

Layout of the data directory:

    ftlab.db            files, jobs, events, checkpoints and models (SQLite, WAL mode)
    files/{file-id}     uploaded and generated file contents, named by id only
    jobs/{ftjob-id}/    one folder per job: its training data, checkpoints, logs
    models/{key}/       the final adapter of each fine-tuned model (a copy, deletable alone)

Folders are recorded relative to the data directory, so a server started from another
working directory, or on a data directory that was moved, still finds them.

Every write is one committed transaction, so a SIGKILL at any moment leaves the
database consistent. A file's bytes are written and fsynced under a temporary
name, then renamed into place, before its row exists: a row never points at a
half-written file; bytes that a kill left without a row are removed at the next start.
Uploaded file names are only ever stored as text.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import sqlite3
import string
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.files import fsync_folder

log = logging.getLogger("ftlab.server")
SCHEMA_VERSION = 1
ALPHANUMERIC = string.ascii_lowercase + string.digits
JSON_COLUMNS = {"hyperparameters", "metadata", "error", "result_files", "data", "metrics"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, owner TEXT NOT NULL,
    filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, owner TEXT NOT NULL,
    org TEXT NOT NULL, created_at INTEGER NOT NULL, finished_at INTEGER, started_at INTEGER,
    model TEXT NOT NULL, fine_tuned_model TEXT, status TEXT NOT NULL,
    training_file TEXT NOT NULL, validation_file TEXT, seed INTEGER NOT NULL,
    suffix TEXT, hyperparameters TEXT NOT NULL, metadata TEXT, error TEXT,
    trained_tokens INTEGER, result_files TEXT NOT NULL DEFAULT '[]',
    max_steps INTEGER, n_examples INTEGER, step INTEGER, total_steps INTEGER,
    progress_offset INTEGER NOT NULL DEFAULT 0, resume INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL,
    type TEXT NOT NULL, data TEXT
);
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    owner TEXT NOT NULL, created_at INTEGER NOT NULL, model_name TEXT UNIQUE NOT NULL,
    step_number INTEGER NOT NULL, metrics TEXT NOT NULL, path TEXT NOT NULL,
    UNIQUE (job_id, step_number)
);
CREATE TABLE IF NOT EXISTS models (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, owner TEXT NOT NULL,
    org TEXT NOT NULL, job_id TEXT NOT NULL, created_at INTEGER NOT NULL, path TEXT NOT NULL
);
"""


def now() -> int:
    return int(time.time())


def new_id(prefix: str, length: int = 24) -> str:
    """A random id like `file-abc123...` (OpenAI's prefixes: file-, ftjob-, ftevent-, ftckpt_)."""
    return prefix + "".join(secrets.choice(ALPHANUMERIC) for _ in range(length))


class FileTooLarge(ValueError):
    """An upload went over the size limit (raised while streaming it to disk)."""


class UnknownCursor(ValueError):
    """`after` named an item that is not in the list being paged."""


@dataclass
class Page:
    rows: list[dict[str, Any]]
    has_more: bool


class Store:
    """Thread-safe access to the server's data directory (one connection, one lock)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.files_dir = self.root / "files"
        self.jobs_dir = self.root / "jobs"
        self.models_dir = self.root / "models"
        for folder in (self.root, self.files_dir, self.jobs_dir, self.models_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._remove_partial_uploads()
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.root / "ftlab.db", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk once acknowledged, even after a power cut (NORMAL could
        # roll back an answered upload, whose bytes the next start would then remove).
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.root / 'ftlab.db'} was written by a newer ftlab (schema {version}); "
                "upgrade ftlab or start the server with another --data-dir."
            )
        self._db.executescript(SCHEMA)  # idempotent; executescript commits by itself
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._remove_unrecorded_files()

    def _remove_partial_uploads(self) -> None:
        """Uploads a killed server was still writing: no row points at them, none ever will."""
        partial = sorted(self.files_dir.glob(".*.partial"))
        for path in partial:
            path.unlink(missing_ok=True)
        if partial:
            log.info(
                "Removed %d unfinished upload(s) left by a stopped server: %s",
                len(partial),
                ", ".join(p.name for p in partial),
            )

    def _remove_unrecorded_files(self) -> None:
        """File contents no row points at: a kill after the rename but before the insert, or
        after a delete's row went but before its bytes did. No request can reach them."""
        known = {row[0] for row in self._db.execute("SELECT id FROM files")}
        stray = sorted(
            path
            for path in self.files_dir.glob("file-*")
            if path.is_file() and path.name not in known
        )
        for path in stray:
            path.unlink(missing_ok=True)
        if stray:
            log.info(
                "Removed %d file(s) that no upload or job recorded (a stopped server's "
                "unfinished write or delete): %s",
                len(stray),
                ", ".join(p.name for p in stray),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- recorded folders --------------------------------------------------------------

    def stored_path(self, path: str | Path) -> str:
        """How a folder is recorded: relative to the data directory when it is inside it."""
        path = Path(path).absolute()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def located(self, stored: str | Path) -> Path:
        """Where a recorded folder is now (where it belongs, when it is missing).

        Paths are recorded relative to the data directory. Older versions recorded them as
        the server was given them: relative to its working directory then, or absolute
        where the data directory was then. Such a path is looked up in this data directory
        by its tail from `models/{key}` or `jobs/{ftjob-id}` on.
        """
        path = Path(stored)
        parts = path.parts
        tails = [
            self.root.joinpath(*parts[i:])
            for i in range(len(parts) - 1, -1, -1)
            if (parts[i] == "models" and i == len(parts) - 2)
            or (parts[i] == "jobs" and i + 1 < len(parts) and parts[i + 1].startswith("ftjob-"))
        ]
        # An absolute path as it stands is tried last: where an older server's data folder
        # was copied from, the copy in this data folder is the one to use. A relative one is
        # only ever read inside this data folder, never against the working directory.
        own = [path] if path.is_absolute() else [self.root / path]
        candidates = [*tails, *own]
        return next((c for c in candidates if c.exists()), candidates[0])

    def _with_location(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        """A model or checkpoint row whose `path` is where its folder is now (absolute)."""
        if row is not None:
            row["path"] = str(self.located(row["path"]))
        return row

    # ---- generic helpers -------------------------------------------------------------

    @staticmethod
    def _decode(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        record = dict(row)
        for key in JSON_COLUMNS & record.keys():
            if record[key] is not None:
                record[key] = json.loads(record[key])
        return record

    @staticmethod
    def _encode(values: dict[str, Any]) -> dict[str, Any]:
        return {
            k: json.dumps(v) if k in JSON_COLUMNS and v is not None else v
            for k, v in values.items()
        }

    def _insert(self, table: str, values: dict[str, Any]) -> None:
        with self.transaction() as db:
            self._insert_into(db, table, values)

    def _insert_into(
        self, db: sqlite3.Connection, table: str, values: dict[str, Any], *, or_ignore: bool = False
    ) -> bool:
        """Insert a row inside a caller's transaction; False if `or_ignore` skipped it."""
        values = self._encode(values)
        names = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        verb = "INSERT OR IGNORE" if or_ignore else "INSERT"
        return db.execute(f"{verb} INTO {table} ({names}) VALUES ({marks})", values).rowcount > 0

    def _one(self, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
        with self._lock:
            return self._decode(self._db.execute(sql, tuple(params)).fetchone())

    def _all(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [self._decode(r) for r in self._db.execute(sql, tuple(params)).fetchall()]

    def page(
        self,
        table: str,
        where: str,
        params: tuple,
        *,
        after: str | None,
        limit: int,
        newest_first: bool = True,
    ) -> Page:
        """One page of `table` rows matching `where`, ordered by insertion, after id `after`."""
        direction, compare = ("DESC", "<") if newest_first else ("ASC", ">")
        if after is not None:
            cursor = self._one(
                f"SELECT seq FROM {table} WHERE id = ? AND {where}", (after, *params)
            )
            if cursor is None:
                raise UnknownCursor(after)
            where = f"{where} AND seq {compare} ?"
            params = (*params, cursor["seq"])
        rows = self._all(
            f"SELECT * FROM {table} WHERE {where} ORDER BY seq {direction} LIMIT ?",
            (*params, limit + 1),
        )
        return Page(rows=rows[:limit], has_more=len(rows) > limit)

    # ---- files -----------------------------------------------------------------------

    def file_path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    def add_file(
        self,
        owner: str,
        filename: str,
        purpose: str,
        chunks: Iterable[bytes],
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Write the file's bytes (fsynced, renamed into place), then record it."""
        file_id = new_id("file-")
        partial = self.files_dir / f".{file_id}.partial"
        size = 0
        try:
            with open(partial, "wb") as handle:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise FileTooLarge(size)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            partial.rename(self.file_path(file_id))
            fsync_folder(self.files_dir)  # the rename itself survives a power cut
        finally:
            partial.unlink(missing_ok=True)
        row = {
            "id": file_id,
            "owner": owner,
            "filename": filename,
            "purpose": purpose,
            "bytes": size,
            "created_at": now(),
        }
        self._insert("files", row)
        return row

    def get_file(self, owner: str, file_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM files WHERE id = ? AND owner = ?", (file_id, owner))

    def find_file(self, owner: str, filename: str, purpose: str) -> dict[str, Any] | None:
        """The oldest of this owner's files with that name and purpose."""
        return self._one(
            "SELECT * FROM files WHERE owner = ? AND filename = ? AND purpose = ? ORDER BY seq",
            (owner, filename, purpose),
        )

    def list_files(
        self, owner: str, purpose: str | None, after: str | None, limit: int, newest_first: bool
    ) -> Page:
        where, params = "owner = ?", (owner,)
        if purpose:
            where, params = where + " AND purpose = ?", (owner, purpose)
        return self.page(
            "files", where, params, after=after, limit=limit, newest_first=newest_first
        )

    def delete_file(self, owner: str, file_id: str) -> bool:
        with self.transaction() as db:
            deleted = db.execute(
                "DELETE FROM files WHERE id = ? AND owner = ?", (file_id, owner)
            ).rowcount
        if deleted:
            self.file_path(file_id).unlink(missing_ok=True)
        return bool(deleted)

    # ---- jobs and events ---------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def add_job(self, job: dict[str, Any], first_event: str | None = None) -> None:
        """Insert a job, and its first event in the same transaction (a crash keeps both or
        neither, and the worker cannot log before it)."""
        with self.transaction() as db:
            self._insert_into(db, "jobs", job)
            if first_event is not None:
                self._insert_event(db, job["id"], first_event)

    def get_job(self, job_id: str, owner: str | None = None) -> dict[str, Any] | None:
        if owner is None:
            return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._one("SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner))

    def list_jobs(
        self, owner: str, after: str | None, limit: int, metadata: dict[str, str] | None = None
    ) -> Page:
        """A page of the owner's jobs; with `metadata`, only jobs whose metadata has each of
        those keys with that value (what `jobs.list(metadata=...)` asks)."""
        where, params = "owner = ?", (owner,)
        for key, value in (metadata or {}).items():
            where += (
                " AND EXISTS (SELECT 1 FROM json_each(jobs.metadata) AS m "
                "WHERE m.key = ? AND m.value = ?)"
            )
            params = (*params, key, value)
        return self.page("jobs", where, params, after=after, limit=limit)

    def jobs_with_status(self, *statuses: str) -> list[dict[str, Any]]:
        marks = ", ".join("?" for _ in statuses)
        return self._all(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY seq", statuses)

    def last_started(self) -> dict[str, int]:
        """When each owner's most recently started job started (owners who never started
        one are left out): whose turn it is in the queue. A job resumed after a restart
        counts as started then, less the time its kept steps took (`resumed_clock`)."""
        rows = self._all(
            "SELECT owner, MAX(started_at) AS started FROM jobs "
            "WHERE started_at IS NOT NULL GROUP BY owner"
        )
        return {row["owner"]: row["started"] for row in rows}

    def owners(self) -> dict[str, int]:
        """How many files, jobs and models each owner has (a key's name, or `local`)."""
        rows = self._all(
            "SELECT owner, COUNT(*) AS n FROM (SELECT owner FROM files UNION ALL "
            "SELECT owner FROM jobs UNION ALL SELECT owner FROM models) GROUP BY owner"
        )
        return {row["owner"]: row["n"] for row in rows}

    def update_job(
        self,
        job_id: str,
        only_if_status: tuple[str, ...] = (),
        *,
        event: str | None = None,
        event_level: str = "info",
        **fields: Any,
    ) -> bool:
        """Set fields on a job; with `only_if_status`, only while it has one of those statuses.
        `event` is recorded in the same transaction if the job changed, so that a crash keeps
        a new status and the event that announces it, or neither."""
        with self.transaction() as db:
            changed = self._set_job(db, job_id, fields, only_if_status)
            if changed and event is not None:
                self._insert_event(db, job_id, event, level=event_level)
            return changed

    def _set_job(
        self,
        db: sqlite3.Connection,
        job_id: str,
        fields: dict[str, Any],
        only_if_status: tuple[str, ...] = (),
    ) -> bool:
        """`update_job` inside a caller's transaction."""
        values = self._encode(fields)
        assignments = ", ".join(f"{k} = :{k}" for k in values)
        sql = f"UPDATE jobs SET {assignments} WHERE id = :job_id"
        if only_if_status:
            names = [f":status_{i}" for i in range(len(only_if_status))]
            sql += f" AND status IN ({', '.join(names)})"
            values.update({n[1:]: s for n, s in zip(names, only_if_status, strict=True)})
        return db.execute(sql, {**values, "job_id": job_id}).rowcount > 0

    def add_event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
        job_updates: dict[str, Any] | None = None,
        at: int | None = None,
        once: bool = False,
    ) -> None:
        """Record an event (at `at`, default now), and (in the same transaction) any job
        fields that go with it. `once`: not if the job already has an event with this message
        (a step done again after a restart announces itself only the first time)."""
        with self.transaction() as db:
            said = (
                once
                and db.execute(
                    "SELECT 1 FROM events WHERE job_id = ? AND message = ? LIMIT 1",
                    (job_id, message),
                ).fetchone()
            )
            if not said:
                self._insert_event(db, job_id, message, level=level, type=type, data=data, at=at)
            if job_updates:
                self._set_job(db, job_id, job_updates)

    def _insert_event(
        self,
        db: sqlite3.Connection,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
        at: int | None = None,
    ) -> None:
        """`add_event` inside a caller's transaction."""
        event = {
            "id": new_id("ftevent-"),
            "job_id": job_id,
            "created_at": now() if at is None else at,
            "level": level,
            "message": message,
            "type": type,
            "data": data,
        }
        self._insert_into(db, "events", event)

    def metrics_timeline(self, job_id: str) -> list[tuple[int, int]]:
        """The job's training steps and when each was logged, in the order logged."""
        rows = self._all(
            "SELECT created_at, data FROM events WHERE job_id = ? AND type = 'metrics' "
            "ORDER BY seq",
            (job_id,),
        )
        return [(row["data"]["step"], row["created_at"]) for row in rows if row["data"]]

    def last_metrics_step(self, job_id: str) -> int:
        """The highest step with a metrics event (0 if none): the job's own `step` goes back
        to its checkpoint's when a restart resumes it, this does not."""
        row = self._one(
            "SELECT MAX(json_extract(data, '$.step')) AS step FROM events "
            "WHERE job_id = ? AND type = 'metrics'",
            (job_id,),
        )
        return int(row["step"] or 0) if row else 0

    def list_events(self, job_id: str, after: str | None, limit: int) -> Page:
        return self.page("events", "job_id = ?", (job_id,), after=after, limit=limit)

    def all_events(self, job_id: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM events WHERE job_id = ? ORDER BY seq", (job_id,))

    # ---- checkpoints and models --------------------------------------------------------

    def add_checkpoint(
        self, checkpoint: dict[str, Any], event: str, job_updates: dict[str, Any]
    ) -> bool:
        """Record a checkpoint with its event, and the job fields that go with it, in one
        transaction; False, recording only the fields, if the job already has a checkpoint at
        that step (its progress line read again after a restart)."""
        row = {**checkpoint, "path": self.stored_path(checkpoint["path"])}
        with self.transaction() as db:
            added = self._insert_into(db, "checkpoints", row, or_ignore=True)
            if added:
                self._insert_event(db, checkpoint["job_id"], event)
            self._set_job(db, checkpoint["job_id"], job_updates)
            return added

    def drop_old_checkpoints(self, job_id: str, keep: int) -> list[Path]:
        """Forget all but the job's `keep` newest checkpoints; returns their folders to delete
        (only those inside the data folder: a row of an older version may point elsewhere)."""
        with self.transaction() as db:
            rows = db.execute(
                "SELECT id, path FROM checkpoints WHERE job_id = ? ORDER BY step_number DESC",
                (job_id,),
            ).fetchall()
            old = rows[keep:]
            db.executemany("DELETE FROM checkpoints WHERE id = ?", [(row[0],) for row in old])
        folders = [self.located(row[1]) for row in old]
        return [f for f in folders if f.resolve().is_relative_to(self.root.resolve())]

    def list_checkpoints(self, job_id: str, after: str | None, limit: int) -> Page:
        return self.page("checkpoints", "job_id = ?", (job_id,), after=after, limit=limit)

    def last_checkpoint_step(self, job_id: str) -> int:
        row = self._one(
            "SELECT MAX(step_number) AS step FROM checkpoints WHERE job_id = ?", (job_id,)
        )
        return int(row["step"] or 0) if row else 0

    def complete_job(
        self,
        job_id: str,
        model: dict[str, Any],
        messages: list[str],
        job_updates: dict[str, Any],
    ) -> bool:
        """Mark a running job succeeded, record its model and add `messages` as events, all in
        one transaction. False, changing nothing, when the job is no longer running (a
        cancel arrived while it was finishing): cancelled must stay cancelled.

        A model or message that a crashed older version already recorded is not added twice.
        """
        row = {**model, "path": self.stored_path(model["path"])}
        with self.transaction() as db:
            if not self._set_job(db, job_id, {**job_updates, "status": "succeeded"}, ("running",)):
                return False
            self._insert_into(db, "models", row, or_ignore=True)
            for message in messages:
                seen = db.execute(
                    "SELECT 1 FROM events WHERE job_id = ? AND message = ?", (job_id, message)
                ).fetchone()
                if not seen:
                    self._insert_event(db, job_id, message)
        return True

    def list_models(self, owner: str) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM models WHERE owner = ? ORDER BY seq", (owner,))
        return [self._with_location(row) for row in rows]

    def get_model(self, owner: str, name: str) -> dict[str, Any] | None:
        return self._with_location(
            self._one("SELECT * FROM models WHERE id = ? AND owner = ?", (name, owner))
        )

    def get_checkpoint_model(self, owner: str, name: str) -> dict[str, Any] | None:
        return self._with_location(
            self._one("SELECT * FROM checkpoints WHERE model_name = ? AND owner = ?", (name, owner))
        )

    def delete_model(self, owner: str, name: str) -> bool:
        """Forget a fine-tuned model and delete its adapter (its checkpoints stay usable)."""
        model = self.get_model(owner, name)
        if model is None:
            return False
        with self.transaction() as db:
            db.execute("DELETE FROM models WHERE id = ?", (name,))
        folder = Path(model["path"])
        if folder.is_relative_to(self.root):  # an old row's folder elsewhere is not ours
            shutil.rmtree(folder, ignore_errors=True)
        return True
