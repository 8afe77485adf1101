"""Gradient flow through time recorded during training (train.gradflow_every)."""

from __future__ import annotations

from ..diagnostics import GradFlowAccumulator
from ..nn.losses import sequence_weights
from .rundir import append_gradflow


class FlowRecorder:
    """One epoch's gradient flow: the per-row norms of dL/dh_t and dL/dc_t that the
    training backward reports (model.loss_and_grads(flow=[])), accumulated per layer and
    direction (``directions``: the model's, 1 or 2)."""

    def __init__(self, partial=False, directions=1):
        self.acc = GradFlowAccumulator(directions)
        self.partial = partial  # the epoch was resumed mid-way: its records say so

    def add(self, flow, lengths, y, class_weights) -> None:
        """Add one batch's flow as the gradients of each sequence's own loss: the batch loss
        weights sequence b by w_b / sum(w), so its rows are scaled back by sum(w) / w_b
        (sequences of weight 0 are left out)."""
        w = sequence_weights(y, class_weights)  # (B,)
        keep = w > 0
        scale = (w.sum() / w[keep])[:, None]  # (B', 1)
        for k, (dh_norm, dc_norm) in enumerate(flow):  # each (B, T); k: layer, direction
            self.acc.add(k, dh_norm[keep] * scale, dc_norm[keep] * scale, lengths[keep])

    def write(self, comm, run_dir, epoch, layers, T) -> None:
        """Sum over the ranks (T: the longest training sequence), then rank 0 appends the
        epoch's records to run_dir/gradflow.jsonl. layers: the model's number of layers."""
        tracks = layers * self.acc.directions
        if comm.size > 1:
            self.acc.load_flat_sums(comm.allreduce_sum(self.acc.flat_sums(tracks, T)), tracks, T)
        records = self.acc.records(epoch)
        if self.partial:
            for r in records:
                r["partial"] = True
        if comm.rank == 0 and records:
            append_gradflow(run_dir, records)
