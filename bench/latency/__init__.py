"""Decode latency on the GPU: one layer's step timed as a CUDA-graph replay
(python -m bench.latency.decode_attention), its checks and profiles (decode_probe), the
8-bit pool check (quant_check) and the experimental fused Triton RaaS step (fused_raas)."""
