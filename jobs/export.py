"""``mmsearch job export``: a model's towers to ONNX, parity-gated, as a Triton model repository.

Layout written under ``--repository`` (a local folder or ``s3://bucket/prefix``)::

    REPO/NAME/config.pbtxt            text (query) tower: input_ids, attention_mask -> embedding
    REPO/NAME/<version>/model.onnx
    REPO/NAME/tokenizer.json, tokenizer_config.json, special_tokens_map.json
    REPO/NAME/manifest.json
    REPO/NAME-image/...               CLIP only: pixel_values -> embedding, preprocessor_config.json
    REPO/<tower>-int8/...             with --int8: an int8 copy of each tower (NAME-int8, and for CLIP
                                      NAME-image-int8), same inputs and files

Decisions:
- Every tower is exported with ``torch.onnx.export(opset 17, dynamo=False)``,
  dynamic batch (and sequence) axes, pooling and L2 normalisation inside the
  graph (see ``mmsearch.jobs.towers``).
- BERT-like graphs are fused with ``onnxruntime.transformers.optimizer``
  (opt_level 0, so the file stays portable between CPU and GPU); the fused
  graph is kept only when it passes the parity gate, else the plain export is
  used (``manifest.optimized`` says which).
- Parity gate: >= 256 varied inputs through the exported tokenizer /
  preprocessor and ONNX Runtime vs the library's PyTorch encoder; if any tower's
  minimum cosine is below 0.9999 the export fails and nothing is published.
- ``--int8`` (never the default) also writes an int8 copy of each tower (the
  query tower and the document tower; one for a sentence-transformers
  model), beside the fp32 one (``model_repository.int8_name``), with the
  first method of ``mmsearch.jobs.quantize.METHODS`` that passes its gate
  (``--int8-method`` names one: dynamic per-channel, smooth (dynamic after
  SmoothQuant's migration, calibrated on other inputs than the gate's), or
  blockwise int8 weights and activations; see that module for what was
  measured). The gate
  runs against the same PyTorch reference on the same inputs: min cosine
  >= 0.99 (``INT8_MIN_COSINE``); when no method passes it the export fails
  like a broken one and nothing is published. Its manifest records the
  quantization (method, the fp32 ``source`` tower and the methods refused
  before it) and lists the export's towers (the document tower's copy under
  key ``document``), so a collection encoded by the int8 document tower is
  queried by the fp32 query tower, and the int8 query tower queries what its
  fp32 tower's export built (an arm's ``precision: int8``). Encode with
  ``mmsearch job encode --model <document tower>-int8``.
- Publishing happens only after every tower passed, tower by tower with
  ``artifacts.publish_tree`` (a local folder swapped in by rename; on S3 the
  ``manifest.json`` is deleted first and uploaded last). The query tower NAME is
  published last. A model folder without ``manifest.json`` is not a finished
  export.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import typer

from mmsearch.jobs.app import job_app
from mmsearch.jobs.options import ModelRepositoryUri, deprecated
from mmsearch.jobs.errors import JobError, exit_on_error
from mmsearch.jobs.parity import INT8_MIN_COSINE, MIN_COSINE, N_INPUTS
from mmsearch.jobs.progress import emit
from mmsearch.core import artifacts, onnx
from mmsearch.core.model_repository import CONFIG, MANIFEST, ModelManifest, ModelRepository, int8_name, tower_name

log = logging.getLogger(__name__)

OPSET = 17


def resolve_source(model: str) -> Path:
    """A local folder for ``--model``: the folder itself, or a Hugging Face Hub snapshot."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise JobError(f"--model {model}: is a file; pass a model folder or a Hugging Face model id")
    if model.startswith(("/", ".", "~")) or model.count("/") > 1:
        raise JobError(f"--model {model}: folder not found")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model))
    except Exception as exc:  # hub errors are many classes; the message names the cause
        offline = " (HF_HUB_OFFLINE=1 is set: only cached models can be used)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise JobError(f"--model {model!r}: not a local folder and not available from the Hugging Face Hub: "
                       f"{type(exc).__name__}{offline}") from None


def to_onnx(tower, path: Path) -> None:
    """Export one tower with dynamic batch (and sequence) axes."""
    import torch

    if tower.kind == "text":
        args = (torch.full((2, 8), 5, dtype=torch.int64), torch.ones((2, 8), dtype=torch.int64))
        names = ["input_ids", "attention_mask"]
        axes = {n: {0: "batch", 1: "sequence"} for n in names}
    else:
        size = tower.extra["image_size"]
        args = (torch.zeros((2, 3, size, size), dtype=torch.float32),)
        names = ["pixel_values"]
        axes = {"pixel_values": {0: "batch"}}
    axes["embedding"] = {0: "batch"}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shapes: the parity gate is the real check
        torch.onnx.export(tower.module, args, str(path), opset_version=OPSET, dynamo=False, input_names=names,
                          output_names=["embedding"], dynamic_axes=axes, do_constant_folding=True)


def fuse(path: Path, out: Path, fusion: dict) -> bool:
    """Write a fused copy of ``path`` to ``out``; False when the optimizer fused nothing or failed."""
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        model = optimize_model(str(path), opt_level=0, use_gpu=False, **fusion)
    except Exception as exc:  # the optimizer fails on graphs it does not recognise: export unfused
        log.warning("fusion failed, keeping the plain export: %s", exc)
        return False
    if not any(v for v in model.get_fused_operator_statistics().values()):
        return False
    model.save_model_to_file(str(out))
    return True


class Gate:
    """The parity inputs of one tower, its PyTorch reference outputs, and how to run an ONNX file on them."""

    def __init__(self, tower, folder: Path, n_inputs: int):
        import numpy as np

        from mmsearch.jobs import parity

        self.tower, self.folder = tower, folder
        if tower.kind == "text":
            self.items = parity.varied_texts(n_inputs)
            self._runner = lambda p: parity.onnx_text_runner(onnx.session(p), folder)  # noqa: E731
        else:
            self.items = list(parity.pixel_values(folder, parity.varied_images(n_inputs)))
            self._runner = lambda p: (lambda batch, s=onnx.session(p): s.run(["embedding"], {"pixel_values": np.asarray(batch)})[0])  # noqa: E731
        self.want = parity.batched(tower.reference, self.items)
        self.n = len(self.items)

    def calibration(self) -> list[dict]:
        """Feeds of one input each, other inputs than the gate's, for ``quantize.smooth``."""
        from mmsearch.jobs import parity

        return parity.calibration_feeds(self.folder, self.tower.kind, self.n)

    def figures(self, path: Path) -> dict:
        from mmsearch.jobs import parity

        return parity.compare(parity.batched(self._runner(path), self.items), self.want)


def check_tower(tower, folder: Path, onnx_path: Path, n_inputs: int) -> tuple[dict, bool, Gate]:
    """Parity figures of the tower's final model.onnx in ``folder``; fuses first when that keeps parity."""
    gate = Gate(tower, folder, n_inputs)
    optimized = False
    if tower.fusion:
        fused = onnx_path.with_name("fused.onnx")
        if fuse(onnx_path, fused, tower.fusion):
            figures = gate.figures(fused)
            if figures["min_cosine"] >= MIN_COSINE:
                os.replace(fused, onnx_path)
                optimized = True
            else:
                emit("export", "fusion-rejected", tower=folder.name, min_cosine=figures["min_cosine"])
                fused.unlink()
    if not optimized:
        figures = gate.figures(onnx_path)
    return figures, optimized, gate


def quantize_tower(gate: Gate, fp32_folder: Path, out: Path, model_version: int,
                   methods: tuple[str, ...]) -> tuple[dict, dict]:
    """Stage the int8 copy of a gated fp32 tower folder at ``out`` with the first of ``methods`` that passes the
    int8 gate: (parity figures, quantization record, which lists the methods refused before it). JobError
    naming each method's min cosine when none passes."""
    import shutil

    from mmsearch.jobs import quantize

    shutil.copytree(fp32_folder, out, ignore=shutil.ignore_patterns("*.onnx", CONFIG))
    fp32 = fp32_folder / str(model_version) / "model.onnx"
    onnx_path = out / str(model_version) / "model.onnx"
    refused: list[dict] = []
    for method in methods:
        record = quantize.quantize(method, fp32, onnx_path, gate.calibration)
        if not record["quantized_ops"]:
            raise JobError(f"int8: the quantizer found no MatMul/Gemm to quantize in {fp32_folder.name}; "
                           "nothing published (export without --int8)")
        figures = gate.figures(onnx_path)
        emit("export", "parity", tower=out.name, int8=method, **figures)
        if figures["min_cosine"] >= INT8_MIN_COSINE:
            source = {"name": fp32_folder.name, "onnx_sha256": artifacts.file_sha256(fp32)}
            return figures, {**record, "source": source, "refused": refused}
        refused.append({"method": method, "min_cosine": figures["min_cosine"]})
    tried = ", ".join(f"{r['method']} {r['min_cosine']:.6f}" for r in refused)
    raise JobError(f"int8 parity gate failed for {out.name}: min cosine {tried} < {INT8_MIN_COSINE} over "
                   f"{gate.n} inputs against the fp32 reference; nothing published (export without --int8)")


def _config(name: str, tower, max_batch_size: int, queue_delay_us: int, instance_count: int, instance_kind: str) -> str:
    from mmsearch.jobs.triton_config import Tensor, build_config

    if tower.kind == "text":
        inputs = [Tensor("input_ids", "int64", (-1,)), Tensor("attention_mask", "int64", (-1,))]
    else:
        size = tower.extra["image_size"]
        inputs = [Tensor("pixel_values", "float32", (3, size, size))]
    return build_config(name, inputs, [Tensor("embedding", "float32", (tower.dimension,))],
                        max_batch_size=max_batch_size, max_queue_delay_us=queue_delay_us,
                        instance_count=instance_count, instance_kind=instance_kind)


def export_model(model: str, name: str, repository: str, *, model_version: int = 1, family: str = "auto",
                 max_batch_size: int = 64, max_queue_delay_us: int = 100, instance_count: int = 1,
                 instance_kind: str = "auto", parity_inputs: int = N_INPUTS,
                 int8: bool = False, int8_method: str = "auto") -> dict[str, ModelManifest]:
    """Export, gate and publish every tower of ``model`` (and, with ``int8``, the int8 copy of each tower,
    ``int8_method`` or the first of ``quantize.METHODS`` that passes the gate); returns {published name: manifest}."""
    from mmsearch.jobs.quantize import METHODS
    from mmsearch.jobs.towers import FAMILIES, build_towers, detect_family

    if not name or "/" in name or name.startswith("."):
        raise JobError(f"--name {name!r}: a model name without '/' and not starting with '.'")
    if model_version < 1:
        raise JobError(f"--model-version must be >= 1, got {model_version}")
    if parity_inputs < N_INPUTS:
        raise JobError(f"--parity-inputs must be >= {N_INPUTS}, got {parity_inputs}")
    if int8_method not in ("auto", *METHODS):
        raise JobError(f"--int8-method {int8_method!r}: expected one of auto, {', '.join(METHODS)}")
    int8_methods = METHODS if int8_method == "auto" else (int8_method,)
    if family not in ("auto", *FAMILIES):
        raise JobError(f"--family {family!r}: expected one of auto, {', '.join(FAMILIES)}")
    try:  # the Triton flags are checked before the (slow) export starts
        _config(name, _Probe(), max_batch_size, max_queue_delay_us, instance_count, instance_kind)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    repo = ModelRepository(repository)
    repo.has(name)  # an unreachable/misnamed repository fails now, not after the export
    folder = resolve_source(model)
    family = detect_family(folder) if family == "auto" else family
    _quiet_libraries()
    towers = build_towers(folder, family)

    manifests: dict[str, dict] = {}  # tower name -> manifest fields, towers added once all passed
    document_kind = "image" if any(t.kind == "image" for t in towers) else "text"
    with tempfile.TemporaryDirectory(prefix="mmsearch-export-") as tmp:
        staged: dict[str, Path] = {}
        gates: dict[str, Gate] = {}
        for tower in towers:
            tname = tower_name(name, tower.kind)
            out = Path(tmp) / tname
            (out / str(model_version)).mkdir(parents=True)
            tower.save_preprocessing(out)
            onnx_path = out / str(model_version) / "model.onnx"
            started = time.monotonic()
            to_onnx(tower, onnx_path)
            figures, optimized, gates[tname] = check_tower(tower, out, onnx_path, parity_inputs)
            emit("export", "parity", tower=tname, optimized=optimized, seconds=round(time.monotonic() - started, 1),
                 **figures)
            if not figures["min_cosine"] >= MIN_COSINE:
                raise JobError(f"parity gate failed for {tname}: min cosine {figures['min_cosine']:.6f} < {MIN_COSINE} "
                               f"over {figures['n']} inputs (max abs diff {figures['max_abs_diff']:.3g}); nothing published")
            (out / CONFIG).write_text(_config(tname, tower, max_batch_size, max_queue_delay_us,
                                                      instance_count, instance_kind))
            manifests[tname] = {
                "name": tname, "tower": tower.kind, "family": family, "source": model,
                "dimension": tower.dimension, "metric": "IP", "normalized": True,
                "onnx_sha256": artifacts.file_sha256(onnx_path), "opset": OPSET, "optimized": optimized,
                "model_version": model_version,
                "inputs": ["input_ids", "attention_mask"] if tower.kind == "text" else ["pixel_values"],
                "output": "embedding", **tower.extra,
                "parity": {k: figures[k] for k in ("n", "min_cosine", "mean_cosine", "max_abs_diff")},
            }
            staged[tname] = out
        all_towers = {m["tower"]: {"name": n, "onnx_sha256": m["onnx_sha256"]} for n, m in manifests.items()}
        final = {tname: ModelManifest.from_dict({**fields, "towers": all_towers}) for tname, fields in manifests.items()}
        if int8:
            document = tower_name(name, document_kind)
            for source in sorted(manifests, key=lambda n: n != document):  # the document tower first
                qname = int8_name(source)
                started = time.monotonic()
                figures, record = quantize_tower(gates[source], staged[source], Path(tmp) / qname, model_version,
                                                 int8_methods)
                emit("export", "int8", tower=qname, method=record["method"], seconds=round(time.monotonic() - started, 1))
                staged[qname] = Path(tmp) / qname
                tower = next(t for t in towers if tower_name(name, t.kind) == source)
                (staged[qname] / CONFIG).write_text(_config(qname, tower, max_batch_size, max_queue_delay_us,
                                                            instance_count, instance_kind))
                sha = artifacts.file_sha256(staged[qname] / str(model_version) / "model.onnx")
                extra = {"document": {"name": qname, "onnx_sha256": sha}} if source == document else {}
                final[qname] = ModelManifest.from_dict({
                    **manifests[source], "name": qname, "onnx_sha256": sha, "quantization": record,
                    "parity": {k: figures[k] for k in ("n", "min_cosine", "mean_cosine", "max_abs_diff")},
                    "towers": {**all_towers, **extra}})
        for tname, manifest in final.items():
            (staged[tname] / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        for tname in sorted(staged, key=lambda n: n == name):  # the query tower last
            repo.publish(staged[tname], tname)
    return final


def _quiet_libraries() -> None:
    """No progress bars or advisory warnings from transformers / sentence-transformers on a job's stderr."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


class _Probe:
    """Stand-in tower for validating the Triton flags before the (slow) export starts."""

    kind = "text"
    dimension = 1
    extra: dict = {}


@job_app.command("export")
def export_command(
    repository: ModelRepositoryUri,
    model: str = typer.Option(..., "--source-model", "--model", envvar=["MMSEARCH_SOURCE_MODEL", "MMSEARCH_MODEL"],
                              callback=deprecated("MMSEARCH_MODEL", "MMSEARCH_SOURCE_MODEL"),
                              help="Hugging Face model id or local model folder to export."),
    name: str = typer.Option(..., envvar="MMSEARCH_NAME", help="Model name in the repository (CLIP: also NAME-image)."),
    model_version: int = typer.Option(1, envvar="MMSEARCH_MODEL_VERSION", help="Triton version folder."),
    family: str = typer.Option("auto", envvar="MMSEARCH_FAMILY", help="auto | clip | sentence-transformers."),
    max_batch_size: int = typer.Option(
        64, "--triton-max-batch-size", "--max-batch-size",
        envvar=["MMSEARCH_TRITON_MAX_BATCH_SIZE", "MMSEARCH_MAX_BATCH_SIZE"],
        callback=deprecated("MMSEARCH_MAX_BATCH_SIZE", "MMSEARCH_TRITON_MAX_BATCH_SIZE"),
        help="Triton's max_batch_size in config.pbtxt."),
    queue_delay_seconds: float = typer.Option(
        0.0001, "--triton-queue-delay-seconds", min=0,
        envvar=["MMSEARCH_TRITON_QUEUE_DELAY_SECONDS", "MMSEARCH_MAX_QUEUE_DELAY_US"],
        callback=deprecated("MMSEARCH_MAX_QUEUE_DELAY_US", "MMSEARCH_TRITON_QUEUE_DELAY_SECONDS",
                            lambda us: us / 1_000_000, note="in seconds"),
        help="Seconds Triton's dynamic batcher waits for more requests (max_queue_delay_microseconds)."),
    instance_count: int = typer.Option(1, envvar="MMSEARCH_INSTANCE_COUNT", help="Triton model instances."),
    instance_kind: str = typer.Option("auto", envvar="MMSEARCH_INSTANCE_KIND", help="auto | cpu | gpu."),
    parity_inputs: int = typer.Option(N_INPUTS, envvar="MMSEARCH_PARITY_INPUTS", help=f"Parity gate inputs (>= {N_INPUTS})."),
    int8: bool = typer.Option(False, "--int8", envvar="MMSEARCH_INT8",
                              help=f"Also export an int8 copy of each tower as <tower>-int8 (refused below min "
                                   f"cosine {INT8_MIN_COSINE} against the fp32 reference)."),
    int8_method: str = typer.Option("auto", envvar="MMSEARCH_INT8_METHOD",
                                    help="auto (the first of dynamic, smooth, blockwise that passes the int8 gate) | "
                                         "dynamic | smooth | blockwise."),
) -> None:
    """Export a model's towers to ONNX (parity-gated) as a Triton model repository."""
    with exit_on_error():
        manifests = export_model(model, name, repository, model_version=model_version, family=family,
                                 max_batch_size=max_batch_size, max_queue_delay_us=round(queue_delay_seconds * 1_000_000),
                                 instance_count=instance_count, instance_kind=instance_kind,
                                 parity_inputs=parity_inputs, int8=int8, int8_method=int8_method)
        emit("export", "done", repository=repository,
             models={n: {"dimension": m.dimension, "min_cosine": m.parity["min_cosine"]} for n, m in manifests.items()})


__all__ = ["export_model", "resolve_source"]
