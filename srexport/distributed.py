"""Data-parallel training over several processes (`srexport train --nproc N`, or under torchrun).

Each process is one rank of a torch.distributed group (gloo on CPUs, NCCL on CUDA GPUs, one GPU a
process: cuda:LOCAL_RANK). The processes train as one process would on the same global batch:

  - every rank seeds and draws the same batch plan from the same random state and takes its slice
    of each global batch (PatchSet.shards), so the random state, and with it the resume file, does
    not depend on the number of processes: a run may be resumed with another number;
  - each rank weights its loss by its share of the batch, and DistributedDataParallel averages the
    gradients, so every rank steps with the gradient of the whole batch (steps.train_step);
  - validation images are shared out and their PSNRs gathered, the time limit is rank 0's decision;
  - rank 0 alone writes the checkpoint, the resume file and the curve, and shows the progress bar.

`launch` starts the processes on this machine with PyTorch's elastic launcher (what torchrun runs),
rendezvous on 127.0.0.1 at a free port; under torchrun, `join` picks up the group's environment.
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .errors import EXIT_INCOMPLETE, SRExportError


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in its group; the default is a lone process."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")  # where the group's collectives run (NCCL: this rank's GPU)
    owns_group: bool = False  # `join` started the group, so `leave` ends it

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world > 1


def world_size_from_env() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise SRExportError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number of processes") from None


def join(dev: torch.device) -> tuple[Ranks, torch.device]:
    """This process's place in the group torchrun (or `launch`) set up, and the device it trains on;
    a lone process (no WORLD_SIZE above 1, no group) keeps `dev`."""
    if world_size_from_env() <= 1 and not dist.is_initialized():
        return Ranks(device=dev), dev
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        if dev.index is not None:
            raise SRExportError(f"--device {dev}: with several processes each takes cuda:LOCAL_RANK; "
                                "pass --device cuda")
        if local_rank >= torch.cuda.device_count():
            raise SRExportError(f"process {local_rank} on this machine has no GPU of its own "
                                f"({torch.cuda.device_count()} visible); start at most that many processes")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise SRExportError(f"--device {dev}: several processes train on cpu (gloo) or cuda (NCCL)")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend)
    return Ranks(dist.get_rank(), dist.get_world_size(), dev, owns), dev


def leave(ranks: Ranks) -> None:
    if ranks.owns_group and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------- collectives (every rank calls them)


def total(ranks: Ranks, value: torch.Tensor) -> torch.Tensor:
    """`value` summed over the ranks."""
    out = value.detach().clone().to(ranks.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def largest(ranks: Ranks, value: float) -> float:
    t = torch.tensor([float(value)], dtype=torch.float64, device=ranks.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def from_main(ranks: Ranks, value: float) -> float:
    """Rank 0's `value` on every rank (decisions that hang on a clock must be one rank's)."""
    t = torch.tensor([float(value)], dtype=torch.float64, device=ranks.device)
    dist.broadcast(t, src=0)
    return float(t.item())


def my_part(ranks: Ranks, n: int) -> range:
    """The items of a list of `n` this rank handles (validation images)."""
    return range(ranks.rank, n, ranks.world)


def gathered(ranks: Ranks, mine: dict[int, float], n: int) -> list[float]:
    """The list of `n` values whose items at `my_part` each rank computed (`mine`: index -> value)."""
    t = torch.zeros(n, dtype=torch.float64, device=ranks.device)
    for i, v in mine.items():
        t[i] = v
    dist.all_reduce(t, op=dist.ReduceOp.SUM)  # each item is non-zero on one rank only
    return t.cpu().tolist()


def barrier(ranks: Ranks) -> None:
    dist.barrier()


# ---------------------------------------------------------------- the model


class ScaleModels(nn.Module):
    """One module over a run's per-scale models (which share their parameters), so that one
    DistributedDataParallel holds each parameter once: forward(x, scale) runs that scale's model."""

    def __init__(self, models: dict[int, nn.Module]):
        super().__init__()
        self.nets = nn.ModuleDict({str(s): m for s, m in models.items()})

    def forward(self, x: torch.Tensor, scale: int, intermediates: bool = False):
        net = self.nets[str(scale)]
        return net.forward_with_intermediates(x) if intermediates else net(x)


class ScaleView:
    """What steps.train_step sees of one scale's model under DDP: the calls go through DDP's forward,
    which its gradient averaging needs (DRCN's intermediate outputs too)."""

    def __init__(self, ddp: nn.Module, scale: int, model: nn.Module):
        self._ddp, self._scale = ddp, scale
        if hasattr(model, "forward_with_intermediates"):
            self.forward_with_intermediates = lambda x: self._ddp(x, self._scale, True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._ddp(x, self._scale)


def data_parallel(models: dict[int, nn.Module], ranks: Ranks) -> dict[int, ScaleView]:
    """`models` wrapped in one DistributedDataParallel, per scale. DDP starts every rank from rank 0's
    weights (they are equal already: same seed, or the same resume file)."""
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(ScaleModels(models),
                                  device_ids=[ranks.device.index] if ranks.device.type == "cuda" else None)
    return {s: ScaleView(ddp, s, m) for s, m in models.items()}


# ---------------------------------------------------------------- launching


def launch(nproc: int, train_kwargs: dict) -> int:
    """Run `train(**train_kwargs)` in `nproc` processes on this machine (torch's elastic launcher,
    rendezvous on 127.0.0.1 at a free port); rank 0 prints the summary or the error. Returns the
    exit code for the command: 0, EXIT_INCOMPLETE, or a user error's."""
    if nproc < 1:
        raise SRExportError(f"--nproc must be at least 1, got {nproc}")
    if world_size_from_env() > 1:
        raise SRExportError("--nproc starts the processes itself; under torchrun leave it out")
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1",
                          max_restarts=0, monitor_interval=0.1)
    codes = elastic_launch(config, worker)(train_kwargs, nproc)
    return codes[0]


def worker(train_kwargs: dict, nproc: int) -> int:
    """One launched process: the training run, its summary or error from rank 0, its exit code."""
    from .train import train

    rank = int(os.environ.get("RANK", "0"))
    train_kwargs = dict(train_kwargs)
    progress = train_kwargs.pop("progress", True) and rank == 0
    if str(train_kwargs.get("device", "cpu")) == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))  # the cores shared out, not oversubscribed
    try:
        result = train(**train_kwargs, progress=progress)
    except SRExportError as e:
        if rank == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    if rank == 0:
        print(result.summary(), flush=True)
    return 0 if result.complete else EXIT_INCOMPLETE
