"""Signal processing without learned weights: the PQMF filter bank and the filtered-noise
synthesis (magnitudes -> zero-phase impulse responses -> framed FFT convolution).

Imports nothing from the other subpackages.
"""
