"""The rollback step (``05_rollback.ipynb`` · ``runbook rollback --run-id ID``): undo one migration run.

* :mod:`~runbook_lib.steps.rollback.engine`: ``rollback(step)``, the step itself (plan, then with ``confirm=True``
  carry the plan out);
* :mod:`~runbook_lib.steps.rollback.plan`: :class:`Action` (one line of the plan) and what the run recorded;
* :mod:`~runbook_lib.steps.rollback.chroma_restore`: the ChromaDB part (plan, restore from the backup, health check);
* :mod:`~runbook_lib.steps.rollback.qdrant_cleanup`: the Qdrant part (collections and aliases the run created);
* :mod:`~runbook_lib.steps.rollback.app_env`: ``rollback.env``, the settings that point the app back at ChromaDB;
* :mod:`~runbook_lib.steps.rollback.result`: :class:`RollbackResult`, the step's result as data, and its JSON form;
* :mod:`~runbook_lib.steps.rollback.report`: the notebook's tables and texts, as functions of the result.
"""
