"""PyTorch towers to export, each with the library's own reference encoder for the parity gate.

Supported families (decided by the source folder, or forced with ``--family``):

- ``clip``: a Hugging Face ``CLIPModel`` folder (``config.json`` with
  ``model_type: clip``), or a sentence-transformers folder whose first module
  is ``CLIPModel`` (e.g. ``clip-ViT-B-32``). Two towers: text (text model +
  ``text_projection``) and image (vision model + ``visual_projection``).
- ``sentence-transformers``: ``Transformer`` followed by ``Pooling``
  [+ ``Dense``] [+ ``Normalize``] (also ``LayerNorm``/``Dropout``), e.g.
  all-MiniLM-L6-v2 or the multilingual ``clip-ViT-B-32-multilingual-v1``
  (DistilBERT + mean pooling + Dense 768->512). The tower re-uses the
  library's own pooling/dense modules, so every pooling mode it knows is
  exported as it computes it.

Every tower L2-normalises its output inside the graph, also for models
without a ``Normalize`` module (the multilingual CLIP text tower): the
platform searches with inner product on unit vectors. The references do the
same (``normalize_embeddings=True``), so parity compares like with like.
Models whose backbone accepts ``token_type_ids`` get zeros made inside the
graph, keeping the two inputs ``input_ids``/``attention_mask``.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmsearch.jobs.errors import JobError

FAMILIES = ("clip", "sentence-transformers")
_ST_HEAD_MODULES = {"Pooling", "Dense", "Normalize", "LayerNorm", "Dropout"}


@dataclass
class Tower:
    """One exportable tower: the module, its reference and what the repository needs to know."""

    kind: str  # "text" | "image"
    module: torch.nn.Module  # forward(input_ids, attention_mask) or forward(pixel_values) -> [n, dim] unit vectors
    reference: Callable[[Sequence], np.ndarray]  # texts or [n,3,H,W] pixel arrays -> [n, dim] float32
    dimension: int
    save_preprocessing: Callable[[Path], None]  # writes tokenizer files / preprocessor_config.json
    fusion: dict | None = None  # kwargs for onnxruntime.transformers.optimizer.optimize_model
    extra: dict = field(default_factory=dict)  # manifest fields: max_length or image_size


def detect_family(folder: Path) -> str:
    """``clip`` or ``sentence-transformers`` from the folder's files; JobError when neither."""
    modules = folder / "modules.json"
    if modules.is_file():
        return "sentence-transformers"
    config = folder / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("model_type") == "clip":
        return "clip"
    raise JobError(f"--model {folder}: neither a sentence-transformers folder (modules.json) nor a CLIP model "
                   "(config.json with model_type 'clip'); pass --family or another model")


def _st_clip_folder(folder: Path) -> Path | None:
    """The inner HF CLIP folder of a sentence-transformers CLIP model, if that is what ``folder`` is."""
    modules = folder / "modules.json"
    if not modules.is_file():
        return None
    entries = json.loads(modules.read_text())
    if entries and entries[0].get("type", "").endswith(".CLIPModel"):
        return folder / entries[0].get("path", "")
    return None


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, p=2.0, dim=-1)


def _save_tokenizer(tokenizer, dest: Path, max_length: int) -> None:
    """tokenizer.json + config files; truncation at ``max_length``, no fixed padding (pad to longest)."""
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(str(dest))
    special = dest / "special_tokens_map.json"
    if not special.is_file():  # transformers 5 no longer writes it; serving reads pad_token from it as a fallback
        special.write_text(json.dumps({k: str(v) for k, v in tokenizer.special_tokens_map.items()}, ensure_ascii=False))
    path = dest / "tokenizer.json"
    if not path.is_file():
        raise JobError("the tokenizer of this model has no fast (tokenizer.json) version; cannot export it for serving")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["padding"] = None
    side = str(getattr(tokenizer, "truncation_side", "right")).capitalize()
    data["truncation"] = {"direction": side, "max_length": max_length,
                          "strategy": "LongestFirst", "stride": 0}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _fusion_kwargs(config) -> dict | None:
    """optimize_model arguments for BERT-like encoders; None for the others (exported unfused)."""
    model_type = getattr(config, "model_type", "")
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    if model_type in ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra") and heads and hidden:
        return {"model_type": "bert", "num_heads": int(heads), "hidden_size": int(hidden)}
    if model_type in ("clip_text_model",) and heads and hidden:
        return {"model_type": "clip", "num_heads": int(heads), "hidden_size": int(hidden)}
    return None


# --------------------------------------------------------------------------- sentence-transformers


class SentenceTower(torch.nn.Module):
    """backbone -> the library's pooling/dense/... modules -> L2 normalise."""

    def __init__(self, backbone: torch.nn.Module, heads: Sequence[torch.nn.Module]):
        super().__init__()
        self.backbone = backbone
        self.heads = torch.nn.ModuleList(heads)
        self.token_types = "token_type_ids" in inspect.signature(backbone.forward).parameters

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.token_types:
            kwargs["token_type_ids"] = torch.zeros_like(input_ids)
        hidden = self.backbone(**kwargs, return_dict=True).last_hidden_state
        features = {"token_embeddings": hidden, "attention_mask": attention_mask}
        for head in self.heads:
            features = head(features)
        return _normalise(features["sentence_embedding"])


def _eager_attention(model) -> None:
    """Export the classic attention pattern: onnxruntime's transformer optimizer fuses it into
    one ``Attention`` op, which it cannot do with the SDPA graph transformers 5 exports by
    default (measured on MiniLM: same outputs, fewer ops per layer)."""
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
        except (ValueError, NotImplementedError):  # a model without an eager path keeps its own
            pass


def sentence_transformers_towers(folder: Path) -> list[Tower]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    model.eval()
    modules = list(model)
    first, heads = modules[0], modules[1:]
    if type(first).__name__ != "Transformer":
        raise JobError(f"--model {folder}: first module is {type(first).__name__}, expected a Transformer")
    unknown = [type(m).__name__ for m in heads if type(m).__name__ not in _ST_HEAD_MODULES]
    if unknown:
        raise JobError(f"--model {folder}: unsupported sentence-transformers modules {unknown} "
                       f"(supported after Transformer: {sorted(_ST_HEAD_MODULES)})")
    if not any(type(m).__name__ == "Pooling" for m in heads):
        raise JobError(f"--model {folder}: no Pooling module; cannot make one vector per text")
    backbone = first.auto_model
    _eager_attention(backbone)
    tokenizer = first.tokenizer
    max_length = int(model.max_seq_length)

    def reference(texts: Sequence[str]) -> np.ndarray:
        with torch.inference_mode():
            return model.encode(list(texts), batch_size=32, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False).astype(np.float32)

    dimension = int(reference(["x"]).shape[1])
    return [Tower(
        kind="text", module=SentenceTower(backbone, heads).eval(), reference=reference, dimension=dimension,
        save_preprocessing=lambda dest: _save_tokenizer(tokenizer, dest, max_length),
        fusion=_fusion_kwargs(backbone.config), extra={"max_length": max_length},
    )]


# --------------------------------------------------------------------------- CLIP


class ClipTextTower(torch.nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.text_model = clip.text_model
        self.text_projection = clip.text_projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return _normalise(self.text_projection(pooled))


class ClipImageTower(torch.nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.vision_model = clip.vision_model
        self.visual_projection = clip.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return _normalise(self.visual_projection(pooled))


def _features(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output holds it (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def clip_towers(folder: Path) -> list[Tower]:
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    folder = _st_clip_folder(folder) or folder
    clip = CLIPModel.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    processor = CLIPImageProcessor.from_pretrained(str(folder))
    max_length = min(int(tokenizer.model_max_length), int(clip.config.text_config.max_position_embeddings))
    size = int(clip.config.vision_config.image_size)
    dimension = int(clip.config.projection_dim)

    def text_reference(texts: Sequence[str]) -> np.ndarray:
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            out = _features(clip.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
        return _normalise(out).numpy().astype(np.float32)

    def image_reference(pixel_values: Sequence[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = _features(clip.get_image_features(pixel_values=torch.from_numpy(np.asarray(pixel_values))))
        return _normalise(out).numpy().astype(np.float32)

    def save_processor(dest: Path) -> None:
        processor.save_pretrained(str(dest))

    return [
        Tower(kind="text", module=ClipTextTower(clip).eval(), reference=text_reference, dimension=dimension,
              save_preprocessing=lambda dest: _save_tokenizer(tokenizer, dest, max_length),
              fusion=_fusion_kwargs(clip.config.text_config), extra={"max_length": max_length}),
        Tower(kind="image", module=ClipImageTower(clip).eval(), reference=image_reference, dimension=dimension,
              save_preprocessing=save_processor, fusion=None, extra={"image_size": size}),
    ]


def build_towers(folder: Path, family: str) -> list[Tower]:
    """The towers of ``folder`` (text first); JobError for an unknown family."""
    if family == "clip":
        return clip_towers(folder)
    if family == "sentence-transformers":
        return sentence_transformers_towers(folder)
    raise JobError(f"--family {family!r}: expected one of auto, {', '.join(FAMILIES)}")
