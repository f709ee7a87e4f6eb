"""Decode latency on the GPU: one layer's step timed as a CUDA-graph replay
(python -m bench.latency.decode_attention), its checks and profiles (decode_probe,
decode_levers) and the 8-bit pool check (quant_check)."""
