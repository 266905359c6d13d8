"""BLIP captioning on ONNX Runtime: vision encoder, then greedy or beam decoding with a KV cache.

Written once and shared: the local backend uses ORT sessions; a Triton BLS model passes its own
`run_init` / `run_step` callables (which call the `blip_decoder_init` / `blip_decoder_step` models)
to `greedy_search` / `beam_search`, which only see dicts of numpy arrays. Torch-free.

The decoding reproduces `BlipForConditionalGeneration.generate(pixel_values, input_ids=prompt,
num_beams=..., do_sample=False)` of transformers 5: ids include the prompt (BOS first), rows that
finished are padded, and beam search follows transformers' vectorized beam search (length penalty,
`early_stopping=False` heuristic, EOS handling, output cropping).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from runtime.manifest import BLIP_DECODER_INIT, BLIP_DECODER_STEP, BLIP_VISION, Manifest
from runtime.sessions import create_session

if TYPE_CHECKING:
    from preprocessing.blip_tokenizer import BlipTokenizer
    from preprocessing.image import ImageSpec

Feeds = dict[str, np.ndarray]
RunGraph = Callable[[Feeds], Mapping[str, np.ndarray]]

_NEG = np.float32(-1.0e9)  # transformers' "impossible" score in beam search


@dataclass(frozen=True)
class DecoderSpec:
    """Tensor names and sizes of the two decoder graphs (stored as the manifest's blip.decoder).

    init:  input_ids [B,T], image_embeds [B,N,D] -> logits [B,V] (last position only),
           present.{i}.decoder.key/value [B,H,T,hd] (self-attention), present.{i}.encoder.key/value
           [B,H,N,hd] (cross-attention over the image, computed once).
    step:  input_ids [B,1], past_key_values.{i}.decoder.* [B,H,P,hd], past_key_values.{i}.encoder.*
           -> logits [B,V], present.{i}.decoder.* [B,H,P+1,hd].
    """

    num_layers: int
    num_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int

    @staticmethod
    def self_past(layer: int) -> tuple[str, str]:
        return f"past_key_values.{layer}.decoder.key", f"past_key_values.{layer}.decoder.value"

    @staticmethod
    def self_present(layer: int) -> tuple[str, str]:
        return f"present.{layer}.decoder.key", f"present.{layer}.decoder.value"

    @staticmethod
    def cross_past(layer: int) -> tuple[str, str]:
        return f"past_key_values.{layer}.encoder.key", f"past_key_values.{layer}.encoder.value"

    @staticmethod
    def cross_present(layer: int) -> tuple[str, str]:
        return f"present.{layer}.encoder.key", f"present.{layer}.encoder.value"

    def init_inputs(self) -> list[str]:
        return ["input_ids", "image_embeds"]

    def init_outputs(self) -> list[str]:
        names = ["logits"]
        for layer in range(self.num_layers):
            names += [*self.self_present(layer), *self.cross_present(layer)]
        return names

    def step_inputs(self) -> list[str]:
        names = ["input_ids"]
        for layer in range(self.num_layers):
            names += [*self.self_past(layer), *self.cross_past(layer)]
        return names

    def step_outputs(self) -> list[str]:
        names = ["logits"]
        for layer in range(self.num_layers):
            names += list(self.self_present(layer))
        return names

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "logits": "last position only, [batch, vocab]",
            "init_inputs": self.init_inputs(),
            "init_outputs": self.init_outputs(),
            "step_inputs": self.step_inputs(),
            "step_outputs": self.step_outputs(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DecoderSpec":
        return cls(*(int(data[k]) for k in ("num_layers", "num_heads", "head_dim", "hidden_size", "vocab_size")))


@dataclass
class _DecoderState:
    """What one decoding step needs besides the new token: self KV (grows) and cross KV (fixed)."""

    self_kv: Feeds
    cross_kv: Feeds

    def take(self, rows: np.ndarray) -> "_DecoderState":
        return _DecoderState({k: v[rows] for k, v in self.self_kv.items()}, {k: v[rows] for k, v in self.cross_kv.items()})


class _Decoder:
    """Adapts the two graph callables to (logits, state) steps; names come from the DecoderSpec."""

    def __init__(self, spec: DecoderSpec, run_init: RunGraph, run_step: RunGraph) -> None:
        self.spec, self.run_init, self.run_step = spec, run_init, run_step

    def init(self, input_ids: np.ndarray, image_embeds: np.ndarray) -> tuple[np.ndarray, _DecoderState]:
        out = self.run_init({"input_ids": input_ids.astype(np.int64), "image_embeds": image_embeds})
        self_kv, cross_kv = {}, {}
        for layer in range(self.spec.num_layers):
            for past, present in zip(self.spec.self_past(layer), self.spec.self_present(layer)):
                self_kv[past] = out[present]
            for past, present in zip(self.spec.cross_past(layer), self.spec.cross_present(layer)):
                cross_kv[past] = out[present]
        return out["logits"], _DecoderState(self_kv, cross_kv)

    def step(self, tokens: np.ndarray, state: _DecoderState) -> tuple[np.ndarray, _DecoderState]:
        feeds = {"input_ids": tokens.reshape(-1, 1).astype(np.int64), **state.self_kv, **state.cross_kv}
        out = self.run_step(feeds)
        self_kv = {}
        for layer in range(self.spec.num_layers):
            for past, present in zip(self.spec.self_past(layer), self.spec.self_present(layer)):
                self_kv[past] = out[present]
        return out["logits"], _DecoderState(self_kv, state.cross_kv)


def _prompt_batch(prompt_ids: Sequence[int] | np.ndarray, batch: int) -> np.ndarray:
    prompt = np.asarray(prompt_ids, dtype=np.int64)
    if prompt.ndim == 1:
        prompt = np.broadcast_to(prompt, (batch, prompt.shape[0]))
    if prompt.shape[0] != batch or prompt.shape[1] < 1:
        raise ValueError(f"prompt ids of shape {prompt.shape} do not fit a batch of {batch} images")
    return np.ascontiguousarray(prompt)


def greedy_search(
    run_init: RunGraph,
    run_step: RunGraph,
    spec: DecoderSpec,
    image_embeds: np.ndarray,
    prompt_ids: Sequence[int] | np.ndarray,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
) -> np.ndarray:
    """Greedy ids [B, T + steps] (prompt included, pad after EOS), as transformers' greedy search.

    Finished rows are dropped from the KV cache, so later steps only run the unfinished rows.
    """
    decoder = _Decoder(spec, run_init, run_step)
    batch = image_embeds.shape[0]
    sequences = _prompt_batch(prompt_ids, batch)
    max_length = sequences.shape[1] + max_new_tokens
    if batch == 0 or max_new_tokens <= 0:
        return sequences
    logits, state = decoder.init(sequences, image_embeds)
    active = np.arange(batch)  # rows of `sequences` still decoding, in the order of the state
    while True:
        tokens = np.full(batch, pad_token_id, dtype=np.int64)
        tokens[active] = np.argmax(logits, axis=-1)
        sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
        keep = tokens[active] != eos_token_id
        if sequences.shape[1] >= max_length or not keep.any():
            return sequences
        if not keep.all():
            active, state = active[keep], state.take(np.flatnonzero(keep))
        logits, state = decoder.step(tokens[active], state)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float32, copy=False)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _topk(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k along the last axis, sorted descending (torch.topk)."""
    part = np.argpartition(-values, k - 1, axis=-1)[..., :k]
    part_values = np.take_along_axis(values, part, axis=-1)
    order = np.argsort(-part_values, axis=-1, kind="stable")
    return np.take_along_axis(part_values, order, axis=-1), np.take_along_axis(part, order, axis=-1)


def _gather_beams(tensor: np.ndarray, indices: np.ndarray) -> np.ndarray:
    while indices.ndim < tensor.ndim:
        indices = indices[..., None]
    return np.take_along_axis(tensor, indices, axis=1)


def beam_search(
    run_init: RunGraph,
    run_step: RunGraph,
    spec: DecoderSpec,
    image_embeds: np.ndarray,
    prompt_ids: Sequence[int] | np.ndarray,
    max_new_tokens: int,
    num_beams: int,
    eos_token_id: int,
    pad_token_id: int,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Best beam per image [B, L] and its score (sum of log-probs / generated_length**length_penalty).

    A numpy port of transformers' `GenerationMixin._beam_search` (one EOS id, no sampling), so ids match
    `generate(num_beams=k)`; the prompt is decoded once per image and its KV cache repeated per beam.
    """
    decoder = _Decoder(spec, run_init, run_step)
    batch = image_embeds.shape[0]
    prompt = _prompt_batch(prompt_ids, batch)
    prompt_len = prompt.shape[1]
    max_length = prompt_len + max_new_tokens
    if batch == 0 or max_new_tokens <= 0:
        return prompt, np.zeros(batch, dtype=np.float32)
    beams, keep_k = num_beams, 2 * num_beams  # 2 = one EOS id + 1
    fill = pad_token_id if pad_token_id else eos_token_id  # transformers: `pad_token_id or eos_token_id`
    top_beam_mask = np.arange(keep_k) < beams

    logits, state = decoder.init(prompt, image_embeds)
    rows = np.repeat(np.arange(batch), beams)
    logits, state = logits[rows], state.take(rows)

    running_sequences = np.full((batch, beams, max_length), fill, dtype=np.int64)
    running_sequences[:, :, :prompt_len] = prompt[:, None, :]
    sequences = running_sequences.copy()
    running_scores = np.zeros((batch, beams), dtype=np.float32)
    running_scores[:, 1:] = _NEG
    beam_scores = np.full((batch, beams), _NEG, dtype=np.float32)
    is_finished = np.zeros((batch, beams), dtype=bool)
    improvable = np.ones((batch, 1), dtype=bool)
    running_indices = np.full((batch, beams, max_length - prompt_len), -1, dtype=np.int64)
    beam_indices = running_indices.copy()
    batch_offset = np.arange(batch)[:, None] * beams
    cur_len = prompt_len
    while True:
        vocab = logits.shape[-1]
        log_probs = _log_softmax(logits).reshape(batch, beams, vocab) + running_scores[:, :, None]
        topk_scores, topk_flat = _topk(log_probs.reshape(batch, beams * vocab), keep_k)
        topk_beams, topk_tokens = topk_flat // vocab, topk_flat % vocab
        topk_indices = _gather_beams(running_indices, topk_beams)
        topk_sequences = _gather_beams(running_sequences, topk_beams)
        topk_sequences[:, :, cur_len] = topk_tokens
        topk_indices[:, :, cur_len - prompt_len] = topk_beams + batch_offset
        hits = (topk_tokens == eos_token_id) | (cur_len + 1 >= max_length)

        # The best `beams` continuations that did not finish keep running.
        running_candidates = topk_scores + hits.astype(np.float32) * _NEG
        _, chosen = _topk(running_candidates, beams)
        running_sequences = _gather_beams(topk_sequences, chosen)
        running_scores = _gather_beams(running_candidates, chosen)
        running_indices = _gather_beams(topk_indices, chosen)

        # Finished continuations among the top `beams` compete with earlier finished ones.
        just_finished = hits & top_beam_mask[None, :]
        finished_scores = topk_scores / np.float32((cur_len + 1 - prompt_len) ** length_penalty)
        batch_full = is_finished.all(axis=-1, keepdims=True) & (early_stopping is True)
        finished_scores = finished_scores + batch_full.astype(np.float32) * _NEG
        finished_scores = finished_scores + (~improvable).astype(np.float32) * _NEG
        finished_scores = finished_scores + (~just_finished).astype(np.float32) * _NEG
        merged_scores = np.concatenate([beam_scores, finished_scores], axis=1)
        _, best = _topk(merged_scores, beams)
        sequences = _gather_beams(np.concatenate([sequences, topk_sequences], axis=1), best)
        beam_scores = _gather_beams(merged_scores, best)
        beam_indices = _gather_beams(np.concatenate([beam_indices, topk_indices], axis=1), best)
        is_finished = _gather_beams(np.concatenate([is_finished, just_finished], axis=1), best)

        cache_rows = running_indices[:, :, cur_len - prompt_len].reshape(-1)
        cur_len += 1
        if early_stopping == "never" and length_penalty > 0.0:
            best_length = max_length - prompt_len
        else:
            best_length = cur_len - prompt_len
        best_running = running_scores[:, :1] / np.float32(best_length**length_penalty)
        worst_finished = np.where(is_finished, beam_scores.min(axis=1, keepdims=True), _NEG)
        improvable = improvable & (best_running > worst_finished).any(axis=-1, keepdims=True)
        open_beams = not (is_finished.all() and early_stopping is True)
        if not (improvable.any() and open_beams and not hits.all()):
            break
        state = state.take(cache_rows)
        logits, state = decoder.step(running_sequences[:, :, cur_len - 1].reshape(-1), state)

    best_sequences, best_scores, best_indices = sequences[:, 0], beam_scores[:, 0], beam_indices[:, 0]
    generated = int((best_indices != -1).sum(axis=1).max())
    return best_sequences[:, : prompt_len + generated], best_scores


def ort_runner(session) -> RunGraph:
    """A RunGraph over an ONNX Runtime session (all outputs, by name)."""
    names = [output.name for output in session.get_outputs()]
    inputs = {i.name for i in session.get_inputs()}

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in inputs})))

    return run


@dataclass
class CaptionSetup:
    """What captioning needs besides the graphs, read from the manifest's blip section.

    One reader for the in-process `BlipCaptioner` and Triton's `caption` model, so both decode with
    the same decoder layout, tokenizer, prompt and limits.
    """

    spec: DecoderSpec
    image_spec: "ImageSpec"
    tokenizer: "BlipTokenizer"
    prompt: str
    max_new_tokens: int
    length_penalty: float
    early_stopping: bool | str

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "CaptionSetup":
        from preprocessing.blip_tokenizer import BlipTokenizer
        from runtime.manifest import ManifestError

        family = manifest.blip
        if family is None:
            raise ManifestError(f"{manifest.repository} has no BLIP models; export without --no-blip")
        generation = family.get("generation", {})
        return cls(
            spec=DecoderSpec.from_dict(family["decoder"]),
            image_spec=manifest.image_spec("blip"),
            tokenizer=BlipTokenizer.from_manifest_entry(manifest.repository, family["tokenizer"]),
            prompt=family.get("prompt") or "",
            max_new_tokens=int(family["max_new_tokens"]),
            length_penalty=float(generation.get("length_penalty", 1.0)),
            early_stopping=generation.get("early_stopping", False),
        )

    def prompt_ids(self, prompt: str | None = None) -> list[int]:
        ids, _ = self.tokenizer.encode_prompt([self.prompt if prompt is None else prompt])
        return ids[0].tolist()


class BlipCaptioner:
    """Images -> captions with the exported BLIP graphs on ONNX Runtime (local backend, benchmarks).

    `caption` returns what `BlipProcessor.decode(generate(...)[0], skip_special_tokens=True)` gives:
    the prompt text is part of the caption ("a picture of a red dress"), as transformers returns it.
    """

    def __init__(
        self,
        manifest: Manifest,
        variant: str = "fp32",
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        self.setup = setup = CaptionSetup.from_manifest(manifest)
        self.spec, self.image_spec, self.tokenizer = setup.spec, setup.image_spec, setup.tokenizer
        self.prompt, self.max_new_tokens = setup.prompt, setup.max_new_tokens
        self.length_penalty, self.early_stopping = setup.length_penalty, setup.early_stopping
        sessions = {
            name: create_session(manifest.graph_path(name, variant), providers, intra_op_threads)
            for name in (BLIP_VISION, BLIP_DECODER_INIT, BLIP_DECODER_STEP)
        }
        self.vision = sessions[BLIP_VISION]
        self.run_init = ort_runner(sessions[BLIP_DECODER_INIT])
        self.run_step = ort_runner(sessions[BLIP_DECODER_STEP])

    def encode_images(self, pixel_values: np.ndarray) -> np.ndarray:
        """[B,3,H,W] float32 (preprocessed with the manifest's blip ImageSpec) -> image_embeds [B,N,D]."""
        return self.vision.run(["image_embeds"], {"pixel_values": np.ascontiguousarray(pixel_values, dtype=np.float32)})[0]

    def prompt_ids(self, prompt: str | None = None) -> list[int]:
        return self.setup.prompt_ids(prompt)

    def generate(
        self,
        image_embeds: np.ndarray,
        max_new_tokens: int | None = None,
        num_beams: int = 1,
        prompt: str | None = None,
    ) -> list[list[int]]:
        """Token ids per image, prompt included, padded to a common length (as generate() returns)."""
        max_new = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        common = dict(
            spec=self.spec,
            image_embeds=image_embeds,
            prompt_ids=self.prompt_ids(prompt),
            max_new_tokens=max_new,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if num_beams <= 1:
            ids = greedy_search(self.run_init, self.run_step, **common)
        else:
            ids, _ = beam_search(
                self.run_init,
                self.run_step,
                num_beams=num_beams,
                length_penalty=self.length_penalty,
                early_stopping=self.early_stopping,
                **common,
            )
        return ids.tolist()

    def caption(self, pixel_values: np.ndarray, max_new_tokens: int | None = None, num_beams: int = 1, prompt: str | None = None) -> list[str]:
        ids = self.generate(self.encode_images(pixel_values), max_new_tokens, num_beams, prompt)
        return [self.tokenizer.decode(row) for row in ids]
