"""The verify step (``03_verify.ipynb``): prove the Qdrant copy equals the ChromaDB source, record by record.

Modules, each importing only those listed before it (and config, core, source, target, state, runtime, errors):

* :mod:`~runbook_lib.steps.verify.result`: the data -- constants, per-check and per-collection records,
  :class:`~runbook_lib.steps.verify.result.VerifyResult` with its verdict and JSON form, ``load_result``;
* :mod:`~runbook_lib.steps.verify.report`: the pandas tables the notebook shows (functions of the result);
* :mod:`~runbook_lib.steps.verify.charts`: the charts saved with the result;
* :mod:`~runbook_lib.steps.verify.queries`: query picking and the ``search`` parity check;
* :mod:`~runbook_lib.steps.verify.identity`: the ``identity`` check;
* :mod:`~runbook_lib.steps.verify.checks`: verifying one collection in one streaming pass;
* :mod:`~runbook_lib.steps.verify.engine`: the step, ``verify(step)``: source selection and orchestration.

Nothing is imported here, so each module can be imported on its own.
"""
