"""The thresholds that both the sweep (which decides when to stop and how to size) and the
reports (which judge what was measured) apply. They sit on the ground floor so that neither has
to import the other for them.

  KNEE_THRESHOLD  the knee: the first batch after which one more slot adds less than this share
                  of the throughput one slot gives at the smallest batch (analysis/knee.py).
  MARGIN_BAND     the OOM-margin band, % of the KV pool free at peak: below it long or unusual
                  requests hit preemption or OOM; above it memory is reserved that the load
                  never touches.
"""

from __future__ import annotations

KNEE_THRESHOLD = 0.10
MARGIN_BAND = (5.0, 40.0)
TARGET_MARGIN_PCT = (MARGIN_BAND[0] + MARGIN_BAND[1]) / 2  # 22.5: the sizing's target, the band's middle
# A KV peak at or above this share of the pool (the band's low edge) may hide unmet demand.
KV_FULL_FRAC = 1.0 - MARGIN_BAND[0] / 100.0  # 0.95
