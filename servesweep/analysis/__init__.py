"""The decision: from a sweep's result files to the recommendation (knee, precision and batch
sweeps, the chosen configuration, verification and headroom folded in, uncertainty over repeats,
SKU measurements and projection rules, drift scores). Reads results, never runs or renders
anything; reports/ draws what it decides."""
