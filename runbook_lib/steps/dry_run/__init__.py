"""The dry-run step (``01_dry_run.ipynb`` · ``runbook dry-run``): inventory every source collection, show the plan.

* :mod:`~runbook_lib.steps.dry_run.engine`: ``dry_run(step)`` and the one-pass scan of a collection;
* :mod:`~runbook_lib.steps.dry_run.result`: :class:`DryRunResult`, the step's result as data, and its JSON form;
* :mod:`~runbook_lib.steps.dry_run.report`: the notebook's tables, as functions of the result;
* :mod:`~runbook_lib.steps.dry_run.charts`: the inventory chart the step saves with its evidence.
"""
