"""Proposal sources: detectors that produce the candidate regions FO1 refers to by index.

The paper's own proposal network (OPN, said to build on OmDet-Turbo) is not released; the reference
substitute is UPN (spec §4.2). Here any transformers zero-shot object detector (OmDet-Turbo —
the default —, Grounding DINO, OWLv2/OWL-ViT) is used *class-agnostically*: it is prompted with a
generic vocabulary (:data:`GENERIC_VOCABULARY`), the boxes of all classes are merged (one
score per distinct box: the best class score), and the merged set goes through the single
shared :func:`~vlxseek_core.proposals.postprocess.postprocess_proposals` (UPN filter semantics).

Frames: ``propose`` takes an HWC uint8 RGB image and returns float32 xyxy boxes in pixels of that
same image, sorted by score descending (region index = row).

Loading never uses ``trust_remote_code``. Nothing is downloaded unless a hub id (not a local
directory) is given and the files are not cached; pass ``local_files_only=True`` to forbid it.
"""
from __future__ import annotations

import abc
import inspect
import math
import os
import threading
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import CheckpointError, InvalidImageError
from ..types import Proposals
from .postprocess import (DEFAULT_MIN_SCORE, DEFAULT_NMS_IOU, MAX_PROPOSALS,
                          postprocess_proposals)

__all__ = [
    "GENERIC_VOCABULARY",
    "DEFAULT_MODELS",
    "ProposalSource",
    "ZeroShotDetectorProposals",
    "OmDetTurboProposals",
]

#: Class-agnostic prompt: generic object words; all classes' boxes are merged.
#: Kept short enough for OmDet-Turbo's 77-token task prompt ("Detect object, person, ….").
GENERIC_VOCABULARY: Tuple[str, ...] = (
    "object", "person", "animal", "vehicle", "furniture", "food", "container", "tool",
    "device", "plant", "sign", "text", "building", "clothing", "bag", "bottle", "ball",
    "screen", "door", "window",
)

#: Default checkpoint (hub id) per proposal kind.
DEFAULT_MODELS: Dict[str, str] = {
    "omdet_turbo": "omlab/omdet-turbo-swin-tiny-hf",
    "grounding_dino": "IDEA-Research/grounding-dino-tiny",
    "owlv2": "google/owlv2-base-patch16-ensemble",
    "wedetect": "fushh7/WeDetect",  # WeDetect-Base-Uni, licence unchecked (README)
}

#: ``config.model_type`` values accepted for each kind.
_MODEL_TYPES: Dict[str, Tuple[str, ...]] = {
    "omdet_turbo": ("omdet-turbo",),
    "grounding_dino": ("grounding-dino", "mm-grounding-dino"),
    "owlv2": ("owlv2", "owlvit"),
}

PathLike = Union[str, "os.PathLike[str]"]


def _check_image(image) -> np.ndarray:
    """HWC uint8 RGB check; returns a C-contiguous array. Raises InvalidImageError."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(
            f"image must be a numpy array (HWC uint8 RGB), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImageError(f"image must have shape [H, W, 3] (RGB), got {image.shape}")
    if image.dtype != np.uint8:
        raise InvalidImageError(f"image must be uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidImageError(f"image is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def _check_thresholds(min_score, nms_iou, max_proposals) -> None:
    for name, v in (("min_score", min_score), ("nms_iou", nms_iou)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))
                              or not math.isfinite(float(v))):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if max_proposals is not None and (isinstance(max_proposals, bool)
                                      or not isinstance(max_proposals, (int, np.integer))
                                      or max_proposals < 0):
        raise ValueError(f"max_proposals must be a non-negative integer, got {max_proposals!r}")


class ProposalSource(abc.ABC):
    """A detector that turns an image into ordered candidate regions.

    Subclasses implement :meth:`propose` and :attr:`name` (a property or a plain class
    attribute). Thresholds follow :func:`postprocess_proposals` (``score >= min_score``, NMS at
    ``nms_iou``, top ``max_proposals``); FO1 itself accepts at most 100 regions. Thread-safe:
    thresholds may be changed while another thread proposes (read them once per call through
    :attr:`thresholds`). Subclasses that skip ``__init__`` get the reference defaults.
    """

    _min_score: float = DEFAULT_MIN_SCORE
    _nms_iou: float = DEFAULT_NMS_IOU
    _max_proposals: int = MAX_PROPOSALS

    def __init__(self, *, min_score: float = DEFAULT_MIN_SCORE, nms_iou: float = DEFAULT_NMS_IOU,
                 max_proposals: int = MAX_PROPOSALS) -> None:
        _check_thresholds(min_score, nms_iou, max_proposals)
        self._min_score = float(min_score)
        self._nms_iou = float(nms_iou)
        self._max_proposals = int(max_proposals)

    @property
    def _lock(self) -> threading.Lock:
        # created on first use so that subclasses need not call __init__ (setdefault is atomic)
        return self.__dict__.setdefault("_thresholds_lock", threading.Lock())

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short human-readable identifier, e.g. ``"omdet_turbo:/models/omdet"``."""

    @abc.abstractmethod
    def propose(self, image: np.ndarray) -> Proposals:
        """Detect candidate regions.

        Args:
            image: ``[H, W, 3]`` uint8 RGB.

        Returns:
            :class:`Proposals`: float32 xyxy boxes ``[N, 4]`` in pixels of ``image`` (inside
            ``[0, W] x [0, H]``), float32 scores ``[N]`` sorted descending,
            ``N <= max_proposals``.

        Raises:
            InvalidImageError: ``image`` is not a non-empty HWC uint8 RGB array.
        """

    def set_thresholds(self, min_score: Optional[float] = None, nms_iou: Optional[float] = None,
                       max_proposals: Optional[int] = None) -> None:
        """Change the filters used by later :meth:`propose` calls (``None`` = unchanged).

        Raises:
            ValueError: a non-finite threshold or a negative / non-integer ``max_proposals``.
        """
        _check_thresholds(min_score, nms_iou, max_proposals)
        with self._lock:
            if min_score is not None:
                self._min_score = float(min_score)
            if nms_iou is not None:
                self._nms_iou = float(nms_iou)
            if max_proposals is not None:
                self._max_proposals = int(max_proposals)

    @property
    def thresholds(self) -> Dict[str, float]:
        """Current ``{"min_score", "nms_iou", "max_proposals"}``."""
        with self._lock:
            return {"min_score": self._min_score, "nms_iou": self._nms_iou,
                    "max_proposals": self._max_proposals}


def _resolve_dtype(dtype) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        name = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16",
                "float": "float32"}.get(dtype.lower(), dtype.lower())
        if name in ("float32", "float16", "bfloat16", "float64"):
            return getattr(torch, name)
    raise ValueError(f"dtype must be None, a torch floating dtype or one of "
                     f"'float32', 'float16', 'bfloat16'; got {dtype!r}")


def _check_model_location(model: PathLike) -> str:
    """Return the string to give ``from_pretrained``; fail fast for missing local paths.

    A :class:`os.PathLike`, an existing path, or a string that cannot be a hub id (absolute,
    starting with ``.`` or ``~``, more than one ``/``, a backslash) is a local directory.
    """
    is_pathlike = isinstance(model, os.PathLike)
    s = os.fspath(model)
    if not isinstance(s, str) or not s:
        raise CheckpointError(f"proposal model must be a directory or a hub id, got {model!r}")
    expanded = os.path.expanduser(s)
    looks_local = (is_pathlike or os.path.isabs(expanded) or s.startswith((".", "~"))
                   or "\\" in s or s.count("/") > 1)
    if os.path.exists(expanded):
        if not os.path.isdir(expanded):
            raise CheckpointError(f"proposal model {s!r} is a file; expected a checkpoint "
                                  f"directory (config.json, weights, processor/tokenizer files)")
        return expanded
    if looks_local:
        raise CheckpointError(f"proposal model directory {s!r} does not exist")
    return s


class ZeroShotDetectorProposals(ProposalSource):
    """Any transformers zero-shot object detector, used class-agnostically.

    Loads ``AutoProcessor`` and ``AutoModelForZeroShotObjectDetection`` (OmDet-Turbo, Grounding
    DINO, MM-Grounding-DINO, OWLv2, OWL-ViT) with ``from_pretrained(model)``; never
    ``trust_remote_code``. Per image: the processor gets the image and ``[vocabulary]``; the
    model's own ``post_process_grounded_object_detection`` maps boxes to image pixels (its score
    threshold set just below ``min_score``, its per-class NMS disabled); identical boxes from
    different classes are merged keeping the best score; then one
    :func:`postprocess_proposals` (threshold, NMS, int truncation, sort, rounding, top-k, clip).

    Args:
        model: local checkpoint directory or hub id.
        model_class: ``"auto"`` (any zero-shot detector), or a kind from
            :data:`DEFAULT_MODELS` (``"omdet_turbo"``, ``"grounding_dino"``, ``"owlv2"``) to also
            check ``config.model_type``, or a model class with ``from_pretrained``.
        vocabulary: class prompts; default :data:`GENERIC_VOCABULARY`.
        device: torch device for the detector (``"cpu"``, ``"cuda"``, ``"cuda:1"``, …).
        dtype: ``None`` (checkpoint default, float32 for these models), a torch dtype or
            ``"float32"``/``"float16"``/``"bfloat16"``.
        min_score, nms_iou, max_proposals: see :func:`postprocess_proposals`.
        local_files_only: forwarded to ``from_pretrained`` (``True`` forbids hub access).

    Raises:
        CheckpointError: the checkpoint is missing, incomplete, unreadable or of another model
            type.
        ValueError: invalid ``dtype``, thresholds, ``model_class`` or empty vocabulary.
    """

    kind = "zero_shot"

    def __init__(self, model: PathLike, *, model_class="auto",
                 vocabulary: Sequence[str] = GENERIC_VOCABULARY,
                 device: Union[str, torch.device] = "cpu", dtype=None,
                 min_score: float = DEFAULT_MIN_SCORE, nms_iou: float = DEFAULT_NMS_IOU,
                 max_proposals: int = MAX_PROPOSALS,
                 local_files_only: Optional[bool] = None) -> None:
        super().__init__(min_score=min_score, nms_iou=nms_iou, max_proposals=max_proposals)
        vocab = tuple(str(v).strip() for v in vocabulary)
        if not vocab or any(not v for v in vocab):
            raise ValueError(f"vocabulary must be a non-empty list of non-empty strings, "
                             f"got {vocabulary!r}")
        self.vocabulary = vocab
        self.device = torch.device(device)
        self._dtype = _resolve_dtype(dtype)
        self._infer_lock = threading.Lock()

        expected_types: Optional[Tuple[str, ...]] = None
        if isinstance(model_class, str):
            if model_class != "auto":
                if model_class not in _MODEL_TYPES:
                    raise ValueError(f"model_class must be 'auto', one of {sorted(_MODEL_TYPES)} "
                                     f"or a model class; got {model_class!r}")
                expected_types = _MODEL_TYPES[model_class]
                self.kind = model_class
            model_cls = None
        elif hasattr(model_class, "from_pretrained"):
            model_cls = model_class
        else:
            raise ValueError(f"model_class must be 'auto', a kind name or a model class; "
                             f"got {model_class!r}")

        self.model_id = os.fspath(model)
        location = _check_model_location(model)
        self.processor, self.model = self._load(location, model_cls, expected_types,
                                                local_files_only)
        post = getattr(self.processor, "post_process_grounded_object_detection", None)
        if post is None:
            raise CheckpointError(f"processor of {self.model_id!r} "
                                  f"({type(self.processor).__name__}) has no "
                                  f"post_process_grounded_object_detection")
        self._post = post
        self._post_params = set(inspect.signature(post).parameters)
        if self.kind == "zero_shot":
            self.kind = _kind_of(self.model.config.model_type)

    # -- loading ---------------------------------------------------------------------------
    def _load(self, location: str, model_cls, expected_types, local_files_only):
        try:
            from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor
        except ImportError as exc:  # pragma: no cover - transformers is a dependency
            raise CheckpointError(f"transformers is required for proposal models: {exc}") from exc
        common = {"trust_remote_code": False}
        if local_files_only is not None:
            common["local_files_only"] = bool(local_files_only)
        where = f"proposal model {self.model_id!r}"
        try:
            config = AutoConfig.from_pretrained(location, **common)
        except Exception as exc:
            raise CheckpointError(f"cannot read the config of {where}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        model_type = getattr(config, "model_type", None)
        if expected_types is not None and model_type not in expected_types:
            raise CheckpointError(f"{where} has model_type {model_type!r}; "
                                  f"expected one of {expected_types}")
        if model_cls is None:
            from transformers.models.auto import modeling_auto
            mapping = modeling_auto.MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES
            if model_type not in mapping:
                raise CheckpointError(
                    f"{where} has model_type {model_type!r}, which is not a transformers "
                    f"zero-shot object detector ({sorted(mapping)})")
            model_cls = AutoModelForZeroShotObjectDetection
        try:
            processor = AutoProcessor.from_pretrained(location, **common)
        except Exception as exc:
            raise CheckpointError(f"cannot load the processor (tokenizer / image processor "
                                  f"files) of {where}: {type(exc).__name__}: {exc}") from exc
        kwargs = dict(common, config=config)
        if self._dtype is not None:
            kwargs["dtype"] = self._dtype
        try:
            model = model_cls.from_pretrained(location, **kwargs)
        except Exception as exc:
            raise CheckpointError(f"cannot load the weights of {where}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        model.to(self.device)
        model.eval()
        return processor, model

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.model_id}"

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the loaded detector."""
        return next(self.model.parameters()).dtype

    # -- inference -------------------------------------------------------------------------
    def detect_raw(self, image: np.ndarray,
                   min_score: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
        """Class-agnostic detections before :func:`postprocess_proposals`.

        Args:
            image: ``[H, W, 3]`` uint8 RGB.
            min_score: detections scoring clearly below this are dropped early (the exact
                ``>=`` filter is left to :func:`postprocess_proposals`).

        Returns:
            ``(boxes, scores)``: float32 ``[R, 4]`` xyxy pixels of ``image`` (not clipped,
            not truncated, unsorted) and float32 ``[R]``; one row per distinct box (the best
            score over the vocabulary).
        """
        from PIL import Image

        img = _check_image(image)
        h, w = img.shape[:2]
        labels = list(self.vocabulary)
        inputs = self.processor(images=Image.fromarray(img), text=[labels],
                                return_tensors="pt")
        model_dtype = self.dtype
        inputs = {k: (v.to(self.device, model_dtype) if v.is_floating_point()
                      else v.to(self.device)) if isinstance(v, torch.Tensor) else v
                  for k, v in inputs.items()}
        # processors keep detections with score > threshold; stay just below min_score.
        pre = float(min_score) - 1e-3 if min_score > 0 else -1.0
        kw = {"target_sizes": [(h, w)]}
        if "threshold" in self._post_params:
            kw["threshold"] = pre
        if "nms_threshold" in self._post_params:
            kw["nms_threshold"] = 1.0  # no per-class NMS; one class-agnostic NMS comes later
        if "text_labels" in self._post_params:
            kw["text_labels"] = [labels]
        if "input_ids" in self._post_params and "input_ids" in inputs:
            kw["input_ids"] = inputs["input_ids"]
        with self._infer_lock, torch.inference_mode():
            outputs = self.model(**inputs)
            if model_dtype != torch.float32:
                # post-processing (e.g. torchvision NMS on CPU) needs float32
                for key in list(outputs.keys()):
                    value = outputs[key]
                    if isinstance(value, torch.Tensor) and value.is_floating_point():
                        outputs[key] = value.float()
            if "max_num_det" in self._post_params:
                # OmDet-Turbo ranks (query, class) pairs and keeps num_queries of them by default:
                # keep all pairs so that every query's best class survives.
                logits = getattr(outputs, "decoder_class_logits", None)
                if logits is not None:
                    kw["max_num_det"] = int(logits.shape[1] * logits.shape[2])
            result = self._post(outputs, **kw)[0]
        boxes = torch.as_tensor(result["boxes"]).detach().to("cpu", torch.float32).reshape(-1, 4)
        scores = torch.as_tensor(result["scores"]).detach().to("cpu", torch.float32).reshape(-1)
        if len(boxes):
            uniq, inverse = torch.unique(boxes, dim=0, return_inverse=True)
            best = torch.full((len(uniq),), -math.inf).scatter_reduce(0, inverse, scores, "amax")
            boxes, scores = uniq, best
        return boxes.numpy(), scores.numpy()

    def propose(self, image: np.ndarray) -> Proposals:
        """See :meth:`ProposalSource.propose`. Boxes are integral (reference int32 truncation)
        and scores rounded to 2 decimals."""
        img = _check_image(image)
        t = self.thresholds
        boxes, scores = self.detect_raw(img, t["min_score"])
        return postprocess_proposals(boxes, scores, min_score=t["min_score"], nms_iou=t["nms_iou"],
                                     max_proposals=t["max_proposals"], image_size=img.shape[:2])


class OmDetTurboProposals(ZeroShotDetectorProposals):
    """OmDet-Turbo (``OmDetTurboForObjectDetection``) as a class-agnostic proposal source.

    The default proposal detector (the paper's unreleased OPN is said to build on OmDet-Turbo;
    spec §4.2). Same behaviour and arguments as :class:`ZeroShotDetectorProposals`; the
    checkpoint must have ``model_type == "omdet-turbo"`` (else :class:`CheckpointError`). The
    default hub checkpoint ``omlab/omdet-turbo-swin-tiny-hf`` builds its Swin backbone with
    ``timm`` (architecture only; its weights come from the checkpoint).
    """

    def __init__(self, model: PathLike = DEFAULT_MODELS["omdet_turbo"], *,
                 vocabulary: Sequence[str] = GENERIC_VOCABULARY,
                 device: Union[str, torch.device] = "cpu", dtype=None,
                 min_score: float = DEFAULT_MIN_SCORE, nms_iou: float = DEFAULT_NMS_IOU,
                 max_proposals: int = MAX_PROPOSALS,
                 local_files_only: Optional[bool] = None) -> None:
        super().__init__(model, model_class="omdet_turbo", vocabulary=vocabulary, device=device,
                         dtype=dtype, min_score=min_score, nms_iou=nms_iou,
                         max_proposals=max_proposals, local_files_only=local_files_only)


def _kind_of(model_type: str) -> str:
    for kind, types in _MODEL_TYPES.items():
        if model_type in types:
            return kind
    return str(model_type)
