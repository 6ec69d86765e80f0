"""Models whose forward runs in Spark workers (shipped by value by the conftest)."""

import os

import torch


class NestedOutputs(torch.nn.Module):
    """Two inputs, and a dict output holding an array, an integer and a tuple."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x, mask):
        y = self.linear(x)
        return {"scores": y, "count": (mask.sum(1) * 10).long(), "extra": (y.sum(1),)}


class WhereItRuns(torch.nn.Module):
    """Per row: how many CPUs this worker may use, the first of them, torch's threads and
    whether an allocator is preloaded; and the worker's pid and the model's call count."""

    def forward(self, x):
        cpus = sorted(os.sched_getaffinity(0))
        preloaded = "malloc" in os.environ.get("LD_PRELOAD", "")
        row = torch.tensor([len(cpus), cpus[0], torch.get_num_threads(), preloaded],
                           dtype=torch.float32)
        # which worker ran this batch, and how many batches this copy of the model has run
        self.calls = getattr(self, "calls", 0) + 1
        who = torch.tensor([os.getpid(), self.calls], dtype=torch.int64)
        return row.expand(x.shape[0], 4) + 0 * x[:, :1], who.expand(x.shape[0], 2)


class DiesOnce(torch.nn.Module):
    """Kills its own Python worker in the second batch of partition 1, on the first attempt:
    an executor lost mid-partition."""

    def __init__(self, marker: str):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.batches = 0
        self.marker = marker  # written just before the kill, so the test knows it happened

    def forward(self, x):
        from pyspark import TaskContext

        context = TaskContext.get()
        if context is not None and context.partitionId() == 1 and context.attemptNumber() == 0:
            self.batches += 1
            if self.batches == 2:
                open(self.marker, "w").close()
                os.kill(os.getpid(), 9)
        return self.linear(x)
