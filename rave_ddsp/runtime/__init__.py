"""Using a trained model: the TorchScript export for nn~, loading a run or an export for
inference, and whole files through it in bounded memory (encode, decode, reconstruct).

Imports from the layers below (:mod:`rave_ddsp.train` and down), never from
:mod:`rave_ddsp.analysis`.
"""
