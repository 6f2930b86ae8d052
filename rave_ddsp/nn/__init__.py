"""Network building blocks: cached (streamable) convolutions and activations, the encoder,
the decoder with its filtered-noise branch, and the discriminators.

Imports from :mod:`rave_ddsp.dsp` only.
"""
