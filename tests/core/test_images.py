
import pytest
from PIL import Image

from helpers import png_header_only, pattern_image, png_bytes
from curator.errors import BadImageError
from curator.images import decode_image


def test_decodes_png_and_jpeg():
    for fmt in ("PNG", "JPEG", "WEBP"):
        img = decode_image(png_bytes(pattern_image(1), fmt))
        assert img.mode == "RGB" and img.size == (48, 48)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"this is not an image at all", "not_an_image"),
    (b"%PDF-1.4 fake", "not_an_image"),
])
def test_non_images(data, reason):
    with pytest.raises(BadImageError) as exc:
        decode_image(data)
    assert exc.value.reason == reason


def test_truncated_image_is_rejected():
    data = png_bytes(pattern_image(2, size=256), "JPEG")
    with pytest.raises(BadImageError) as exc:
        decode_image(data[: len(data) // 2])
    assert exc.value.reason in ("truncated", "corrupt")


def test_pixel_bomb_is_refused_before_decoding():
    with pytest.raises(BadImageError) as exc:
        decode_image(png_header_only(50_000, 50_000), max_pixels=40_000_000)
    assert exc.value.reason == "too_many_pixels" and "50000x50000" in exc.value.detail


def test_large_jpeg_is_decoded_reduced_and_reports_its_original_size():
    big = Image.new("RGB", (4000, 3000), (10, 200, 30))
    img = decode_image(png_bytes(big, "JPEG"), max_pixels=5_000_000, min_side=448)
    assert img.info["original_size"] == (4000, 3000)
    assert min(img.size) >= 448 and img.size[0] * img.size[1] <= 5_000_000


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    img = decode_image(png_bytes(rgba))
    assert img.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["P", "1", "I;16"])
def test_large_images_of_every_mode_are_reduced(mode):
    """PIL cannot box-reduce palette, 1-bit or 16-bit images: they are converted first (a real
    openclipart PNG crashed the transfer-set reader here)."""
    big = Image.new("RGB", (2400, 1200), (200, 30, 30)).convert(mode) if mode != "I;16" else Image.new(mode, (2400, 1200))
    img = decode_image(png_bytes(big), min_side=256)
    assert img.mode == "RGB" and min(img.size) >= 256 and img.size[0] < 2400


def test_one_bad_sample_policy_skips_or_raises_naming_the_sample():
    from curator.errors import BadImageError
    from curator.pipeline import ImagePipeline, Skip

    skipped = ImagePipeline().load(b"not an image")
    assert isinstance(skipped, Skip) and skipped.reason == "not_an_image"
    with pytest.raises(BadImageError, match="query q.png") as exc:
        ImagePipeline(on_bad="raise").load(b"not an image", name="query q.png")
    assert exc.value.reason == "not_an_image"


def test_query_images_are_decoded_once_and_bad_ones_follow_the_policy(tiny_clip_spec, monkeypatch):
    from curator import pipeline
    from curator.encoders import create_encoder
    from curator.errors import BadImageError
    from curator.queries import Query, embed_queries

    calls = []
    real = pipeline.decode_image
    monkeypatch.setattr(pipeline, "decode_image", lambda data, **kw: calls.append(1) or real(data, **kw))
    encoder = create_encoder(tiny_clip_spec)
    queries = [Query("a.png", png_bytes(pattern_image(1, 96))), Query("bad.png", b"junk"),
               Query("b.png", png_bytes(pattern_image(2, 96)))]
    vectors, owner, kept, skipped = embed_queries(encoder, queries, crops=1, on_bad="skip")
    assert len(calls) == 3 and [q.id for q in kept] == ["a.png", "b.png"] and owner.tolist() == [0, 0, 1, 1]
    assert vectors.shape[0] == 4 and [(s.key, s.reason) for s in skipped] == [("bad.png", "not_an_image")]
    with pytest.raises(BadImageError, match="query bad.png"):
        embed_queries(encoder, queries)
