"""Train any :class:`~neuroplastic.methods.base.CapacityMethod` where users train: Lightning and the Hugging
Face ``Trainer`` (docs/integrations.md).

* :mod:`neuroplastic.integrations.lightning`: ``CapacityCallback(method)`` for a ``lightning.Trainer``, and
  ``capacity_step`` for the ``training_step`` of methods that own the backward pass (NPN's ARM);
* :mod:`neuroplastic.integrations.huggingface`: ``CapacityTrainer`` (a ``transformers.Trainer`` that drives
  the method) and the ``CapacityCallback`` it installs, enough alone for methods that do not own the
  backward pass;
* :mod:`neuroplastic.integrations.driver`: what both share, framework-free: the method protocol driven from
  a framework's hooks, as :func:`neuroplastic.train.fit` drives it.

The framework modules import their framework when they are imported (``pip install
'neuroplastic[lightning]'`` or ``'neuroplastic[huggingface]'``); nothing else in the package imports them.
"""
