"""What the pipeline stored, read back: ``/documents/{doc_id}``, page thumbnails and ``/search``.

This is the documents' content, so with an API token every one of these
endpoints needs ``Authorization: Bearer <token>`` (status reads stay open).
These endpoints read the :class:`~docstatus.output.store.OutputStore`
(the service's is ``<data_dir>/output.db``). A document that is known to the
status store but not stored yet (still processing, or failed) is a 404
``DOCUMENT_NOT_FOUND`` whose details say its status.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response

from ...errors import DocumentNotFoundError, PageNotFoundError
from ...manager import StatusManager
from ...output import OutputStore, StoredDocument
from ..auth import token_dependencies
from ..errors import error_responses
from ..params import STRICT_QUERY

__all__ = ["documents_router"]

DocId = Annotated[str, Path(description="The document's id (the SHA-256 of an upload's content)")]
PageNumber = Annotated[int, Path(ge=1, le=1_000_000, description="The page (or slide) number, from 1")]
SearchText = Annotated[str, Query(min_length=1, max_length=2000, description="What to look for")]
SearchLimit = Annotated[int, Query(ge=1, le=100, description="At most this many chunks")]


def _thumbnail_url(doc_id: str, number: int) -> str:
    return f"/documents/{doc_id}/pages/{number}/thumbnail"


def document_json(stored: StoredDocument, *, vectors: bool = False) -> dict[str, Any]:
    """A stored document as the API reports it (vectors only when asked: they are large)."""
    pages = []
    for page in stored.pages:
        entry: dict[str, Any] = {
            "number": page.number,
            "width": page.width,
            "height": page.height,
            "thumbnail_url": _thumbnail_url(stored.doc_id, page.number),
            "thumbnail_type": page.media_type,
            "thumbnail_bytes": page.thumbnail_bytes,
            "info": page.info,
        }
        if vectors:
            entry["vector"] = list(page.vector)
        pages.append(entry)
    chunks = []
    for chunk in stored.chunks:
        item: dict[str, Any] = {"index": chunk.index, "text": chunk.text, "info": chunk.info}
        if vectors:
            item["vector"] = list(chunk.vector)
        chunks.append(item)
    return {
        "doc_id": stored.doc_id,
        "metadata": stored.metadata,
        "stored_at": stored.stored_at,
        "text_dimension": stored.dimension,
        "visual_dimension": stored.visual_dimension,
        "num_pages": len(pages),
        "num_chunks": len(chunks),
        "pages": pages,
        "chunks": chunks,
    }


def _not_stored(doc_id: str, manager: StatusManager | None) -> DocumentNotFoundError:
    error = DocumentNotFoundError(doc_id)
    status = manager.get_status(doc_id) if manager is not None else None
    if status is not None:
        error.details["status"] = status.status.value
        error.details["reason"] = f"the document has no stored output (status: {status.status.value})" + (
            f": {status.error}" if status.error else ""
        )
    return error


def _page_not_found(doc_id: str, page: int) -> JSONResponse:
    error = PageNotFoundError(doc_id, page)
    return JSONResponse(error.to_dict(), status_code=404)


def documents_router(
    output: OutputStore, manager: StatusManager | None = None, *, api_token: str | None = None
) -> APIRouter:
    """``GET /documents/{doc_id}``, ``GET /documents/{doc_id}/pages/{n}/thumbnail`` and ``GET /search``.

    ``output`` is the pipeline's output store; ``manager`` (optional) lets a
    404 say the status of a document that has no output yet. With
    ``api_token`` every endpoint needs ``Authorization: Bearer <token>`` (401
    ``UNAUTHORIZED`` otherwise): they serve the documents' text and images.
    Install :func:`~docstatus.api.errors.install_error_handlers` on the app
    for the error shape.
    """
    router = APIRouter(tags=["documents"], dependencies=[STRICT_QUERY, *token_dependencies(api_token)])
    guarded = (401,) if api_token else ()

    @router.get("/documents/{doc_id}", responses=error_responses(*guarded, 404))
    def get_document(doc_id: DocId, vectors: bool = False) -> JSONResponse:
        """A processed document: metadata, pages (with thumbnail links) and text chunks.

        404 ``DOCUMENT_NOT_FOUND`` when nothing is stored for it (its status, if known, is in the details).
        ``?vectors=true`` adds every page's and chunk's vector.
        """
        stored = output.get(doc_id)
        if stored is None:
            raise _not_stored(doc_id, manager)
        return JSONResponse(document_json(stored, vectors=vectors))

    @router.get(
        "/documents/{doc_id}/pages/{page}/thumbnail",
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "The page's thumbnail"},
            **error_responses(*guarded, 404),
        },
    )
    def get_thumbnail(doc_id: DocId, page: PageNumber) -> Response:
        """The thumbnail of a page (JPEG or PNG); 404 ``DOCUMENT_NOT_FOUND`` or ``PAGE_NOT_FOUND``."""
        found = output.thumbnail(doc_id, page)
        if found is None:
            if not output.has(doc_id):
                raise _not_stored(doc_id, manager)
            return _page_not_found(doc_id, page)
        data, media_type = found
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    @router.get("/search", responses=error_responses(400, *guarded))
    def search(q: SearchText, limit: SearchLimit = 10) -> JSONResponse:
        """The stored text chunks most similar to ``q`` (cosine of their vectors), best first."""
        hits = [h for h in output.search(q, limit) if h.score > 0]  # a query without words matches nothing
        results = [
            {"doc_id": h.doc_id, "index": h.index, "text": h.text, "score": h.score, "info": h.info}
            for h in hits
        ]
        return JSONResponse({"query": q, "count": len(results), "results": results})

    return router
