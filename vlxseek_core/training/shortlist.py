"""Vocabulary shortlist of the training loss: a softmax over the data's tokens (issue 9).

Why: a model trained from random initialisation here (README "Procedural scenes and the scene
model") has an LLM 128 wide and the Qwen2 vocabulary of 151,936 rows. Its answers and prompts use
a few hundred of those, yet every answer position of every step projects onto all rows and
normalises over them: the projection, its softmax and their gradients are half of a training
step on a CPU. With ``vlxseek train --loss-vocab data`` the loss's softmax runs over the
*shortlist* instead: every token id that occurs in the training records (prompts and answers)
plus every added token of the tokenizer (``<regionK>``, the answer markup, the chat tokens), so
the markup and region tokens still compete with each other at every position.

The rows off the shortlist still count: one more column of the softmax stands for all of them,
estimated each step from 4,096 rows drawn at random (sampled softmax with a uniform proposal),
so the gradient keeps pushing their logits down as the full softmax would, at 1/37 of its cost.
Without that column the argmax stays on the trained tokens, but the full softmax puts most of its
mass on the untrained rows. The model and its checkpoint are unchanged (same architecture, same
full ``lm_head``), and inference always takes the argmax over all rows.
:func:`off_shortlist_mass` measures the probability the full softmax puts outside the
shortlist. The small model's recipe (``scripts/train_small_model.sh``) uses the shortlist with
its sampled column in the paper's stages 1 and 2 too: the model is trained from random
initialisation throughout, and the column keeps the off-shortlist mass drained.
"""
from __future__ import annotations

import math
from typing import Iterable, Tuple

import torch
from torch import nn

from ..errors import InvalidRequestError
from ..tokens import IMAGE_PLACEHOLDER_ID, REGION_FEATURE_PLACEHOLDER_ID
from .samples import SampleBuilder

NEGATIVES = 4096
"""Rows off the shortlist drawn per step for the estimate of their share of the softmax
(:func:`shortlist_logits`; 2.7 % of the Qwen2 vocabulary)."""


def data_shortlist(records: Iterable[dict], builder: SampleBuilder, tokenizer) -> torch.Tensor:
    """The shortlist of ``records``: sorted unique vocabulary ids of their prompts and answers
    (as :meth:`SampleBuilder.token_ids` builds them, without the image and region-feature
    placeholders) and every added token of ``tokenizer``.

    Records that share their conversations, boxes count and region texts share their ids, so
    each distinct one is tokenized once.

    Returns:
        long ``[V']``, sorted ascending.

    Raises:
        InvalidRequestError: a malformed record (as :meth:`SampleBuilder.build`).
    """
    ids = set(tokenizer.get_added_vocab().values())
    seen = set()
    for record in records:
        key = (repr(record.get("conversations")), repr(record.get("task")),
               repr(record.get("query")), repr(record.get("region_indices")),
               len(record.get("bbox_list") or ()), repr(record.get("text_regions")))
        if key in seen:
            continue
        seen.add(key)
        prompt, answer = builder.token_ids(record)
        ids.update(prompt)
        ids.update(answer)
    # the image and region-feature placeholders (negative ids) become feature rows in the
    # splice, never vocabulary rows: as indices into lm_head they would pick rows from its end
    ids.difference_update((IMAGE_PLACEHOLDER_ID, REGION_FEATURE_PLACEHOLDER_ID))
    return torch.tensor(sorted(ids), dtype=torch.long)


def shortlist_targets(shortlist: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Positions of ``targets`` (token ids) in the sorted ``shortlist``.

    Args:
        shortlist: long ``[V']``, sorted ascending.
        targets: long ``[N]`` token ids.

    Returns:
        long ``[N]`` indices into ``shortlist``.

    Raises:
        InvalidRequestError: a target that is not in the shortlist (the shortlist was not
            built from these records).
    """
    pos = torch.searchsorted(shortlist, targets).clamp(max=len(shortlist) - 1)
    missing = shortlist[pos] != targets
    if bool(missing.any()):
        raise InvalidRequestError(
            f"answer token ids {sorted(set(targets[missing].tolist()))[:10]} are not in the "
            "loss's vocabulary shortlist (it must be built from the training records)")
    return pos


def shortlist_logits(lm_head: nn.Module, hidden: torch.Tensor, shortlist: torch.Tensor,
                     negatives: int = NEGATIVES) -> torch.Tensor:
    """``lm_head(hidden)`` on the shortlist's rows, plus one column that stands for all other
    rows: a sampled-softmax estimate of their log-sum-exp.

    The estimate draws ``negatives`` rows uniformly (with replacement) from the rows off the
    shortlist, shared by all positions, and takes ``log(N_off / negatives) + logsumexp`` of
    their logits (an unbiased estimate of the off-shortlist partition). Why: without it
    the rows off the shortlist are never pushed down, and although the argmax stays on the
    trained tokens, the full softmax then puts most of its mass on the ~151,700 rows nobody
    trained (0.92 on average after a short run) — a model the paper's stages 1 and 2, which use
    the full softmax, would first have to recalibrate.

    Args:
        lm_head: the output projection (a linear layer; its ``weight`` may be tied to the
            input embedding).
        hidden: ``[N, hidden]``.
        shortlist: long ``[V']``, sorted ascending.
        negatives: rows drawn for the estimate (0: none, the softmax over the shortlist only).

    Returns:
        ``[N, V' + 1]`` logits in ``hidden``'s dtype (``[N, V']`` when ``negatives`` is 0 or
        the shortlist holds every row); column ``k < V'`` is ``shortlist[k]``'s.
    """
    weight = lm_head.weight
    bias = getattr(lm_head, "bias", None)
    logits = nn.functional.linear(hidden, weight[shortlist],
                                  None if bias is None else bias[shortlist])
    num_off = weight.shape[0] - len(shortlist)
    if negatives <= 0 or num_off <= 0:
        return logits
    off = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
    off[shortlist] = False
    off_ids = off.nonzero()[:, 0]
    drawn = off_ids[torch.randint(num_off, (negatives,), device=weight.device)]
    sampled = nn.functional.linear(hidden, weight[drawn], None if bias is None else bias[drawn])
    rest = torch.logsumexp(sampled, dim=-1, keepdim=True) + math.log(num_off / negatives)
    return torch.cat([logits, rest], dim=-1)


@torch.no_grad()
def off_shortlist_mass(lm_head: nn.Module, hidden: torch.Tensor,
                       shortlist: torch.Tensor) -> Tuple[float, float]:
    """How much the full softmax puts outside the shortlist at ``hidden``'s positions.

    Args:
        lm_head: the output projection.
        hidden: ``[N, hidden]`` last hidden states (answer positions).
        shortlist: long ``[V']``.

    Returns:
        ``(mean, max)`` over the positions of the probability mass off the shortlist
        (0 = the shortlist loss is the full loss).
    """
    logp = torch.log_softmax(lm_head(hidden).float(), dim=-1)
    inside = torch.logsumexp(logp[:, shortlist], dim=-1).exp()
    off = (1.0 - inside).clamp(min=0.0)
    return float(off.mean()), float(off.max())
