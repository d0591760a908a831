"""The study engine: a study is a graph of jobs (training runs and the steps between them) that one
scheduler executes, concurrently where the graph allows, on local worker processes or on Ray.

- :mod:`experiments.engine.jobs`: :class:`Job` and :class:`JobGraph`;
- :mod:`experiments.engine.locks`: one lock file per run (two schedulers never run the same run);
- :mod:`experiments.engine.results_dir`: a committed folder of small artifacts a study continues from;
- :mod:`experiments.engine.worker`: what a worker process does with one job;
- :mod:`experiments.engine.backends`: inline, local processes, Ray;
- :mod:`experiments.engine.cost`: estimated run times (dry runs, ETAs);
- :mod:`experiments.engine.progress`: one line per active run and the study's ETA;
- :mod:`experiments.engine.scheduler`: the loop;
- :mod:`experiments.engine.options`: the flags every study command shares.
"""
