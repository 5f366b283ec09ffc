"""The end-to-end pipeline: image + text → grounded regions (spec §4).

``VLXSeek.from_pretrained(dir)`` loads a checkpoint of a registered model family (VLM-FO1,
VLX-Seek 1.5: ``config.json``'s ``model_type``, :mod:`vlxseek_core.families`, which supplies
everything family-specific); ``query(image, text, task)`` runs proposals → preprocessing →
both towers + HFRE → prompt splicing → greedy decoding → parsing, and maps region indices back
to boxes in the caller's image. The vision half (proposals, towers, HFRE, frame cache) is
:class:`~vlxseek_core.frame_encoder.FrameEncoder`, which ``VLXSeek`` extends.
"""
from __future__ import annotations

import copy
import os
from typing import List, Optional, Sequence, Tuple, Union

import torch

from . import validation as check
from .load_validation import load_args
from .decoding import RegionAnswerLogitsProcessor
from .errors import InvalidRequestError
from .devices import compile_vision_towers, resolve_device, resolve_dtype  # noqa: F401
from .families import ModelFamily, PromptRequest, family_of_checkpoint, family_of_model
from .frame_encoder import FrameEncoder
from .frames import FrameEncoding, StageTimer, fill_answer
from .modeling import CACHE_KWARG, output_cache
from .proposals import (MAX_PROPOSALS, PROPOSAL_KINDS, ProposalSource, build_proposal_source,
                        reference_thresholds)
from .streaming import AnswerStreamer, CancelCriteria, QueryProgress
from .tokenizer import check_vocabulary
from .types import Proposals, QueryResult

DEFAULT_MAX_NEW_TOKENS = 1024
"""VLM-FO1's default budget; each family has its own (``ModelFamily.default_max_new_tokens``)."""
FALLBACK_CONTEXT = 32768
"""Cap of ``max_new_tokens`` for a model config without ``max_position_embeddings``."""


QuerySpec = Union[str, Tuple[str, Optional[str]]]


class VLXSeek(FrameEncoder):
    """Region-retrieval VLM inference on one device. Thread-safe: one inference runs at a time.

    Every public method checks all of its arguments first (:mod:`vlxseek_core.validation`):
    bad input raises :class:`~vlxseek_core.errors.InvalidRequestError` or
    :class:`~vlxseek_core.errors.InvalidImageError` naming the argument, before any model work.
    Results never share state with the frame cache or with each other (see
    :class:`~vlxseek_core.types.QueryResult`).

    Args:
        model: a loaded model of a registered family
            (:class:`~vlxseek_core.modeling.VLMFO1ForCausalLM`, ``VLXSeek15ForCausalLM``).
        tokenizer: its tokenizer.
        preprocessor: the family's preprocessor (``ModelFamily.build_preprocessor``; VLM-FO1:
            :class:`~vlxseek_core.preprocessing.ImagePreprocessor`).
        proposal_source: detector for queries without user boxes, or ``None``.
        max_new_tokens: default decoding budget, an int in ``[1, max_new_tokens_limit]``;
            ``None``: the family's default (VLM-FO1 1024, VLX-Seek 1.5 2048) or the model's
            context if shorter.
        constrained_decoding: keep region answers well-formed (region-answer tasks only).
        frame_cache_size: frames whose encoding (proposals, towers, HFRE, prompt-prefix KV
            cache) is kept for further questions, ``[0, 1024]``; 0 disables reuse.
        family: the model family (:class:`~vlxseek_core.families.ModelFamily`); ``None``:
            the one registered for ``model.config.model_type``.

    Attributes:
        family: the model family; tasks: the task specs it supports.

    Raises:
        InvalidRequestError: an option of the wrong type or out of range.
        CheckpointError: a model of no registered family.
    """

    def __init__(self, model, tokenizer, preprocessor,
                 proposal_source: Optional[ProposalSource] = None,
                 max_new_tokens: Optional[int] = None,
                 constrained_decoding: bool = True, frame_cache_size: int = 2,
                 family: Optional[ModelFamily] = None):
        self.family = family if family is not None else family_of_model(model)
        text_config = getattr(model.config, "text_config", model.config)
        self.max_new_tokens_limit = int(getattr(text_config, "max_position_embeddings", None)
                                        or FALLBACK_CONTEXT)
        """Largest ``max_new_tokens``: the model's ``max_position_embeddings``."""
        if max_new_tokens is None:
            max_new_tokens = min(self.family.default_max_new_tokens, self.max_new_tokens_limit)
        self.max_new_tokens, self.constrained_decoding, frame_cache_size = \
            check.pipeline_options(max_new_tokens, constrained_decoding, frame_cache_size,
                                   self.max_new_tokens_limit)
        super().__init__(model, preprocessor, proposal_source, frame_cache_size)
        self.tokenizer = tokenizer
        self.prompts = self.family.prompts(tokenizer, model)
        self.prompt_tokenizer = getattr(self.prompts, "prompt_tokenizer", None)
        """VLM-FO1's :class:`~vlxseek_core.prompts.PromptTokenizer` (``None`` for others)."""
        self.end_ids = self.prompts.end_ids

    @property
    def tasks(self):
        """Task name → :class:`~vlxseek_core.prompts.TaskSpec` of the tasks this model has."""
        return self.family.tasks

    @classmethod
    def from_pretrained(cls, model_path: str, device: str = "auto", dtype="auto",
                        proposal_source: str = "none", proposal_model: Optional[str] = None,
                        proposal_min_score: Union[float, str] = "auto",
                        proposal_nms_iou: Union[float, str] = "auto",
                        max_proposals: int = MAX_PROPOSALS,
                        allow_key_mismatch: bool = False, attn_implementation: str = "auto",
                        compile_towers: Optional[str] = None, **kwargs) -> "VLXSeek":
        """Load a checkpoint directory (and optionally a proposal detector).

        Args:
            model_path: checkpoint directory (config.json, tokenizer, safetensors) of a
                registered family (``model_type`` ``omchat_qwen2_5_vl``: VLM-FO1,
                ``vlx_seek_1_5``: VLX-Seek 1.5), or a hub repo id (``owner/name``) fetched
                once with huggingface_hub (safetensors and config files only).
            device: ``cpu``, ``cuda[:N]`` or ``auto``.
            dtype: ``auto`` (bf16 on GPU, fp32 on CPU), ``float32``, ``bfloat16``, ``float16``
                or a ``torch.dtype``.
            proposal_source: ``omdet_turbo``, ``grounding_dino``, ``owlv2``, ``wedetect``
                (WeDetect-Base-Uni, VLX-Seek 1.5's detector; weights' licence unchecked) or
                ``none``.
            proposal_model: detector directory or hub id (``None`` = the kind's default).
            proposal_min_score, proposal_nms_iou: finite numbers, or ``"auto"``: the kind's
                reference values (0.3 / 0.8, spec §3.5; ``wedetect``: score > 0.0 / 0.7).
            max_proposals: int in ``[1, 100]``.
            allow_key_mismatch: run even if checkpoint keys do not match (testing only).
            attn_implementation: ``auto`` (flash-attention 2 on CUDA when installed, else
                sdpa), ``sdpa``, ``eager`` or ``flash_attention_2``.
            compile_towers: a ``torch.compile`` backend name (e.g. ``inductor``) to compile
                both vision towers with dynamic shapes; ``None`` keeps them eager.
            **kwargs: passed to :class:`VLXSeek` (``max_new_tokens``, ``constrained_decoding``,
                ``frame_cache_size``); other names are refused.

        Raises:
            InvalidRequestError: an argument of the wrong type or value (bad device, dtype,
                proposal kind, threshold, unknown keyword), checked before anything loads.
            CheckpointError: unreadable/incompatible checkpoint, an unsupported
                ``model_type`` (the message lists the supported ones), tokenizer,
                preprocessor config or detector.
            HubError: a repo id that cannot be fetched (offline, unknown repo).
        """
        from .hub import resolve_model_path

        ref_score, ref_iou = reference_thresholds(proposal_source)
        if isinstance(proposal_min_score, str) and proposal_min_score == "auto":
            proposal_min_score = ref_score
        if isinstance(proposal_nms_iou, str) and proposal_nms_iou == "auto":
            proposal_nms_iou = ref_iou
        load_args(model_path, device, dtype, proposal_source, proposal_model,
                  proposal_min_score, proposal_nms_iou, max_proposals, allow_key_mismatch,
                  attn_implementation, compile_towers, kwargs, PROPOSAL_KINDS,
                  lambda d: isinstance(d, torch.dtype))
        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        model_path = resolve_model_path(os.fspath(model_path))
        family = family_of_checkpoint(model_path)
        model, _ = family.load_model(model_path, torch_dtype, device, allow_key_mismatch,
                                     attn_implementation)
        if compile_towers:
            family.compile_towers(model, compile_towers)
        tokenizer = family.load_tokenizer(model_path)
        check_vocabulary(tokenizer, model.config.text_config.vocab_size, model_path)
        preprocessor = family.build_preprocessor(model_path, model)
        source = build_proposal_source(proposal_source, proposal_model, device=device,
                                       min_score=proposal_min_score, nms_iou=proposal_nms_iou,
                                       max_proposals=max_proposals)
        return cls(model, tokenizer, preprocessor, source, family=family, **kwargs)

    # ------------------------------------------------------------------ query

    def query(self, image, text: str = "", task: str = "detect", boxes=None, box_scores=None,
              region_indices: Optional[Sequence[int]] = None,
              max_new_tokens: Optional[int] = None, reuse_frame: bool = True,
              proposals: Optional[Proposals] = None,
              progress: Optional[QueryProgress] = None) -> QueryResult:
        """Answer one query about one image.

        Args:
            image: HWC (or HW) uint8 RGB numpy array or PIL image.
            text: categories (``"person; cup"``), expression or question, per task; a str of
                at most 4096 characters.
            task: one of :data:`vlxseek_core.TASKS` (``""`` = ``detect``).
            boxes: optional numeric ``[K, 4]`` xyxy original-pixel user boxes replacing
                proposals, ``K >= 1`` (``None``, not an empty array, selects the detector).
            box_scores: optional finite ``[K]`` scores for ``boxes`` (default 1.0).
            region_indices: regions that region tasks (caption, ocr, visual_prompt, …) refer
                to, as a 1-D integer sequence or array (numpy ints too, at most 100) of indices
                into the regions shown to the model (user boxes, ``proposals`` or the
                detector's); default: all user boxes.
            max_new_tokens: decoding budget, an int in ``[1, self.max_new_tokens_limit]``
                (the model's context length); default ``self.max_new_tokens``.
            reuse_frame: ``True``/``False``: use (and fill) the frame cache; ``False``
                recomputes everything. Greedy answers are identical either way.
            proposals: candidate regions from an external detector replacing the configured
                one (see :meth:`propose`); region index = row.
            progress: a :class:`~vlxseek_core.streaming.QueryProgress`: stage and per-token
                callbacks, and a cancel event checked between stages and at every decoding
                step. Set during decoding, it stops within one step (the result then has
                ``cancelled=True`` and the partial answer). Set earlier, the stages not yet
                begun are skipped: during the proposals, the towers and the HFRE do not run
                (and nothing of the frame is cached); during the towers or the prompt-prefix
                prefill (those finish and stay cached), nothing is decoded. Such a result has
                ``cancelled=True``, the warning ``"cancelled before decoding"``, an empty
                answer, no detections, and the proposals.

        Without regions (no ``boxes`` and no detector, a detector that finds nothing, or
        empty ``proposals``) a ``vqa`` question is answered from the image alone: its prompt
        has no region line (spec §3.2), like the general VQA data of training stage 2. Every
        other task is then not run (empty answer, warning ``"no regions: …"``).

        Returns:
            A new :class:`~vlxseek_core.types.QueryResult`; boxes in pixels of ``image``.

        Raises:
            InvalidImageError: unusable image.
            InvalidRequestError: bad text/task/boxes/scores/region indices/budget/flag, each
                checked before any model work (a region index against the number of regions
                as soon as the proposals are known); no boxes, no ``proposals`` and no
                detector for a task other than ``vqa``.
        """
        name = self.family.check_task(check.task(task, known=self.tasks))
        check.text(text, name)
        return self.query_many(image, [(text, name)], boxes=boxes, box_scores=box_scores,
                               region_indices=region_indices, max_new_tokens=max_new_tokens,
                               reuse_frame=reuse_frame, proposals=proposals,
                               progress=progress)[0]

    def query_many(self, image, queries: List[QuerySpec], task: str = "detect",
                   boxes=None, box_scores=None, region_indices: Optional[Sequence[int]] = None,
                   max_new_tokens: Optional[int] = None, reuse_frame: bool = True,
                   proposals: Optional[Proposals] = None,
                   progress: Optional[QueryProgress] = None) -> List[QueryResult]:
        """Answer several queries about one frame, encoding the frame once.

        Proposals, both towers, the HFRE and the LLM prefill of the shared prompt prefix
        (system turn, image and region tokens) run once; each query then only prefills its own
        text (on a copy of the prefix KV cache) and decodes.

        Args:
            queries: a ``list`` of texts (asked with ``task``) and/or ``(text, task)`` pairs
                (tuple or list of two; a ``None`` task means ``task``). An empty list returns
                ``[]`` once the other arguments are checked, without running the model.
            progress: as :meth:`query`; once cancelled, the remaining queries are not decoded
                (their results say ``cancelled=True``, ``"cancelled before decoding"``).
            other arguments: as :meth:`query`.

        Returns:
            One new :class:`QueryResult` per query, in order.

        Raises:
            InvalidImageError, InvalidRequestError: as :meth:`query`; every query is validated
            before any model work.
        """
        specs = check.queries(queries, check.task(task, known=self.tasks), self.tasks)
        frame = check.frame_args(image, boxes, box_scores, proposals, reuse_frame)
        indices = check.region_indices(region_indices)
        budget = check.max_new_tokens(max_new_tokens, self.max_new_tokens_limit)
        progress = check.progress(progress)
        check.regions_available(specs, indices, frame)
        for text, name in specs:  # what this model family cannot ask fails before any work
            self.family.check_task(name)
            self.prompts.check(name, text, indices, frame.boxes is not None)
        if not specs:
            return []
        with self._lock:
            boxless = [self.tasks[name].runs_without_regions for _, name in specs]
            enc = self._encode(frame, lambda n: check.indices_in_range(indices, n), progress,
                               need_image=any(boxless), image_only=all(boxless))
            return [self._answer(enc, text, name, indices, budget, frame.boxes is not None,
                                 progress) for text, name in specs]

    @torch.inference_mode()
    def _prefix(self, enc: FrameEncoding, key, timer: StageTimer):
        """``(prefix ids, cache)`` of the frame's prompt prefix for prefix key ``key`` (VLM-FO1:
        the system flag), computed once. The cache holds every layer's state (attention KV and,
        for hybrid models, the recurrent/convolution state); questions get deep copies."""
        if key not in enc.prefixes:
            with timer.stage("prefill_prefix"):
                ids = self.prompts.prefix_ids(key, enc)
                embeds, positions, _ = self.model.build_inputs_embeds(ids, enc.frame)
                out = self.model.model(inputs_embeds=embeds, position_ids=positions,
                                       use_cache=True)
            enc.prefixes[key] = (ids, output_cache(out))
        return enc.prefixes[key]

    def answer(self, enc: FrameEncoding, text: str = "", task: str = "detect",
               region_indices: Optional[Sequence[int]] = None,
               max_new_tokens: Optional[int] = None, user_boxes: bool = False) -> QueryResult:
        """Answer one query on an encoded frame (see :meth:`encode`).

        Args:
            enc: a :class:`FrameEncoding` returned by :meth:`encode`.
            user_boxes: ``True``/``False``: the frame's regions are user boxes, so a region
                task without ``region_indices`` refers to all of them.
            other arguments: as :meth:`query`.

        Returns:
            A new :class:`QueryResult` (its own proposal copies).

        Raises:
            InvalidRequestError: bad frame, text, task, region indices, budget or flag, all
                checked before decoding.
        """
        if not isinstance(enc, FrameEncoding):
            raise InvalidRequestError(f"enc must be a FrameEncoding from VLXSeek.encode, got "
                                      f"{type(enc).__name__}")
        name = self.family.check_task(check.task(task, known=self.tasks))
        text = check.text(text, name)
        indices = check.region_indices(region_indices)
        budget = check.max_new_tokens(max_new_tokens, self.max_new_tokens_limit)
        user_boxes = check.flag(user_boxes, "user_boxes")
        self.prompts.check(name, text, indices, user_boxes)
        return self._answer(enc, text, name, indices, budget, user_boxes)

    def _answer(self, enc: FrameEncoding, text: str, task: str,
                region_indices: Optional[List[int]], max_new_tokens: Optional[int],
                user_boxes: bool, progress: Optional[QueryProgress] = None) -> QueryResult:
        """:meth:`answer` of checked arguments; with ``progress`` cancelled, or an encoding
        left incomplete by a cancel, nothing is decoded (``cancelled=True``)."""
        spec = self.tasks[task]
        if not region_indices and spec.needs_regions and user_boxes:
            region_indices = list(range(len(enc.proposals)))
        check.indices_in_range(region_indices, len(enc.proposals))
        req = self.prompts.request(task, text, region_indices or (), enc)
        timer = StageTimer()
        result = QueryResult(task=task, query=text, prompt_text=req.prompt_text,
                             answer="", groundings=[], detections=[],
                             proposals=enc.proposals.copy(), image_size=enc.image_size,
                             warnings=list(enc.warnings))
        if not len(enc.proposals) and not spec.runs_without_regions:
            result.warnings.append("no regions: no candidate boxes were found or given, so "
                                   "the model was not run")
        elif enc.frame is None or (progress is not None and progress.cancelled):
            _cancelled_before_decoding(result)
        else:
            with self._lock:
                self._generate(enc, req, spec, result, timer, max_new_tokens, progress)
        frame_ms = enc.timings_ms if enc.answered == 0 else {}
        enc.answered += 1
        result.timings_ms = {**frame_ms, **timer.ms}
        return result

    @torch.inference_mode()
    def _generate(self, enc: FrameEncoding, req: PromptRequest, spec, result: QueryResult,
                  timer: StageTimer, max_new_tokens: Optional[int],
                  progress: Optional[QueryProgress] = None) -> None:
        key, suffix_ids = self.prompts.prompt_ids(req, enc)
        prefix_ids, prefix_cache = ([], None) if key is None else self._prefix(enc, key, timer)
        if progress is not None and progress.cancelled:  # cancelled during the prefill
            _cancelled_before_decoding(result)
            return
        input_ids = prefix_ids + suffix_ids
        embeds, position_ids, _ = self.model.build_inputs_embeds(input_ids, enc.frame)
        processors = []
        budget = max_new_tokens or self.max_new_tokens
        if self.constrained_decoding and spec.region_answer:
            processors.append(RegionAnswerLogitsProcessor(
                self.tokenizer, len(enc.proposals), trailing_text=(result.task == "count"),
                max_new_tokens=budget, **self.prompts.constraint_options))
        streamer, stopping = None, None
        if progress is not None:
            progress.stage("generate")
            streamer = AnswerStreamer(self.tokenizer, progress, clean=req.clean)
            stopping = [CancelCriteria(progress.cancel)]
        # the prefix stays reusable: each question decodes on a deep copy of its cache
        cache = {} if prefix_cache is None else {CACHE_KWARG: copy.deepcopy(prefix_cache)}
        with timer.stage("generate"):
            out = self.model.generate(
                inputs_embeds=embeds, position_ids=position_ids,
                attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long,
                                          device=embeds.device),
                **cache,
                max_new_tokens=budget, do_sample=False, num_beams=1,
                eos_token_id=self.end_ids, pad_token_id=self.end_ids[-1],
                logits_processor=processors or None, temperature=None, top_p=None,
                top_k=None, repetition_penalty=None, streamer=streamer,
                stopping_criteria=stopping)
        generated = out[0].tolist()
        result.num_generated_tokens = len(generated)
        raw = self.tokenizer.decode(generated, skip_special_tokens=False)
        ended = any(t in self.end_ids for t in generated)
        if progress is not None and progress.cancelled and not ended:
            result.cancelled = True
            result.warnings.append(f"cancelled after {len(generated)} tokens; the answer is "
                                   f"partial")
        elif not ended:
            result.warnings.append(f"answer cut off at max_new_tokens={budget}")
        fill_answer(result, req.clean(raw), self.family.index_tokens)

    _fill_answer = staticmethod(fill_answer)
    """VLM-FO1's answer reading (``<regionK>``), for callers that fill results themselves."""


def _cancelled_before_decoding(result: QueryResult) -> None:
    """Mark ``result`` as cancelled with nothing decoded (no answer, no detections)."""
    result.cancelled = True
    result.warnings.append("cancelled before decoding")
