"""The command line: ``python run.py`` and the ``loraven`` console command (:func:`loraven.cli.app.main`).

Split by job: :mod:`.app` orchestrates one run, :mod:`.hydra_glue` reads Hydra's runtime, :mod:`.lifecycle` owns
signals, child processes and start-up, :mod:`.console` renders what a person reads.
"""
