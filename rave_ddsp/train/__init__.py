"""Training: the LightningModule (two phases), its losses, the latent statistics (PCA),
checkpoint reading, callbacks and the command-line interface of ``scripts/train.py``.

Imports from :mod:`rave_ddsp.dsp`, :mod:`rave_ddsp.nn` and :mod:`rave_ddsp.data`.
"""
