"""The face dataset section: where the images and labels come from, how faces are cropped, how
the data is split by identity.

A user brings one labelled source (a CSV manifest, a folder with one sub-folder per label, or
OpenFace 2 output joined to the images it describes) and optionally a separate unlabelled pool
(e.g. LFW). Rows of the labelled source that carry no label join the unlabelled pool too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PositiveInt, field_validator, model_validator

from ausynth.configs.section import Section

LabelType = Literal["au_presence", "au_intensity", "emotion", "valence_arousal"]
Fraction = Annotated[float, Field(gt=0, lt=1)]


def _check_regex(value: str | None) -> str | None:
    """The subject regex must compile and say which part is the subject."""
    if value is None:
        return value
    try:
        pattern = re.compile(value)
    except re.error as err:
        raise ValueError(f"subject_regex {value!r} is not a valid regular expression: {err}") from err
    if pattern.groups == 0:
        raise ValueError(
            f"subject_regex {value!r} has no group: mark the subject with (?P<subject>...) or a first group (...)"
        )
    return value


SubjectRegex = Annotated[str | None, AfterValidator(_check_regex)]


class DetectionConfig(Section):
    """Face detection, alignment and cropping.

    ``face_alignment`` (S3FD + FAN landmarks) needs two weight files, read from ``weights_dir``
    or torch's hub cache (``$TORCH_HOME/hub/checkpoints``); ``opencv`` (Haar cascades shipped
    with OpenCV) needs no download; ``none`` takes images that are already face crops. A source
    may set its own backend and multi_face policy (``source.detection``, ``unlabelled.detection``).
    """

    backend: Literal["face_alignment", "opencv", "none"] = "opencv"
    size: Annotated[int, Field(ge=16, le=1024)] = 96
    channels: Literal[1, 3] = 3
    multi_face: Literal["largest", "central", "skip"] = "largest"
    weights_dir: Path | None = None
    batch_size: PositiveInt = 32
    cache_dir: Path | None = None  # default: <workspace>/crops


class DetectionOverride(Section):
    """Detection settings of one source, where they differ from ``dataset.detection``.

    Only the backend and the multi_face policy may differ (e.g. ``backend: none`` for a source of
    ready crops beside an unlabelled pool of photos that needs detection). Size and channels stay
    common: every crop of a run goes into one array of one shape.
    """

    backend: Literal["face_alignment", "opencv", "none"] | None = None
    multi_face: Literal["largest", "central", "skip"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _only_what_may_differ(cls, data: object) -> object:
        if isinstance(data, dict):
            common = [key for key in data if key in DetectionConfig.model_fields and key not in cls.model_fields]
            if common:
                raise ValueError(
                    f"{', '.join(common)} cannot differ per source (every crop of a run has one size and "
                    f"channel count): set {'them' if len(common) > 1 else 'it'} under dataset.detection; "
                    "a source's own 'detection:' may set only backend and multi_face"
                )
        return data


class SourceConfig(Section):
    """Exactly one of ``manifest``, ``folder`` or ``openface``.

    - ``manifest``: a CSV with a path column (path/file/filename/image), an optional subject
      column (subject/subject_id/identity/person) and label columns (AU01, AU1, AU01_r, AU01_c,
      emotion, valence, arousal); relative paths are taken from ``image_root`` (default: the
      CSV's folder).
    - ``folder``: images in sub-folders named for their emotion (images directly in the folder
      are unlabelled); the subject is taken from the file name by ``subject_regex``.
    - ``openface``: an OpenFace 2 CSV, or a folder of them; ``FaceLandmarkImg`` writes one CSV
      per image (joined to the image of the same stem under ``image_root``), ``FeatureExtraction
      -fdir`` one CSV per image folder with a ``frame`` column (frame k is the k-th image, by
      name, of ``image_root/<csv stem>/``, or of ``image_root`` itself).
    """

    manifest: Path | None = None
    folder: Path | None = None
    openface: Path | None = None
    image_root: Path | None = None
    # Subject from the file name, e.g. '^([A-Z]{2})\.' for JAFFE's 'KA.AN1.39.tiff'; a named group
    # 'subject' wins over the first group. For manifests it fills rows whose subject is empty.
    subject_regex: SubjectRegex = None
    detection: DetectionOverride | None = None  # this source's backend / multi_face, if not dataset.detection's

    @model_validator(mode="after")
    def _exactly_one_source(self) -> "SourceConfig":
        given = [name for name in ("manifest", "folder", "openface") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one source: 'manifest' (a CSV), 'folder' (one sub-folder per label) or "
                f"'openface' (OpenFace 2 CSVs); got {given or 'none'}"
            )
        if self.openface is not None and self.image_root is None:
            raise ValueError("an 'openface' source needs 'image_root': the folder of the images its CSVs describe")
        return self


class SplitConfig(Section):
    """Identity split: no subject in two of train / val / test.

    ``val`` and ``test`` are shares of the subjects (sklearn's GroupShuffleSplit); of ``draws``
    random splits the one whose label prevalence is closest across splits is kept.
    ``allow_missing_subject`` treats every image without a subject as its own subject: that is
    only safe when no person appears twice (else the same face can land in train and test), so
    it must be asked for.
    """

    val: Fraction = 0.1
    test: Fraction = 0.2
    draws: PositiveInt = 20
    seed: int = 0
    allow_missing_subject: bool = False

    @model_validator(mode="after")
    def _room_for_train(self) -> "SplitConfig":
        if self.val + self.test >= 0.9:
            raise ValueError(f"split.val ({self.val}) + split.test ({self.test}) leave less than 10% for training")
        return self


class UnlabelledConfig(Section):
    """A separate unlabelled pool: a CSV manifest (path, optional subject) or a folder of images.

    Labels in it, if any, are ignored.
    """

    manifest: Path | None = None
    folder: Path | None = None
    image_root: Path | None = None
    subject_regex: SubjectRegex = None
    limit: PositiveInt | None = None  # keep only the first N rows, for quick runs
    detection: DetectionOverride | None = None  # the pool's backend / multi_face, if not dataset.detection's

    @model_validator(mode="after")
    def _exactly_one_source(self) -> "UnlabelledConfig":
        if (self.manifest is None) == (self.folder is None):
            raise ValueError("unlabelled: give exactly one of 'manifest' (a CSV) or 'folder' (a folder of images)")
        return self


class NeutralSetConfig(UnlabelledConfig):
    """A labelled neutral set: faces the generator starts from, neutral by their label.

    The rows of a manifest (or a folder, whose first sub-folder is the ``emotion`` column) whose
    ``column`` holds ``value`` (e.g. JAFFE's ``emotion: neutral``); the other rows are left out and
    counted in the log. Without ``column`` and ``value`` every image is taken as neutral (a folder
    of neutral faces). ``limit`` counts neutral rows.
    """

    column: str | None = None
    value: str | None = None

    @model_validator(mode="after")
    def _column_with_value(self) -> "NeutralSetConfig":
        if (self.column is None) != (self.value is None):
            raise ValueError("neutral: give 'column' and 'value' together (e.g. column: emotion, value: neutral), "
                             "or neither to take every image as neutral")
        return self


class FaceDatasetConfig(Section):
    """Real face images, ingested, cropped and split by identity into the toy set's contract.

    An ``unlabelled`` pool without a labelled ``source`` can be prepared alone (``ausynth prepare``
    detects and crops it, e.g. on a GPU machine, into the crop cache later runs read); comparing
    strategies or training a generator needs the labelled source (``loader.check_labelled``).
    """

    kind: Literal["faces"] = "faces"
    source: SourceConfig | None = None
    unlabelled: UnlabelledConfig | None = None
    # Neutral faces for the generator to start from (generator.neutral_source: neutral_set or auto);
    # cropped like the other sources, kept apart from training and testing.
    neutral: NeutralSetConfig | None = None
    label_type: LabelType | Literal["auto"] = "auto"
    # The emotion classes and their order; default: every class found, sorted. Names are
    # normalised (angry -> anger, happy -> happiness, ...), so list them normalised.
    emotions: list[str] | None = None
    # Intensity (0-5) at or above which an AU counts as present, when presence is asked for and
    # only intensities are given (DISFA's convention: 2).
    presence_threshold: Annotated[float, Field(gt=0, le=5)] = 2.0
    # Stop with an error when more than this share of rows is unusable (bad value, missing file).
    max_bad_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05
    limit: PositiveInt | None = None  # keep only the first N rows of the labelled source, for quick runs
    detection: DetectionConfig = DetectionConfig()
    split: SplitConfig = SplitConfig()

    @model_validator(mode="after")
    def _some_images(self) -> "FaceDatasetConfig":
        if self.source is None and self.unlabelled is None:
            raise ValueError("give a labelled 'source', an 'unlabelled' pool, or both")
        return self

    @model_validator(mode="after")
    def _neutral_beside_labels(self) -> "FaceDatasetConfig":
        if self.neutral is not None and self.source is None:
            raise ValueError("a 'neutral' set is where the generator starts from, and the generator needs a "
                             "labelled 'source' too: add one, or drop 'neutral'")
        return self

    @model_validator(mode="after")
    def _folder_means_emotions(self) -> "FaceDatasetConfig":
        if self.source is not None and self.source.folder is not None and self.label_type not in ("auto", "emotion"):
            raise ValueError(
                f"a 'folder' source labels images by sub-folder name, i.e. emotion categories; "
                f"label_type {self.label_type!r} needs a manifest or OpenFace source"
            )
        return self

    def detection_for(self, section: str) -> DetectionConfig:
        """The detection settings of 'source', 'unlabelled' or 'neutral': ``detection`` with that section's
        override."""
        override = getattr(self, section).detection
        if override is None:
            return self.detection
        return self.detection.model_copy(update=override.model_dump(exclude_none=True))

    def key_data(self) -> dict:
        """The config as the store names its dataset: an unset ``neutral`` left out, so datasets built
        before the neutral set existed keep their store entries (and everything trained on them)."""
        return self.model_dump(mode="json", exclude={"neutral"} if self.neutral is None else None)

    @field_validator("emotions")
    @classmethod
    def _distinct_emotions(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (len(value) < 2 or len(set(value)) != len(value)):
            raise ValueError(f"emotions must list at least two distinct classes, got {value}")
        return value
