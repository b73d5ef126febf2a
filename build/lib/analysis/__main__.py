"""``python -m analysis --results results --out reports`` (or ``--wandb ENTITY/PROJECT``)."""

from analysis.cli import main

raise SystemExit(main())
