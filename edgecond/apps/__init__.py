"""The apps under the ``edgecond`` namespace: thin re-exports of the top-level ``clients/`` and
``servers/`` folders (the Flower app layout, kept where ``flwr run .`` and the design card expect
them). Import the one you need; each pulls in only its own dependencies:

=================================  ===============================================  ==================
module                             what                                             needs
=================================  ===============================================  ==================
``edgecond.apps.edge``             torch-free on-device trainer (``train_bundle``)  core install
``edgecond.apps.flower_client``    Flower ``ClientApp`` (``app``)                   ``edgecond[flower]``
``edgecond.apps.flower_server``    Flower ``ServerApp`` (``app``, ``ensure_buffer``)  ``edgecond[flower]``
``edgecond.apps.avalanche``        ``CondensedBuffer``, plugins, ``condensed_replay``  ``edgecond[avalanche]``
=================================  ===============================================  ==================

Library code of the Flower apps lives beside them: ``edgecond.apps.flower_config`` (the run
configuration and its defaults), ``edgecond.apps.flower_records`` (budget query/reply and
transfer records; Flower imported lazily) and ``edgecond.apps.flower_model`` (data, model and
test accuracy shared by the ServerApp and the ClientApp; torch).
"""
