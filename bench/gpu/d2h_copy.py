#!/usr/bin/env python3
"""Device-to-host copy time into page-locked memory for the sizes of BERT-base's result at batch
1 (last_hidden_state: seq x 768, f32 or f16): median of 200 copies, each timed with CUDA events.
Says how long the result's copy at the end of a Nimble graph takes on this machine.

    python3 bench/gpu/d2h_copy.py
"""
import torch


def main():
    for seq in (128, 384):
        for dtype in (torch.float32, torch.float16):
            src = torch.randn(seq, 768, device="cuda").to(dtype)
            dst = torch.empty(seq, 768, dtype=dtype, pin_memory=True)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times = []
            for _ in range(200):
                start.record()
                dst.copy_(src, non_blocking=True)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) * 1000.0)
            times.sort()
            nbytes = src.numel() * src.element_size()
            us = times[len(times) // 2]
            print(f"seq {seq} {str(dtype):14s} {nbytes / 1e6:5.2f} MB: {us:6.1f} us "
                  f"({nbytes / us / 1e3:5.1f} GB/s)")


if __name__ == "__main__":
    main()
