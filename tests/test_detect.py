"""Detection, alignment and cropping: the three backends, the per-image report, the crop cache."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ausynth.configs.faces import DetectionConfig
from ausynth.tasks import detect
from ausynth.tasks.detect import TEMPLATE, Face, WeightsMissingError, align, choose, detect_and_crop

SHARED = Path(os.environ.get("AUSYNTH_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
LFW = SHARED / "lfw-pairs"
FER = SHARED / "fer2013-privatetest"
needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason=f"LFW images not found under {SHARED}")
needs_fer = pytest.mark.skipif(not FER.is_dir(), reason=f"FER2013 images not found under {SHARED}")


def _manifest(paths: list[Path]) -> pd.DataFrame:
    return pd.DataFrame({"path": [str(p) for p in paths], "subject": [p.stem for p in paths], "origin": "unlabelled"})


def _lfw(n: int) -> list[Path]:
    names = pd.read_csv(LFW / "identities.csv")["path"].head(n)
    return [LFW / name for name in names]


@needs_lfw
def test_opencv_crops_lfw_and_a_rerun_reads_the_cache(tmp_path, monkeypatch):
    paths = _lfw(50)
    config = DetectionConfig(backend="opencv", size=64)
    crops, report = detect_and_crop(_manifest(paths), [], config, tmp_path)
    assert crops.images.shape[1:] == (64, 64, 3) and crops.images.dtype == np.uint8
    assert report["cropped"].mean() >= 0.9
    assert set(report["status"]) <= {"ok", "no_face", "multiple_faces"}
    assert len(crops) == report["cropped"].sum()
    assert crops.frame["path"].tolist() == report.loc[report["cropped"], "path"].tolist()

    def no_model(_config):
        raise AssertionError("a cached re-run must not need the backend")

    monkeypatch.setattr(detect, "make_backend", no_model)
    again, report_again = detect_and_crop(_manifest(paths), [], config, tmp_path)
    np.testing.assert_array_equal(again.images, crops.images)
    pd.testing.assert_frame_equal(report_again, report)


@needs_lfw
def test_no_face_multiple_faces_and_unreadable_are_reported(tmp_path):
    first, second = (np.asarray(Image.open(p).convert("RGB")) for p in _lfw(3)[::2])
    big = cv2.resize(first, (200, 200))
    two = np.full((300, 480, 3), 90, dtype=np.uint8)
    two[50:250, 20:220], two[75:225, 300:450] = big, second
    Image.fromarray(two).save(tmp_path / "two.png")
    Image.fromarray(np.full((120, 120, 3), 200, dtype=np.uint8)).save(tmp_path / "blank.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    paths = [tmp_path / n for n in ("two.png", "blank.png", "broken.jpg", "gone.jpg")]

    crops, report = detect_and_crop(_manifest(paths), [], DetectionConfig(multi_face="skip", size=48), tmp_path / "c")
    status = dict(zip(report["path"].map(lambda p: Path(p).name), report["status"]))
    assert status == {"two.png": "multiple_faces", "blank.png": "no_face", "broken.jpg": "unreadable",
                      "gone.jpg": "unreadable"}
    assert len(crops) == 0 and crops.images.shape == (0, 48, 48, 3)
    reasons = report.set_index(report["path"].map(lambda p: Path(p).name))["reason"]
    assert "policy 'skip'" in reasons["two.png"] and "cannot decode" in reasons["broken.jpg"]
    assert "cannot read" in reasons["gone.jpg"]

    crops, report = detect_and_crop(_manifest(paths[:1]), [], DetectionConfig(multi_face="largest", size=48),
                                    tmp_path / "c")
    assert report.loc[0, "status"] == "multiple_faces" and report.loc[0, "cropped"] and len(crops) == 1
    assert "kept the largest" in report.loc[0, "reason"]


def test_policies_pick_largest_or_central_face():
    small_central = Face(np.array([90, 90, 110, 110], dtype=np.float32))
    large_corner = Face(np.array([0, 0, 60, 60], dtype=np.float32))
    faces, shape = [small_central, large_corner], (200, 200, 3)
    assert choose(faces, "largest", shape) is large_corner
    assert choose(faces, "central", shape) is small_central
    assert choose(faces, "skip", shape) is None


def test_alignment_puts_the_points_on_the_template():
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    points = np.array([[70, 90], [130, 80], [80, 150], [125, 145]], dtype=np.float32)
    for x, y in points:
        cv2.circle(image, (int(x), int(y)), 3, (255, 255, 255), -1)
    crop = align(image, Face(np.array([40, 40, 160, 180], dtype=np.float32), points, "landmarks"), 100)
    ys, xs = np.nonzero(crop[..., 0] > 100)
    found = np.array([[xs[(xs - x) ** 2 + (ys - y) ** 2 < 64].mean(), ys[(xs - x) ** 2 + (ys - y) ** 2 < 64].mean()]
                      for x, y in TEMPLATE[:2] * 100])
    np.testing.assert_allclose(found, TEMPLATE[:2] * 100, atol=2.5)


@needs_fer
def test_none_backend_takes_fer2013_crops_as_they_are(tmp_path):
    paths = sorted(FER.glob("*.jpg"))[:30]
    config = DetectionConfig(backend="none", size=48, channels=1)
    crops, report = detect_and_crop(_manifest(paths), [], config, tmp_path)
    assert (report["status"] == "ok").all() and crops.images.shape == (30, 48, 48, 1)
    original = np.asarray(Image.open(paths[0]).convert("L"))
    assert np.abs(crops.images[0, ..., 0].astype(int) - original).max() <= 1  # 48x48 grayscale: unchanged


def test_changed_image_is_processed_again(tmp_path):
    path = tmp_path / "face.png"
    Image.fromarray(np.full((40, 40, 3), 10, dtype=np.uint8)).save(path)
    config = DetectionConfig(backend="none", size=32)
    first, _ = detect_and_crop(_manifest([path]), [], config, tmp_path / "cache")
    Image.fromarray(np.full((40, 40, 3), 250, dtype=np.uint8)).save(path)
    second, _ = detect_and_crop(_manifest([path]), [], config, tmp_path / "cache")
    assert first.images.max() < 20 and second.images.min() > 240
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 2


def test_face_alignment_without_weights_says_what_to_place_where(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(detect, "_reachable", lambda url, timeout=3.0: False)

    def no_download(*args, **kwargs):
        raise AssertionError("must not download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    config = DetectionConfig(backend="face_alignment", weights_dir=tmp_path / "weights")
    with pytest.raises(WeightsMissingError) as info:
        detect_and_crop(_manifest([tmp_path / "a.png"]), [], config, tmp_path / "cache")
    message = str(info.value)
    for name in ("s3fd-619a316812.pth", "2DFAN4-11f355bf06.pth.tar"):
        assert f"{tmp_path / 'weights' / name}" in message
    assert "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth" in message
    assert "backend: opencv" in message and str(tmp_path / "hub" / "checkpoints") in message


def test_face_alignment_landmarks_drive_the_crop(tmp_path, monkeypatch):
    """The backend's batch call and landmark parsing, with FAN replaced by fixed landmarks."""
    marks = np.zeros((68, 2), dtype=np.float32)
    marks[36:42], marks[42:48], marks[48], marks[54] = (30, 40), (70, 40), (36, 74), (64, 74)

    class FakeModel:
        def get_landmarks_from_batch(self, batch, return_bboxes):
            assert batch.shape[1] == 3 and return_bboxes
            return [marks.copy() for _ in batch], None, [[np.array([10, 10, 90, 100, 0.99])] for _ in batch]

    backend = detect.FaceAlignmentBackend.__new__(detect.FaceAlignmentBackend)
    backend.model = FakeModel()
    monkeypatch.setattr(detect, "make_backend", lambda config: backend)
    Image.fromarray(np.zeros((100, 100, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((100, 100, 3), dtype=np.uint8) + 1).save(tmp_path / "b.png")
    crops, report = detect_and_crop(_manifest([tmp_path / "a.png", tmp_path / "b.png"]), [],
                                    DetectionConfig(backend="face_alignment", size=64), tmp_path / "cache")
    assert (report["alignment"] == "landmarks").all() and crops.images.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(detect.landmark_points(marks), [[30, 40], [70, 40], [36, 74], [64, 74]])


def test_face_alignment_loads_local_weights_uncompiled(tmp_path, monkeypatch):
    """The real FaceAlignment is built from files in weights_dir (here: untrained networks saved
    locally), with compile=False, and never goes to the network."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    monkeypatch.setattr(detect, "_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    (tmp_path / "w").mkdir()
    torch.save(FAN(4).state_dict(), tmp_path / "w" / "2DFAN4-11f355bf06.pth.tar")
    torch.save(s3fd().state_dict(), tmp_path / "w" / "s3fd-619a316812.pth")
    backend = detect.make_backend(DetectionConfig(backend="face_alignment", weights_dir=tmp_path / "w"))
    assert type(backend.model.face_alignment_net) is FAN  # not wrapped by torch.compile
    assert not (tmp_path / "hub").exists()


def test_every_listed_format_is_decoded(tmp_path):
    """Each extension the ingest stage looks for decodes to RGB (GIF: its first frame)."""
    from ausynth.tasks.ingest import IMAGE_EXTENSIONS

    gray = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF",
               ".tiff": "TIFF", ".webp": "WEBP", ".pgm": "PPM", ".ppm": "PPM", ".pbm": "PPM", ".pnm": "PPM",
               ".jp2": "JPEG2000"}
    assert set(IMAGE_EXTENSIONS) == set(formats)
    for extension, name in formats.items():
        image = Image.fromarray(gray).convert("1" if extension == ".pbm" else "RGB" if extension == ".ppm" else "L")
        path = tmp_path / f"a{extension}"
        image.save(path, format=name)
        rgb = detect.read_rgb(path.read_bytes())
        assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8, extension
    frames = [Image.fromarray(np.full((16, 16), v, dtype=np.uint8)) for v in (30, 220)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    assert detect.read_rgb((tmp_path / "moving.gif").read_bytes()).max() < 60  # the first frame


def test_opencv_decodes_what_pillow_cannot(tmp_path, monkeypatch):
    Image.fromarray(np.full((10, 12, 3), (200, 10, 10), dtype=np.uint8)).save(tmp_path / "a.png")

    def broken(*args, **kwargs):
        raise OSError("no decoder")

    monkeypatch.setattr(detect.Image, "open", broken)
    rgb = detect.read_rgb((tmp_path / "a.png").read_bytes())
    assert rgb.shape == (10, 12, 3) and tuple(rgb[0, 0]) == (200, 10, 10)
    with pytest.raises(OSError, match="no decoder"):
        detect.read_rgb(b"neither can read this")


def test_missing_weights_is_a_setup_error():
    from ausynth.tasks.errors import SetupError

    assert issubclass(WeightsMissingError, SetupError) and issubclass(WeightsMissingError, RuntimeError)
