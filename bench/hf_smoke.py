"""GPU smoke check of the HF integration: greedy equivalence per family and compiled decode.

Run from the repository root: `python bench/hf_smoke.py [out.json]`. Correctness only, no
timing claims (the times it records include compilation)."""
import sys, time, json, torch, transformers
sys.path.insert(0, "tests")
sys.path.insert(0, ".")
from _hf_common import prompts, greedy
from raas_flex import apply_raas, remove_raas
from raas_flex.hf.patch import raas_state
from raas_flex.hf.tiny import tiny_model, FAMILIES
res = {"torch": torch.__version__, "transformers": transformers.__version__,
       "gpu": torch.cuda.get_device_name()}
ids, mask = prompts((11, 6, 3))
ids, mask = ids.cuda(), mask.cuda()
for fam in sorted(FAMILIES):
    try:
        m = tiny_model(fam).cuda()
        ref = greedy(m, ids, mask, 128)
        apply_raas(m, budget=160)
        out = greedy(m, ids, mask, 128)
        remove_raas(m)
        res[fam] = bool(torch.equal(ref, out))
    except Exception as e:
        res[fam] = f"ERROR {type(e).__name__}: {e}"[:400]
try:
    m = tiny_model("llama").cuda()
    apply_raas(m, budget=64)
    eager = greedy(m, ids, mask, 100)
    remove_raas(m)
    apply_raas(m, budget=64, compile=True)
    t = time.time(); got = greedy(m, ids, mask, 100); res["compile_s"] = time.time() - t
    t = time.time(); got2 = greedy(m, ids, mask, 100); res["second_s"] = time.time() - t
    res["compiled_equal"] = bool(torch.equal(got, eager)) and bool(torch.equal(got2, eager))
    res["graphs"] = raas_state(m).compiled.graphs
except Exception as e:
    import traceback; traceback.print_exc()
    res["compiled"] = f"ERROR {type(e).__name__}: {e}"[:600]
print(json.dumps(res, indent=1))
if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
        json.dump(res, f, indent=1)
