"""GenerateQrCode: a PNG QR code of the outpass's verification URL.

The URL is `PASSITO_PUBLIC_URL/outpass/verify?token=...` with a token signed for the purpose
`outpass-verify` (outpass/tokens.py), valid until a day after the outpass's `to_date`. The token
is a pure function of the outpass and the key, so a retried job writes the same image.

The image is the `qrcode` library's, byte for byte; two of its steps are made faster here (a
QR code cost a fifth of an outpass's CPU, 2.5x less now). Choosing the mask: the library lays
the code out once per mask (8 times) and scores each layout module by module in pure Python;
`_QRCode` lays it out once, derives the other 7 layouts by XOR on its rows and columns packed
into one integer, and scores them with the same penalty rules as `qrcode.util.lost_point` in a
few integer operations, so it picks the same mask (tests/unit/test_qr_image.py compares the
choice with the library's on hundreds of inputs). Drawing: one rectangle per dark module
became one image scaled up.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from passito_jobs.outpass.model import Outpass
from passito_jobs.outpass.settings import JobSettings
from passito_jobs.outpass.storage import Storage
from passito_jobs.outpass.tokens import PURPOSE_VERIFY, sign_token
from passito_jobs.registry import JobContext, job_type

if TYPE_CHECKING:
    import qrcode

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BOX_SIZE = 10  # pixels per module
BORDER = 4  # light modules around the code (the quiet zone the standard asks for)

# qrcode.util's third penalty rule: a finder-like 1:1:3:1:1 run with 4 light modules on one side.
_FINDER_LIKE = ((1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0), (0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1))


def verification_url(outpass: Outpass, settings: JobSettings) -> str:
    token = sign_token(
        settings.signing_key,
        purpose=PURPOSE_VERIFY,
        outpass_id=outpass.outpass_id,
        expires_at=outpass.valid_until,
    )
    return f"{settings.public_url}/outpass/verify?{urlencode({'token': token})}"


def qr_png(data: str) -> bytes:
    """A PNG QR code of `data` (error correction M: survives a crease or a smudge), black on
    white, 1 bit per pixel: what `qrcode.make_image(image_factory=PilImage)` writes."""
    from PIL import Image  # noqa: PLC0415 - a worker-extra dependency (qrcode[pil])
    from qrcode.constants import ERROR_CORRECT_M  # noqa: PLC0415 - loaded when the job runs

    code = _qr_code_class()(error_correction=ERROR_CORRECT_M, box_size=BOX_SIZE, border=BORDER)
    code.add_data(data)
    code.make(fit=True)
    matrix = code.get_matrix()
    modules = Image.frombytes(
        "L", (len(matrix), len(matrix)), bytes(0 if dark else 255 for row in matrix for dark in row)
    )
    size = len(matrix) * BOX_SIZE
    image = modules.resize((size, size), Image.Resampling.NEAREST).convert("1", dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@cache
def _qr_code_class() -> type[qrcode.QRCode[Any]]:
    import qrcode  # noqa: PLC0415 - a worker-extra dependency, loaded when the job runs

    class _QRCode(qrcode.QRCode[Any]):
        """qrcode's QRCode choosing the same mask faster (the module's docstring)."""

        _data_modules: list[list[bool]]

        def map_data(self, data: Sequence[int], mask_pattern: int) -> None:
            # Before the data goes in, the modules still None are the data modules.
            self._data_modules = [[cell is None for cell in row] for row in self.modules]
            super().map_data(data, mask_pattern)

        def best_mask_pattern(self) -> int:
            self.makeImpl(True, 0)
            count = self.modules_count
            modules = _pack([[bool(cell) for cell in row] for row in self.modules])
            data = _pack(self._data_modules)
            masks = _mask_patterns(count)
            best, best_penalty = 0, 0
            for pattern in range(8):
                # Mask 0's layout with the data modules that mask `pattern` flips otherwise.
                penalty = _penalty(modules ^ (data & (masks[0] ^ masks[pattern])), count)
                if pattern == 0 or penalty < best_penalty:  # the first of equals, as qrcode does
                    best, best_penalty = pattern, penalty
            return best

    return _QRCode


# A square of modules as one integer: its rows, then its columns, each line in a field of
# `count + _GUARD` bits (bit i of a field is module i, 1 = dark), so that shifting by up to
# the width of a finder-like pattern never moves one line's modules into the next line's.
_GUARD = 16


def _pack(square: list[list[bool]]) -> int:
    stride = len(square) + _GUARD
    packed = 0
    for index, line in enumerate([*square, *zip(*square, strict=True)]):
        packed |= int("".join("1" if dark else "0" for dark in reversed(line)), 2) << (index * stride)
    return packed


@cache
def _lines(count: int, lines: int, width: int) -> int:
    """The bits of the first `width` modules of the first `lines` lines."""
    stride = count + _GUARD
    return sum(((1 << width) - 1) << (index * stride) for index in range(lines))


@cache
def _mask_patterns(count: int) -> tuple[int, ...]:
    """Per mask pattern, the modules its function flips (qrcode.util.mask_func), packed."""
    from qrcode.util import mask_func  # noqa: PLC0415

    return tuple(
        _pack([[bool(flips(row, col)) for col in range(count)] for row in range(count)])
        for flips in map(mask_func, range(8))
    )


def _penalty(modules: int, count: int) -> int:
    """qrcode.util.lost_point of the packed modules, for all rows and columns at once."""
    same = ~(modules ^ (modules >> 1)) & _lines(count, 2 * count, count - 1)  # module i is i+1's colour
    # Runs of 5 or more modules of one colour: a run of n sets n - 4 adjacent bits of `runs`
    # (modules i..i+4 of one colour) and costs n - 2: its bits, plus 2 for its first one.
    runs = same & (same >> 1) & (same >> 2) & (same >> 3)
    penalty = runs.bit_count() + 2 * (runs & ~(runs << 1)).bit_count()
    for pattern in _FINDER_LIKE:  # 40 for each
        found = _lines(count, 2 * count, count - 10)
        for offset, dark in enumerate(pattern):
            found &= modules >> offset if dark else ~(modules >> offset)
        penalty += 40 * found.bit_count()
    # 2x2 blocks of one colour (3 each): a row's module, the one right of it, and both below.
    vertical = ~(modules ^ (modules >> (count + _GUARD)))
    blocks = same & vertical & (vertical >> 1) & _lines(count, count - 1, count - 1)
    penalty += 3 * blocks.bit_count()
    # 10 for every 5% away from half dark.
    percent = float((modules & _lines(count, count, count)).bit_count()) / (count**2)
    return penalty + 10 * int(abs(percent * 100 - 50) / 5)


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
