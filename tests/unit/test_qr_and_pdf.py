"""GenerateQrCode and GenerateOutpassPdf, checked with real decoders and readers.

OpenCV's QRCodeDetector decodes the PNG; pypdf reads the PDF's text and images; pdftoppm
(poppler) renders a page, and the QR code is decoded again from that rendering.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
import pytest
from pypdf import PdfReader

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


def test_a_rendered_page_shows_a_scannable_qr_code(settings: JobSettings, tmp_path: Path) -> None:
    if shutil.which("pdftoppm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pdftoppm is missing (Debian package poppler-utils)")
        pytest.skip("pdftoppm is not installed (Debian package poppler-utils)")
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
