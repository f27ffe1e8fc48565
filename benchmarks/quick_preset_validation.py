"""Validation of the geometry-based quick presets on a split carved from TRAIN (never test).

    python benchmarks/quick_preset_validation.py DATASET BASE ['{"override": ...}']

Holds out 100 training images per class as the validation split, condenses random / C (BASE,
quick) / MDC over BASE with the one resolver, and prints validation accuracy at sizes 1, 2, 5,
10 (2 evaluation seeds, the quick evaluation preset for the data's geometry). Used to choose the
quick presets for data nobody tuned for (docs/condensation.md, *Quick presets on other data*).
"""
import sys, json, time, dataclasses, torch
from edgecond.data import load_dataset
from edgecond.condense import condense, condense_preset
from edgecond.data import holdout_split
from edgecond.evaluate import eval_preset, evaluate_buffer
torch.set_num_threads(1)
name, base = sys.argv[1], sys.argv[2]
extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
ds = holdout_split(load_dataset(name), per_class=100, seed=0)
ecfg = eval_preset("quick", ds)
sizes = [1, 2, 5, 10]; seeds = [0, 1]
out = {}
for arm, kw in (("random", dict(method="random")), ("C", dict(method=base)), ("MDC", dict(method="mdc", base=base))):
    over = {} if arm == "random" else dict(extra)
    cfg = condense_preset(kw.pop("method"), "quick", ds, ipc=10, **kw, **over)
    t = time.time(); r = condense(ds, cfg, progress=False); ct = time.time() - t
    res = evaluate_buffer(r.buffer, ds, ecfg, sizes=sizes, seeds=seeds, progress=False)
    out[arm] = {"condense_s": round(ct, 1), **{s.size: round(100 * s.mean, 2) for s in res}}
    print(name, base, extra, arm, out[arm], flush=True)
