"""The FastAPI app: every endpoint of the local fine-tuning API contract (design: openai-api.md).

Routes only translate between HTTP and the store, worker and inference objects;
all responses and errors have OpenAI's shapes so the official SDK works unmodified.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ftlab.server.auth import Authenticator
from ftlab.server.errors import (
    APIError,
    BodyLimit,
    install_handlers,
    invalid_value,
    missing_parameter,
    model_not_found,
    not_found,
    unrecognized,
)
from ftlab.server.inference import BASE_MODELS, ChatRequest, Inference
from ftlab.server.store import FileTooLarge, Page, Store, UnknownCursor, new_id, now
from ftlab.server.worker import Worker, tidy_finished_job, train_defaults

UPLOAD_PURPOSES = ("fine-tune", "assistants", "batch", "vision", "user_data", "evals")
SUFFIX = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
FTLAB_PREFIX = "ftlab_"  # job metadata keys of this server's own settings
MAX_STEPS_KEY = f"{FTLAB_PREFIX}max_steps"  # the one there is: cap the number of training steps
MAX_STEPS_LIMIT = 10**6  # far beyond any course run, and within the database's integers
NO_ERROR = {"code": None, "message": None, "param": None}
# `created` of the base model: about when Hugging Face released SmolLM2 (1 Nov 2024, 00:00
# UTC). OpenAI's base models carry their release, the same on every machine, so the
# time this machine downloaded or converted the model would say less.
BASE_MODEL_CREATED = 1730419200
Auto = Literal["auto"]


def auto_or(kind: type[int] | type[float], low: float, high: float, above: bool = False) -> Any:
    """A hyperparameter: "auto", or a `kind` from `low` (or just above it) to `high`.

    Numbers are strictly typed, as OpenAI's are: true and "3" are refused, not read as
    1 and 3. Any refusal names the whole range, not just the member of the union that
    failed last.
    """
    limits = {"gt" if above else "ge": low, "le": high}
    span = f"greater than {low:g} and at most {high:g}" if above else f"from {low:g} to {high:g}"
    expected = f"{'an integer' if kind is int else 'a number'} {span}"

    def check(value: Any, next_step: Any) -> Any:
        try:
            return next_step(value)
        except ValidationError:
            raise PydanticCustomError(
                "auto_or_number",
                "must be 'auto' or {expected} (got {got})",
                {"expected": expected, "got": json.dumps(value)},
            ) from None

    number = Annotated[kind, Field(strict=True, **limits)]
    return Annotated[Auto | number | None, WrapValidator(check)]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_epochs: auto_or(int, 1, 50) = None
    batch_size: auto_or(int, 1, 256) = None
    learning_rate_multiplier: auto_or(float, 0, 10, above=True) = None


HYPERPARAMETER_NAMES = tuple(Hyperparameters.model_fields)


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key must not be dropped silently
    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")  # {"type": "dpo", "dpo": ...}: refused by its type
    type: str
    supervised: Supervised | None = None


class JobCreate(BaseModel):
    # Other fields are kept to say what is wrong with them (`requested_hyperparameters`).
    model_config = ConfigDict(extra="allow", strict=True)  # "5" is no seed (see auto_or)
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None

    def requested_hyperparameters(self) -> dict[str, Any]:
        for name in HYPERPARAMETER_NAMES:
            if name in (self.model_extra or {}):
                raise invalid_value(
                    name, f"put {name} in method.supervised.hyperparameters, not at the top level."
                )
        for name, value in (self.model_extra or {}).items():  # OpenAI refuses those it lacks
            if name != "integrations":
                raise unrecognized(name, [*type(self).model_fields, "integrations"])
            if value:
                raise invalid_value(
                    name,
                    "integrations (such as Weights & Biases) are not supported by the local "
                    "server; leave it out: the job's events and result file hold its metrics.",
                )
        if self.method is not None and self.hyperparameters is not None:
            raise invalid_value(
                "hyperparameters",
                "give the hyperparameters in method.supervised.hyperparameters only "
                "(top-level hyperparameters is the older, deprecated place for them).",
            )
        if self.method is not None:
            if self.method.type != "supervised":
                raise invalid_value(
                    "method.type",
                    f"{self.method.type!r} is not supported by the local server; use 'supervised'.",
                )
            for name in self.method.model_extra or {}:  # a misspelt key, not silently dropped
                raise invalid_value(f"method.{name}", "unknown field; use method.supervised.")
            chosen = self.method.supervised and self.method.supervised.hyperparameters
        else:
            chosen = self.hyperparameters
        values = chosen.model_dump() if chosen else {}
        return {k: "auto" if values.get(k) is None else values[k] for k in HYPERPARAMETER_NAMES}

    def max_steps(self) -> int | None:
        """The `ftlab_max_steps` cap, checked; other keys in ftlab's own namespace are refused,
        so that a typo (`ftlab_max_step`) is not a whole job trained at full length."""
        for key in self.metadata or {}:
            if key.startswith(FTLAB_PREFIX) and key != MAX_STEPS_KEY:
                raise invalid_value(
                    f"metadata.{key}",
                    f"this server's own metadata setting is '{MAX_STEPS_KEY}' (keys starting "
                    f"with '{FTLAB_PREFIX}' are kept for its settings). Did you mean it?",
                )
        value = (self.metadata or {}).get(MAX_STEPS_KEY)
        if value is None:
            return None
        # isascii: "²" is a digit to isdigit() but no number to int()
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_STEPS_LIMIT:
            raise invalid_value(
                f"metadata.{MAX_STEPS_KEY}",
                f"expected a whole number from 1 to {MAX_STEPS_LIMIT:,}, written in digits.",
            )
        return int(value)


def _owner(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The owner of everything this request touches (from its API key)."""
    return request.app.state.auth.owner(authorization)


Owner = Annotated[str, Depends(_owner)]


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def organization_id(org: str) -> str:
    """How a job's `organization_id` and its models' `owned_by` name the owner."""
    return f"org-{org}"


def job_object(job: dict[str, Any]) -> dict[str, Any]:
    estimated = None
    if job["status"] == "running" and job["step"] and job["total_steps"] and job["started_at"]:
        current = now()
        per_step = (current - job["started_at"]) / job["step"]
        estimated = current + int(per_step * max(0, job["total_steps"] - job["step"]))
    hyperparameters = job["hyperparameters"]
    return {
        "id": job["id"],
        "object": "fine_tuning.job",
        "created_at": job["created_at"],
        "finished_at": job["finished_at"],
        "model": job["model"],
        "fine_tuned_model": job["fine_tuned_model"],
        "organization_id": organization_id(job["org"]),
        "result_files": job["result_files"],
        "status": job["status"],
        "trained_tokens": job["trained_tokens"] if job["status"] == "succeeded" else None,
        "training_file": job["training_file"],
        "validation_file": job["validation_file"],
        "seed": job["seed"],
        "hyperparameters": hyperparameters,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        "error": job["error"] or NO_ERROR,
        "integrations": [],
        "metadata": job["metadata"],
        "estimated_finish": estimated,
        "user_provided_suffix": job["suffix"],
    }


def event_object(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event["id"],
        "object": "fine_tuning.job.event",
        "created_at": event["created_at"],
        "level": event["level"],
        "message": event["message"],
        "type": event["type"],
        "data": event["data"] or {},
    }


def checkpoint_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "fine_tuning.job.checkpoint",
        "created_at": row["created_at"],
        "fine_tuned_model_checkpoint": row["model_name"],
        "fine_tuning_job_id": row["job_id"],
        "step_number": row["step_number"],
        "metrics": row["metrics"],
    }


def model_object(name: str, created: int, owned_by: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owned_by}


def paged(page: Page, shape: Callable[[dict], dict], ids: bool = False) -> dict[str, Any]:
    data = [shape(row) for row in page.rows]
    body: dict[str, Any] = {"object": "list", "data": data, "has_more": page.has_more}
    if ids:
        body["first_id"] = data[0]["id"] if data else None
        body["last_id"] = data[-1]["id"] if data else None
    return body


def cursor(list_page: Callable[[], Page]) -> Page:
    try:
        return list_page()
    except UnknownCursor as error:
        raise invalid_value("after", f"no item with id {error} in this list.") from error


def create_app(
    store: Store,
    *,
    auth: Authenticator,
    worker: Worker,
    inference: Inference,
    max_upload_mb: float,
    on_ready: Callable[[], None] = lambda: None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        on_ready()
        yield
        worker.shutdown()

    app = FastAPI(title="ftlab local fine-tuning API", lifespan=lifespan)
    max_upload_bytes = int(max_upload_mb * 2**20)
    app.state.auth = auth
    install_handlers(app)

    def too_large() -> APIError:
        return APIError(
            413,
            f"File too large: this server accepts uploads up to {max_upload_mb:g} MB. Upload "
            "a smaller file, or ask whoever runs the server to start it with a larger "
            "--max-upload-mb.",
            param="file",
            code="file_too_large",
        )

    # The file, and room for the form's other fields and part headers.
    app.add_middleware(BodyLimit, upload_bytes=max_upload_bytes + 2**16, upload_error=too_large)

    def own_job(job_id: str, who: str) -> dict[str, Any]:
        job = store.get_job(job_id, who)
        if job is None:
            raise not_found("fine-tuning job", job_id, "fine_tuning_job_id")
        return job

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "time": int(time.time())}

    # ---- files ---------------------------------------------------------------------------

    @app.post("/v1/files")
    async def upload_file(request: Request, who: Owner) -> dict[str, Any]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            async for _ in request.stream():  # drain (BodyLimit caps it), so the client reads
                pass
            raise APIError(
                400,
                f"An upload is sent as multipart/form-data with the fields 'purpose' and 'file' "
                f"(client.files.create does that), not as {kind or 'a body without a type'}.",
            )
        try:
            form = await request.form(max_files=1, max_fields=16)
        except StarletteHTTPException as error:
            raise APIError(
                400,
                f"Could not read the upload: {str(error.detail).rstrip('.')}. Send "
                "multipart/form-data with the fields 'purpose' and 'file'.",
            ) from error
        upload, purpose = form.get("file"), form.get("purpose")
        if purpose is None:
            raise missing_parameter("purpose")
        if isinstance(upload, str):  # curl -F 'file=<train.jsonl' sends the text as a field
            raise invalid_value(
                "file",
                "the 'file' field arrived as plain text, without a file name: send it as a "
                "file part (client.files.create does; with curl, -F 'file=@train.jsonl').",
            )
        if not isinstance(upload, UploadFile):
            raise missing_parameter("file")
        if purpose not in UPLOAD_PURPOSES:
            raise invalid_value(
                "purpose", f"{purpose!r} is not one of {', '.join(UPLOAD_PURPOSES)}."
            )
        chunks = iter(lambda: upload.file.read(1 << 20), b"")
        try:  # on a worker thread: writing and fsyncing 512 MB must not stall streamed chats
            row = await run_in_threadpool(
                store.add_file,
                who,
                (upload.filename or "upload")[:255],
                str(purpose),
                chunks,
                max_bytes=max_upload_bytes,
            )
        except FileTooLarge as error:
            raise too_large() from error
        finally:
            await upload.close()
        return file_object(row)

    @app.get("/v1/files")
    def list_files(
        who: Owner,
        purpose: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
        after: str | None = None,
        order: Literal["asc", "desc"] = "desc",
    ) -> dict[str, Any]:
        page = cursor(lambda: store.list_files(who, purpose, after, limit, order == "desc"))
        return paged(page, file_object, ids=True)

    def own_file(file_id: str, who: str) -> dict[str, Any]:
        row = store.get_file(who, file_id)
        if row is None:
            raise not_found("File", file_id, "file_id")
        return row

    @app.get("/v1/files/{file_id}")
    def get_file(file_id: str, who: Owner) -> dict[str, Any]:
        return file_object(own_file(file_id, who))

    @app.get("/v1/files/{file_id}/content")
    def file_content(file_id: str, who: Owner) -> FileResponse:
        own_file(file_id, who)
        path = store.file_path(file_id)
        if not path.is_file():  # its bytes were removed behind the server's back
            raise APIError(
                404,
                f"The content of {file_id} is missing from the server's data folder; upload "
                "the file again.",
                param="file_id",
                code="not_found",
            )
        return FileResponse(path, media_type="application/octet-stream")

    @app.delete("/v1/files/{file_id}")
    def delete_file(file_id: str, who: Owner) -> dict[str, Any]:
        if not store.delete_file(who, file_id):
            raise not_found("File", file_id, "file_id")
        return {"id": file_id, "object": "file", "deleted": True}

    # ---- fine-tuning jobs ----------------------------------------------------------------

    def check_file(who: str, file_id: str, param: str) -> None:
        row = store.get_file(who, file_id)
        if row is None:
            why = (  # the contract's words exactly for an id; a hint for a file's name, say
                ""
                if file_id.startswith("file-")
                else " (expected the id of an uploaded file, like file-abc123: the `id` of what "
                "client.files.create(...) returned, not the file's name)"
            )
            raise APIError(
                400, f"invalid {param}: {file_id}{why}", param=param, code="invalid_file"
            )
        if row["purpose"] != "fine-tune":
            raise APIError(
                400,
                f"invalid {param}: {file_id} has purpose {row['purpose']!r}; "
                "upload it with purpose 'fine-tune'.",
                param=param,
                code="invalid_file",
            )

    @app.post("/v1/fine_tuning/jobs")
    def create_job(body: JobCreate, who: Owner) -> dict[str, Any]:
        if body.model not in BASE_MODELS:
            names = ", ".join(BASE_MODELS)
            raise model_not_found(body.model, f"This server fine-tunes {names} only.")
        check_file(who, body.training_file, "training_file")
        if body.validation_file is not None:
            check_file(who, body.validation_file, "validation_file")
        if body.suffix is not None and not SUFFIX.match(body.suffix):
            raise invalid_value("suffix", "use 1 to 64 letters, digits, '.', '_' or '-'.")
        if body.metadata is not None:
            if len(body.metadata) > 16:
                raise invalid_value("metadata", "at most 16 key-value pairs are allowed.")
            for key, value in body.metadata.items():
                if len(key) > 64 or len(value) > 512:
                    what = (
                        f"the value of {key!r} has {len(value)} characters"
                        if len(key) <= 64
                        else f"the key {key[:20]!r}... has {len(key)} characters"
                    )
                    raise invalid_value(
                        "metadata", f"keys are at most 64 characters and values 512; {what}."
                    )
        job = {
            "id": new_id("ftjob-"),
            "owner": who,
            "org": who,
            "created_at": now(),
            "model": body.model,
            "status": "validating_files",
            "training_file": body.training_file,
            "validation_file": body.validation_file,
            "seed": body.seed if body.seed is not None else train_defaults()["seed"],
            "suffix": body.suffix,
            "hyperparameters": body.requested_hyperparameters(),
            "metadata": body.metadata,
            "max_steps": body.max_steps(),
        }
        store.add_job(job, first_event=f"Created fine-tuning job: {job['id']}")
        # As created: the file check, on its own thread, may already have moved it on.
        as_created = {"status": "validating_files", "finished_at": None, "error": None}
        created = job_object({**store.get_job(job["id"]), **as_created})
        worker.wake()
        return created

    @app.get("/v1/fine_tuning/jobs")
    def list_jobs(
        request: Request,
        who: Owner,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        after: str | None = None,
    ) -> dict[str, Any]:
        # The SDK sends jobs.list(metadata={"k": "v"}) as the query parameter metadata[k]=v.
        metadata = {
            name[len("metadata[") : -1]: value
            for name, value in request.query_params.multi_items()
            if name.startswith("metadata[") and name.endswith("]")
        }
        return paged(cursor(lambda: store.list_jobs(who, after, limit, metadata)), job_object)

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    def get_job(job_id: str, who: Owner) -> dict[str, Any]:
        return job_object(own_job(job_id, who))

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    def cancel_job(job_id: str, who: Owner) -> dict[str, Any]:
        job = own_job(job_id, who)
        said = {"event": "Fine-tuning job cancelled", "event_level": "warn"}
        waiting = store.update_job(  # queued: no training child, and none will start now
            job_id, only_if_status=("queued",), status="cancelled", finished_at=now(), **said
        )
        cancelled = waiting or store.update_job(
            job_id,
            only_if_status=("validating_files", "running"),  # the worker tidies these
            status="cancelled",
            finished_at=now(),
            **said,
        )
        if waiting:
            tidy_finished_job(store.job_dir(job_id))
        if not cancelled:
            status = store.get_job(job_id)["status"]
            state = {"succeeded": "has already succeeded", "failed": "has already failed"}
            raise APIError(
                400,
                f"Job {job_id} {state.get(status, f'is already {status}')}: it cannot be "
                "cancelled.",
                param="fine_tuning_job_id",
                code="invalid_job_state",
            )
        worker.wake()
        return job_object(store.get_job(job["id"]))

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    def list_events(
        job_id: str,
        who: Owner,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        after: str | None = None,
    ) -> dict[str, Any]:
        own_job(job_id, who)
        return paged(cursor(lambda: store.list_events(job_id, after, limit)), event_object)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    def list_checkpoints(
        job_id: str,
        who: Owner,
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
        after: str | None = None,
    ) -> dict[str, Any]:
        own_job(job_id, who)
        page = cursor(lambda: store.list_checkpoints(job_id, after, limit))
        return paged(page, checkpoint_object, ids=True)

    # ---- models ---------------------------------------------------------------------------

    def served_model(name: str) -> dict[str, Any]:
        """A model of `ftlab serve --adapter`: created when its adapter was written."""
        try:
            created = int((Path(inference.adapters[name]) / "adapter_config.json").stat().st_mtime)
        except OSError:  # deleted since the server started: chat says so
            created = BASE_MODEL_CREATED
        return model_object(name, created, "ftlab")

    @app.get("/v1/models")
    def list_models(who: Owner) -> dict[str, Any]:
        data = [model_object(name, BASE_MODEL_CREATED, "ftlab") for name in BASE_MODELS]
        data += [served_model(name) for name in inference.adapters]
        data += [
            model_object(m["id"], m["created_at"], organization_id(m["org"]))
            for m in store.list_models(who)
        ]
        return {"object": "list", "data": data, "has_more": False}

    @app.get("/v1/models/{model:path}")
    def get_model(model: str, who: Owner) -> dict[str, Any]:
        if model in BASE_MODELS:
            return model_object(model, BASE_MODEL_CREATED, "ftlab")
        if model in inference.adapters:
            return served_model(model)
        found = store.get_model(who, model)
        if found is not None:
            return model_object(found["id"], found["created_at"], organization_id(found["org"]))
        checkpoint = store.get_checkpoint_model(who, model)  # usable for chat too
        if checkpoint is None:
            raise model_not_found(model)
        owner = store.get_job(checkpoint["job_id"])["org"]
        return model_object(model, checkpoint["created_at"], organization_id(owner))

    @app.delete("/v1/models/{model:path}")
    def delete_model(model: str, who: Owner) -> dict[str, Any]:
        if model in BASE_MODELS:
            raise APIError(
                403,
                f"You cannot delete the base model `{model}`; only fine-tuned "
                "models can be deleted.",
                param="model",
                code="permission_denied",
            )
        if model in inference.adapters:
            raise APIError(
                403,
                f"`{model}` is served from a folder given to `ftlab serve --adapter` when the "
                "server started: restart the server without it to stop serving it (its files "
                "are left as they are).",
                param="model",
                code="permission_denied",
            )
        found = store.get_model(who, model)
        if found is None:
            checkpoint = store.get_checkpoint_model(who, model)
            if checkpoint is not None:
                raise APIError(
                    400,
                    f"`{model}` is a checkpoint of job {checkpoint['job_id']}: checkpoints "
                    "cannot be deleted, only a job's fine-tuned model can.",
                    param="model",
                    code="invalid_value",
                )
            raise model_not_found(model)
        inference.forget(found["path"])
        store.delete_model(who, model)
        return {"id": model, "object": "model", "deleted": True}

    # ---- chat -----------------------------------------------------------------------------

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, who: Owner, http: Request):
        if body.stream:  # a stream's reader is cancelled when its client goes away
            frames = await inference.stream(body, who, client_left=http.is_disconnected)
            if frames is None:  # the client went away before the answer started
                return Response(status_code=499)
            return StreamingResponse(
                frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        answer = await inference.complete(body, who, client_left=http.is_disconnected)
        return Response(status_code=499) if answer is None else answer  # 499: nobody reads it

    return app
