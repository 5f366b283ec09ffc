"""How fast a random small LLM learns the two lookups that region tokens need (issue 9).

VLM-FO1 prompts list regions as ``<region0><regionfeat><region1><regionfeat>…``: each index token
comes *before* its feature row. Two lookups run over that list:

* **forward** (region caption: ``<regionK>`` → what its row holds): the answer position matches
  ``<regionK>`` against rows whose *previous* token is ``<regionK>`` and copies the row itself —
  a classic induction head (a previous-token head feeding the keys, K-composition);
* **reverse** (detection / REC: what a row holds → its ``<regionK>``): the answer position matches
  the row by content and must copy the *previous* token's identity out of it — the previous-token
  head must feed the values (V-composition).

This probe trains a stock transformers ``Qwen2ForCausalLM`` (the FO1 text model's family) from
random initialisation on a small synthetic vocabulary: words stand in for feature rows, so steps
take ~0.1 s on one CPU thread instead of seconds, and the lookups are isolated from the vision
side. Loss on the answer only, as in ``vlxseek train``. Tasks (``--tasks NAME=WEIGHT …``):

* ``caption``: every region in random order, ``<regionK> word`` per region (forward lookup);
* ``detect``: ``Please detect word`` → ``<ground>word</ground><objects><regionK></objects>``;
* ``detect_all``: every word with its region, in random order (reverse lookup, n per sample);
* ``echo``: ``<regionK> word`` at the end of the prompt → ``<regionK>`` (one hop: copy the
  token before the last one; not scored);
* ``detect_many``: 8 blocks of words drawn with replacement (8 lookups per sample that
  excluding cannot answer);
* ``recall``: a colour → the word of the one row of that colour (each word has a colour and a
  shape; one hop: match a row by an attribute and copy the row itself);
* ``recall_ground``: the same word after ``<ground>colour</ground><objects>`` (the gather
  hop of the FO1 answer plus the row match, without the index read-out);
* ``detect_colour``: a colour → the region of the row of that colour (reverse lookup by an
  attribute, like "the red one"); ``detect_shape``: the same by the shape ("the circle").
* ``detect_pair``, ``detect_all_pair``: ``detect`` and ``detect_all`` with each row named by
  two tokens, its colour then its shape (the scenes' "red" " circle"), among rows that may
  share either (the conjunction lookup; ``--by-length-task detect_all_pair`` scores it).

``--curriculum 2-2:800 3-3:800 2-4:1000`` runs phases of region counts one after another (fixed
list lengths first form the reverse lookup far sooner than mixed ones; README). A phase may
add ``:features``, ``:mixed`` or ``:pooled`` (``--rows``) and then a number of random "image"
tokens after the prefix (``2-2:500:features:16``: the layout of a scene prompt, whose image
block precedes the rows; text-region records have none): the rows of the prompt's list are
then feature vectors instead of word tokens (all of them, or each with probability
``--mixed-p``), standing in for the region features of images. A row's feature is
``colour code + shape code + noise`` (fixed random codes of ``--feature-dim``, noise
``--feature-noise``), read through a trainable two-layer MLP connector (FO1's
``mm_projector_aux``) into the LLM's embedding space, while the answer names the row by its
word token: the cross-modal match that image rows need.
``pooled`` rows are one position each too, the mean of the LLM's own embedding rows of the
word's two-token label (a text phrase pooled to an image row's one position).
``--same-colour``, ``--freeze-llm`` and ``--weight-decay`` are the levers of
docs/scene-model-notes.md "The single-attribute plateau".
``--region-ids`` numbers the rows ``<region0..n-1>`` in order (FO1, default), shuffled, or with
any n of the 100.

Printed every ``--log-every`` steps: ``first_region_acc`` — the first region token of each
detect/detect_all answer (no exclusion shortcut: chance = mean 1/n), ``region_acc`` — all region
tokens (later ones can be guessed by excluding the regions already named), ``word_acc`` (the
words of caption and recall answers).
Results on this project's CPU are in README "Procedural scenes and the scene model".
"""
from __future__ import annotations

import argparse
import math
import random
import time
from typing import Dict, List

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from benchmarks.lookup_tasks import (GROUND, GROUND_END, N_COLOURS, N_SHAPES, NONE, OBJECTS,
                                     OBJECTS_END, REGION_IDS, REGIONS, ROWS, VOCAB, WORDS,
                                     Phase, batch, make_sample, pair_label, parse_curriculum,
                                     phase_at, phase_at_start)


def _after_region(ids: torch.Tensor) -> torch.Tensor:
    """bool ``[B, L]``: the words right after a ``<regionK>`` token."""
    rows = torch.zeros_like(ids, dtype=torch.bool)
    rows[:, 1:] = ((ids[:, :-1] < len(REGIONS)) & (ids[:, 1:] >= WORDS[0])
                   & (ids[:, 1:] <= WORDS[-1]))
    return rows


def list_rows(ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """bool ``[B, L]``: the prompt's rows (a word right after a ``<regionK>``, not answer)."""
    return _after_region(ids) & (labels == -100)


class FeatureRows(torch.nn.Module):
    """Stand-in region features: word w's row is ``colour[c(w)] + shape[s(w)] + noise``
    (fixed random codes, float32 ``[feature_dim]``), mapped into the LLM's embedding space
    by a trainable two-layer GELU MLP (FO1's region-language connector)."""

    def __init__(self, feature_dim: int, hidden: int, noise: float, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed + 1)
        self.register_buffer("colour", torch.randn(N_COLOURS, feature_dim, generator=gen))
        self.register_buffer("shape", torch.randn(N_SHAPES, feature_dim, generator=gen))
        self.noise = noise
        self.connector = torch.nn.Sequential(torch.nn.Linear(feature_dim, hidden),
                                             torch.nn.GELU(), torch.nn.Linear(hidden, hidden))

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        """Long ``[N]`` word ids → float ``[N, hidden]`` row embeddings."""
        w = words - WORDS[0]
        feat = self.colour[w % N_COLOURS] + self.shape[w // N_COLOURS]
        return self.connector(feat + self.noise * torch.randn_like(feat))


class PooledRows(torch.nn.Module):
    """Rows made of the LLM's own token rows: word w's row is the mean of the input embeddings
    of its two-token label (:func:`~benchmarks.lookup_tasks.pair_label`, colour then shape),
    float ``[hidden]`` at one position, as an image row is one position (``--rows pooled``: a
    phrase row pooled to one position instead of one position per token)."""

    def __init__(self, embedding: torch.nn.Embedding):
        super().__init__()
        self.embedding = [embedding]  # a list: not a submodule (its weight is the LLM's)
        self.register_buffer("labels", torch.tensor([pair_label(w) for w in WORDS]),
                             persistent=False)

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        """Long ``[N]`` word ids → float ``[N, hidden]`` row embeddings."""
        return self.embedding[0](self.labels[words - WORDS[0]]).mean(1)


def with_row_echo(ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``labels`` plus, at every row of the prompt's list (a word after a ``<regionK>``), the
    target ``<regionK>`` (the ``--row-echo`` curriculum: each row must hold the index before
    it in a form the output head reads). Labels are next-token targets, so the label goes on
    the position after the row."""
    out = labels.clone()
    rows = _after_region(ids)[:, :-1].nonzero()  # label at row position + 1, if that is unlabelled
    for b, t in rows.tolist():
        if out[b, t + 1] == -100:
            out[b, t + 1] = ids[b, t - 1]
    return out


def with_list_loss(ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``labels`` plus the prompt's region index tokens: each ``<regionK>`` of the list is
    also predicted from the row before it (the ``--list-loss`` curriculum)."""
    out = labels.clone()
    in_list = (ids < len(REGIONS)) & (labels == -100) & mask.bool()  # padding is id 0
    out[in_list] = ids[in_list]
    return out


def sparse_loss(model, ids, mask, labels, loss_labels, rows=None, features=None,
                per_sample: bool = False):
    """Mean next-token cross-entropy on ``loss_labels`` (over all of the batch's labelled
    tokens, or with ``per_sample`` each sample's mean, averaged over samples: ``vlxseek
    train``'s weighting) and the most likely next tokens where
    ``loss_labels`` are set or ``labels`` name a region, NONE or a word (-1 elsewhere): the
    output projection runs only at those positions, which keeps a 151,936-token vocabulary
    affordable (``--vocab``). ``rows`` (bool ``[B, L]``): positions whose embedding is
    ``features`` (a FeatureRows) of their word instead of the word's own row."""
    embeds = model.get_input_embeddings()(ids)
    if rows is not None and rows.any():
        embeds = embeds.masked_scatter(rows[..., None], features(ids[rows]).to(embeds.dtype))
    hidden = model.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[:, :-1]
    targets = loss_labels[:, 1:]
    scored = region_choices_only(labels[:, 1:], words=True) != -100  # what accuracies() reads
    at = (targets != -100) | scored
    logits = model.lm_head(hidden[at]).float()
    trained = targets[at] != -100
    token_loss = torch.nn.functional.cross_entropy(logits[trained], targets[at][trained],
                                                   reduction="none")
    if per_sample:
        sample = torch.arange(len(ids))[:, None].expand_as(at)[at][trained]
        sums = torch.zeros(len(ids)).index_add(0, sample, token_loss)
        counts = torch.zeros(len(ids)).index_add(0, sample, torch.ones_like(token_loss))
        loss = (sums[counts > 0] / counts[counts > 0]).mean()
    else:
        loss = token_loss.mean()
    pred = torch.full_like(ids, -1)
    pred[:, :-1][at] = logits.argmax(-1)
    return loss, pred


def region_choices_only(labels: torch.Tensor, words: bool = False) -> torch.Tensor:
    """``labels`` with -100 everywhere but the region tokens and NONE (``--loss-on regions``),
    and with ``words`` the words too (``choices``: the markup tokens are left out)."""
    keep = ((labels >= 0) & (labels < len(REGIONS))) | (labels == NONE)
    if words:
        keep |= (labels >= WORDS[0]) & (labels <= WORDS[-1])
    return torch.where(keep, labels, torch.full_like(labels, -100))


def accuracies(pred, labels, is_caption) -> Dict[str, float]:
    """first_region_acc, region_acc (detect rows), word_acc (caption / recall rows) and
    rejection_acc (NONE answers) of ``pred`` (long ``[B, L]``: the most likely next token at
    each position)."""
    target, pred = labels[:, 1:], pred[:, :-1]
    region = (target >= 0) & (target < len(REGIONS)) & ~is_caption[:, None]
    first = region & (region.cumsum(1) == 1)
    word = (target >= WORDS[0]) & (target <= WORDS[-1]) & is_caption[:, None]
    out = {}
    for name, sel in (("first_region_acc", first), ("region_acc", region),
                      ("word_acc", word), ("rejection_acc", target == NONE)):
        out[name] = (pred[sel] == target[sel]).float().mean().item() if sel.any() else float("nan")
    return out


def feature_row_mask(ids: torch.Tensor, labels: torch.Tensor, rows_mode: str,
                     mixed_p: float) -> torch.Tensor:
    """bool ``[B, L]``: the prompt rows that take a feature row under ``rows_mode`` (none for
    ``words``, every row for ``features`` and ``pooled``, each with probability ``mixed_p``
    for ``mixed``)."""
    rows = list_rows(ids, labels)
    if rows_mode == "words":
        rows[:] = False
    elif rows_mode == "mixed":
        rows &= torch.rand(rows.shape) < mixed_p
    return rows


def first_region_by_length(model, features, lengths: List[int], a, phase: "Phase",
                           rng: random.Random, samples: int = 256,
                           task: str = "detect_all") -> Dict[int, float]:
    """First-region accuracy of ``task`` prompts (``detect_all``, or ``detect_all_pair``: rows
    named by colour and shape) of each list length in ``lengths``
    (``samples`` fresh ones each, rows and image tokens as ``phase``'s, nothing trained): a
    lookup that searches the rows by content scores alike on every length, one bound to the
    lengths it was trained on falls to chance on the others (docs/scene-model-notes.md "Why
    the lookup sits near 0.7")."""
    _, _, _, rows_mode, image = phase
    out = {}
    model.eval()
    with torch.no_grad():
        for n in lengths:
            tasks = [task] * samples
            ids, labels, mask, is_caption = batch(
                [make_sample(t, rng, n, n, a.prefix, a.fixed_prefix, a.region_ids, 0.0,
                             a.task_text, image) for t in tasks], tasks)
            rows = feature_row_mask(ids, labels, rows_mode, a.mixed_p)
            _, pred = sparse_loss(model, ids, mask, labels, labels, rows, features)
            out[n] = accuracies(pred, labels, is_caption)["first_region_acc"]
    model.train()
    return out


def learning_rate(peak: float, step: int, phase_start: int, warmup: int, cosine_steps: int,
                  total: int) -> float:
    """The rate of 1-based ``step``: a linear warm-up over ``warmup`` steps from
    ``phase_start``, then ``peak``; over the last ``cosine_steps`` of ``total`` it falls on a
    cosine towards 0 (``--cosine-last``; 0: constant)."""
    rate = peak * min(1.0, (step - phase_start) / max(warmup, 1))
    before = total - cosine_steps
    if cosine_steps and step > before:
        rate *= 0.5 * (1 + math.cos(math.pi * (step - before - 1) / cosine_steps))
    return rate


def main(argv=None) -> Dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=["detect_all=1"], help="NAME=WEIGHT ...")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--rope-theta", type=float, default=1e6)
    p.add_argument("--min-regions", type=int, default=2)
    p.add_argument("--max-regions", type=int, default=8)
    p.add_argument("--curriculum", nargs="+", default=None, metavar="MIN-MAX:STEPS",
                   help="phases of region counts run one after another (e.g. 2-2:1000 "
                        "2-4:1000); replaces --steps, --min-regions and --max-regions")
    p.add_argument("--region-ids", default="ordered", choices=REGION_IDS,
                   help="the rows' <regionK> tokens: 0..n-1 in order (FO1), shuffled, or "
                        "random ones of the 100")
    p.add_argument("--absent", type=float, default=0.0,
                   help="detect_all: share of samples that also name one absent word (NONE)")
    p.add_argument("--same-colour", type=float, default=0.0,
                   help="pair tasks: share of training samples whose rows all share one "
                        "colour (the shape alone picks the target; scored samples never)")
    p.add_argument("--task-text", type=int, default=0,
                   help="detect_all: fixed tokens after the query (the task text)")
    p.add_argument("--loss-on", default="answer", choices=("answer", "regions", "choices"),
                   help="regions: only the region tokens and NONE; choices: also the words "
                        "of the answer (the <ground> words; vlxseek train --loss-on)")
    p.add_argument("--vocab", type=int, default=VOCAB,
                   help="vocabulary size (the tokens past the probe's own are never input; "
                        "151936 = the FO1 vocabulary's softmax and tied embedding)")
    p.add_argument("--beta2", type=float, default=0.999, help="AdamW beta2")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="AdamW's decoupled weight decay (every trained parameter)")
    p.add_argument("--embedding-lr-scale", type=float, default=1.0,
                   help="learning-rate multiplier of the (tied) embedding")
    p.add_argument("--freeze-llm", action="store_true",
                   help="train the feature rows' connector alone (the paper's stage 1, as 1a: "
                        "feature rows aligned to what a frozen LLM reads)")
    p.add_argument("--freeze-vocab", action="store_true",
                   help="keep the (tied) embedding rows of every token but the region tokens, "
                        "NONE and the markup at their random initialisation")
    p.add_argument("--prefix", type=int, default=20, help="filler tokens before the list")
    p.add_argument("--fixed-prefix", action="store_true",
                   help="the same filler in every sample (a system turn), not random tokens")
    p.add_argument("--list-loss", action="store_true",
                   help="also predict each <regionK> of the prompt's list from the row before it")
    p.add_argument("--row-echo", action="store_true",
                   help="also predict, at every row of the list, the <regionK> before it")
    p.add_argument("--rows", default="words", choices=ROWS,
                   help="the prompt's rows: word tokens, feature vectors (all), mixed (each "
                        "with probability --mixed-p) or pooled (the mean of the LLM's rows of "
                        "the word's two-token label, one position); a curriculum phase may "
                        "override it")
    p.add_argument("--mixed-p", type=float, default=0.5)
    p.add_argument("--feature-dim", type=int, default=64)
    p.add_argument("--feature-noise", type=float, default=0.3)
    p.add_argument("--connector-lr-scale", type=float, default=1.0,
                   help="learning-rate multiplier of the feature rows' connector")
    p.add_argument("--loss-mean", default="token", choices=("token", "sample"),
                   help="the loss's mean over the batch's labelled tokens, or each sample's "
                        "mean averaged over samples (as vlxseek train)")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start the LLM from a vlxseek checkpoint's text model (its sizes and "
                        "its prompt layout replace --hidden/--layers/--heads and --prefix/"
                        "--task-text; benchmarks/lookup_from_checkpoint.py)")
    p.add_argument("--reset-optimizer", action="store_true",
                   help="fresh AdamW moments and warm-up at each curriculum phase (as the "
                        "recipe's one `vlxseek train` run per phase)")
    p.add_argument("--cosine-last", action="store_true",
                   help="the last curriculum phase's rate falls to 0 on a cosine (the "
                        "recipe's 2-6 phase: a falling rate settles the search)")
    p.add_argument("--save-state", default=None, metavar="PATH",
                   help="at the end, write the LLM's and the connector's weights here")
    p.add_argument("--load-state", default=None, metavar="PATH",
                   help="start from weights written by --save-state (same sizes and seed: "
                        "the feature codes come from --seed)")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--by-length", nargs="+", type=int, default=None, metavar="N",
                   help="at every log line, also the first-region accuracy of detect_all "
                        "prompts of each of these list lengths (fresh samples, untrained)")
    p.add_argument("--by-length-task", default="detect_all",
                   choices=("detect_all", "detect_all_pair"),
                   help="the task --by-length scores (detect_all_pair: rows named by colour "
                        "and shape)")
    a = p.parse_args(argv)
    if a.by_length and not all(1 <= n <= len(WORDS) for n in a.by_length):
        p.error(f"--by-length: list lengths are 1..{len(WORDS)}")
    phases = (parse_curriculum(a.curriculum, a.rows) if a.curriculum
              else [(a.min_regions, a.max_regions, a.steps, a.rows, 0)])
    a.steps = sum(phase[2] for phase in phases)
    state, kv_heads, intermediate = None, a.heads, 4 * a.hidden
    if a.init_from:
        if a.vocab != VOCAB:
            p.error("--init-from keeps the sandbox's own vocabulary (no --vocab)")
        from benchmarks.lookup_from_checkpoint import sandbox_state

        state, info = sandbox_state(a.init_from)
        a.hidden, a.layers, a.heads, a.rope_theta = (info[k] for k in (
            "hidden", "layers", "heads", "rope_theta"))
        kv_heads, intermediate = info["kv_heads"], info["intermediate"]
        a.prefix, a.task_text, a.fixed_prefix = info["prefix"], info["task_text"], True
    names, weights = zip(*((t.split("=")[0], float(t.split("=")[1])) for t in a.tasks))
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    config = Qwen2Config(vocab_size=max(a.vocab, VOCAB), hidden_size=a.hidden,
                         intermediate_size=intermediate, num_hidden_layers=a.layers,
                         num_attention_heads=a.heads,
                         num_key_value_heads=kv_heads, rope_theta=a.rope_theta,
                         tie_word_embeddings=True, max_position_embeddings=4096)
    model = Qwen2ForCausalLM(config).train()
    if state is not None:
        model.load_state_dict(state, strict=True)
    features = FeatureRows(a.feature_dim, a.hidden, a.feature_noise, a.seed)
    pooled = PooledRows(model.get_input_embeddings())

    def row_module(rows_mode: str) -> torch.nn.Module:
        """What embeds a phase's non-word rows: the pooled labels or the feature rows."""
        return pooled if rows_mode == "pooled" else features
    if a.load_state:
        saved = torch.load(a.load_state, weights_only=True)
        model.load_state_dict(saved["model"])
        features.load_state_dict(saved["features"])
    if a.freeze_vocab:  # like stage 1's row freezing (training/freezing.py): only the rows of
        # the tokens FO1 adds (here the regions, NONE and the markup) train
        trainable = torch.zeros(config.vocab_size, 1)
        trainable[REGIONS + [GROUND, GROUND_END, OBJECTS, OBJECTS_END, NONE]] = 1
        model.get_input_embeddings().weight.register_hook(lambda grad: grad * trainable)
    embedding = model.get_input_embeddings().weight
    connector = {"params": list(features.parameters()), "scale": a.connector_lr_scale}
    if a.freeze_llm:  # stage 1's split: the LLM (and its embedding) frozen, the connector trains
        model.requires_grad_(False)
        groups = [connector]
    else:
        groups = [{"params": [p for p in model.parameters() if p is not embedding]}, connector,
                  {"params": [embedding], "scale": a.embedding_lr_scale}]
    opt = torch.optim.AdamW(groups, lr=a.lr, weight_decay=a.weight_decay,
                            betas=(0.9, a.beta2))
    regions = " then ".join(f"{lo}-{hi} regions as {rows} after {image} image tokens "
                            f"({n} steps)" for lo, hi, n, rows, image in phases)
    start_from = f", from {a.init_from}" if a.init_from else ""
    print(f"probe_lookup: tasks {' '.join(a.tasks)}, LLM {a.layers} layers x {a.hidden} "
          f"({a.heads} heads{start_from}), lr {a.lr}, batch {a.batch_size}, loss mean per "
          f"{a.loss_mean}, {regions} "
          f"({a.region_ids} ids) after {a.prefix} "
          f"{'fixed' if a.fixed_prefix else 'random'} filler tokens, "
          f"torch threads {torch.get_num_threads()}")
    start, window, summary = time.time(), [], {}
    phase_start = 0
    for step in range(1, a.steps + 1):
        if a.reset_optimizer and step > 1 and phase_at_start(phases, step):
            opt.state.clear()  # as a new `vlxseek train` run per phase: fresh moments, warm-up
            phase_start = step - 1
        rate = learning_rate(a.lr, step, phase_start, a.warmup,
                             phases[-1][2] if a.cosine_last else 0, a.steps)
        for group in opt.param_groups:
            group["lr"] = rate * group.get("scale", 1.0)
        tasks = rng.choices(names, weights, k=a.batch_size)
        lo, hi, rows_mode, image = phase_at(phases, step)
        ids, labels, mask, is_caption = batch(
            [make_sample(t, rng, lo, hi, a.prefix, a.fixed_prefix,
                         a.region_ids, a.absent, a.task_text, image, a.same_colour)
             for t in tasks], tasks)
        rows = feature_row_mask(ids, labels, rows_mode, a.mixed_p)
        loss_labels = with_list_loss(ids, labels, mask) if a.list_loss else labels
        if a.loss_on != "answer":
            loss_labels = region_choices_only(loss_labels, words=a.loss_on == "choices")
        loss, pred = sparse_loss(model, ids, mask, labels,
                                 with_row_echo(ids, loss_labels) if a.row_echo else loss_labels,
                                 rows, row_module(rows_mode), per_sample=a.loss_mean == "sample")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(features.parameters()),
                                       1.0)
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            window.append(dict(accuracies(pred, labels, is_caption), loss=loss.item()))
        if step % a.log_every == 0 or step == a.steps:
            summary = {k: _nanmean([w[k] for w in window]) for k in window[0]}
            by_length = ""
            if a.by_length:
                # the same prompts at every log line (their own stream), so that lines compare
                acc = first_region_by_length(model, row_module(phases[-1][3]), a.by_length, a,
                                             phases[-1],
                                             random.Random(a.seed + 10 ** 6),
                                             task=a.by_length_task)
                summary.update({f"first_region_acc_n{n}": v for n, v in acc.items()})
                by_length = "  by length " + " ".join(f"{n}:{v:.2f}" for n, v in acc.items())
            print(f"step {step:5d}  {time.time() - start:6.0f} s  "
                  + "  ".join(f"{k} {v:.3f}" for k, v in summary.items()
                              if not k.startswith("first_region_acc_n")) + by_length,
                  flush=True)
            window = []
    if a.save_state:
        torch.save({"model": model.state_dict(), "features": features.state_dict()},
                   a.save_state)
    return summary


def _nanmean(values: List[float]) -> float:
    kept = [v for v in values if v == v]
    return sum(kept) / len(kept) if kept else float("nan")


if __name__ == "__main__":
    main()
