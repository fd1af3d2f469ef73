"""GenerateOutpassPdf: the outpass as a PDF (WeasyPrint, from a Jinja2 HTML/CSS template).

Depends on GenerateQrCode: the QR image it wrote is embedded as a data: URI. Rendering may
fetch nothing else (no file, no network): payload text is escaped by the template, and the URL
fetcher only allows data: URIs, so no value from a payload can make the renderer read a file.
"""

from __future__ import annotations

import base64
import threading
from datetime import UTC, datetime
from typing import Any

from passito_jobs.outpass.model import Outpass
from passito_jobs.outpass.qr_code import PNG_SIGNATURE
from passito_jobs.outpass.rendering import STATUS_LABELS, read_static, render
from passito_jobs.outpass.settings import JobSettings
from passito_jobs.outpass.storage import Storage
from passito_jobs.registry import JobContext, job_type

# WeasyPrint does not promise thread safety (fontconfig and Pango underneath), and rendering
# is CPU-bound under the GIL anyway: one rendering at a time per worker process.
_render_lock = threading.Lock()


class MissingQrCodeError(FileNotFoundError):
    """The QR image is not there (yet): retried, since GenerateQrCode may still be writing it
    on a slow shared volume."""


def render_pdf(outpass: Outpass, qr_png: bytes) -> tuple[bytes, int]:
    """The PDF bytes and its page count."""
    import weasyprint  # noqa: PLC0415 - a worker-extra dependency with system libraries

    html = render(
        "outpass.html",
        outpass=outpass,
        status_label=STATUS_LABELS[outpass.status],
        qr_data_uri="data:image/png;base64," + base64.b64encode(qr_png).decode("ascii"),
        generated=datetime.now(UTC).strftime("%d %b %Y %H:%M UTC"),
    )
    fetcher = weasyprint.URLFetcher(allowed_protocols={"data"}, fail_on_errors=True)
    with _render_lock:
        document = weasyprint.HTML(string=html, url_fetcher=fetcher).render(
            stylesheets=[weasyprint.CSS(string=read_static("outpass.css"), url_fetcher=fetcher)]
        )
        pdf = document.write_pdf()
    assert isinstance(pdf, bytes)
    return pdf, len(document.pages)


def generate_outpass_pdf(outpass: Outpass, settings: JobSettings) -> dict[str, Any]:
    storage = Storage(settings.storage_dir)
    qr_path = storage.qr_code(outpass.outpass_id)
    try:
        qr_png = qr_path.read_bytes()
    except FileNotFoundError:
        raise MissingQrCodeError(
            f"no QR code at {storage.relative(qr_path)}: GenerateQrCode must complete first"
        ) from None
    if not qr_png.startswith(PNG_SIGNATURE):
        raise MissingQrCodeError(f"{storage.relative(qr_path)} is not a PNG image")
    pdf, pages = render_pdf(outpass, qr_png)
    path = storage.pdf(outpass.outpass_id)
    storage.write_atomic(path, pdf)
    return {
        "outpass_id": outpass.outpass_id,
        "file": storage.relative(path),
        "bytes": len(pdf),
        "pages": pages,
    }


@job_type("GenerateOutpassPdf", timeout=120, settings=JobSettings)
def generate_outpass_pdf_job(ctx: JobContext) -> dict[str, Any]:
    """Payload: the outpass. Result: {outpass_id, file, bytes, pages}."""
    return generate_outpass_pdf(Outpass.from_payload(ctx.payload), ctx.settings_of(JobSettings))
