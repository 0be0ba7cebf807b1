"""Where the generation time goes: seconds in the UNet, the VAE decoder and the text encoders.

:class:`StageTimer` hangs forward hooks on a pipeline's networks. On a GPU each call is bracketed
by CUDA events (read once, after a synchronize, so timing adds no stall to the stream); on a CPU
by ``time.perf_counter`` (the ops are synchronous there). The VAE is timed at its ``decoder`` (the
module ``vae.decode`` runs; the 1x1 ``post_quant_conv`` before it is negligible). A UNet compiled
in place (``unet.compile()``) is not hooked, since a hook would be traced into the graph; its
time is then what is left of the generation time (``unet_derived``). Both sides of a benchmark
get the same hooks, so their small cost is shared alike.
"""

from __future__ import annotations

import time
from typing import Any

STAGES = ("unet", "vae", "text")


class StageTimer:
    """Accumulates seconds per stage for every pipeline it is attached to (:meth:`attach`)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.calls = dict.fromkeys(STAGES, 0)
        self.unet_derived = False
        self.handles: list[Any] = []
        self.pending: list[tuple[str, Any, Any]] = []  # (stage, start event, end event) not read yet
        self.open: dict[int, Any] = {}

    def attach(self, pipe: Any) -> StageTimer:
        nets = [("vae", pipe.vae.decoder), ("text", getattr(pipe, "text_encoder", None)), ("text", getattr(pipe, "text_encoder_2", None))]
        if getattr(pipe.unet, "_compiled_call_impl", None) is None:
            nets.append(("unet", pipe.unet))
        else:
            self.unet_derived = True
        for stage, net in nets:
            if net is not None:
                self.handles.append(net.register_forward_pre_hook(self.starter(net)))
                self.handles.append(net.register_forward_hook(self.stopper(stage, net)))
        return self

    def starter(self, net: Any) -> Any:
        def pre(_module: Any, _args: Any) -> None:
            if self.cuda:
                import torch

                ev = torch.cuda.Event(enable_timing=True)
                ev.record()
                self.open[id(net)] = ev
            else:
                self.open[id(net)] = time.perf_counter()

        return pre

    def stopper(self, stage: str, net: Any) -> Any:
        def post(_module: Any, _args: Any, _out: Any) -> None:
            start = self.open.pop(id(net), None)
            if start is None:
                return
            self.calls[stage] += 1
            if self.cuda:
                import torch

                end = torch.cuda.Event(enable_timing=True)
                end.record()
                self.pending.append((stage, start, end))
            else:
                self.seconds[stage] += time.perf_counter() - start

        return post

    def totals(self) -> dict[str, float]:
        """Seconds per stage so far (synchronizes the GPU once to read the events)."""
        if self.pending:
            import torch

            torch.cuda.synchronize()
            for stage, start, end in self.pending:
                self.seconds[stage] += start.elapsed_time(end) / 1000.0
            self.pending.clear()
        return dict(self.seconds)

    def split(self, generate_s: float) -> dict[str, float]:
        """``generate_s`` split into the stages and the rest (scheduler, latents, post-processing)."""
        t = self.totals()
        if self.unet_derived:
            t["unet"] = max(0.0, generate_s - t["vae"] - t["text"])
        t["other"] = max(0.0, generate_s - sum(t[s] for s in STAGES))
        return t

    def close(self) -> None:
        self.totals()
        for h in self.handles:
            h.remove()
        self.handles.clear()
