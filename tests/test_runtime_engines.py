"""Engines and the calibrated static-int8 variant on the tiny export: same API, same embeddings."""
from __future__ import annotations

import numpy as np
import pytest

from export.calibration import calibration_images, calibration_texts
from export.variants import write_int8_static
from preprocessing.clip_tokenizer import ClipTokenizer
from preprocessing.image import preprocess_images
from runtime.manifest import CLIP_IMAGE, CLIP_TEXT
from runtime.sessions import ENGINES, create_session

pytest.importorskip("openvino")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_runs_the_same_graph_through_one_api(tiny_manifest, engine):
    spec = tiny_manifest.image_spec("clip")
    pixels = preprocess_images(calibration_images(6), spec)
    reference = create_session(tiny_manifest.graph_path(CLIP_IMAGE), engine="onnxruntime").run(None, {"pixel_values": pixels})[0]
    session = create_session(tiny_manifest.graph_path(CLIP_IMAGE), intra_op_threads=1, engine=engine)
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    got = session.run(None, {"pixel_values": pixels})[0]
    assert got.shape == reference.shape and got.dtype == np.float32
    assert _cosines(got, reference).min() > (0.999999 if engine != "openvino-bf16" else 0.99)


def test_unknown_engine_is_refused(tiny_manifest):
    with pytest.raises(ValueError, match="unknown engine"):
        create_session(tiny_manifest.graph_path(CLIP_TEXT), engine="tensorflow")


def test_static_int8_is_calibrated_qdq_close_to_fp32(tiny_manifest, tmp_path):
    import onnx

    tokenizer = ClipTokenizer.from_manifest_entry(tiny_manifest.repository, tiny_manifest.clip["tokenizer"])
    ids = tokenizer(calibration_texts(16))
    target = tmp_path / "model.qdq.onnx"
    write_int8_static(tiny_manifest.graph_path(CLIP_TEXT), target, [{"input_ids": ids[:8]}, {"input_ids": ids[8:]}])
    ops = {node.op_type for node in onnx.load(str(target)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    queries = tokenizer(["red leather ankle boots", "a blue denim jacket"])
    fp32 = create_session(tiny_manifest.graph_path(CLIP_TEXT), engine="onnxruntime").run(None, {"input_ids": queries})[0]
    for engine in ("onnxruntime", "openvino"):
        int8 = create_session(target, engine=engine).run(None, {"input_ids": queries})[0]
        assert _cosines(int8, fp32).min() > 0.99, engine


def test_onnxruntime_sessions_do_not_spin_idle_threads(tiny_manifest):
    session = create_session(tiny_manifest.graph_path(CLIP_TEXT), intra_op_threads=2, engine="onnxruntime")
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
