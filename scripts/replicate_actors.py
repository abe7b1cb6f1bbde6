"""Replicate an env's IQL actors with another seed: the whole pipeline, SAC to IQL.

    python scripts/replicate_actors.py ENV SEED --work DIR [--sac-steps N] [--iql-steps N] [--zoo checkpoints]

The data behind the seed-0 actors are not kept (their SAC runs took hours), so a replica reruns every step
with ``SEED``: SAC behaviour policies (``poe-jax data generate --phase policies --seed SEED``), the datasets
(``--phase datasets --seed SEED``), and IQL on the medium and medium-expert data (``poe-jax train iql --seed
SEED``). A replica's spread around seed 0 is therefore the variance of the whole recipe (behaviour policy,
data and training), which is at least the training-seed variance a fixed D4RL dataset would show.

Each step is resumable: run the same command again and finished steps are skipped (SAC continues from its
saved state and its clock: the SAC step's wall time covers every sitting). The wall time of each step is recorded in
``DIR/replicate.json``, and the last line printed is the
replica's row of the table in ``checkpoints/README.md`` (wall times, the behaviour snapshots' scores, the data's
mean episode return, the actors' scores). At the end the actors are
written, actor-only, to ``ZOO/ENV-KIND-iql-seedSEED`` with cards naming ``replica_of``, ``seed``, their data's id
(``poe/ENV-KIND-sac-sSEED-v0``) and ``data_source``; ``--zoo`` defaults to a folder under ``--work``, so
nothing is added to the shipped zoo unless asked.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

KINDS = ("medium", "medium-expert")


def _step(record: dict, path: Path, name: str, done: bool, argv: list[str]) -> None:
    if done:
        print(f"[{name}] done already", flush=True)
        return
    print(f"[{name}] {' '.join(argv)}", flush=True)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "poe_jax", *argv], check=True)
    record.setdefault("steps", {})[name] = {"argv": argv, "seconds": round(time.time() - t0, 1),
                                            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.write_text(json.dumps(record, indent=2))


def _ship(src: Path, dst: Path, env: str, kind: str, seed: int, zoo: Path) -> None:
    """Write the trained actor at its zoo name, actor-only (a replica serves the closed-form rules; the critic
    rules and the off-policy scorer use the seed-0 actor's critics), with the replica's card fields: its seed,
    ``replica_of``, its own data's id and source; the published score is the seed-0 card's."""
    from poe_jax import checkpoints

    base = f"{env}-{kind}-iql"
    card = checkpoints.read_card(src)
    actor = checkpoints.load(src, env=env).replace(critic=None)
    checkpoints.save(dst, actor, env=env, dataset=f"poe/{env}-{kind}-sac-s{seed}-v0",
                     provenance={**card["provenance"], "critic": "not shipped (replica: actor only)"},
                     scores=card["scores"], normalization_note=card["normalization"].get("note"), overwrite=True)
    base_card = checkpoints.read_card(zoo / base) if (zoo / base / "card.json").is_file() else {}
    checkpoints.update_card(
        dst, seed=seed, replica_of=base,
        data_source=(f"self-generated: rollouts of SAC policies trained here with seed {seed} (poe-jax data generate "
                     f"--seed {seed}), not the D4RL dataset {env}-{kind}-v2; the same dynamics (Gymnasium's v4 models)"),
        **({"published": base_card["published"]} if "published" in base_card else {}))


def _row(work: Path, env: str, seed: int, replicas: dict[str, Path], record: dict) -> str:
    """The replica's row of checkpoints/README.md's table, from its record, its datasets and its cards (``replicas``:
    kind -> the shipped replica). SAC's and IQL's seconds are their own record of every sitting
    (``policies/index.json``, the cards' ``train_seconds``); the datasets' are their last sitting's (a sitting
    cut off before it finished records nothing, so add its time from the step's log; runs from before the
    training loops kept their clocks need the same for SAC and IQL)."""
    import numpy as np

    from poe_jax import checkpoints, data
    from poe_jax.data.minari_io import episodes

    def data_return(kind: str) -> float:
        d = data.read(work / f"{env}-{kind}.hdf5")
        return float(np.mean([d["rewards"][s].sum() for s in episodes(d)]))

    sec = {k: f"{v['seconds']:.0f} s" for k, v in record["steps"].items()}
    snapshots = json.loads((work / "policies" / "index.json").read_text())
    if "seconds" in snapshots[-1]:  # SAC's own clock, over every sitting
        sec["sac"] = f"{snapshots[-1]['seconds']:.0f} s"
    cards = {k: checkpoints.read_card(p) for k, p in replicas.items()}
    sec["iql"] = f"{cards['medium-expert']['provenance']['train_seconds']:.0f} s"  # both sets train in one run
    behaviour = cards["medium-expert"]["provenance"]["behaviour"]
    ex, md = behaviour["expert"], behaviour["medium"]
    score = {k: f"{c['scores'][0]['normalized_mean']:.1f} ± {c['scores'][0]['normalized_se']:.1f}"
             for k, c in cards.items()}
    return (f"| {seed} | {sec['sac']} | {sec['datasets']} | {sec['iql']} | "
            f"{ex['step'] // 1000}k: {ex['sto_normalized']:.1f} / {ex['det_normalized']:.1f} | "
            f"{md['step'] // 1000}k: {md['sto_normalized']:.1f} | "
            f"{data_return('medium'):.0f} / {data_return('medium-expert'):.0f} | "
            f"{score['medium']} | {score['medium-expert']} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("env")
    ap.add_argument("seed", type=int)
    ap.add_argument("--work", required=True, help="folder for the SAC run, the datasets and the logs")
    ap.add_argument("--sac-steps", type=int, default=300_000)
    ap.add_argument("--eval-every", type=int, default=25_000)
    ap.add_argument("--iql-steps", type=int, default=180_000)
    ap.add_argument("--size", type=int, default=200_000)
    ap.add_argument("--zoo", help="where the replicas go (default: WORK/zoo); the seed-0 cards are read from "
                                  "the shipped zoo")
    a = ap.parse_args(argv)
    if a.seed < 1:
        ap.error(f"seed: {a.seed}; a replica's seed is 1 or more (0 is the shipped actor)")
    work = Path(a.work) / f"{a.env}-s{a.seed}"
    work.mkdir(parents=True, exist_ok=True)
    rec_path = work / "replicate.json"
    record = json.loads(rec_path.read_text()) if rec_path.exists() else {"env": a.env, "seed": a.seed}
    steps = record.get("steps", {})
    data = [work / f"{a.env}-{k}.hdf5" for k in KINDS]
    trained = [work / "iql" / f"{a.env}-{k}-iql" for k in KINDS]

    _step(record, rec_path, "sac", "sac" in steps,
          ["data", "generate", "--env", a.env, "--out", str(work), "--phase", "policies", "--seed", str(a.seed),
           "--sac-steps", str(a.sac_steps), "--eval-every", str(a.eval_every)])
    _step(record, rec_path, "datasets", all(p.exists() for p in data) and "datasets" in steps,
          ["data", "generate", "--env", a.env, "--out", str(work), "--phase", "datasets", "--seed", str(a.seed),
           "--size", str(a.size)])
    _step(record, rec_path, "iql", all((p / "card.json").exists() for p in trained) and "iql" in steps,
          ["train", "iql", "--env", a.env, "--dataset", *map(str, data), "--out", str(work / "iql"),
           "--steps", str(a.iql_steps), "--seed", str(a.seed)])

    from poe_jax import checkpoints

    shipped = checkpoints.ZOO
    out = Path(a.zoo) if a.zoo else work / "zoo"
    out.mkdir(parents=True, exist_ok=True)
    dsts = {kind: out / f"{a.env}-{kind}-iql-seed{a.seed}" for kind in KINDS}
    for (kind, dst), src in zip(dsts.items(), trained):
        _ship(src, dst, a.env, kind, a.seed, shipped)
        score = checkpoints.read_card(dst)["scores"][0]
        print(f"{dst.name}: {score['normalized_mean']:.1f} ± {score['normalized_se']:.1f}", flush=True)
    print(_row(work, a.env, a.seed, dsts, record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
