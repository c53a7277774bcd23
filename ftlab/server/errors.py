"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` for every failure.

The official SDK turns the status code into an exception class and retries 408, 409,
429 and 5xx unless the response says `x-should-retry: false`; deterministic failures
therefore use 4xx codes, and unexpected server errors say "do not retry".
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("ftlab.server")


class APIError(Exception):
    """An error the API reports to the client as `{"error": {...}}` with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def missing_parameter(name: str) -> APIError:
    return APIError(
        400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
    )


def invalid_value(name: str, message: str) -> APIError:
    return APIError(400, f"Invalid value for '{name}': {message}", param=name, code="invalid_value")


def unrecognized(name: str, known: Iterable[str]) -> APIError:
    """OpenAI's answer to a field it does not know, with the field probably meant."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else " Leave it out."
    return APIError(400, f"Unrecognized request argument supplied: {name}.{hint}", param=name)


def not_found(kind: str, object_id: str, param: str | None = None) -> APIError:
    return APIError(404, f"No such {kind} object: {object_id}", param=param, code="not_found")


def model_not_found(
    model: str, hint: str = "client.models.list() shows the ones you can use."
) -> APIError:
    """OpenAI's 404 for a model, with a hint of what this server has (OpenAI's gives none)."""
    return APIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it. {hint}",
        param="model",
        code="model_not_found",
    )


def _response(error: APIError, retry: bool = False) -> JSONResponse:
    headers = {} if retry else {"x-should-retry": "false"}
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


# pydantic names the member of a union that failed: ("n_epochs", "literal['auto']"),
# ("n_epochs", "constrained-int") for a number with limits.
UNION_MEMBER = re.compile(r"^(int|float|str|bool|list|dict|none|constrained-\w+|.*\[.*\])$")


def _param_name(location: tuple) -> str | None:
    """`("body", "hyperparameters", "n_epochs", "int")` -> "hyperparameters.n_epochs";
    list positions as the server's own checks write them: `messages[0].role`."""
    parts = list(location[1:])
    if location and location[0] not in ("body", "query", "path", "header"):
        parts.insert(0, location[0])
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        elif not UNION_MEMBER.match(str(part)):
            name += f".{part}" if name else str(part)
    return name or None


def required_fields(request: Request) -> list[str]:
    """The required fields of the endpoint's JSON body: what an empty body is missing."""
    body = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(body, "field_info", None), "annotation", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [name for name, field in model.model_fields.items() if field.is_required()]


def _unparsable(problem: dict[str, Any], body: Any) -> APIError:
    reason = problem.get("ctx", {}).get("error") or problem.get("msg", "")
    position = problem.get("loc", ())[-1:]
    if isinstance(body, str) and position and isinstance(position[0], int):
        found = json.JSONDecodeError(reason, body, position[0])
        reason += f" at line {found.lineno}, column {found.colno}"
    return APIError(
        400,
        f"We could not parse the JSON body of your request ({reason}). "
        "The body must be valid JSON.",
    )


def validation_error(error: RequestValidationError, required: Sequence[str] = ()) -> APIError:
    """The first problem of a request that failed FastAPI/pydantic validation, OpenAI-style.

    `required`: the body's required fields, named when the whole body is missing.
    """
    problems = error.errors() or [{"type": "", "loc": (), "msg": "invalid"}]
    first = problems[0]
    if first.get("type") == "json_invalid":
        return _unparsable(first, error.body)
    param = _param_name(tuple(first.get("loc", ())))
    if first.get("type") == "missing" and (param or required):
        return missing_parameter(param or required[0])
    if param is None:
        if first.get("type") in ("dict_type", "model_attributes_type"):  # not a JSON object
            return APIError(
                400,
                "The request body must be a JSON object, sent with the header Content-Type: "
                "application/json (the openai SDK does that).",
            )
        return APIError(400, f"Invalid request: {first.get('msg', 'invalid body')}.")
    reasons = dict.fromkeys(
        p.get("msg", "invalid") for p in problems if _param_name(tuple(p.get("loc", ()))) == param
    )
    return invalid_value(param, " or ".join(reasons) + ".")


# JSON request bodies (chats, jobs) larger than this are refused unread: a chat's 8,192-token
# context is well under 1 MB of JSON, and parsing and tokenizing tens of MB for one learner
# stalled everyone's answers. Uploads (`/v1/files`) have their own limit, --max-upload-mb.
MAX_JSON_BODY_BYTES = 2 * 2**20


# A declared body up to this size is read and dropped before the 413, so that the client,
# still sending, reads the answer; a larger one is answered at once (the connection closes).
DRAIN_AT_MOST_BYTES = 64 * 2**20


def _too_large(size: str) -> str:
    return (
        f"Request too large: {size}, and this server accepts at most {MAX_JSON_BODY_BYTES:,} "
        "bytes for a request (a chat's whole context fits in far less). Send a shorter "
        "conversation."
    )


class BodyLimit:
    """ASGI middleware: refuse a request body over its limit with a 413: at once when its
    Content-Length says so, else (a chunked body) when the bytes read pass the limit. JSON
    bodies get MAX_JSON_BODY_BYTES; uploads (`/v1/files`) `upload_bytes`, with `upload_error`
    as the refusal, so that a chunked upload is stopped before it fills the temporary folder
    the form is spooled to. Plain ASGI, not `@app.middleware`: that wrapper hides a client's
    hang-up from the chat endpoints, which stop decoding for clients that left."""

    def __init__(self, app, upload_bytes: int, upload_error: Callable[[], APIError]) -> None:
        self.app = app
        self.upload_bytes = upload_bytes
        self.upload_error = upload_error

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["path"].rstrip("/").endswith("/files")
        limit = self.upload_bytes if upload else MAX_JSON_BODY_BYTES

        def refusal(size: str) -> APIError:
            if upload:
                return self.upload_error()
            return APIError(413, _too_large(size), code="request_too_large")

        declared = dict(scope["headers"]).get(b"content-length", b"").decode()
        if declared.isdigit() and int(declared) > limit:
            message = {"more_body": int(declared) <= DRAIN_AT_MOST_BYTES}
            while message.get("more_body"):  # drain, so the client reads the answer
                message = await receive()
            return await _response(refusal(f"{int(declared):,} bytes"))(scope, receive, send)
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                if upload:  # the upload endpoint reads its form itself, and passes this on
                    raise self.upload_error()
                # FastAPI, parsing a JSON body, passes an HTTPException on as it is
                raise StarletteHTTPException(413, _too_large("more than that"))
            return message

        await self.app(scope, counted, send)


def install_handlers(app: FastAPI) -> None:
    """Replace FastAPI's `{"detail": ...}` bodies (404, 405, 422, 500) with OpenAI's shape."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, error: APIError) -> JSONResponse:
        return _response(error)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return _response(validation_error(error, required_fields(request)))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code in (404, 405):
            message = f"Invalid URL ({request.method} {request.url.path})"
            code = "unknown_url" if error.status_code == 404 else "method_not_allowed"
        elif error.status_code == 400 and error.detail == "There was an error parsing the body":
            # FastAPI's words for a body json.loads cannot even decode (not UTF-8, say)
            message = (
                "We could not read the JSON body of your request: it must be JSON text in "
                "UTF-8 (the openai SDK sends that)."
            )
            code = None
        else:
            message = str(error.detail)
            code = "request_too_large" if error.status_code == 413 else None
        return _response(APIError(error.status_code, message, code=code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        message = f"The server had an error while processing your request: {type(error).__name__}"
        return _response(APIError(500, f"{message}: {error}", type="server_error"))
