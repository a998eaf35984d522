"""The offline embedders: text by the hashing trick, pages by a perceptual descriptor."""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from _documents import jpeg_bytes, png_bytes
from docstatus.output import HashingEmbedder, PerceptualDescriptor


def test_hashing_embedder_is_deterministic_and_normalised() -> None:
    embedder = HashingEmbedder(64)
    a = embedder.embed("Document status tracking")
    assert a == HashingEmbedder(64).embed("document STATUS tracking")
    assert len(a) == 64
    assert math.isclose(math.fsum(x * x for x in a), 1.0)
    assert embedder.embed("   ") == [0.0] * 64
    assert a != embedder.embed("something else entirely")


def test_the_perceptual_descriptor_is_deterministic_and_discriminates() -> None:
    descriptor = PerceptualDescriptor()
    with Image.open(io.BytesIO(png_bytes())) as a, Image.open(io.BytesIO(jpeg_bytes())) as b:
        va, va2, vb = descriptor.embed_image(a), descriptor.embed_image(a.copy()), descriptor.embed_image(b)
    assert len(va) == descriptor.dimension == 320
    assert va == va2
    assert sum(x * x for x in va) == pytest.approx(1.0)
    assert sum(x * y for x, y in zip(va, vb, strict=True)) < 0.9
