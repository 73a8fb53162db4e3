"""The migrate step (``02_migrate.ipynb`` · ``runbook migrate``): backup, create, copy every record, count check.

* :mod:`~runbook_lib.steps.migrate.engine`: ``migrate(step)`` and the copy pipeline it runs per collection;
* :mod:`~runbook_lib.steps.migrate.result`: :class:`MigrationResult`, the step's result as data, and its JSON form;
* :mod:`~runbook_lib.steps.migrate.report`: the notebook's table, as a function of the result;
* :mod:`~runbook_lib.steps.migrate.charts`: the throughput chart the step saves with its evidence.
"""
