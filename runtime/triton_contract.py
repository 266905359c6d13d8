"""Names of the Triton models and tensors the gateway calls: shared by model_repository's configs
(checked by tests), the Triton CPU rendering, and the gateway's Triton backend."""
from __future__ import annotations

from runtime.manifest import (  # noqa: F401  (re-exported: the graph models are Triton models too)
    BLIP_DECODER_INIT,
    BLIP_DECODER_STEP,
    BLIP_ITM,
    BLIP_VISION,
    CLIP_IMAGE,
    CLIP_TEXT,
)

# Python models
PREPROCESS_IMAGE = "preprocess_image"  # JPEG/PNG bytes -> CLIP pixel tensor
TOKENIZE_TEXT = "tokenize_text"  # UTF-8 string -> CLIP token ids

# Ensembles and BLS models the gateway calls
EMBED_IMAGE = "embed_image"  # IMAGE_BYTES -> EMBEDDING
EMBED_TEXT = "embed_text"  # TEXT -> EMBEDDING
CAPTION = "caption"  # IMAGE_BYTES -> CAPTION (BLS: blip_vision + decoder loop with KV cache)

# Tensor names at the gateway-facing boundary (TYPE_STRING tensors carry bytes / UTF-8 text)
IMAGE_BYTES = "IMAGE_BYTES"
TEXT = "TEXT"
EMBEDDING = "EMBEDDING"
CAPTION_TEXT = "CAPTION"
# Inner tensor names (graph inputs/outputs as exported)
PIXEL_VALUES = "pixel_values"
INPUT_IDS = "input_ids"
IMAGE_EMBEDS = "image_embeds"
TEXT_EMBEDS = "text_embeds"
