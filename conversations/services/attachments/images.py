"""Images are checked and re-encoded with Pillow before anything is stored: the pixel count bounded before any pixel
is decoded (decompression bombs), the longest side scaled down, the orientation applied and EXIF (camera, GPS)
dropped, and the format confirmed by Pillow itself."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from django.utils.translation import gettext as _

from conversations.services.attachments import limits
from conversations.services.attachments.limits import AttachmentRefused
from conversations.services.attachments.sniffing import Sniffed

_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP"}


@dataclass(frozen=True)
class Encoded:
    data: bytes
    content_type: str
    width: int
    height: int


def reencode(data: bytes, sniffed: Sniffed) -> Encoded:
    from PIL import Image, ImageOps, UnidentifiedImageError

    damaged = AttachmentRefused("corrupt_file", _("The image is damaged and could not be read."))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
            if probe.format != _PILLOW_FORMATS[sniffed.label]:
                raise damaged
            width, height = probe.size
            if width * height > limits.max_pixels():
                raise AttachmentRefused(
                    "image_too_large",
                    _("The image is %(width)s×%(height)s pixels; the limit is %(limit)s million pixels.")
                    % {"width": width, "height": height, "limit": f"{limits.max_pixels() / 1e6:g}"},
                )
            probe.verify()
            image = Image.open(io.BytesIO(data))
            image.seek(0)  # an animated GIF or WebP: its first frame
            image = ImageOps.exif_transpose(image)
            image.load()
    except AttachmentRefused:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, EOFError):  # fmt: skip
        raise damaged from None
    image.thumbnail((limits.image_max_side(), limits.image_max_side()))
    out = io.BytesIO()
    if sniffed.label == "jpeg":
        image.convert("RGB").save(out, "JPEG", quality=90)
        content_type = "image/jpeg"
    elif sniffed.label == "webp":
        image.save(out, "WEBP", quality=90)
        content_type = "image/webp"
    else:  # PNG, and a GIF's first frame (no animation reaches the model)
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
            image = image.convert("RGBA")
        image.save(out, "PNG", optimize=True)
        content_type = "image/png"
    return Encoded(out.getvalue(), content_type, image.width, image.height)
