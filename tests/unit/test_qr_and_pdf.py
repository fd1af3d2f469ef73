"""GenerateQrCode and GenerateOutpassPdf, checked with real decoders and readers.

OpenCV's QRCodeDetector decodes the PNG; pypdf reads the PDF's text and images; pdftoppm
(poppler) renders a page, and the QR code is decoded again from that rendering.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from passito_jobs.outpass import outpass_pdf, rendering
from passito_jobs.outpass.model import Outpass
from passito_jobs.outpass.outpass_pdf import (
    MissingQrCodeError,
    generate_outpass_pdf,
    generate_outpass_pdf_job,
)
from passito_jobs.outpass.qr_code import generate_qr_code, generate_qr_code_job, verification_url
from passito_jobs.outpass.settings import JobSettings
from passito_jobs.outpass.tokens import PURPOSE_VERIFY, verify_token
from passito_jobs.registry import PermanentError
from tests.outpasses import PUBLIC_URL, context, job_settings, sample_payload


def decode_qr(image: np.ndarray) -> str:
    text, points, _ = cv2.QRCodeDetector().detectAndDecode(image)
    assert points is not None, "no QR code found in the image"
    return str(text)


@pytest.fixture
def settings(tmp_path: Path) -> JobSettings:
    return job_settings(tmp_path / "storage")


def test_the_qr_code_decodes_to_the_signed_verification_url(settings: JobSettings) -> None:
    outpass = Outpass.from_payload(sample_payload())
    result = generate_qr_code(outpass, settings)
    assert result["file"] == "outpasses/42/qr.png"
    png = settings.storage_dir / result["file"]
    url = decode_qr(cv2.imread(str(png)))
    assert url == verification_url(outpass, settings)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{PUBLIC_URL}/outpass/verify"
    token = parse_qs(parts.query)["token"][0]
    claims = verify_token(token, settings.signing_key, purpose=PURPOSE_VERIFY, now=outpass.from_date)
    assert claims.outpass_id == "42"
    assert claims.expires_at == outpass.valid_until


def test_the_qr_job_validates_its_payload_and_writes_the_same_image_again(
    settings: JobSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PASSITO_STORAGE_DIR", str(settings.storage_dir))
    monkeypatch.setenv("PASSITO_SECRET_KEY", settings.outpass.secret_key or "")
    first = generate_qr_code_job(context("GenerateQrCode", sample_payload()))
    image = (settings.storage_dir / first["file"]).read_bytes()
    generate_qr_code_job(context("GenerateQrCode", sample_payload(), attempt=2))
    assert (settings.storage_dir / first["file"]).read_bytes() == image  # a retry changes nothing
    with pytest.raises(PermanentError, match="field 'outpass_id' is missing"):
        generate_qr_code_job(context("GenerateQrCode", sample_payload(outpass_id=None)))


def test_the_pdf_has_the_outpass_text_and_the_qr_image(settings: JobSettings) -> None:
    outpass = Outpass.from_payload(sample_payload(student_name="Aanya <b>Sharma</b> & Co"))
    generate_qr_code(outpass, settings)
    result = generate_outpass_pdf(outpass, settings)
    assert (result["file"], result["pages"]) == ("outpasses/42/outpass.pdf", 1)
    reader = PdfReader(settings.storage_dir / result["file"])
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    # Escaped, not interpreted: the markup in the name shows up as typed.
    for expected in (
        "Aanya <b>Sharma</b> & Co",
        "CS21B042",
        "Kaveri, room 214",
        "Chennai Central",
        "Sat 1 Mar 2025, 09:00 UTC+05:30",
        "Mon 3 Mar 2025, 18:00 UTC+05:30",
        "Approved",
    ):
        assert expected in text, f"{expected!r} not in the PDF text: {text!r}"
    images = reader.pages[0].images
    assert len(images) == 1
    embedded = cv2.imdecode(np.frombuffer(images[0].data, np.uint8), cv2.IMREAD_COLOR)
    assert decode_qr(embedded) == verification_url(outpass, settings)
    assert reader.metadata is not None
    assert reader.metadata.title == "Outpass 42: Aanya <b>Sharma</b> & Co"


def need_pdftoppm() -> None:
    if shutil.which("pdftoppm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pdftoppm is missing (Debian package poppler-utils)")
        pytest.skip("pdftoppm is not installed (Debian package poppler-utils)")


def test_a_rendered_page_shows_a_scannable_qr_code(settings: JobSettings, tmp_path: Path) -> None:
    need_pdftoppm()
    outpass = Outpass.from_payload(sample_payload())
    generate_qr_code(outpass, settings)
    pdf = settings.storage_dir / generate_outpass_pdf(outpass, settings)["file"]
    subprocess.run(
        ["pdftoppm", "-r", "150", "-png", "-singlefile", str(pdf), str(tmp_path / "page")], check=True
    )
    page = cv2.imread(str(tmp_path / "page.png"))
    height, width = page.shape[:2]
    assert width > height > 500  # A5 landscape at 150 dpi: about 1240 x 874
    assert decode_qr(page) == verification_url(outpass, settings)


def test_the_pdf_job_waits_for_its_qr_code(settings: JobSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PASSITO_STORAGE_DIR", str(settings.storage_dir))
    monkeypatch.setenv("PASSITO_SECRET_KEY", settings.outpass.secret_key or "")
    with pytest.raises(MissingQrCodeError, match=r"no QR code at outpasses/42/qr\.png") as caught:
        generate_outpass_pdf_job(context("GenerateOutpassPdf", sample_payload()))
    assert not isinstance(caught.value, PermanentError)  # retried: the QR job may be behind
    assert not (settings.storage_dir / "outpasses/42/outpass.pdf").exists()


# The outpass stylesheet as it was before a PDF was made cheaper (flex rows, which WeasyPrint
# lays out several times, and an auto-width table): the page the faster one must draw.
STYLESHEET_BEFORE = Path(__file__).with_name("outpass_flex_layout.css")


def render_as_before(outpass: Outpass, qr: bytes, now: datetime) -> bytes:
    """The PDF as GenerateOutpassPdf made it before it was made faster: the old stylesheet, the
    1-bit QR PNG as GenerateQrCode wrote it, a stylesheet and font configuration per PDF."""
    import weasyprint

    css = STYLESHEET_BEFORE.read_text()
    html = rendering.render(
        "outpass.html",
        outpass=outpass,
        status_label=rendering.STATUS_LABELS[outpass.status],
        qr_data_uri="data:image/png;base64," + base64.b64encode(qr).decode("ascii"),
        generated=now.strftime("%d %b %Y %H:%M UTC"),
    )
    fetcher = weasyprint.URLFetcher(allowed_protocols={"data"}, fail_on_errors=True)
    document = weasyprint.HTML(string=html, url_fetcher=fetcher).render(
        stylesheets=[weasyprint.CSS(string=css, url_fetcher=fetcher)]
    )
    return bytes(document.write_pdf())


def page_pixels(pdf: bytes, folder: Path, name: str) -> list[bytes]:
    (folder / f"{name}.pdf").write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", "150", "-png", str(folder / f"{name}.pdf"), str(folder / name)], check=True
    )
    return [cv2.imread(str(page)).tobytes() for page in sorted(folder.glob(f"{name}-*.png"))]


def page_texts(pdf: bytes) -> list[str]:
    reader = PdfReader(io.BytesIO(pdf))
    return [page.extract_text() for page in reader.pages]


def embedded_qr_pixels(pdf: bytes) -> list[bytes]:
    reader = PdfReader(io.BytesIO(pdf))
    return [image.image.convert("L").tobytes() for page in reader.pages for image in page.images]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"student_name": "Wolfeschlegel " * 8, "reason": "Line one\n\n  indented line two\n" + "word " * 30},
        {"outpass_id": 2**63 - 1, "status": "pending_parent_approval", "destination": "Straße 5, Köln"},
    ],
    ids=["typical", "longest-fields", "largest-id"],
)
def test_the_pdf_draws_the_same_page_as_before_it_was_made_faster(
    changes: dict[str, Any], settings: JobSettings, tmp_path: Path
) -> None:
    """Same text, same QR image, same pixels: the table columns, the grayscale QR image and the
    shared stylesheet and fonts change how much CPU a PDF takes, not the PDF a student gets."""
    need_pdftoppm()
    outpass = Outpass.from_payload(sample_payload(**changes))
    generate_qr_code(outpass, settings)
    qr = (settings.storage_dir / "outpasses" / str(outpass.outpass_id) / "qr.png").read_bytes()
    now = datetime.now(UTC)
    first, pages = outpass_pdf.render_pdf(outpass, qr, now=now)
    again = outpass_pdf.render_pdf(outpass, qr, now=now)[0]  # the shared renderer, warm
    before = render_as_before(outpass, qr, now)
    assert pages == 1
    for pdf in (again, before):
        assert page_texts(pdf) == page_texts(first)
        assert embedded_qr_pixels(pdf) == embedded_qr_pixels(first)
        assert page_pixels(pdf, tmp_path, f"p{id(pdf)}") == page_pixels(first, tmp_path, "first")
    qr_pixels = Image.open(io.BytesIO(qr)).convert("L").tobytes()
    assert embedded_qr_pixels(first) == [qr_pixels]  # the QR code's own image, not a copy of it


def test_an_outpass_longer_than_a_page_shows_its_qr_code_on_the_first_page(
    settings: JobSettings, tmp_path: Path
) -> None:
    """A flex row moved the whole outpass to page 2 and left page 1 with only the header."""
    need_pdftoppm()
    outpass = Outpass.from_payload(sample_payload(reason="a line of the reason\n" * 95))
    generate_qr_code(outpass, settings)
    pdf = settings.storage_dir / generate_outpass_pdf(outpass, settings)["file"]
    reader = PdfReader(pdf)
    assert len(reader.pages) > 1
    text = reader.pages[0].extract_text()
    for expected in ("Aanya Sharma", "Scan at the gate to verify this", "a line of the reason"):
        assert expected in text
    subprocess.run(["pdftoppm", "-r", "150", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = [cv2.imread(str(page)) for page in sorted(tmp_path.glob("page-*.png"))]
    assert decode_qr(pages[0]) == verification_url(outpass, settings)
    assert cv2.QRCodeDetector().detect(pages[1])[0] is False  # once, on the first page


def test_a_word_longer_than_its_cell_leaves_the_qr_code_whole_on_the_page(
    settings: JobSettings, tmp_path: Path
) -> None:
    """A 200-letter name with no space used to widen the table and push the QR code off the
    page; it breaks inside its cell now, and the printed page still scans."""
    need_pdftoppm()
    outpass = Outpass.from_payload(sample_payload(student_name="W" * 200, destination="ß" * 200))
    generate_qr_code(outpass, settings)
    pdf = settings.storage_dir / generate_outpass_pdf(outpass, settings)["file"]
    subprocess.run(
        ["pdftoppm", "-r", "150", "-png", "-singlefile", str(pdf), str(tmp_path / "page")], check=True
    )
    assert decode_qr(cv2.imread(str(tmp_path / "page.png"))) == verification_url(outpass, settings)
    text = "".join(page.extract_text() for page in PdfReader(pdf).pages).replace("\n", "")
    assert "W" * 200 in text  # all of it, broken into lines
