"""The source thesis' toy results (Marinos, TU Delft 2023), the numbers to beat."""

# MISSION.md: F1 / FDR in %, mean of 5 runs.
THESIS = {
    "3k-medium": {"supervised": (64.70, 7.76), "pseudo_label": (64.22, 4.64), "generator": (65.07, 6.10),
                  "upsample": (60.68, 10.11)},
    "3k-hard": {"supervised": (46.42, 23.59), "pseudo_label": (45.45, 24.88), "generator": (44.52, 24.84),
                "upsample": (41.18, 28.15)},
    "30k-medium": {"supervised": (84.82, 2.15), "pseudo_label": (84.85, 1.77), "generator": (83.59, 3.09),
                   "upsample": (80.20, 2.26)},
    "30k-hard": {"supervised": (65.01, 11.46), "pseudo_label": (64.64, 10.36), "generator": (58.84, 12.75),
                 "upsample": (61.80, 12.41)},
}
