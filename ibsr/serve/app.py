"""The HTTP API and the page, as a FastAPI app over one `SearchService`.

FastAPI (on Starlette, served by uvicorn) because it is the well-kept ASGI stack that
turns the declared form fields into validation and an OpenAPI description (`/openapi.json`)
by itself. Its Swagger page is switched off: it loads its JavaScript from a CDN, and ibsr's
page must work with no internet.

Every error answers JSON `{"error": "..."}` naming what was wrong; the service keeps serving.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, File, Form, Query as QueryParam, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

import ibsr
from ibsr.errors import IbsrError
from ibsr.photos.box import Box
from ibsr.searcher import SearchOptions
from ibsr.searcher.options import DEFAULT_CANDIDATES, DEFAULT_NEIGHBORS, DEFAULT_PREFILTER, DEFAULT_TOPK
from ibsr.searcher.prefilters import described_prefilters, prefilter_help, prefilter_names
from ibsr.searcher.results import image_data_uri
from ibsr.serve.security import secure
from ibsr.serve.service import Overloaded, SearchService
from ibsr.serve.shapes import ShapeNotFound, mesh_glb, rig_json

STATIC = Path(__file__).parent / "static"
RETRY_AFTER_S = 1
VERSION_HEADER = "X-Ibsr-Version"  # the table version that answered
# The registered prefilters' names (a Literal of the registry's tuple): the form field's check and
# its enum in /openapi.json
PrefilterName = Literal[prefilter_names()]


def create_app(service: SearchService) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        service.start()
        yield
        service.stop()

    app = FastAPI(title="ibsr", version=ibsr.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Image-based 3D shape retrieval: upload a photo, get the catalog shapes that match.")
    app.state.service = service
    app.add_middleware(UploadLimit, max_bytes=service.config.max_upload_bytes)
    secure(app, service.config.api_key, service.config.cors_origins)  # around UploadLimit: checked first
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/health", summary="Index served: shapes, table version, encoder id, batching counters")
    async def health() -> dict:
        return service.health()

    @app.get("/options", summary="What a search may set: each prefilter and what it reranks, and the defaults")
    async def search_options() -> dict:
        return {"prefilters": [{"name": name, "help": text} for name, text in prefilter_help().items()],
                "defaults": asdict(SearchOptions())}

    @app.get("/rig", summary="The index's camera rig and each view's camera (normalized mesh frame)")
    async def rig() -> dict:
        return rig_json(service.served.rig)

    @app.post("/search", summary="Rank the catalog for one photo (the object of `ibsr-search --json`)")
    async def search(
        image: UploadFile = File(..., description="The photo (JPEG, PNG, WebP, ...)."),
        mask: UploadFile | None = File(None, description="Object mask of the photo's size (nonzero = object). Default: "
                                                         "the alpha channel, else an automatic mask, as ibsr-search."),
        topk: int = Form(DEFAULT_TOPK, ge=1, description="Number of shapes returned."),
        category: str | None = Form(None, description="Only return shapes of this category."),
        prefilter: PrefilterName = Form(DEFAULT_PREFILTER, description=f"Candidates of the rerank: {described_prefilters()}."),
        candidates: int = Form(DEFAULT_CANDIDATES, ge=1, description="prefilter=ann: shapes reranked."),
        neighbors: int = Form(DEFAULT_NEIGHBORS, ge=1,
                              description="prefilter=category: nearest shapes that vote for categories."),
        box: str | None = Form(None, description="`x0,y0,x1,y1`: search only the object inside this rectangle, in "
                                                 "pixels of the upright photo (as `ibsr-search --box`); clipped to "
                                                 "the photo, and the answer's `box` is the one used."),
        mask_preview: bool = QueryParam(False, description="Add `mask_preview`: a PNG data URI of the mask used."),
    ):
        options = SearchOptions(topk, prefilter, candidates, neighbors, category or None)
        box = Box.parse(box) if box and box.strip() else None  # a bad box answers 400 before the photo is read
        with service.admit():
            try:
                result, version, query = await asyncio.wait_for(
                    _decode_and_search(service, image, mask, box, options), service.config.timeout_s)
            except asyncio.TimeoutError:
                return _error(504, f"no answer within the {service.config.timeout_s:g} s limit (--timeout); "
                                   "the service is busy or the photo is very large: try again")
        body = result.to_dict()  # exactly what `ibsr-search --json` prints for this photo
        if mask_preview:
            body["mask_preview"] = image_data_uri(query.mask, max_side=384)
        return JSONResponse(body, headers={VERSION_HEADER: str(version)})

    @app.get("/shapes/{shape_id:path}/thumbnail.png", response_class=Response,
             responses={200: {"content": {"image/png": {}}}}, summary="The shape's rendered views (PNG)")
    async def thumbnail(shape_id: str):
        served = service.served
        _row(served, shape_id)
        png = (await run_in_threadpool(served.searcher.shapes.thumbnails, [shape_id])).get(shape_id)
        if png is None:
            raise ShapeNotFound(f"no thumbnail for shape {shape_id!r}")
        # read from disk: the served version's, or the newest once a compaction removed that one
        reader = served.searcher.shapes.reader
        return Response(png, media_type="image/png", headers={VERSION_HEADER: str(reader.version)})

    @app.get("/shapes/{shape_id:path}/mesh.glb", response_class=Response,
             responses={200: {"content": {"model/gltf-binary": {}}}},
             summary="The shape's mesh, normalized as indexed (centred, unit sphere, +y up), as GLB")
    async def mesh(shape_id: str):
        served = service.served
        source = served.searcher.shapes.source_paths[_row(served, shape_id)]
        glb = await run_in_threadpool(mesh_glb, source, served.searcher.meta.up_axis, f"shape {shape_id!r}")
        return Response(glb, media_type="model/gltf-binary")

    return app


async def _decode_and_search(service: SearchService, image: UploadFile, mask: UploadFile | None, box: Box | None,
                             options: SearchOptions):
    if mask is not None and not mask.filename and mask.size == 0:
        mask = None  # an empty file input of an HTML form
    query = await service.decode(decode_upload, service.served.searcher, image, mask, box)
    result, version = await asyncio.wrap_future(service.submit(query, options))
    return result, version, query


def decode_upload(searcher, image: UploadFile, mask: UploadFile | None, box: Box | None = None):
    """The searcher's own `load_queries` on the uploaded files: the same decoding, limits and
    masks as ibsr-search. Errors name the form field and the uploaded file's name.

    The uploads go through named temporary files (one each: far cheaper than a temporary
    folder per request, whose removal dominated the request's overhead)."""
    files, names = {}, {}
    try:
        for field, upload in (("image", image), ("mask", mask)):
            if upload is not None:
                files[field] = tempfile.NamedTemporaryFile(prefix=f"ibsr-serve-{field}-")
                upload.file.seek(0)
                shutil.copyfileobj(upload.file, files[field])
                files[field].flush()
                names[files[field].name] = f"{field} {upload.filename or '(no name)'!r}"
        try:
            [query] = searcher.load_queries([files["image"].name], [files["mask"].name] if mask else None,
                                            [box] if box else None)
        except IbsrError as exc:
            raise IbsrError(f"{names.get(exc.path, 'upload')}: {exc.message}") from None  # no server path
    finally:
        for file in files.values():
            file.close()
    query.path = image.filename or "upload"
    return query


def _row(served, shape_id: str) -> int:
    row = served.row_of.get(shape_id)
    if row is None:
        raise ShapeNotFound(f"no shape {shape_id!r} in the index (table version {served.version})")
    return row


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ShapeNotFound)
    async def not_found(request, exc: ShapeNotFound):
        return _error(404, str(exc))

    @app.exception_handler(IbsrError)
    async def bad_input(request, exc: IbsrError):
        return _error(400, str(exc))

    @app.exception_handler(Overloaded)
    async def overloaded(request, exc):
        service = request.app.state.service
        return _error(503, f"busy: {service.config.queue_size} requests in flight (--queue-size); retry shortly",
                      {"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"] if part not in ("body", "query", "path"))
            problems.append(f"{where}: {error['msg']}" if where else error["msg"])
        return _error(400, "; ".join(problems))

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request, exc: Exception):
        # Starlette re-raises it after this answer, so the server log has the traceback; its text may name paths
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")


class UploadLimit:
    """ASGI middleware: refuse a POST body over `max_bytes` (413) before reading it.

    It reads the declared Content-Length (browsers and HTTP clients send one with a form;
    the server's HTTP parser then never delivers more than that), so a too large upload is
    refused without being received; a POST without a length is refused (411)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            length = dict(scope["headers"]).get(b"content-length")
            if length is None or not length.isdigit():
                return await _error(411, "send the upload with a Content-Length header")(scope, receive, send)
            if int(length) > self.max_bytes:
                return await _error(413, f"upload is {int(length):,} bytes, over the {self.max_bytes:,} byte limit "
                                         "(--max-upload-mb); send a smaller photo")(scope, receive, send)
        await self.app(scope, receive, send)
