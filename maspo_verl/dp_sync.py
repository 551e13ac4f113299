"""Summing a statistic over the data-parallel group once per loss call, without deadlocks.

A loss whose choice depends on the whole batch (BAPO's clip bounds) sums its statistics over
the data-parallel ranks in every loss call, i.e. once per micro-batch. verl usually gives
every rank the same number of micro-batches, but not always (dynamic batch sizes can differ),
and a rank that makes one collective call more than its peers waits forever.

``JoinedSum`` makes the calls match. Each rank knows how many samples of the current
mini-batch it holds (``global_batch_size / dp_size``) and counts the samples it has seen. Every
call all-reduces the payload together with a flag "this rank has more micro-batches after
this one". A rank that has finished its mini-batch keeps joining with zero payloads while any
peer still reports more, so every collective call has a partner on every rank. The sum of a
round then covers the ranks that still had data in that round, which is the natural meaning
when the micro-batches differ in number. torch only, no verl.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class JoinedSum:
    """Per-process state of the protocol for one process group (one instance per group)."""

    def __init__(self):
        self.seen = 0

    def __call__(self, tensor: torch.Tensor, group, local_samples: int, samples_per_rank: int) -> torch.Tensor:
        """Sum ``tensor`` over ``group``; this call covers ``local_samples`` of this rank's
        ``samples_per_rank`` samples of the current mini-batch."""
        self.seen += local_samples
        if self.seen > samples_per_rank:
            seen, self.seen = self.seen, 0
            raise RuntimeError(
                f"data-parallel sum: this rank saw {seen} samples in a mini-batch of {samples_per_rank} per rank; "
                "the global batch size verl reported does not match the micro-batches it sent"
            )
        more = self.seen < samples_per_rank
        flag = torch.ones(1, dtype=tensor.dtype, device=tensor.device) * float(more)
        payload = torch.cat([tensor.reshape(-1), flag])
        dist.all_reduce(payload, group=group)
        if not more:
            self.seen = 0
            # Join the peers' remaining calls of this mini-batch with zeros (one host sync a round,
            # only at the end of a mini-batch).
            peers_with_more = payload[-1]
            while peers_with_more.item() > 0:
                filler = torch.zeros_like(payload)
                dist.all_reduce(filler, group=group)
                peers_with_more = filler[-1]
        return payload[:-1].reshape(tensor.shape)
