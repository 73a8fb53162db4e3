"""The rollback step (``05_rollback.ipynb`` · ``runbook rollback --run-id ID``): undo one migration run without
losing a write.

* :mod:`~runbook_lib.steps.rollback.engine`: ``rollback(step)``, the step itself: build the plan, show it, and with
  ``confirm=True`` hand it to the executor;
* :mod:`~runbook_lib.steps.rollback.plan`: the plan as data (its moves, and :class:`Action`, one line of it) and
  what the run recorded;
* :mod:`~runbook_lib.steps.rollback.planner`: ``build_plan(step)``, reading only (every refusal is raised there);
* :mod:`~runbook_lib.steps.rollback.executor`: ``carry_out``, the one executor: the plan's moves in order (restore if
  needed, bring Qdrant's changes back, clean up Qdrant, ``rollback.env``) with the checkpoint's progress records;
* :mod:`~runbook_lib.steps.rollback.chroma_restore`: the ChromaDB part (keep the live directory, or restore it from
  the backup when it is missing or damaged or when asked; health check);
* :mod:`~runbook_lib.steps.rollback.bring_back`: Qdrant's changes since the last sync, back into ChromaDB (a
  reverse sync);
* :mod:`~runbook_lib.steps.rollback.qdrant_cleanup`: the Qdrant part (collections and aliases the run created) and
  which Qdrant the run wrote to (``TargetIdentity``);
* :mod:`~runbook_lib.steps.rollback.other_runs`: refusing to delete a collection another run has since taken over;
* :mod:`~runbook_lib.steps.rollback.app_env`: ``rollback.env``, the settings that point the app back at ChromaDB;
* :mod:`~runbook_lib.steps.rollback.result`: :class:`RollbackResult`, the step's result as data, and its JSON form;
* :mod:`~runbook_lib.steps.rollback.report`: the notebook's tables and texts, as functions of the result.
"""
