"""Federated benchmark: FedAvg on non-IID clients, with and without a shipped condensed buffer.

Arms (same partition, same traces, same initial model, same client seeds, same bytes rule):

* ``none``     FedAvg, no shared data (buffer-mode ``off``);
* ``random``   random real images per class of the server split, shipped as a buffer;
* ``herding``  real images of the server split in herding order (every prefix a herding set);
* ``C``        plain condensation (no multisize hooks) cut to prefixes (MDC's Baseline C);
* ``mdc``      multisize condensation (MDC hooks): every prefix trained to be good;
* any other registered condensation method by its name (e.g. ``edc`` once it exists; it joins
  the default arms then, :func:`default_arms`).

Fairness: every shipping arm's buffer must carry the same training recipe (checked, recorded in
the JSON as ``recipes``), so condensed and real images train under one augmentation. The
federation's own settings (local epochs, lr) can be chosen on validation (``--tune``): FedAvg
without sharing (``none``) runs over a small grid and the pair with the best final accuracy on
the clients' held-out 20 % (carved from the clients' *training* partitions; the test split is
never looked at) is used by every arm; the grid, its scores and the choice are in the JSON
(``tuning``).

Honest federation: the server holds ``server_fraction`` (default 20 %) of the training set and
condenses / selects only from it; the clients partition the rest with flwr-datasets
(``clients.task.server_split`` / ``partition_indices``). Each (client, round) has a bandwidth
budget and a device-memory budget from two independent log-normal traces whose medians are
``budget_ipc`` ranks of the buffer (≈ 2-3 images per class): the server ships the largest
prefix that fits both and only the ranks the client lacks; a client whose memory shrank drops
ranks from the end (``PrefixCache.fit_memory``) and later gets a delta. Clients train local and
condensed batches in the same steps, each with its own augmentation (condensed: the buffer's
recipe) (``clients.task.client_round``); FedAvg aggregates (``aggregate_arrayrecords``, the
function Flower's FedAvg uses). The rounds are driven **in-process** — the same functions the
ServerApp/ClientApp call, without Flower's simulation engine (Ray start-up per arm would
dominate a CPU benchmark). The apps themselves run under ``flwr run`` (tests/test_flower_sim.py).

Usage::

    python benchmarks/federated.py --dataset digits --preset quick --out runs/bench-federated

Writes ``OUT/federated.json`` (per arm: per-round ``accuracy`` (mean over seeds),
``accuracy_std``, ``bytes``, ``cumulative_bytes``, ``memory_bytes`` and ``mean_ipc``),
``OUT/federated.md`` (final accuracy ± std, rounds to ``none``'s final accuracy, accuracy at
equal cumulative bytes) and ``OUT/federated.png`` (accuracy vs round and vs cumulative bytes).
Condensed buffers are cached in ``OUT/buffers/`` (reused when present).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

ARMS = ("none", "random", "herding", "C", "mdc")
SHIPPING = ("random", "herding", "C", "mdc")
#: methods that join the default arms when they are registered (helpers land them in parallel)
DEFAULT_EXTRA = ("edc",)
#: registered methods that already back one of ARMS (as base matcher or selector)
_BACKING = ("random", "herding", "idc", "idm", "dm")
#: ``--tune`` grid: (local epochs, lr) pairs for the ``none`` arm, scored on the clients'
#: validation splits (local epochs 1..20 at the preset's lr 0.05, and lr 0.01 at 5 and 10; CPU
#: time grows with the epochs, so not the full cross product)
TUNE_GRID = ((1, 0.05), (2, 0.05), (5, 0.05), (10, 0.05), (20, 0.05), (5, 0.01), (10, 0.01))


def extra_arms() -> tuple[str, ...]:
    """Registered condensation methods that are not behind one of :data:`ARMS` (each can run
    as a shipping arm of its own name: that method, no hooks, the condensation preset)."""
    from edgecond.condense.engine import METHODS, _ensure_methods

    _ensure_methods()
    return tuple(n for n in METHODS.names() if n not in _BACKING)


def default_arms() -> tuple[str, ...]:
    """:data:`ARMS` plus every method of :data:`DEFAULT_EXTRA` that is registered."""
    return ARMS + tuple(a for a in DEFAULT_EXTRA if a in extra_arms())

PRESETS = {
    # CPU minutes on digits: 10 clients, Dirichlet 0.1, bandwidth and memory medians ~2.5 ranks
    "quick": dict(rounds=20, clients=10, alpha=0.1, local_epochs=1, lr=0.05, batch_size=32,
                  model="convnet", model_width=32, ipc=10, condense_preset="quick",
                  condense_method="idc", budget_ipc=2.5, sigma=0.6, server_fraction=0.2,
                  condensed_weight=0.5, seeds=(0, 1, 2)),
    "paper": dict(rounds=50, clients=20, alpha=0.1, local_epochs=2, lr=0.05, batch_size=32,
                  model="convnet", model_width=128, ipc=20, condense_preset="paper",
                  condense_method="idc", budget_ipc=2.5, sigma=0.6, server_fraction=0.2,
                  condensed_weight=0.5, seeds=(0, 1, 2)),
}


#: herding on 8x8 images (as benchmarks/continual.py): the quick preset's default network and
#: training steps cost minutes of CPU for no better order on digits-sized data
HERDING_SMALL = {"model_kwargs": {"width": 32, "depth": 2, "norm": "instance"},
                 "method_config": {"train_steps": 100, "batch": 128}}


def traces_for(buffer, preset: dict, seed: int) -> tuple[str, str]:
    """``(bandwidth trace, memory trace)`` specs: independent log-normal traces (seeds ``seed``
    and ``seed + 1000``) whose median is the lean size of ``budget_ipc`` ranks of ``buffer``
    (interpolated between whole ranks), so prefixes of every size are in use all run long.
    An explicit ``budget`` / ``memory`` spec in the preset wins."""
    k = float(preset.get("budget_ipc", 2.5))
    lo, hi = max(1, int(k)), min(buffer.ipc, int(k) + 1)
    b_lo, b_hi = buffer.bytes_for(lo, provenance=False), buffer.bytes_for(hi, provenance=False)
    median = int(round(b_lo + (k - lo) * (b_hi - b_lo)))
    sigma = float(preset.get("sigma", 0.6))
    bw = preset.get("budget") or f"lognormal:median={median}B,sigma={sigma},seed={seed}"
    mem = preset.get("memory") or f"lognormal:median={median}B,sigma={sigma},seed={seed + 1000}"
    return bw, mem


def build_buffers(dataset_name: str, preset: dict, out_dir: Path, *, seed: int, device: str,
                  log, arms=("random", "baseline-c", "mdc")) -> dict:
    """``{arm: (path, condense seconds or None, digest)}`` for the shipping arms.

    Buffers are cached in ``out_dir``; an existing file is reused (its condensation time is then
    read from the ``.json`` note written beside it, when present)."""
    from clients.task import server_dataset
    from edgecond.buffer import MultisizeBuffer
    from edgecond.condense.engine import condense, condense_preset
    from edgecond.data import load_dataset
    from edgecond.federated import FederatedConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = None
    plans = {
        "random": ("random", "none", "quick"),
        "herding": ("herding", "none", preset["condense_preset"]),
        "C": (preset["condense_method"], "none", preset["condense_preset"]),
        "mdc": (preset["condense_method"], "mdc", preset["condense_preset"]),
    }
    for arm in arms:  # any other registered method: an arm of its own name
        if arm not in plans and arm != "baseline-c":
            plans[arm] = (arm, "none", preset["condense_preset"])
    frac = float(preset.get("server_fraction", 0.2))
    result = {}
    for arm, (method, hooks, cpreset) in plans.items():
        path = out_dir / f"{dataset_name}-{arm}-{method}-ipc{preset['ipc']}-srv{frac:g}-s{seed}.safetensors"
        note = path.with_suffix(".json")
        if path.is_file():
            buf = MultisizeBuffer.load(path)  # validates
            seconds = json.loads(note.read_text()).get("condense_s") if note.is_file() else None
            result[arm] = (path, seconds, buf.digest)
            log(f"[buffers] {arm}: reusing {path} (condensed in {seconds} s)")
            continue
        if arm not in arms:
            continue
        if dataset is None:  # the server's own split: the clients never see these images
            full = load_dataset(dataset_name)
            dataset = server_dataset(full, FederatedConfig(dataset=dataset_name, server_fraction=frac, seed=seed))
            log(f"[buffers] server split: {len(dataset.y_train)} of {len(full.y_train)} training images")
        # the one resolver (MDC's Δt from the resolved iteration count)
        overrides = dict(preset.get("condense_overrides") or {}) if arm not in ("random", "herding") else {}
        if arm == "herding" and dataset.image_shape[-1] <= 8:  # 8x8: a small, briefly trained net
            overrides = dict(HERDING_SMALL)
        cfg = condense_preset(method, cpreset, dataset, ipc=preset["ipc"], hooks=hooks, seed=seed, **overrides)
        t0, c0 = time.perf_counter(), time.process_time()
        res = condense(dataset, cfg, device=device, progress=False)
        res.buffer.save(path)
        seconds = round(time.perf_counter() - t0, 1)
        note.write_text(json.dumps({"condense_s": seconds, "condense_cpu_s": round(time.process_time() - c0, 1),
                                    "method": method, "hooks": hooks,
                                    "preset": cpreset, "iterations": cfg.iterations}))
        result[arm] = (path, seconds, res.buffer.digest)
        log(f"[buffers] {arm}: {method}/{cpreset} hooks={hooks} ipc={cfg.ipc} "
            f"{cfg.iterations} it in {seconds:.1f} s -> {path}")
    return result


def validation_accuracy(fcfg, arrays, indices: dict) -> float:
    """Accuracy of the global model on the union of the clients' held-out 20 % (their local
    validation splits, carved from the clients' training partitions): the tuning score."""
    import torch

    from clients import task

    dataset = task.load_data(fcfg.dataset)
    parts = [task.local_data(dataset, fcfg, c, fcfg.num_partitions, idx)[2:] for c, idx in indices.items()]
    x = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    net = task.build_net(fcfg, dataset)
    task.numpy_to_state(net, arrays)
    return float(task.test(net, x, y, normalize=dataset.normalize, device=fcfg.device)[1])


def tune_federation(fcfg, *, rounds: int, grid, log) -> dict:
    """Choose ``local_epochs`` and ``lr`` for FedAvg **without** sharing on validation:
    every grid point runs ``rounds`` rounds of the ``none`` arm and is scored by
    :func:`validation_accuracy` after the last round (ties: fewer local epochs, then the
    smaller lr). Returns the grid, the scores and the choice (JSON-able)."""
    import dataclasses

    scores = []
    for le, lr in grid:
        cfg = dataclasses.replace(fcfg, local_epochs=int(le), lr=float(lr), buffer_mode="off")
        t0, c0 = time.perf_counter(), time.process_time()
        r = run_arm(f"tune le={le} lr={lr}", None, cfg, rounds=rounds, log=lambda m: None, validation=True)
        scores.append({"local_epochs": int(le), "lr": float(lr), "val_accuracy": r["val_accuracy"][-1],
                       "val_curve": r["val_accuracy"], "seconds": round(time.perf_counter() - t0, 1),
                       "cpu_s": round(time.process_time() - c0, 1)})
        log(f"[tune] local_epochs={le} lr={lr}: validation accuracy {r['val_accuracy'][-1]:.4f} "
            f"({scores[-1]['seconds']} s)")
    best = _best(scores)
    return {"grid": [list(g) for g in grid], "rounds": rounds, "seed": fcfg.seed,
            "split": "clients' held-out 20 % of their training partitions (clients.task.local_data)",
            "arm": "none", "scores": scores,
            "chosen": {"local_epochs": best["local_epochs"], "lr": best["lr"]}}


def _best(scores: list[dict]) -> dict:
    return max(scores, key=lambda r: (round(r["val_accuracy"], 4), -r["local_epochs"], -r["lr"]))


def combine_tunings(records: list[dict]) -> dict:
    """One tuning record from several (grid points run in separate processes): scores pooled,
    the best point chosen by :func:`tune_federation`'s rule. They must share seed and rounds."""
    from edgecond.errors import ConfigError

    if not records:
        raise ConfigError("no tuning records to combine; pass --tuning-json FILE[,FILE...].")
    if len({(r["seed"], r["rounds"]) for r in records}) > 1:
        raise ConfigError(f"tuning records of different seeds/rounds {[(r['seed'], r['rounds']) for r in records]}; "
                          "combine only records of one tuning setup.")
    scores = [s for r in records for s in r["scores"]]
    best = _best(scores)
    return {**records[0], "grid": [[s["local_epochs"], s["lr"]] for s in scores], "scores": scores,
            "chosen": {"local_epochs": best["local_epochs"], "lr": best["lr"]}}


def run_arm(arm: str, buffer, fcfg, *, rounds: int, log, validation: bool = False) -> dict:
    """FedAvg rounds for one arm, driven in-process through the apps' functions.
    ``validation``: also score every round on the clients' validation splits (``val_accuracy``)
    and skip the test split (tuning runs)."""
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    from clients import task
    from edgecond.federated import PrefixCache, Shipper, make_budget_reply, parse_trace, read_transfer

    dataset = task.load_data(fcfg.dataset)
    net = task.build_net(fcfg, dataset)
    arrays = task.state_to_numpy(net)
    trace = parse_trace(fcfg.budget_trace)
    mem_trace = parse_trace(fcfg.memory_trace) if fcfg.memory_trace else None
    shipper = Shipper(buffer, buffer_mode=fcfg.buffer_mode) if buffer is not None else None
    caches = {c: PrefixCache() for c in range(fcfg.num_partitions)}
    indices = {c: task.partition_indices(dataset.y_train.numpy(), c, fcfg.num_partitions,
                                         partitioner=fcfg.partitioner, alpha=fcfg.dirichlet_alpha,
                                         seed=fcfg.seed, server_fraction=fcfg.server_fraction)
               for c in range(fcfg.num_partitions)}
    acc0 = None if validation else task.central_evaluate(fcfg, arrays)["test-acc"]
    out = {"accuracy": [], "bytes": [], "cumulative_bytes": [], "memory_bytes": [], "mean_ipc": [],
           "initial_accuracy": acc0}
    if validation:
        out["val_accuracy"] = []
    t0, c0 = time.perf_counter(), time.process_time()
    total = 0
    for rnd in range(1, rounds + 1):
        replies, sent, ipcs, held = [], 0, [], 0
        for c in range(fcfg.num_partitions):
            budget = int(trace.budget(c, rnd))
            memory = int(mem_trace.budget(c, rnd)) if mem_trace is not None else None
            cache = caches[c]
            if shipper is not None:
                cache.fit_memory(memory)  # the ClientApp's query does this before replying
                plan, payload, records = shipper.handle(
                    rnd, str(c), make_budget_reply(budget, cache.ipc, cache.digest, memory=memory))
                transfer, received = read_transfer(RecordDict(records))
                sent += plan.nbytes
            else:
                transfer, received = {"kind": "none", "budget": budget, "buffer-mode": "off"}, b""
            res = task.client_round(fcfg, partition_id=c, num_partitions=fcfg.num_partitions, rnd=rnd,
                                    arrays=arrays, cache=cache, transfer=transfer, payload=received,
                                    indices=indices[c])
            ipcs.append(res.metrics["ipc-used"])
            held += int(res.metrics["held-bytes"])
            replies.append(RecordDict({
                "arrays": ArrayRecord({k: Array(v) for k, v in res.arrays.items()}),
                "metrics": MetricRecord({"num-examples": res.num_examples}),
            }))
        agg = aggregate_arrayrecords(replies, "num-examples")
        arrays = {k: v.numpy() for k, v in agg.items()}
        if validation:  # tuning: the test split is never looked at
            acc = validation_accuracy(fcfg, arrays, indices)
            out["val_accuracy"].append(round(float(acc), 4))
        else:
            acc = task.central_evaluate(fcfg, arrays)["test-acc"]
        total += sent
        out["accuracy"].append(round(float(acc), 4))
        out["bytes"].append(int(sent))
        out["cumulative_bytes"].append(int(total))
        out["mean_ipc"].append(float(np.mean(ipcs)))
        out["memory_bytes"].append(int(held))
        log(f"[{arm}] round {rnd:3d}: acc {acc:.4f}  sent {sent:6d} B (total {total:7d})  "
            f"held {held:7d} B  mean ipc {np.mean(ipcs):.1f}  {time.perf_counter() - t0:.0f} s")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["cpu_s"] = round(time.process_time() - c0, 1)  # ~ uncontended wall time at --threads 1
    return out


def _arm_recipes(buffers: dict, arms: list[str]) -> dict:
    """``{arm: recipe JSON}`` of the shipping arms' buffers; they must agree (one augmentation
    for real and condensed images alike), else the comparison is not fair: ConfigError."""
    from edgecond.buffer import MultisizeBuffer
    from edgecond.data import flips_of_buffer
    from edgecond.errors import ConfigError
    from edgecond.recipe import recipe_of

    out = {}
    for arm in arms:
        buf = MultisizeBuffer.load(buffers[arm][0])
        out[arm] = recipe_of(buf, flips=flips_of_buffer(buf.meta)).to_json()
    if len({json.dumps(v, sort_keys=True) for v in out.values()}) > 1:
        raise ConfigError(f"the shipping arms' buffers carry different training recipes {out}; a fair "
                          "comparison trains every arm by one recipe. Condense them with one preset.")
    return out


def rounds_to_reach(acc: list[float], target: float) -> int | None:
    for i, a in enumerate(acc, 1):
        if a >= target:
            return i
    return None


def accuracy_at_bytes(acc: list[float], cum: list[int], budget: int) -> float | None:
    """Accuracy after the last round whose cumulative bytes are ``<= budget`` (None if none)."""
    best = None
    for a, b in zip(acc, cum):
        if b <= budget:
            best = a
    return best


def summarize(results: dict) -> list[dict]:
    arms = [a for a in ARMS if a in results] + [a for a in results if a not in ARMS]
    none_final = results["none"]["accuracy"][-1] if "none" in results else None
    shipped = [results[a]["cumulative_bytes"][-1] for a in arms if a != "none" and results[a]["cumulative_bytes"][-1] > 0]
    equal = min(shipped) if shipped else 0  # the bytes every shipping arm has spent by its end
    rows = []
    for arm in arms:
        r = results[arm]
        rows.append({
            "arm": arm,
            "final_accuracy": r["accuracy"][-1],
            "final_accuracy_std": (r.get("accuracy_std") or [0.0])[-1],
            "best_accuracy": max(r["accuracy"]),
            "rounds_to_none_final": rounds_to_reach(r["accuracy"], none_final) if none_final is not None else None,
            "equal_bytes": equal,
            "accuracy_at_equal_bytes": (r["accuracy"][-1] if arm == "none"
                                        else accuracy_at_bytes(r["accuracy"], r["cumulative_bytes"], equal)),
            "total_bytes": r["cumulative_bytes"][-1],
            "wall_s": r["seconds"],
            "cpu_s": r.get("cpu_s"),
        })
    return rows


def write_outputs(out: Path, payload: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "federated.json").write_text(json.dumps(payload, indent=2))
    cfg = payload["config"]
    lines = [
        f"# Federated benchmark: {payload['dataset']} ({payload['preset']})", "",
        f"{cfg['clients']} clients, Dirichlet alpha={cfg['alpha']}, {cfg['rounds']} rounds, server split "
        f"{cfg.get('server_fraction')}, bandwidth and memory: log-normal traces, median {cfg.get('budget_ipc')} "
        f"ranks, sigma {cfg.get('sigma')} (per seed: `{payload.get('traces', {})}`), seed(s) {cfg['seeds']}.", "",
        "| arm | final acc (mean ± std) | best acc | rounds to none's final | acc at equal bytes | "
        "total bytes | wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in payload["summary"]:
        eq = row["accuracy_at_equal_bytes"]
        lines.append(f"| {row['arm']} | {row['final_accuracy']:.4f} ± {row['final_accuracy_std']:.4f} | "
                     f"{row['best_accuracy']:.4f} | "
                     f"{row['rounds_to_none_final'] if row['rounds_to_none_final'] is not None else '—'} | "
                     f"{'—' if eq is None else f'{eq:.4f}'} ({row['equal_bytes']} B) | "
                     f"{row['total_bytes']} | {row['wall_s']} | {row['cpu_s']} |")
    (out / "federated.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for arm in payload["arms"]:
        r = payload["arms"][arm]
        xs = np.arange(1, len(r["accuracy"]) + 1)
        a1.plot(xs, r["accuracy"], marker=".", label=arm)
        a2.plot(np.asarray(r["cumulative_bytes"]) / 1000, r["accuracy"], marker=".", label=arm)
    a1.set_xlabel("round"), a1.set_ylabel("test accuracy"), a1.grid(alpha=0.3), a1.legend()
    a2.set_xlabel("buffer kB shipped (cumulative, all clients)"), a2.set_ylabel("test accuracy")
    a2.grid(alpha=0.3), a2.legend()
    fig.suptitle(f"{payload['dataset']}: FedAvg, {payload['config']['clients']} clients, "
                 f"Dirichlet {payload['config']['alpha']}")
    fig.tight_layout()
    fig.savefig(out / "federated.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    p.add_argument("--out", default="runs/bench-federated")
    p.add_argument("--buffers-dir", default=None, help="where condensed buffers are cached (default OUT/buffers)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--clients", type=int, default=None)
    p.add_argument("--budget", default=None, help="bandwidth trace spec (default: log-normal, median budget-ipc ranks)")
    p.add_argument("--memory", default=None, help="memory trace spec (default: log-normal, median budget-ipc ranks)")
    p.add_argument("--budget-ipc", type=float, default=None, help="median of both traces, in ranks (default 2.5)")
    p.add_argument("--sigma", type=float, default=None, help="log-normal sigma of both traces (default 0.6)")
    p.add_argument("--alpha", type=float, default=None, help="Dirichlet alpha (default 0.1)")
    p.add_argument("--partitioner", default="dirichlet", choices=["dirichlet", "iid"])
    p.add_argument("--server-fraction", type=float, default=None, help="server split (default 0.2)")
    p.add_argument("--local-epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--ipc", type=int, default=None, help="ranks of the shipped buffers (default 10)")
    p.add_argument("--iterations", type=int, default=None, help="condensation iterations of C/mdc (smoke runs)")
    p.add_argument("--condense-method", default=None, help="base matcher of C/mdc (default idc)")
    p.add_argument("--condensed-weight", type=float, default=None, help="mix-mode weight of the condensed batch")
    p.add_argument("--seeds", default=None, help="comma list (default: the preset's)")
    p.add_argument("--buffer-mode", default="mix", choices=["mix", "warmup"])
    p.add_argument("--buffer-seed", type=int, default=None,
                   help="condense the buffers once with this seed and share them across --seeds "
                        "(default: one condensation per seed)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tune", action="store_true",
                   help="choose local epochs and lr for FedAvg without sharing on the clients' validation "
                        f"splits (grid {TUNE_GRID}, first seed) before running the arms; recorded in the JSON")
    p.add_argument("--tune-rounds", type=int, default=None, help="rounds of each tuning run (default: --rounds)")
    p.add_argument("--tune-grid", default=None,
                   help="tuning grid as 'EPOCHS:LR,EPOCHS:LR' (default: TUNE_GRID); one point per process "
                        "with --tune-only, then --tuning-json to combine")
    p.add_argument("--tune-only", action="store_true", help="stop after tuning (writes OUT/tuning.json)")
    p.add_argument("--tuning-json", default=None,
                   help="comma list of tuning.json files of earlier --tune runs (same seed and config): their "
                        "scores are combined and the best point is used (instead of tuning now)")
    p.add_argument("--condense-only", action="store_true",
                   help="only build (cache) the buffers of --seeds, then stop (to condense seeds in parallel)")
    p.add_argument("--arms", default=None,
                   help="comma list of arms to run now (default: " + ",".join(ARMS) + ", + edc when "
                        "registered); finished arms are cached in OUT/arms/ and reused when their config "
                        "matches, so the JSON/PNG are written once all exist")
    args = p.parse_args(argv)

    import torch

    from edgecond.buffer import MultisizeBuffer
    from edgecond.federated import FederatedConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    preset = dict(PRESETS[args.preset])
    for key in ("rounds", "clients", "budget", "memory", "budget_ipc", "sigma", "alpha", "server_fraction",
                "local_epochs", "lr", "ipc", "condensed_weight", "condense_method"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    if args.iterations is not None:
        preset["condense_overrides"] = dict(preset.get("condense_overrides") or {}, iterations=args.iterations)
    preset["partitioner"] = args.partitioner
    if args.seeds:
        preset["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "federated.log", "a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    t_all = time.perf_counter()
    run_now = [a.strip() for a in (args.arms or ",".join(default_arms())).split(",") if a.strip()]
    unknown = sorted(set(run_now) - set(ARMS) - set(extra_arms()))
    if unknown:
        p.error(f"unknown arm(s) {unknown}; expected some of {', '.join(ARMS + extra_arms())}")
    all_arms = list(ARMS) + [a for a in run_now if a not in ARMS]
    tuning = None
    if args.condense_only:
        for seed in preset["seeds"]:
            build_buffers(args.dataset, preset, Path(args.buffers_dir or out / "buffers"),
                          seed=seed if args.buffer_seed is None else args.buffer_seed,
                          device=args.device, log=log, arms=[a for a in run_now if a != "none"])
        return 0
    if args.tune:
        tune_seed = preset["seeds"][0]
        buffers = build_buffers(args.dataset, preset, Path(args.buffers_dir or out / "buffers"),
                                seed=tune_seed if args.buffer_seed is None else args.buffer_seed,
                                device=args.device, log=log, arms=("random",))
        bw_trace, mem_trace = traces_for(MultisizeBuffer.load(buffers["random"][0]), preset, tune_seed)
        tcfg = FederatedConfig(
            dataset=args.dataset, model=preset["model"], model_width=preset["model_width"], buffer_mode="off",
            budget_trace=bw_trace, memory_trace=mem_trace, local_epochs=preset["local_epochs"], lr=preset["lr"],
            batch_size=preset["batch_size"], dirichlet_alpha=preset["alpha"], partitioner=preset["partitioner"],
            server_fraction=preset["server_fraction"], condensed_weight=preset["condensed_weight"],
            num_partitions=preset["clients"], seed=tune_seed, device=args.device).validate()
        grid = TUNE_GRID if not args.tune_grid else tuple(
            (int(e), float(lr)) for e, lr in (g.split(":") for g in args.tune_grid.split(",") if g.strip()))
        tkey = json.dumps({"dataset": args.dataset, "grid": grid, "rounds": args.tune_rounds or preset["rounds"],
                           "seed": tune_seed, "preset": {k: v for k, v in preset.items()
                                                         if k not in ("seeds", "local_epochs", "lr")}},
                          sort_keys=True, default=str)
        tfile = out / "tuning.json"  # one tuning per config, reused by later invocations
        if tfile.is_file() and json.loads(tfile.read_text()).get("key") == tkey:
            tuning = json.loads(tfile.read_text())["tuning"]
            log(f"[tune] reusing {tfile}")
        else:
            tuning = tune_federation(tcfg, rounds=int(args.tune_rounds or preset["rounds"]), grid=grid, log=log)
            tfile.write_text(json.dumps({"key": tkey, "tuning": tuning}, indent=1))
        if args.tune_only:
            return 0
    if args.tuning_json:
        tuning = combine_tunings([json.loads(Path(f).read_text())["tuning"] for f in args.tuning_json.split(",")])
    if tuning is not None:
        preset["local_epochs"], preset["lr"] = tuning["chosen"]["local_epochs"], tuning["chosen"]["lr"]
        log(f"[tune] chosen on validation: local_epochs={preset['local_epochs']} lr={preset['lr']}")
    per_seed = []
    buffer_info = {}
    traces_info = {}
    incomplete = False
    for seed in preset["seeds"]:
        need_buffers = [a for a in run_now if a != "none"]
        buffers = build_buffers(args.dataset, preset, Path(args.buffers_dir or out / "buffers"),
                                seed=seed if args.buffer_seed is None else args.buffer_seed,
                                device=args.device, log=log, arms=need_buffers)
        buffer_info[seed] = {arm: {"path": str(pth), "condense_s": s} for arm, (pth, s, _) in buffers.items()}
        ref_arm = next((a for a in ("mdc", "C", "herding", "random") if a in buffers), None)
        ref = MultisizeBuffer.load(buffers[ref_arm][0]) if ref_arm else None
        if ref is None:  # only the none arm: traces from a buffer of the same shape, never shipped
            ref = MultisizeBuffer.load(build_buffers(args.dataset, preset, Path(args.buffers_dir or out / "buffers"),
                                                     seed=seed if args.buffer_seed is None else args.buffer_seed,
                                                     device=args.device, log=log, arms=("random",))["random"][0])
        bw_trace, mem_trace = traces_for(ref, preset, seed)
        traces_info[seed] = {"bandwidth": bw_trace, "memory": mem_trace}
        recipes = _arm_recipes(buffers, [a for a in run_now if a in buffers])
        results, missing = {}, False
        for arm in all_arms:
            key = json.dumps({"arm": arm, "seed": seed, "dataset": args.dataset, "mode": args.buffer_mode,
                              "preset": {k: v for k, v in preset.items() if k != "seeds"},
                              "traces": traces_info[seed],
                              "buffer": buffers[arm][2] if arm in buffers else None},
                             sort_keys=True, default=str)
            cache = out / "arms" / f"{arm}-s{seed}.json"
            if cache.is_file() and json.loads(cache.read_text()).get("key") == key:
                results[arm] = json.loads(cache.read_text())["result"]
                log(f"[{arm}] seed {seed}: reusing {cache}")
                continue
            if arm not in run_now:
                log(f"[{arm}] seed {seed}: not run yet (run with --arms {arm}); JSON/PNG not written")
                missing = True
                continue
            fcfg = FederatedConfig(
                dataset=args.dataset, model=preset["model"], model_width=preset["model_width"],
                buffer_mode="off" if arm == "none" else args.buffer_mode,
                budget_trace=bw_trace, memory_trace=mem_trace, local_epochs=preset["local_epochs"],
                lr=preset["lr"], batch_size=preset["batch_size"], dirichlet_alpha=preset["alpha"],
                partitioner=preset["partitioner"], server_fraction=preset["server_fraction"],
                condensed_weight=preset["condensed_weight"],
                num_partitions=preset["clients"], seed=seed, device=args.device).validate()
            buf = None if arm == "none" else MultisizeBuffer.load(buffers[arm][0])
            results[arm] = run_arm(arm, buf, fcfg, rounds=preset["rounds"], log=log)
            if buf is not None:
                results[arm]["buffer"] = {"path": str(buffers[arm][0]), "ipc": buf.ipc,
                                          "bytes_for": [buf.bytes_for(n) for n in range(1, buf.ipc + 1)],
                                          "method": buf.meta.method, "digest": buffers[arm][2],
                                          "condense_s": buffers[arm][1]}
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"key": key, "result": results[arm]}))
        if missing:  # the arms of run_now ran (and are cached); others are still missing
            incomplete = True
            continue
        per_seed.append(results)
    if incomplete:
        return 0

    arms = {}
    for arm in [a for a in all_arms if a in per_seed[0]]:
        accs = np.array([r[arm]["accuracy"] for r in per_seed])
        byts = np.array([r[arm]["bytes"] for r in per_seed])
        cum = np.array([r[arm]["cumulative_bytes"] for r in per_seed])
        arms[arm] = {
            "accuracy": [round(float(a), 4) for a in accs.mean(0)],
            "accuracy_std": [round(float(a), 4) for a in accs.std(0)],
            "bytes": [int(b) for b in byts.mean(0).round()],
            "cumulative_bytes": [int(b) for b in cum.mean(0).round()],
            "memory_bytes": [int(b) for b in np.mean([r[arm]["memory_bytes"] for r in per_seed], 0).round()],
            "mean_ipc": [round(float(v), 2) for v in np.mean([r[arm]["mean_ipc"] for r in per_seed], 0)],
            "seconds": round(float(np.sum([r[arm]["seconds"] for r in per_seed])), 1),
            "cpu_s": round(float(np.sum([r[arm].get("cpu_s", float("nan")) for r in per_seed])), 1),
            "per_seed": [r[arm] for r in per_seed],
        }
    payload = {
        "dataset": args.dataset, "preset": args.preset,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in preset.items()},
        "buffer_mode": args.buffer_mode,
        "buffer_seed": args.buffer_seed,
        "driver": "in-process (edgecond.federated.Shipper + clients.task.client_round + flwr aggregate_arrayrecords)",
        "buffers": {str(k): v for k, v in buffer_info.items()},
        "traces": {str(k): v for k, v in traces_info.items()},
        "recipes": recipes,
        "tuning": tuning,
        "arms": arms,
        "wall_s_this_invocation": round(time.perf_counter() - t_all, 1),
        # arms (all seeds) + each distinct buffer's condensation once
        "wall_s_total": round(sum(a["seconds"] for a in arms.values()) + sum(
            {v["path"]: (v["condense_s"] or 0.0) for info in buffer_info.values()
             for v in info.values()}.values()), 1),
        "torch_threads": torch.get_num_threads(),
    }
    payload["summary"] = summarize(arms)
    write_outputs(out, payload)
    log(f"done: this invocation {payload['wall_s_this_invocation']:.0f} s, all arms + condensation "
        f"{payload['wall_s_total']:.0f} s -> {out / 'federated.json'}")
    for row in payload["summary"]:
        log(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
