"""Stage 2 on real faces: find the face, align it, crop it to a fixed size.

Every backend ends the same way: points in the image (eye centres, and mouth corners where
landmarks give them) are mapped by a similarity transform onto a fixed template, so crops from
different backends frame the face alike: eyes level at 38% of the height, the whole face from
brows to chin inside (brow and chin AUs need both).

- ``face_alignment``: S3FD boxes and FAN's 68 landmarks (eye centres, mouth corners 48 and 54).
- ``opencv``: Haar cascades shipped with OpenCV; frontal (default, then alt2) and then profile
  cascades, eyes by the eye cascade inside the face box. Where two plausible eyes are not
  found, the eye positions are estimated from the box (their mean place in Haar boxes,
  measured on LFW), which amounts to a margin crop of the box.
- ``none``: the images are already face crops; centre square, resize.

Every image gets a report row: ``ok``, ``no_face``, ``multiple_faces`` (the ``multi_face``
policy then keeps the largest or the most central face, or skips the image) or ``unreadable``,
with the reason. Crops are cached per image content and settings, so a re-run reads only what
changed and never loads a model when nothing did. ``detect_and_crop`` applies one setting to all
the rows it is given; ``face_dataset`` calls it once per source, each with its own backend.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from ausynth.configs.faces import DetectionConfig
from ausynth.tasks.errors import SetupError
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.store import stable_hash

log = logging.getLogger("ausynth")

# Where alignment points go, as fractions of the crop side: left eye, right eye (in the image:
# left = smaller x), left and right mouth corner. Eyes 0.3 apart leave room for brows and chin.
TEMPLATE = np.array([[0.35, 0.38], [0.65, 0.38], [0.38, 0.70], [0.62, 0.70]], dtype=np.float32)
# Mean eye centres in OpenCV's frontal Haar boxes, as fractions of the box side (LFW, 468 faces
# with both eyes found; spread about 0.03).
BOX_EYES = np.array([[0.30, 0.385], [0.67, 0.38]], dtype=np.float32)
DETECT_MAX_SIDE = 640  # larger images are searched at this size; boxes are mapped back
CROP_VERSION = 1  # part of the cache key: bump when the same settings would crop differently
REPORT_COLUMNS = ["path", "status", "faces", "alignment", "cropped", "reason", "content_hash"]

FACE_ALIGNMENT_WEIGHTS = {
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    "2DFAN4-11f355bf06.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
}


class WeightsMissingError(SetupError, RuntimeError):
    """The face_alignment backend's weights are neither on disk nor downloadable (a RuntimeError too,
    as it was before the UserError family)."""


@dataclass
class Face:
    box: np.ndarray  # x0, y0, x1, y1 in image pixels
    points: np.ndarray | None = None  # alignment points, in TEMPLATE's order (2 or 4 of them)
    alignment: str = "box"  # landmarks | eyes | box (frontal Haar box) | profile_box


class Backend(Protocol):
    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Candidate faces of each RGB image."""

    def refine(self, image: np.ndarray, face: Face) -> Face:
        """The chosen face with its alignment points."""


# ----------------------------------------------------------------------------- geometry

def box_points(box: np.ndarray) -> np.ndarray:
    """Eye centres estimated from a face box: the fallback that makes a margin crop."""
    x0, y0, x1, y1 = box
    side = np.array([x1 - x0, y1 - y0], dtype=np.float32)
    return np.array([x0, y0], dtype=np.float32) + BOX_EYES * side


def align(image: np.ndarray, face: Face, size: int) -> np.ndarray:
    """Warp the face so its points land on the template; (size, size, 3) uint8."""
    points = face.points if face.points is not None else box_points(face.box)
    target = TEMPLATE[: len(points)] * size
    matrix, _ = cv2.estimateAffinePartial2D(points.astype(np.float32), target, method=cv2.LMEDS)
    if matrix is None:  # degenerate points (e.g. both eyes on one pixel): fall back to the box
        matrix, _ = cv2.estimateAffinePartial2D(box_points(face.box), TEMPLATE[:2] * size, method=cv2.LMEDS)
    zoom = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if zoom < 0.5:  # shrink by area averaging first: a bilinear warp alone would alias large photos
        image = cv2.resize(image, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA)
        matrix = np.column_stack([matrix[:, :2] / zoom, matrix[:, 2]])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central square, resized: for images that are already face crops."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top:top + side, left:left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def choose(faces: list[Face], policy: str, shape: tuple[int, ...]) -> Face | None:
    """The face the policy keeps among several: largest box, box nearest the centre, or none."""
    if policy == "skip":
        return None
    boxes = np.array([f.box for f in faces], dtype=np.float32)
    if policy == "largest":
        return faces[int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    return faces[int(np.argmin(np.linalg.norm(centres - np.array([shape[1], shape[0]]) / 2, axis=1)))]


def to_channels(crop: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        return cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None]
    return crop


# ----------------------------------------------------------------------------- OpenCV backend

def _cascade(name: str) -> cv2.CascadeClassifier:
    path = os.path.join(cv2.data.haarcascades, f"haarcascade_{name}.xml")
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise SetupError(f"OpenCV's Haar cascade {path} is missing: OpenCV 5 wheels ship none; install "
                         "opencv-python<5 (or set detection.backend: face_alignment)")
    return cascade


class OpenCVBackend:
    """Haar cascades: no download, a few tens of images a second on one CPU core."""

    def __init__(self) -> None:
        self.frontal = [_cascade("frontalface_default"), _cascade("frontalface_alt2")]
        self.profile = _cascade("profileface")
        self.eye = _cascade("eye")

    def _search(self, gray: np.ndarray) -> tuple[np.ndarray, bool]:
        """Boxes (x, y, w, h) of the first cascade that finds any, and whether they are frontal."""
        min_side = max(24, min(gray.shape) // 8)
        for cascade in self.frontal:
            boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
            if len(boxes):
                return np.asarray(boxes), True
        for flipped in (False, True):  # the profile cascade knows faces turned one way only
            image = cv2.flip(gray, 1) if flipped else gray
            boxes = self.profile.detectMultiScale(image, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
            if len(boxes):
                boxes = np.asarray(boxes)
                if flipped:
                    boxes[:, 0] = gray.shape[1] - boxes[:, 0] - boxes[:, 2]
                return boxes, False
        return np.zeros((0, 4), dtype=np.int64), False

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        return [self._faces(image) for image in images]

    def _faces(self, image: np.ndarray) -> list[Face]:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, DETECT_MAX_SIDE / max(gray.shape))
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes, frontal = self._search(cv2.equalizeHist(gray))
        corners = np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]]).astype(np.float32) / scale
        return [Face(box, alignment="box" if frontal else "profile_box") for box in corners]

    def refine(self, image: np.ndarray, face: Face) -> Face:
        """Eye centres from the eye cascade in the upper part of a frontal box, if plausible."""
        if face.alignment != "box":
            return face
        x0, y0, x1, y1 = face.box.astype(int)
        width = x1 - x0
        gray = cv2.equalizeHist(cv2.cvtColor(image[max(y0, 0):y0 + int(0.6 * (y1 - y0)), max(x0, 0):x1],
                                             cv2.COLOR_RGB2GRAY))
        found = self.eye.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=3, minSize=(max(8, width // 10),) * 2)
        centres = [np.array([x + w / 2, y + h / 2, w], dtype=np.float32) for x, y, w, h in found]
        left = [c for c in centres if c[0] < width / 2]
        right = [c for c in centres if c[0] >= width / 2]
        if not left or not right:
            return face
        eyes = np.array([max(left, key=lambda c: c[2])[:2], max(right, key=lambda c: c[2])[:2]])
        distance = np.linalg.norm(eyes[1] - eyes[0])
        expected = np.linalg.norm(BOX_EYES[1] - BOX_EYES[0]) * width
        middle = eyes[:, 0].mean() / width
        if not (0.75 < distance / expected < 1.3 and 0.35 < middle < 0.65
                and abs(eyes[1, 1] - eyes[0, 1]) < 0.25 * distance):
            return face  # a nostril or an eyebrow taken for an eye would distort the crop more than the box does
        return Face(face.box, eyes + np.array([max(x0, 0), max(y0, 0)], dtype=np.float32), "eyes")


# ----------------------------------------------------------------------------- face_alignment backend

def _reachable(url: str, timeout: float = 3.0) -> bool:
    host = urlparse(url).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def weight_places(weights_dir: Path | None) -> list[Path]:
    return ([Path(weights_dir)] if weights_dir is not None else []) + [hub_checkpoints()]


def find_weights(weights_dir: Path | None) -> tuple[dict[str, Path], list[str]]:
    """The weight files on disk (``weights_dir`` first, then torch's hub cache), and the names missing."""
    found, missing = {}, []
    for name in FACE_ALIGNMENT_WEIGHTS:
        path = next((place / name for place in weight_places(weights_dir) if (place / name).is_file()), None)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    return found, missing


def face_alignment_weights(weights_dir: Path | None) -> dict[str, Path]:
    """The two weight files; those missing are downloaded to the hub cache when the network allows."""
    found, missing = find_weights(weights_dir)
    for name in list(missing):
        url = FACE_ALIGNMENT_WEIGHTS[name]
        if _reachable(url):
            import torch

            path = hub_checkpoints() / name
            path.parent.mkdir(parents=True, exist_ok=True)
            log.info("downloading %s to %s", url, path)
            torch.hub.download_url_to_file(url, str(path))
            found[name] = path
            missing.remove(name)
    if missing:
        places = weight_places(weights_dir)
        lines = "\n".join(f"  {FACE_ALIGNMENT_WEIGHTS[n]}  ->  {places[0] / n}" for n in missing)
        raise WeightsMissingError(
            f"the face_alignment backend needs weights that are not on this machine and cannot be downloaded "
            f"(no network). Looked in: {', '.join(map(str, places))}. Download them elsewhere and place them "
            f"so:\n{lines}\n(or set detection.weights_dir to a folder holding them). To crop without any "
            f"download, set 'detection: {{backend: opencv}}' (OpenCV's Haar cascades) instead."
        )
    return found


class FaceAlignmentBackend:
    """S3FD boxes and FAN landmarks (face-alignment 1.5.0).

    Never compiled (torch.compile costs minutes once and gains little on a CPU), and on a CPU
    without FAN's flipped second pass, which doubles its cost (seconds per face on 2 cores) for
    a small gain in landmark precision.
    """

    def __init__(self, weights: dict[str, Path], batch_size: int) -> None:
        import torch
        from face_alignment import FaceAlignment, LandmarksType
        from face_alignment.models import FAN

        fan_path = weights["2DFAN4-11f355bf06.pth.tar"]

        class _LocalWeights(FaceAlignment):
            """FaceAlignment that loads FAN from a given file instead of its download URL."""

            def _load_native(self, network_name, network_size, device, dtype):  # noqa: ANN001
                net = FAN(network_size)
                net.load_state_dict(torch.load(fan_path, map_location=device, weights_only=True))
                return net.to(device, dtype=dtype).eval()

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = _LocalWeights(
            LandmarksType.TWO_D, device=self.device, compile=False, flip_input=self.device == "cuda",
            face_detector="sfd",
            face_detector_kwargs={"path_to_detector": str(weights["s3fd-619a316812.pth"])},
            max_batch_size=batch_size,
        )

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        """S3FD and FAN on each group of same-sized images as one batch."""
        import torch

        faces: list[list[Face]] = [[] for _ in images]
        shapes: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            shapes.setdefault(image.shape, []).append(i)
        for members in shapes.values():
            batch = torch.from_numpy(np.stack([images[i] for i in members])).permute(0, 3, 1, 2).float()
            landmarks, _, boxes = self.model.get_landmarks_from_batch(batch, return_bboxes=True)
            for i, marks, frame_boxes in zip(members, landmarks, boxes):
                marks = np.asarray(marks, dtype=np.float32).reshape(-1, 68, 2)
                faces[i] = [Face(np.asarray(box[:4], dtype=np.float32), landmark_points(m), "landmarks")
                            for box, m in zip(frame_boxes, marks)]
        return faces

    def refine(self, image: np.ndarray, face: Face) -> Face:
        return face


def landmark_points(marks: np.ndarray) -> np.ndarray:
    """Eye centres (points 36-41, 42-47) and mouth corners (48, 54) of 68 landmarks."""
    return np.array([marks[36:42].mean(0), marks[42:48].mean(0), marks[48], marks[54]], dtype=np.float32)


def make_backend(config: DetectionConfig) -> Backend:
    if config.backend == "face_alignment":
        return FaceAlignmentBackend(face_alignment_weights(config.weights_dir), config.batch_size)
    return OpenCVBackend()


# ----------------------------------------------------------------------------- per image, with a cache

@dataclass
class Result:
    status: str
    faces: int
    alignment: str
    reason: str
    crop: np.ndarray | None


def settings_key(config: DetectionConfig) -> str:
    """What makes a crop: weights_dir and batch_size change where and how fast, not what."""
    settings = {"backend": config.backend, "size": config.size, "channels": config.channels,
                "multi_face": config.multi_face, "version": CROP_VERSION}
    return f"{config.backend}-{stable_hash(settings, length=12)}"


def read_rgb(data: bytes) -> np.ndarray:
    """An image file's bytes as RGB uint8, upright. Pillow reads palette and 16-bit TIFFs and the
    first frame of a GIF (which older OpenCV builds cannot); OpenCV decodes what Pillow cannot
    (e.g. JPEG 2000 where Pillow was built without OpenJPEG)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except Exception:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise  # Pillow's error says more than OpenCV's None
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _crop_one(image: np.ndarray, faces: list[Face], backend: Backend, config: DetectionConfig) -> Result:
    if not faces:
        return Result("no_face", 0, "", "no face found", None)
    face = faces[0] if len(faces) == 1 else choose(faces, config.multi_face, image.shape)
    if face is None:
        return Result("multiple_faces", len(faces), "", f"{len(faces)} faces found; policy 'skip'", None)
    face = backend.refine(image, face)
    crop = to_channels(align(image, face, config.size), config.channels)
    if len(faces) == 1:
        return Result("ok", 1, face.alignment, "", crop)
    return Result("multiple_faces", len(faces), face.alignment,
                  f"{len(faces)} faces found; kept the {config.multi_face} one", crop)


class CropCache:
    """One ``<content hash>.npz`` per image under a folder named for the crop settings."""

    def __init__(self, root: Path, config: DetectionConfig) -> None:
        self.folder = Path(root) / settings_key(config)
        self.folder.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> Result | None:
        path = self.folder / f"{key}.npz"
        if not path.is_file():
            return None
        with np.load(path) as stored:
            info = json.loads(str(stored["info"]))
            crop = stored["crop"] if stored["crop"].size else None
        return Result(info["status"], info["faces"], info["alignment"], info["reason"], crop)

    def put(self, key: str, result: Result) -> None:
        info = {"status": result.status, "faces": result.faces, "alignment": result.alignment, "reason": result.reason}
        crop = result.crop if result.crop is not None else np.zeros(0, dtype=np.uint8)
        tmp = self.folder / f".{key}.{uuid.uuid4().hex[:8]}.tmp"  # concurrent runs never share a temp file
        with open(tmp, "wb") as handle:
            np.savez(handle, crop=crop, info=np.array(json.dumps(info)))
        os.replace(tmp, self.folder / f"{key}.npz")


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class LazyBackend:
    """The backend, built on first need: a fully cached run never loads a model."""

    def __init__(self, config: DetectionConfig) -> None:
        self.config = config
        self.backend: Backend | None = None

    def get(self) -> Backend:
        if self.backend is None:
            self.backend = make_backend(self.config)
        return self.backend


def _crop_images(images: list[np.ndarray], config: DetectionConfig, backend: LazyBackend) -> list[Result]:
    if config.backend == "none":
        return [Result("ok", 1, "none", "", to_channels(centre_crop(image, config.size), config.channels))
                for image in images]
    model = backend.get()
    return [_crop_one(image, faces, model, config) for image, faces in zip(images, model.detect(images))]


def _process_batch(paths: list[str], cache: CropCache, config: DetectionConfig,
                   backend: LazyBackend) -> list[tuple[Result, str]]:
    """Results and content hashes of a batch of files; only cache misses reach the backend."""
    results: dict[int, tuple[Result, str]] = {}
    todo: list[tuple[int, str, np.ndarray]] = []
    for i, path in enumerate(paths):
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            results[i] = (Result("unreadable", 0, "", f"cannot read file: {err.strerror or err}", None), "")
            continue
        key = hashlib.blake2b(data, digest_size=16).hexdigest()
        cached = cache.get(key)
        if cached is not None:
            results[i] = (cached, key)
            continue
        try:
            todo.append((i, key, read_rgb(data)))
        except Exception as err:  # PIL raises many types for a broken file; none of them is fatal here
            why = ("neither Pillow nor OpenCV knows its format (not an image, or a damaged one)"
                   if isinstance(err, UnidentifiedImageError) else f"{type(err).__name__}: {err}")
            results[i] = (Result("unreadable", 0, "", f"cannot decode image: {why}", None), key)
            cache.put(key, results[i][0])
    if todo:
        for (i, key, _), result in zip(todo, _crop_images([image for _, _, image in todo], config, backend)):
            cache.put(key, result)
            results[i] = (result, key)
    return [results[i] for i in range(len(paths))]


def detect_and_crop(frame: pd.DataFrame, label_columns: list[str], config: DetectionConfig,
                    cache_dir: Path) -> tuple[ImageSet, pd.DataFrame]:
    """Crops of the manifest's images (rows without a crop are left out) and the per-image report."""
    cache = CropCache(cache_dir, config)
    paths = frame["path"].astype(str).tolist()
    backend = LazyBackend(config)
    rows, crops = [], []
    with tqdm(total=len(paths), desc=f"crop faces ({config.backend})", unit="img", disable=None) as bar:
        for batch in _batches(paths, config.batch_size):
            for path, (result, key) in zip(batch, _process_batch(batch, cache, config, backend)):
                rows.append({"path": path, "status": result.status, "faces": result.faces,
                             "alignment": result.alignment, "cropped": result.crop is not None,
                             "reason": result.reason, "content_hash": key})
                if result.crop is not None:
                    crops.append(result.crop)
            bar.update(len(batch))
    report = pd.DataFrame(rows, columns=REPORT_COLUMNS).astype({"cropped": bool})
    kept = frame[report["cropped"].to_numpy()].reset_index(drop=True)
    images = np.stack(crops) if crops else np.zeros((0, config.size, config.size, config.channels), dtype=np.uint8)
    summary = report["status"].value_counts().to_dict()
    level = logging.INFO if len(kept) == len(report) else logging.WARNING
    log.log(level, "cropped %d of %d images with %s: %s", len(kept), len(report), config.backend, summary)
    meta = {"detection": {**config.model_dump(mode="json"), "settings_key": settings_key(config)}}
    return ImageSet(images, kept, list(label_columns), meta), report
