"""Entry point: ``python run.py`` (one run) or ``python run.py -m key=a,b`` (a sweep); the ``loraven`` command is
the same function.

Thin on purpose: composition is Hydra's (``conf/`` at the top of the repository, shipped inside the wheel as
``loraven/conf``; ``loraven.CONF_DIR``), the work is :func:`loraven.cli.app.run_from_hydra`. Before Hydra writes
anything the config is composed once and checked (credentials from any source, composition errors: one line, exit 2;
``loraven.cli.precheck``), and interrupts end in one line saying what was recorded, exit code 130 (SIGINT) or 143
(SIGTERM). ``python run.py --help`` prints the config groups.
"""

from loraven.cli.app import main

if __name__ == "__main__":
    main()
