"""Periodic training checkpoints: interrupt a training run, run it again, get the same parameters.

A :class:`Checkpointer` saves a loop's state (a pytree of arrays) and the index of the next chunk
to one ``.npz`` file, atomically (temporary file, then rename), at most every ``every_s`` seconds
and whenever the loop is interrupted. The chunks' PRNG keys are ``fold_in(key, i)``, so resuming
at chunk ``i`` from the saved state reproduces an uninterrupted run bit for bit (same machine).
A file saved for another configuration (its ``fingerprint``) is refused, never resumed from.
The file also keeps the loop's clock: :meth:`Checkpointer.seconds` is the training time over every
sitting (earlier sittings' saved time plus this one's), so a resumed run reports its whole cost.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jax
import numpy as np

__all__ = ["Checkpointer", "TrainInterrupted"]


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where the state was saved and how to resume."""


class Checkpointer:
    """One training loop's checkpoint file (``path`` None: no checkpoints)."""

    def __init__(self, path: str | os.PathLike | None, fingerprint: dict, every_s: float = 60.0):
        self.path = None if path is None else Path(path)
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.every_s = float(every_s)
        self._last = self._start = time.time()
        self._before = 0.0  # seconds spent in earlier sittings (restored with the state)

    def seconds(self) -> float:
        """Training seconds so far, over every sitting of this checkpoint."""
        return self._before + time.time() - self._start

    def restore(self, template):
        """``(state, next chunk)`` from the file, or ``(template, 0)`` when there is none."""
        if self.path is None or not self.path.is_file():
            return template, 0
        with np.load(self.path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            if meta["fingerprint"] != self.fingerprint:
                differ = sorted(k for k in set(meta["fingerprint"]) | set(self.fingerprint)
                                if meta["fingerprint"].get(k) != self.fingerprint.get(k))
                raise ValueError(f"{self.path}: a training checkpoint of another configuration (differs in "
                                 f"{', '.join(differ)}); delete it to start afresh")
            # the clock goes on from here (files from before the clock was kept: 0)
            self._before, self._start = float(meta.get("seconds", 0.0)), time.time()
            leaves, treedef = jax.tree_util.tree_flatten(template)
            saved = [z[f"leaf_{i}"] for i in range(len(leaves))]
        state = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(s, dtype=np.asarray(t).dtype)
                                                       for s, t in zip(saved, leaves)])
        return state, int(meta["next"])

    def save(self, state, next_chunk: int) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(state))]
        meta = json.dumps({"fingerprint": self.fingerprint, "next": int(next_chunk),
                           "seconds": round(self.seconds(), 1)})
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}.npz")
        np.savez(tmp, __meta__=np.asarray(meta), **{f"leaf_{i}": x for i, x in enumerate(leaves)})
        os.replace(tmp, self.path)
        self._last = time.time()

    def maybe_save(self, state, next_chunk: int) -> None:
        if self.path is not None and time.time() - self._last >= self.every_s:
            self.save(state, next_chunk)

    def clear(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def interrupted(self, state, next_chunk: int, chunk_steps: int, total_steps: int) -> TrainInterrupted:
        """Save now; the exception to raise (its message says how to resume)."""
        self.save(state, next_chunk)
        where = f"state saved to {self.path}; run the same command again to resume" if self.path is not None else \
            "no checkpoint file was given, so nothing was saved"
        return TrainInterrupted(f"interrupted at step {next_chunk * chunk_steps} of {total_steps}; {where}")
