"""validation (train holdout) of the EDC evaluation temperature / EMA on digits EDC buffers"""
import json, time, torch
from edgecond.data import load_dataset
from edgecond.condense import condense, condense_preset
from edgecond.condense.baselines import holdout_split
from edgecond.protocols import edc_eval_preset, evaluate_buffer_edc
from edgecond.evaluate import eval_preset, evaluate_buffer
ds = holdout_split(load_dataset("digits"), per_class=30, seed=0)
out=open("/tmp/h17/val.jsonl","a")
for ipc in (1, 10):
    cfg = condense_preset("edc", "quick", ds, ipc=ipc, method_config={"cache_dir": "/tmp/h17/obsval"})
    r = condense(ds, cfg, progress=False); b=r.buffer
    for soft in (False, True):
        res=evaluate_buffer(b, ds, eval_preset("quick", ds), sizes=[ipc], seeds=[0,1], progress=False, use_soft_labels=soft)
        out.write(json.dumps({"ipc":ipc,"protocol":"classic","soft":soft,"acc":res[0].mean})+"\n"); out.flush()
    for kw in ({"temperature":1.0}, {"temperature":4.0}, {"temperature":1.0,"ema_rate":0.0}, {"temperature":4.0,"ema_rate":0.0}):
        res=evaluate_buffer_edc(b, ds, edc_eval_preset("quick", ds, **kw), sizes=[ipc], seeds=[0,1], labels="stored", progress=False)
        out.write(json.dumps({"ipc":ipc,"protocol":"edc","kw":kw,"acc":res[0].mean})+"\n"); out.flush()
