"""The monitor step (``04_monitor.ipynb``): Chroma and Qdrant latency, throughput and errors side by side.

Modules, each importing only those listed before it (and config, core, source, target, state, runtime):

* :mod:`~runbook_lib.steps.monitor.workload`: which collections are measured, and their queries.
* :mod:`~runbook_lib.steps.monitor.stores`: the two stores the queries run against, and their engines.
* :mod:`~runbook_lib.steps.monitor.measure`: latency statistics, sequential latency, agreement, the sweep.
* :mod:`~runbook_lib.steps.monitor.watch`: watch mode (periodic probes).
* :mod:`~runbook_lib.steps.monitor.result`: :class:`MonitorResult`, the data and its one JSON form.
* :mod:`~runbook_lib.steps.monitor.collect`: the raw measurements filed into the result.
* :mod:`~runbook_lib.steps.monitor.report`: the notebook's tables and Markdown, functions of the result.
* :mod:`~runbook_lib.steps.monitor.charts`: the charts.
* :mod:`~runbook_lib.steps.monitor.engine`: the step itself, :func:`monitor`.
"""
