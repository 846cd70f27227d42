"""Model directories built offline: no model can be downloaded on the machines servesweep is tested on."""
