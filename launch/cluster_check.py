"""A 2-node (or N-node) smoke check of a cluster, before any training: every process reports its world
size, global / node / local rank and host, checks that an all-reduce gives the right sum, and rank 0
prints the all-reduce bus bandwidth for a few message sizes (NCCL on GPUs, gloo on CPU).

Run it on every node with the launcher you will train with, e.g. on 2 nodes with 8 GPUs each:
  node 0:  accelerate launch --num_machines 2 --num_processes 16 --machine_rank 0 \
             --main_process_ip NODE0 --main_process_port 29500 --rdzv_backend c10d launch/cluster_check.py
  node 1:  the same with --machine_rank 1
or under SLURM:  sbatch launch/slurm_multinode.sbatch launch/cluster_check.py
(the script ignores flags it does not know, so it runs under any of the launch scripts).
Options: --sizes-mb 1,16,64  --iters 5  --json FILE (rank 0 writes the report there too).
Exit status 1 if any process saw a wrong all-reduce result.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

import torch
import torch.distributed as dist


def node_rank() -> int:
    for key in ("GROUP_RANK", "NODE_RANK"):
        if os.environ.get(key, "") != "":
            return int(os.environ[key])
    return int(os.environ.get("RANK", "0")) // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)


def bus_bandwidth(device: torch.device, size_mb: float, iters: int) -> float:
    """All-reduce bus bandwidth in GB/s (the nccl-tests convention: 2 (n-1)/n x bytes / time)."""
    n = dist.get_world_size()
    x = torch.ones(int(size_mb * 2**20) // 4, dtype=torch.float32, device=device)
    dist.all_reduce(x)  # warm-up (connection set-up)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    dist.barrier()
    t = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(x)
    sync()
    elapsed = (time.perf_counter() - t) / iters
    return 2 * (n - 1) / n * x.numel() * 4 / elapsed / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", default="1,16,64")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--json", default="")
    args, _ = parser.parse_known_args()
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    rank, world = dist.get_rank(), dist.get_world_size()
    me = {
        "rank": rank,
        "world_size": world,
        "node_rank": node_rank(),
        "local_rank": local_rank,
        "host": socket.gethostname(),
        "device": str(device),
        "backend": dist.get_backend(),
    }
    # correctness first: the sum of (rank + 1) over all processes
    total = torch.tensor([float(rank + 1)], device=device)
    dist.all_reduce(total)
    me["allreduce_ok"] = int(total.item()) == world * (world + 1) // 2
    everyone: list = [None] * world
    dist.all_gather_object(everyone, me)
    sizes = [float(s) for s in args.sizes_mb.split(",") if s]
    bandwidth = {str(s): bus_bandwidth(device, s, args.iters) for s in sizes}
    ok = all(p["allreduce_ok"] for p in everyone)
    if rank == 0:
        print(f"world size {world}, {len({p['host'] for p in everyone})} host(s), backend {me['backend']}")
        for p in everyone:
            print(
                f"  rank {p['rank']:>3}  node {p['node_rank']:>2}  local {p['local_rank']:>2}  {p['host']}  "
                f"{p['device']}  all-reduce {'ok' if p['allreduce_ok'] else 'WRONG'}"
            )
        for s, bw in bandwidth.items():
            print(f"  all-reduce {s:>6} MiB: {bw:8.2f} GB/s bus bandwidth")
        if args.json:
            report = {"world_size": world, "processes": everyone, "busbw_gbps": bandwidth, "ok": ok}
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=1)
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
