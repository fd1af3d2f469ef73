"""GenerateOutpassPdf: the outpass as a PDF (WeasyPrint, from a Jinja2 HTML/CSS template).

Depends on GenerateQrCode: the QR image it wrote is embedded in the page. Rendering may fetch
nothing else (no file, no network): payload text is escaped by the template, and the URL
fetcher only allows data: URIs, so no value from a payload can make the renderer read a file.
The template's image is `QR_IMAGE_URL`, a data: URI that the fetcher answers with the QR image
of the PDF being rendered: the image never goes through base64, the HTML parser or urllib.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from passito_jobs.outpass.model import Outpass
from passito_jobs.outpass.qr_code import PNG_SIGNATURE
from passito_jobs.outpass.rendering import STATUS_LABELS, read_static, render
from passito_jobs.outpass.settings import JobSettings
from passito_jobs.outpass.storage import Storage
from passito_jobs.registry import JobContext, job_type

# WeasyPrint does not promise thread safety (fontconfig and Pango underneath), and rendering
# is CPU-bound under the GIL anyway: one rendering at a time per worker process. PDF jobs use
# more cores than one through process isolation (the job type's `isolation="process"`).
_render_lock = threading.Lock()


QR_IMAGE_URL = "data:,outpass-qr-code"


@dataclass(frozen=True)
class _Renderer:
    """What every PDF of a process shares: the URL fetcher, the parsed stylesheet and the font
    configuration (fontconfig's lookups and Pango's font map). Made on the first PDF; reusing
    them saves a fifth of the CPU of a PDF, and the PDF is the same."""

    fetcher: Any
    stylesheet: Any
    fonts: Any


@cache
def _renderer() -> _Renderer:
    import weasyprint  # noqa: PLC0415 - a worker-extra dependency with system libraries
    from weasyprint.text.fonts import FontConfiguration  # noqa: PLC0415
    from weasyprint.urls import URLFetcherResponse  # noqa: PLC0415

    class Fetcher(weasyprint.URLFetcher):  # type: ignore[misc]  # weasyprint has no types
        """data: URIs only; `QR_IMAGE_URL` is the QR image of the PDF being rendered."""

        qr_image: bytes | None = None

        def fetch(self, url: str, headers: Any = None) -> Any:
            if url == QR_IMAGE_URL and self.qr_image is not None:
                return URLFetcherResponse(url, body=self.qr_image, headers={"Content-Type": "image/png"})
            return super().fetch(url, headers)

    fetcher = Fetcher(allowed_protocols={"data"}, fail_on_errors=True)
    fonts = FontConfiguration()
    stylesheet = weasyprint.CSS(string=read_static("outpass.css"), url_fetcher=fetcher, font_config=fonts)
    return _Renderer(fetcher, stylesheet, fonts)


class MissingQrCodeError(FileNotFoundError):
    """The QR image is not there (yet): retried, since GenerateQrCode may still be writing it
    on a slow shared volume."""


def grayscale_png(png: bytes) -> bytes:
    """The same pixels as an 8-bit grayscale PNG, which WeasyPrint embeds as it is.

    GenerateQrCode writes a 1-bit PNG; WeasyPrint turns such an image into RGB and encodes it
    twice (a fifth of a PDF's CPU); a grayscale one it decodes and encodes once, as DeviceGray.
    Not compressed: it never leaves the process, and WeasyPrint compresses it itself.
    """
    from PIL import Image  # noqa: PLC0415 - a worker-extra dependency (qrcode[pil])

    out = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.convert("L").save(out, format="PNG", compress_level=0)
    return out.getvalue()


def render_pdf(outpass: Outpass, qr_png: bytes, *, now: datetime | None = None) -> tuple[bytes, int]:
    """The PDF bytes and its page count; `now`, the time it says it was generated."""
    import weasyprint  # noqa: PLC0415 - a worker-extra dependency with system libraries

    qr_image = grayscale_png(qr_png)
    html = render(
        "outpass.html",
        outpass=outpass,
        status_label=STATUS_LABELS[outpass.status],
        qr_data_uri=QR_IMAGE_URL,
        generated=(now or datetime.now(UTC)).astimezone(UTC).strftime("%d %b %Y %H:%M UTC"),
    )
    with _render_lock:
        shared = _renderer()
        shared.fetcher.qr_image = qr_image
        try:
            document = weasyprint.HTML(string=html, url_fetcher=shared.fetcher).render(
                stylesheets=[shared.stylesheet], font_config=shared.fonts
            )
            pdf = document.write_pdf()
        finally:
            shared.fetcher.qr_image = None
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


@job_type("GenerateOutpassPdf", timeout=120, settings=JobSettings, isolation="process")
def generate_outpass_pdf_job(ctx: JobContext) -> dict[str, Any]:
    """Payload: the outpass. Result: {outpass_id, file, bytes, pages}."""
    return generate_outpass_pdf(Outpass.from_payload(ctx.payload), ctx.settings_of(JobSettings))
