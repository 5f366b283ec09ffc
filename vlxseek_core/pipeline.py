"""The end-to-end VLM-FO1 pipeline: image + text → grounded regions (spec §4).

``VLXSeek.from_pretrained(dir)`` loads a checkpoint directory; ``query(image, text, task)``
runs proposals → preprocessing → both towers + HFRE → prompt splicing → greedy decoding →
parsing, and maps region indices back to boxes in the caller's image.
"""
from __future__ import annotations

import copy
import hashlib
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .checkpoint import load_model
from .decoding import RegionAnswerLogitsProcessor
from .errors import InvalidRequestError
from .parsing import extract_reasoning, parse_answer, read_count, strip_end_tokens
from .preprocessing import ImagePreprocessor, to_pil_rgb
from .prompts import TASKS, PromptTokenizer, parts_to_text, task_parts
from .proposals import (DEFAULT_MIN_SCORE, DEFAULT_NMS_IOU, MAX_PROPOSALS, ProposalSource,
                        build_proposal_source, validate_user_boxes)
from .tokenizer import load_tokenizer
from .tokens import END_OF_TEXT, IM_END, MAX_REGIONS
from .types import Detection, Proposals, QueryResult
from .modeling import EncodedFrame

DEFAULT_MAX_NEW_TOKENS = 1024
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available else ``cpu``; validates other names.

    Raises:
        ValueError: unknown device, or ``cuda`` requested without a GPU.
    """
    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no GPU")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"unknown device {device!r} (cpu, cuda, cuda:N, auto)")
    return device


def resolve_dtype(dtype, device: str) -> torch.dtype:
    """``auto`` → bf16 on GPU, fp32 on CPU (spec §2.8); else a named dtype.

    Raises:
        ValueError: unknown dtype name.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    name = (dtype or "auto").lower()
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} ({', '.join(_DTYPES)}, auto)")
    return _DTYPES[name]


def compile_vision_towers(model, backend: str = "inductor",
                          towers: Sequence[str] = ("primary", "aux")) -> None:
    """``torch.compile`` the forward of the chosen vision towers (dynamic shapes: image sizes
    vary); the LLM stays eager because generation already reuses its KV cache."""
    modules = {"primary": model.model.vision_tower.image_tower,
               "aux": model.model.vision_tower_aux.image_tower}
    for name in towers:
        tower = modules[name]
        tower.forward = torch.compile(tower.forward, backend=backend, dynamic=True)


def _check_max_proposals(value: int) -> None:
    if not 1 <= int(value) <= MAX_REGIONS:
        raise ValueError(f"max_proposals must be in [1, {MAX_REGIONS}], got {value}")


class _Timer:
    def __init__(self):
        self.ms: Dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3


@dataclass
class FrameEncoding:
    """Everything about one frame that does not depend on the question (issue: frame cache).

    Attributes:
        key: content hash of image, boxes and proposal settings.
        image_size: ``(h, w)`` of the original image.
        proposals: the regions shown to the model (region index = row).
        warnings: notes from proposal validation (e.g. dropped user boxes).
        frame: tower/HFRE outputs, ``None`` when there are no regions.
        prefixes: ``system flag → (prefix ids, KV cache of the prefix)``, filled lazily.
        timings_ms: time spent on this frame (proposals, preprocess, encode).
        answered: queries answered on this encoding so far; only the first one reports the
            frame's stage timings (later ones did not pay for them).
    """

    key: str
    image_size: Tuple[int, int]
    proposals: Proposals
    warnings: List[str]
    frame: Optional[EncodedFrame]
    prefixes: Dict[bool, tuple] = field(default_factory=dict)
    timings_ms: Dict[str, float] = field(default_factory=dict)
    answered: int = 0


QuerySpec = Union[str, Tuple[str, str]]


class VLXSeek:
    """VLM-FO1 inference on one device. Thread-safe: one inference runs at a time.

    Args:
        model: a loaded :class:`~vlxseek_core.modeling.VLMFO1ForCausalLM`.
        tokenizer: its tokenizer.
        preprocessor: :class:`~vlxseek_core.preprocessing.ImagePreprocessor`.
        proposal_source: detector for queries without user boxes, or ``None``.
        max_new_tokens: default decoding budget.
        constrained_decoding: keep region answers well-formed (region-answer tasks only).
        frame_cache_size: frames whose encoding (proposals, towers, HFRE, prompt-prefix KV
            cache) is kept for further questions; 0 disables reuse.
    """

    def __init__(self, model, tokenizer, preprocessor: ImagePreprocessor,
                 proposal_source: Optional[ProposalSource] = None,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 constrained_decoding: bool = True, frame_cache_size: int = 2):
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_tokenizer = PromptTokenizer(tokenizer)
        self.preprocessor = preprocessor
        self.proposal_source = proposal_source
        self.max_new_tokens = max_new_tokens
        self.constrained_decoding = constrained_decoding
        self.end_ids = [i for i in tokenizer.convert_tokens_to_ids([IM_END, END_OF_TEXT])
                        if i is not None]
        self.frame_cache_size = int(frame_cache_size)
        self._frames: "OrderedDict[str, FrameEncoding]" = OrderedDict()
        self._lock = threading.RLock()

    @classmethod
    def from_pretrained(cls, model_path: str, device: str = "auto", dtype="auto",
                        proposal_source: str = "none", proposal_model: Optional[str] = None,
                        proposal_min_score: float = DEFAULT_MIN_SCORE,
                        proposal_nms_iou: float = DEFAULT_NMS_IOU,
                        max_proposals: int = MAX_PROPOSALS,
                        allow_key_mismatch: bool = False, attn_implementation: str = "auto",
                        compile_towers: Optional[str] = None, **kwargs) -> "VLXSeek":
        """Load a checkpoint directory (and optionally a proposal detector).

        Args:
            model_path: VLM-FO1 checkpoint directory (config.json, tokenizer, safetensors), or
                a hub repo id (``owner/name``) fetched once with huggingface_hub (safetensors
                and config files only).
            device: ``cpu``, ``cuda[:N]`` or ``auto``.
            dtype: ``auto`` (bf16 on GPU, fp32 on CPU), ``float32``, ``bfloat16``, ``float16``.
            proposal_source: ``omdet_turbo``, ``grounding_dino``, ``owlv2`` or ``none``.
            proposal_model: detector directory or hub id (``None`` = the kind's default).
            proposal_min_score, proposal_nms_iou, max_proposals: proposal filter (spec §3.5).
            allow_key_mismatch: run even if checkpoint keys do not match (testing only).
            attn_implementation: ``auto`` (flash-attention 2 on CUDA when installed, else
                sdpa), ``sdpa``, ``eager`` or ``flash_attention_2``.
            compile_towers: a ``torch.compile`` backend name (e.g. ``inductor``) to compile
                both vision towers with dynamic shapes; ``None`` keeps them eager.
            **kwargs: passed to :class:`VLXSeek` (``max_new_tokens``, ``constrained_decoding``).

        Raises:
            CheckpointError: unreadable/incompatible checkpoint or detector.
            HubError: a repo id that cannot be fetched (offline, unknown repo).
            ValueError: bad device/dtype/proposal kind.
        """
        from transformers import Qwen2VLImageProcessorPil

        from .hub import resolve_model_path

        _check_max_proposals(max_proposals)
        model_path = resolve_model_path(model_path)
        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        model, _ = load_model(model_path, dtype=torch_dtype, device=device,
                              allow_key_mismatch=allow_key_mismatch,
                              attn_implementation=attn_implementation)
        if compile_towers:
            compile_vision_towers(model, compile_towers)
        tokenizer = load_tokenizer(model_path)
        qwen_processor = Qwen2VLImageProcessorPil.from_pretrained(model_path)
        # the aux side is the reference processor's hard-coded 768, not the config's
        # aux_image_size (spec §4.1 step 3)
        preprocessor = ImagePreprocessor(qwen_processor, model.config.aux_image_aspect_ratio)
        source = build_proposal_source(proposal_source, proposal_model, device=device,
                                       min_score=proposal_min_score, nms_iou=proposal_nms_iou,
                                       max_proposals=max_proposals)
        return cls(model, tokenizer, preprocessor, source, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.model.model.embed_tokens.weight.device

    def set_proposal_thresholds(self, min_score: Optional[float] = None,
                                nms_iou: Optional[float] = None,
                                max_proposals: Optional[int] = None) -> None:
        """Change the detector's filter at runtime (no-op without a detector).

        Raises:
            ValueError: invalid values (``max_proposals`` above 100 included).
        """
        if max_proposals is not None:
            _check_max_proposals(max_proposals)
        if self.proposal_source is not None:
            with self._lock:
                self._frames.clear()
                self.proposal_source.set_thresholds(min_score=min_score, nms_iou=nms_iou,
                                                    max_proposals=max_proposals)

    # ------------------------------------------------------------------ query

    def propose(self, image, boxes=None, box_scores=None,
                proposals: Optional[Proposals] = None):
        """Proposals for ``image``: validated user boxes, given proposals, else the detector's.

        Args:
            image: HWC uint8 RGB numpy array or PIL image.
            boxes, box_scores: user boxes (float ``[K, 4]`` xyxy pixels of ``image``) and
                optional scores; kept in their order, clipped, no NMS.
            proposals: candidate regions found elsewhere (an external detector, a ROS topic),
                normally filtered with :func:`~vlxseek_core.proposals.postprocess_proposals`
                already; kept in their order, clipped to the image. May be empty (the model
                is then not run). Mutually exclusive with ``boxes``.

        Returns:
            ``(Proposals, warnings)``.

        Raises:
            InvalidRequestError: bad user boxes or proposals, both given, or none of them and
                no detector configured.
        """
        rgb = np.asarray(to_pil_rgb(image))
        has_boxes = boxes is not None and len(np.asarray(boxes).reshape(-1)) > 0
        if proposals is not None:
            if has_boxes:
                raise InvalidRequestError("give either user boxes or proposals, not both")
            if len(proposals) == 0:
                return Proposals.empty(), []
            # given proposals get the user-box checks: order kept, clipped, at most 100
            boxes, box_scores, has_boxes = proposals.boxes, proposals.scores, True
        if has_boxes:
            return validate_user_boxes(boxes, rgb.shape[:2], scores=box_scores,
                                       max_boxes=MAX_REGIONS)
        if self.proposal_source is None:
            raise InvalidRequestError(
                "no regions given and no proposal detector configured (proposal_source=none)")
        return self.proposal_source.propose(rgb), []

    def query(self, image, text: str = "", task: str = "detect", boxes=None, box_scores=None,
              region_indices: Optional[Sequence[int]] = None,
              max_new_tokens: Optional[int] = None, reuse_frame: bool = True,
              proposals: Optional[Proposals] = None) -> QueryResult:
        """Answer one query about one image.

        Args:
            image: HWC uint8 RGB numpy array or PIL image.
            text: categories (``"person; cup"``), expression or question, per task.
            task: one of :data:`vlxseek_core.TASKS` (``""`` = ``detect``).
            boxes: optional float ``[K, 4]`` xyxy original-pixel user boxes replacing proposals.
            box_scores: optional ``[K]`` scores for ``boxes`` (default 1.0).
            region_indices: regions that region tasks (caption, ocr, visual_prompt, …) refer
                to, as indices into the regions shown to the model (user boxes, ``proposals``
                or the detector's); default: all user boxes.
            max_new_tokens: decoding budget (default ``self.max_new_tokens``).
            reuse_frame: use (and fill) the frame cache; ``False`` recomputes everything.
                Greedy answers are identical either way.
            proposals: candidate regions from an external detector replacing the configured
                one (see :meth:`propose`); region index = row.

        Returns:
            :class:`~vlxseek_core.types.QueryResult`; boxes in pixels of ``image``.

        Raises:
            InvalidImageError: unusable image.
            InvalidRequestError: bad task/query/boxes/region indices.
        """
        return self.query_many(image, [(text, task)], boxes=boxes, box_scores=box_scores,
                               region_indices=region_indices, max_new_tokens=max_new_tokens,
                               reuse_frame=reuse_frame, proposals=proposals)[0]

    def query_many(self, image, queries: Sequence[QuerySpec], task: str = "detect",
                   boxes=None, box_scores=None, region_indices: Optional[Sequence[int]] = None,
                   max_new_tokens: Optional[int] = None, reuse_frame: bool = True,
                   proposals: Optional[Proposals] = None) -> List[QueryResult]:
        """Answer several queries about one frame, encoding the frame once.

        Proposals, both towers, the HFRE and the LLM prefill of the shared prompt prefix
        (system turn, image and region tokens) run once; each query then only prefills its own
        text (on a copy of the prefix KV cache) and decodes.

        Args:
            queries: texts (all with ``task``) or ``(text, task)`` pairs.
            other arguments: as :meth:`query`.

        Returns:
            One :class:`QueryResult` per query, in order.

        Raises:
            InvalidImageError, InvalidRequestError: as :meth:`query`; every query is validated
            before any model work.
        """
        specs = [(q, task) if isinstance(q, str) else (q[0], q[1] or "detect") for q in queries]
        for text, name in specs:  # validate text before spending time on the frame
            needs = TASKS.get(name or "detect")
            task_parts(name, text, [0] if needs is not None and needs.needs_regions else ())
        pil = to_pil_rgb(image)
        with self._lock:
            enc = self.encode(pil, boxes, box_scores, reuse_frame=reuse_frame,
                              proposals=proposals)
            return [self.answer(enc, text, name, region_indices=region_indices,
                                max_new_tokens=max_new_tokens, user_boxes=boxes is not None)
                    for text, name in specs]

    def frame_key(self, pil, boxes=None, box_scores=None,
                  proposals: Optional[Proposals] = None) -> str:
        """Content hash of the frame and of everything proposals depend on."""
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((pil.size, pil.mode)).encode())
        h.update(pil.tobytes())
        given = (None, None) if proposals is None else (proposals.boxes, proposals.scores)
        for arr in (boxes, box_scores, *given):  # length-prefixed: no two inputs hash alike
            data = b"" if arr is None else np.asarray(arr, dtype=np.float64).tobytes()
            h.update(b"-" if arr is None else len(data).to_bytes(8, "little") + data)
        if self.proposal_source is not None:
            h.update(repr(sorted(self.proposal_source.thresholds.items())).encode())
        return h.hexdigest()

    def encode(self, image, boxes=None, box_scores=None, reuse_frame: bool = True,
               proposals: Optional[Proposals] = None) -> FrameEncoding:
        """Proposals, preprocessing, both towers and the HFRE for one frame (cached).

        Raises:
            InvalidImageError, InvalidRequestError: as :meth:`query`.
        """
        pil = to_pil_rgb(image)
        if proposals is not None and not isinstance(proposals, Proposals):
            raise InvalidRequestError(
                f"proposals must be a vlxseek_core.Proposals, got {type(proposals).__name__}")
        with self._lock:
            key = self.frame_key(pil, boxes, box_scores, proposals)
            if reuse_frame and key in self._frames:
                self._frames.move_to_end(key)
                return self._frames[key]
            timer = _Timer()
            with timer.stage("proposals"):
                regions, warnings = self.propose(pil, boxes, box_scores, proposals)
            frame = None
            if len(regions):
                frame = self._encode_frame(pil, regions, timer)
            enc = FrameEncoding(key, (pil.height, pil.width), regions, list(warnings), frame,
                                timings_ms=timer.ms)
            if reuse_frame and self.frame_cache_size > 0:
                self._frames[key] = enc
                while len(self._frames) > self.frame_cache_size:
                    self._frames.popitem(last=False)
            return enc

    @torch.inference_mode()
    def _encode_frame(self, pil, proposals: Proposals, timer: _Timer) -> EncodedFrame:
        dev = self.device
        with timer.stage("preprocess"):
            prepared = self.preprocessor(pil, proposals.boxes)
        with timer.stage("encode"):
            return self.model.encode_frame(
                prepared.pixel_values.to(dev), prepared.image_grid_thw.to(dev),
                prepared.aux_pixel_values.to(dev), prepared.aux_boxes.to(dev),
                prepared.vt_boxes.to(dev))

    @torch.inference_mode()
    def _prefix(self, enc: FrameEncoding, system: bool, timer: _Timer):
        """``(prefix ids, KV cache)`` of the frame's prompt prefix, computed once."""
        if system not in enc.prefixes:
            with timer.stage("prefill_prefix"):
                ids = self.prompt_tokenizer.build_prefix(len(enc.proposals), system)
                embeds, positions, _ = self.model.build_inputs_embeds(ids, enc.frame)
                out = self.model.model(inputs_embeds=embeds, position_ids=positions,
                                       use_cache=True)
            enc.prefixes[system] = (ids, out.past_key_values)
        return enc.prefixes[system]

    def answer(self, enc: FrameEncoding, text: str = "", task: str = "detect",
               region_indices: Optional[Sequence[int]] = None,
               max_new_tokens: Optional[int] = None, user_boxes: bool = False) -> QueryResult:
        """Answer one query on an encoded frame (see :meth:`encode`).

        Raises:
            InvalidRequestError: bad task/query/region indices.
        """
        task = task or "detect"
        spec = TASKS.get(task)
        task_parts(task, text, [0] if spec is not None and spec.needs_regions else ())
        if region_indices is None and spec.needs_regions and user_boxes:
            region_indices = list(range(len(enc.proposals)))
        region_indices = self._check_region_indices(region_indices or (), len(enc.proposals))
        parts = task_parts(task, text, region_indices)
        timer = _Timer()
        result = QueryResult(task=task, query=text, prompt_text=parts_to_text(parts),
                             answer="", groundings=[], detections=[], proposals=enc.proposals,
                             image_size=enc.image_size, warnings=list(enc.warnings))
        if enc.frame is None:
            result.warnings.append("no regions: no candidate boxes were found or given, so "
                                   "the model was not run")
        else:
            with self._lock:
                self._generate(enc, parts, spec, result, timer, max_new_tokens)
        frame_ms = enc.timings_ms if enc.answered == 0 else {}
        enc.answered += 1
        result.timings_ms = {**frame_ms, **timer.ms}
        return result

    @torch.inference_mode()
    def _generate(self, enc: FrameEncoding, parts, spec, result: QueryResult, timer: _Timer,
                  max_new_tokens: Optional[int]) -> None:
        system = self.prompt_tokenizer.wants_system_turn(parts)
        prefix_ids, prefix_cache = self._prefix(enc, system, timer)
        input_ids = prefix_ids + self.prompt_tokenizer.build_suffix(parts)
        embeds, position_ids, _ = self.model.build_inputs_embeds(input_ids, enc.frame)
        processors = []
        budget = int(max_new_tokens or self.max_new_tokens)
        if self.constrained_decoding and spec.region_answer:
            processors.append(RegionAnswerLogitsProcessor(
                self.tokenizer, len(enc.proposals), trailing_text=(result.task == "count"),
                max_new_tokens=budget))
        with timer.stage("generate"):
            out = self.model.generate(
                inputs_embeds=embeds, position_ids=position_ids,
                attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long,
                                          device=embeds.device),
                past_key_values=copy.deepcopy(prefix_cache),  # the prefix stays reusable
                max_new_tokens=budget, do_sample=False, num_beams=1,
                eos_token_id=self.end_ids, pad_token_id=self.end_ids[-1],
                logits_processor=processors or None, temperature=None, top_p=None,
                top_k=None, repetition_penalty=None)
        generated = out[0].tolist()
        result.num_generated_tokens = len(generated)
        raw = self.tokenizer.decode(generated, skip_special_tokens=False)
        if not any(t in self.end_ids for t in generated):
            result.warnings.append(f"answer cut off at max_new_tokens={budget}")
        self._fill_answer(result, strip_end_tokens(raw))

    @staticmethod
    def _check_region_indices(indices: Sequence[int], num_regions: int) -> list:
        out = []
        for idx in indices:
            if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)):
                raise InvalidRequestError(f"region index {idx!r} is not an integer")
            if not 0 <= int(idx) < num_regions:
                raise InvalidRequestError(
                    f"region index {idx} out of range; there are {num_regions} regions")
            out.append(int(idx))
        return out

    @staticmethod
    def _fill_answer(result: QueryResult, answer: str) -> None:
        """Parse ``answer`` into ``result``: groundings, rejected phrases, detections, count,
        reasoning, and a warning per absent phrase, for an empty answer and for a count answer
        without a number.

        Args:
            result: filled in place; ``result.task`` and ``result.proposals`` are read.
            answer: the decoded answer, end tokens already removed.
        """
        proposals = result.proposals
        parsed = parse_answer(answer, len(proposals))
        result.answer = answer
        result.groundings = parsed.groundings
        result.rejected = list(parsed.rejected)
        result.warnings.extend(parsed.warnings())
        result.warnings.extend(f"absent: {phrase!r} (the model answered None)"
                               for phrase in parsed.rejected)
        if not answer.strip():
            result.warnings.append("the model found nothing (empty answer)")
        result.detections = [
            Detection(region_index=i, label=g.phrase, box=proposals.boxes[i].copy(),
                      score=float(proposals.scores[i]))
            for g in parsed.groundings for i in g.region_indices]
        if result.task == "count":
            count = read_count(answer)
            only_rejections = parsed.rejected and not parsed.region_indices
            if count is None and not only_rejections:
                result.warnings.append("the answer holds no number; count 0 is not a reading")
            result.count = 0 if count is None else count
        if result.task == "reason":
            result.reasoning, result.final_answer = extract_reasoning(answer)
