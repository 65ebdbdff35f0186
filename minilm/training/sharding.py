"""Sharded data parallelism with PyTorch's own FSDP2 (`fully_shard`), for models that outgrow one device.

    each of N processes keeps 1/N of every parameter, of its gradient and of its AdamW moments (rows of dim 0)
    forward of block l:   W_l = all_gather(shards of W_l)             freed again after the block
    backward of block l:  g_l = reduce_scatter(local grads of W_l) / N  the mean over processes, as with DDP
    optimizer step:       AdamW on the local shard only

Every block is its own unit (its weights are gathered just before it runs); the root unit holds the embeddings and
the final LayerNorm. The weights are the ones DDP would compute: the mean gradient of the global batch.

Checkpoints. The sharded weights and optimizer state go through `torch.distributed.checkpoint` (DCP): every process
writes its own shards into `train_state.dcp/step-<N>/` of the run, and the small rest of the training state
(train_state.pt) names that folder. A new folder is written first and named in train_state.pt (an atomic rename)
before the previous one is removed, so a crash leaves the last complete checkpoint in place. DCP reshards on load:
a run resumes on any number of processes. The full weights for inference (model.safetensors, best.safetensors) are
gathered on rank 0 and written as usual. DCP reads its tensors with `weights_only=True` but its .metadata with plain
pickle; minilm reads that file with an unpickler that admits only DCP's own record classes (`SafeReader`), so a
crafted checkpoint is refused and runs nothing.

Docs: docs/training.md (many processes: DDP and FSDP2).
"""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor

from minilm.files import first_line
from minilm.model import Transformer

METADATA_CLASSES = {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
}
"""What a DCP checkpoint's .metadata may name besides the classes of torch.distributed.checkpoint.metadata and torch's
dtypes: plain records of shapes, offsets and file positions."""


class MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's .metadata (DCP itself uses plain pickle there, which can run any code) naming only the record
    classes DCP writes; anything else is refused before it is loaded."""

    def find_class(self, module: str, name: str) -> Any:
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if module == "torch.distributed.checkpoint.metadata" or dtype or (module, name) in METADATA_CLASSES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}")


class SafeReader(dcp.FileSystemReader):
    """DCP's file reader with the metadata read by MetadataUnpickler; the tensors it reads with weights_only=True."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        try:
            with self.fs.create_stream(path, "rb") as stream:
                metadata = MetadataUnpickler(stream).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
            raise ValueError(
                f"{path} is not the metadata of a minilm checkpoint ({first_line(e)}); it was not loaded and nothing "
                "in it was run: start a new run"
            ) from None
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


SHARDS = "train_state.dcp"
"""The run's folder of DCP checkpoints, one step-<N>/ in it (two for a moment while a newer one is written)."""


class Sharding:
    """FSDP2 over every process of the launch: each block of the Transformer is one unit, the Transformer itself the
    root (its embeddings and final LayerNorm). `hidden_states` gathers and frees the weights like `forward` does, so the
    masked objective, which calls it directly, runs sharded too."""

    def __init__(self, model: Transformer, device: torch.device) -> None:
        if not dist.is_initialized() or dist.get_world_size() < 2:
            raise ValueError(
                "FSDP shards a model over the processes of a launch: initialise a process group of 2 or more"
            )
        if device.type == "cuda":
            torch.cuda.set_device(device)
        model.to(device)
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        register_fsdp_forward_method(model, "hidden_states")
        self.root: FSDPModule = model  # type: ignore[assignment]  # fully_shard changed its class in place

    def gradient_sync(self, on: bool) -> None:
        """Whether this backward reduce-scatters the gradients: off for all but the last micro-batch of a step,
        which then reduces the sum of them all once."""
        self.root.set_requires_gradient_sync(on)

    @staticmethod
    def share(model: nn.Module) -> tuple[int, int]:
        """(numbers of the parameters this process holds, numbers of the whole model): about 1/N of them."""
        params = list(model.parameters())
        held = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params)
        return held, sum(p.numel() for p in params)

    @staticmethod
    def full_weights(model: nn.Module) -> dict[str, Tensor]:
        """The whole state dict on rank 0, on the CPU (every process must call it; the others get {})."""
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    @staticmethod
    def save(out_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> str:
        """Every process writes its shards of the weights and the optimizer state into OUT/train_state.dcp/step-<N>;
        returns that path relative to OUT, for train_state.pt."""
        name = f"{SHARDS}/step-{step}"
        model_state, optimizer_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=out_dir / name)
        return name

    @staticmethod
    def load(out_dir: Path, name: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Read OUT/<name> back into this process's shards of the weights and the optimizer state."""
        if re.fullmatch(rf"{SHARDS}/step-\d+", name) is None:
            raise ValueError(
                f"train_state.pt in {out_dir} names {name!r}, not a checkpoint of this run; start a new run"
            )
        folder = out_dir / name
        if not folder.is_dir():
            raise ValueError(
                f"{folder} is missing: the sharded checkpoint train_state.pt names is gone; start a new run"
            )
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, storage_reader=SafeReader(folder))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])

    @staticmethod
    def remove_older(out_dir: Path, keep: str) -> None:
        """Delete the checkpoint folders this run wrote before `keep` (rank 0, once train_state.pt names `keep`)."""
        for folder in (out_dir / SHARDS).glob("step-*"):
            if folder != out_dir / keep and folder.is_dir():
                shutil.rmtree(folder)
