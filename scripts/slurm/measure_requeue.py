"""Time lost to a requeue on the local Slurm: from the signal to the resumed attempt's first training step.

    sudo scripts/slurm/start.sh
    SLURM_CONF=/tmp/loraven-slurm/slurm.conf python scripts/slurm/measure_requeue.py --repeats 3

Each repeat submits one job (``hydra/launcher=slurm_local``, tiny model, 400 steps, a checkpoint every 20), waits
for its first checkpoint, stops it with ``scontrol requeue`` (SIGTERM) or ``scancel --signal=USR2`` (submitit
requeues), waits for the sweep to end and reads the attempts ledger from the record: signal → checkpoint saved
(``ended_unix`` of attempt 1) and signal → training going on again (``started_unix`` of attempt 2). Prints one JSON
line per repeat and the medians; the 1-minute load average is recorded (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOW = {"scontrol_requeue": ["scontrol", "requeue"], "usr2": ["scancel", "--signal=USR2"]}


def one(how: str, tmp: Path) -> dict:
    res, sweep = tmp / "res", tmp / "multirun"
    args = [
        "hydra/launcher=slurm_local",
        "model=tiny_llama",
        "trainer=smoke",
        "task.n_train=200",
        "task.n_test=20",
        "energy=none",
        "tracking=none",
        "trainer.steps=400",
        "trainer.checkpoint_every=20",
        f"results_dir={res}",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    log = (tmp / "launcher.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "-m", *args], cwd=tmp, env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 600
        while not any(res.rglob("checkpoints/step-*/manifest.json")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no checkpoint appeared; see {tmp / 'launcher.log'}")
            time.sleep(0.1)
        task = next(p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name))
        load = os.getloadavg()[0]
        signalled = time.time()
        subprocess.run([*HOW[how], task], check=True, timeout=30, env=env)
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    (record,) = [json.loads(p.read_text()) for p in res.rglob("result.json")]
    first, second = record["checkpoint"]["attempts"]
    return {
        "how": how,
        "status": record["status"],
        "attempts": record["attempts"],
        "saved_after_s": round(first["ended_unix"] - signalled, 3),
        "resumed_after_s": round(second["started_unix"] - signalled, 2),
        "resumed_at_step": second["start_step"],
        "load1": round(load, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--how", default=",".join(HOW))
    args = parser.parse_args()
    rows = []
    for i in range(args.repeats):
        for how in args.how.split(","):
            with tempfile.TemporaryDirectory(prefix="loraven-requeue-") as tmp:
                row = one(how, Path(tmp))
            rows.append(row)
            print(json.dumps({"repeat": i, **row}), flush=True)
    for how in args.how.split(","):
        mine = [r for r in rows if r["how"] == how]
        print(
            f"{how}: n={len(mine)} saved after median {statistics.median(r['saved_after_s'] for r in mine):.2f} s "
            f"[{min(r['saved_after_s'] for r in mine):.2f}, {max(r['saved_after_s'] for r in mine):.2f}], training "
            f"resumed after median {statistics.median(r['resumed_after_s'] for r in mine):.1f} s "
            f"[{min(r['resumed_after_s'] for r in mine):.1f}, {max(r['resumed_after_s'] for r in mine):.1f}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
