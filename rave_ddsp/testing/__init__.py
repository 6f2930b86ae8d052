"""Test helpers that ship with the package (nn_client: check exports the way nn~ runs them)."""
