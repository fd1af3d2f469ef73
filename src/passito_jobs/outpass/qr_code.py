"""GenerateQrCode: a PNG QR code of the outpass's verification URL.

The URL is `PASSITO_PUBLIC_URL/outpass/verify?token=...` with a token signed for the purpose
`outpass-verify` (outpass/tokens.py), valid until a day after the outpass's `to_date`. The token
is a pure function of the outpass and the key, so a retried job writes the same image.
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlencode

from passito_jobs.outpass.model import Outpass
from passito_jobs.outpass.settings import JobSettings
from passito_jobs.outpass.storage import Storage
from passito_jobs.outpass.tokens import PURPOSE_VERIFY, sign_token
from passito_jobs.registry import JobContext, job_type

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def verification_url(outpass: Outpass, settings: JobSettings) -> str:
    token = sign_token(
        settings.signing_key,
        purpose=PURPOSE_VERIFY,
        outpass_id=outpass.outpass_id,
        expires_at=outpass.valid_until,
    )
    return f"{settings.public_url}/outpass/verify?{urlencode({'token': token})}"


def qr_png(data: str) -> bytes:
    """A PNG QR code of `data` (error correction M: survives a crease or a smudge)."""
    import qrcode  # noqa: PLC0415 - a worker-extra dependency, loaded when the job runs
    from qrcode.constants import ERROR_CORRECT_M  # noqa: PLC0415
    from qrcode.image.pil import PilImage  # noqa: PLC0415

    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=10, border=4)
    code.add_data(data)
    code.make(fit=True)
    out = io.BytesIO()
    code.make_image(image_factory=PilImage).save(out, format="PNG")
    return out.getvalue()


def generate_qr_code(outpass: Outpass, settings: JobSettings) -> dict[str, Any]:
    storage = Storage(settings.storage_dir)
    png = qr_png(verification_url(outpass, settings))
    path = storage.qr_code(outpass.outpass_id)
    storage.write_atomic(path, png)
    return {"outpass_id": outpass.outpass_id, "file": storage.relative(path), "bytes": len(png)}


@job_type("GenerateQrCode", timeout=60, settings=JobSettings)
def generate_qr_code_job(ctx: JobContext) -> dict[str, Any]:
    """Payload: the outpass (docs/jobs.md). Result: {outpass_id, file, bytes}."""
    return generate_qr_code(Outpass.from_payload(ctx.payload), ctx.settings_of(JobSettings))
