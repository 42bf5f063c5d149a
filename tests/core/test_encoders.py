import numpy as np
import pytest
import torch
from PIL import Image

from curator.encoders import create_encoder, list_encoder_schemes
from curator.errors import CuratorError, DeviceUnavailableError, EncoderUnavailableError


@pytest.fixture(scope="module")
def lite0():
    return create_encoder("packaged:efficientnet-lite0")


def _top1(encoder, array):
    import timm.data

    logits = encoder.classify(encoder.preprocess(Image.fromarray(array))[None])
    return timm.data.ImageNetInfo().index_to_description(int(logits.argmax()))


def test_packaged_lite0_classifies_real_photos(lite0):
    from skimage import data

    assert "cat" in _top1(lite0, data.chelsea())
    assert _top1(lite0, data.coffee()) == "espresso"


def test_packaged_features_are_unit_vectors(lite0):
    from skimage import data

    emb = lite0.encode_pil([Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())])
    assert emb.shape == (2, 1280) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] < 0.9  # different photos, different embeddings


def test_tiny_open_clip_images_and_text(tiny_clip_spec):
    enc = create_encoder(tiny_clip_spec)
    assert enc.dim == 32 and enc.image_size == 32 and enc.has_text
    img = enc.encode_images(torch.rand(3, 3, 32, 32))
    txt = enc.encode_text(["a cat", "a dog"])
    assert img.shape == (3, 32) and txt.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)


def test_bf16_autocast_matches_fp32(tiny_clip_spec):
    enc = create_encoder(tiny_clip_spec)
    x = torch.rand(4, 3, 32, 32)
    a = enc.encode_images(x)
    enc.precision = "bf16"
    b = enc.encode_images(x)
    assert np.abs(a - b).max() < 0.1 and not np.array_equal(a, b)


def test_pretrained_tag_offline_fails_clearly_and_names_the_offline_encoder():
    with pytest.raises(EncoderUnavailableError) as exc:
        create_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert "packaged:efficientnet-lite2" in str(exc.value)


def test_open_clip_spec_must_name_weights():
    with pytest.raises(CuratorError, match="names no weights"):
        create_encoder("open_clip:ViT-B-32")


def test_timm_hub_weights_offline_fail_clearly():
    with pytest.raises(EncoderUnavailableError, match="packaged:efficientnet-lite2"):
        create_encoder("timm:resnet18.a1_in1k")


def test_timm_local_checkpoint_is_loaded(tmp_path):
    import timm

    ref = timm.create_model("resnet18", pretrained=False, num_classes=10)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    enc = create_encoder(f"timm:resnet18/{path}")
    assert enc.dim == 512
    torch.testing.assert_close(enc.model.conv1.weight, ref.conv1.weight)


@pytest.mark.parametrize("spec,msg", [
    ("nonsense", "SCHEME:NAME"),
    ("foo:bar", "unknown encoder scheme"),
    ("packaged:efficientnet-lite9", "unknown packaged encoder"),
    ("timm:not_a_model_xyz", "unknown timm model"),
])
def test_bad_specs_are_clear(spec, msg):
    with pytest.raises(CuratorError, match=msg):
        create_encoder(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_an_error_not_a_silent_cpu_run(tiny_clip_spec):
    with pytest.raises(DeviceUnavailableError, match="no CUDA GPU"):
        create_encoder(tiny_clip_spec, device="cuda")


def test_registry_lists_schemes():
    assert {"open_clip", "timm", "packaged"} <= set(list_encoder_schemes())


def test_imagenet_student_starts_from_the_packaged_weights(lite0):
    """--student-init imagenet works offline for the architectures curator ships weights for
    (same features as the encoder, with the weights' own 0.5/0.5 normalisation), and names
    them when hub weights are unreachable."""
    from skimage import data

    from distill.models import Student

    student = Student("tf_efficientnet_lite0", 4, 224, "imagenet").eval()
    pixels = lite0.preprocess(Image.fromarray(data.chelsea()))[None]  # (x - 0.5) / 0.5
    with torch.no_grad():
        mine = student.features(pixels * 0.5 + 0.5)
        ref = lite0.model.forward_head(lite0.model.forward_features(pixels), pre_logits=True)
    assert torch.allclose(mine, ref, atol=1e-4) and student.net.get_classifier().out_features == 4
    with pytest.raises(EncoderUnavailableError, match="tf_efficientnet_lite0"):
        Student("mobilenetv3_small_050", 4, 64, "imagenet")


def test_an_open_clip_tag_typo_is_one_line_naming_the_tags(tmp_path, capsys):
    from curator.cli import main

    folder = tmp_path / "pool"
    folder.mkdir()
    assert main(["build-index", "--input", str(folder), "--out", str(tmp_path / "idx"), "--encoder",
                 "open_clip:ViT-B-32/laion2b_s34b_b78k", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown open_clip weights 'laion2b_s34b_b78k'" in err[0] and "laion2b_s34b_b79k" in err[0]
    assert "HF_HUB_OFFLINE" not in err[0] and not (tmp_path / "idx").exists()
