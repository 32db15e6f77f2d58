"""The writer's document towers: loaded as the collection records them, run without spinning threads."""
from __future__ import annotations

from mmsearch.core.model_repository import ModelRepository
from mmsearch.services.writer.towers import DocumentTower


def test_a_document_tower_does_not_spin_between_bursts_of_writes(minilm_repo):
    """Writes come in bursts: onnxruntime's threads spinning after each call burned the cores serving searches
    on (bench/writes.py), so the writer's sessions do not spin."""
    manifest = ModelRepository(str(minilm_repo)).manifest("minilm")
    tower = DocumentTower(str(minilm_repo), {"name": "minilm", "onnx_sha256": manifest.onnx_sha256})
    options = tower.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    vectors = tower.texts("{answer}", [{"answer": "read and write CSV files"}, {"answer": "parse JSON"}])
    assert vectors.shape == (2, manifest.dimension)
