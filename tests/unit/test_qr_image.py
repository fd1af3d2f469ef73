"""GenerateQrCode's image is the `qrcode` library's, byte for byte, made faster.

qr_code.py chooses the mask with its own scoring of qrcode's penalty rules and draws the image
in one step; these tests hold it to the library's own choice and drawing.
"""

from __future__ import annotations

import io
import random
import string

import cv2
import numpy as np
import pytest
import qrcode
from qrcode.constants import ERROR_CORRECT_M
from qrcode.image.pil import PilImage

from passito_jobs.outpass.qr_code import BORDER, BOX_SIZE, _qr_code_class, qr_png

ALPHABET = string.ascii_letters + string.digits + "-_/?=:.%&"


def library_png(data: str) -> bytes:
    """The QR code as the library alone makes it (every mask laid out and scored)."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=BOX_SIZE, border=BORDER)
    code.add_data(data)
    code.make(fit=True)
    out = io.BytesIO()
    code.make_image(image_factory=PilImage).save(out, format="PNG")
    return out.getvalue()


def random_texts(count: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    lengths = (1, 9, 30, 80, 150, 230, 400, 700, 1200)  # QR versions 1 to about 30
    return ["".join(rnd.choices(ALPHABET, k=rnd.choice(lengths))) for _ in range(count)]


def test_the_mask_is_the_one_the_library_chooses() -> None:
    chosen = set()
    for text in random_texts(400, seed=17):
        library = qrcode.QRCode(error_correction=ERROR_CORRECT_M)
        ours = _qr_code_class()(error_correction=ERROR_CORRECT_M)
        for code in (library, ours):
            code.add_data(text)
            code.best_fit()
        expected = library.best_mask_pattern()
        assert ours.best_mask_pattern() == expected, f"version {library.version}: {text!r}"
        chosen.add(expected)
    assert chosen == set(range(8))  # every mask's scoring was exercised


@pytest.mark.parametrize(
    "text",
    [
        "x",
        "https://passito.example.edu/outpass/verify?token=" + "A1b2-C3d4_" * 16,
        *random_texts(6, seed=3),
    ],
)
def test_the_png_is_the_librarys_byte_for_byte(text: str) -> None:
    assert qr_png(text) == library_png(text)


def test_the_png_decodes_to_its_text() -> None:
    text = "https://passito.example.edu/outpass/verify?token=" + "A1b2-C3d4_" * 16
    image = cv2.imdecode(np.frombuffer(qr_png(text), np.uint8), cv2.IMREAD_GRAYSCALE)
    decoded, points, _ = cv2.QRCodeDetector().detectAndDecode(image)
    assert points is not None
    assert decoded == text
